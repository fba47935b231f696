"""The bare trio-websocket server: the floor the `ws` benchmark compares with.

It does only what a push gateway cannot avoid: accept WebSocket connections
(the user named by `?user=` in the path), send one welcome frame, keep each
connection read, and deliver targeted events. Events are generated here at a
fixed rate, each to one random connected user and stamped with the wall time
it was generated (`payload.t`, seconds), so publish-to-receive latency is
measured the same way as on Cutover. No auth, no store, no buffering policy.

Control is on stdin, one command a line: `publish RATE SECONDS [PHASE]`
generates events (their payload names the phase) and then logs `published N`
on stderr; `broadcast COUNT INTERVAL` sends COUNT `system.notice` envelopes
(text `t=<stamp>`) to every connection, INTERVAL seconds apart, and logs
`broadcast N`. On start it logs
`raw listening on PORT` on stderr. Run: `python -m ops.bench.raw_ws_server`.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from gateway.events import iso, new_id, utcnow

__all__ = ["RawServer", "main"]


class RawServer:
    """Connected users and the fixed-rate targeted event generator."""

    def __init__(self) -> None:
        self.connections: dict[str, WebSocketConnection] = {}
        self.keys: list[str] = []
        self.sent = 0

    async def handler(self, request: WebSocketRequest) -> None:
        query = parse_qs(urlsplit(request.path).query)
        user = query.get("user", [new_id("anon")])[0]
        ws = await request.accept()
        key = f"{user}/{id(ws)}"
        self.connections[key] = ws
        self.keys.append(key)
        try:
            await ws.send_message(json.dumps({"v": 1, "type": "session.welcome", "payload": {}}))
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass
        finally:
            del self.connections[key]
            self.keys.remove(key)

    async def _deliver(self, ws: WebSocketConnection, message: str) -> None:
        try:
            await ws.send_message(message)
            self.sent += 1
        except ConnectionClosed:
            pass

    async def publish(self, rate: float, seconds: float, phase: str = "targeted") -> int:
        """Generate `rate` events/s for `seconds`, each to one random connection."""
        count = 0
        total = int(rate * seconds)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for n in range(total):
                await trio.sleep_until(started + n / rate)
                if not self.keys:
                    continue
                ws = self.connections[random.choice(self.keys)]
                envelope = {
                    "v": 1,
                    "id": new_id("evt"),
                    "type": "bench.event",
                    "sentAt": iso(utcnow()),
                    "payload": {"t": time.time(), "n": n, "phase": phase},
                }
                nursery.start_soon(self._deliver, ws, json.dumps(envelope))
                count += 1
        return count

    async def broadcast(self, count: int, interval: float) -> int:
        """Send `count` notices to every connection, `interval` seconds apart."""
        for n in range(count):
            if n:
                await trio.sleep(interval)
            notice_id = new_id("evt")
            envelope = {
                "v": 1,
                "id": notice_id,
                "type": "system.notice",
                "sentAt": iso(utcnow()),
                "payload": {"id": notice_id, "text": f"t={time.time():.6f}", "severity": "info"},
            }
            message = json.dumps(envelope)
            async with trio.open_nursery() as nursery:
                for ws in list(self.connections.values()):
                    nursery.start_soon(self._deliver, ws, message)
        return count

    async def control(self) -> None:
        """Read `publish RATE SECONDS` commands from stdin."""
        stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        async with stream:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    words = line.decode().split()
                    if len(words) in (3, 4) and words[0] == "publish":
                        phase = words[3] if len(words) == 4 else "targeted"
                        count = await self.publish(float(words[1]), float(words[2]), phase)
                        print(f"published {count}", file=sys.stderr, flush=True)
                    elif len(words) == 3 and words[0] == "broadcast":
                        count = await self.broadcast(int(words[1]), float(words[2]))
                        print(f"broadcast {count}", file=sys.stderr, flush=True)


async def serve() -> None:
    server = RawServer()
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            lambda task_status: serve_websocket(
                server.handler, "127.0.0.1", 0, ssl_context=None, task_status=task_status
            )
        )
        port = listener.port
        print(f"raw listening on {port}", file=sys.stderr, flush=True)
        await server.control()
        nursery.cancel_scope.cancel()


def main() -> None:
    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
