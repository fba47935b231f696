"""The Python peer: the asyncio `websockets` server doing the floor's workload.

The server a team would pick instead of this stack, measured in the same run
as the bare trio-websocket server (`ops/bench/raw_ws_server.py`) and with the
same clients and stdin commands: accept WebSocket connections (the user named
by `?user=`), send one welcome frame, keep each connection read, and

- `publish RATE SECONDS [PHASE]`: generate targeted events at a fixed rate,
  each to one random connection, stamped with the wall time it was generated
  (`payload.t`) and its phase; then logs `published N` on stderr;
- `broadcast COUNT INTERVAL`: send COUNT `system.notice` envelopes (text
  `t=<stamp>`) to every connection, INTERVAL seconds apart, with the
  library's `broadcast()`; then logs `broadcast N`.

No auth, no store, no compression. On start it logs `peer listening on PORT`
on stderr. Run: `python -m ops.bench.peer_ws_server`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from gateway.events import iso, new_id, utcnow

__all__ = ["PeerServer", "main"]


class PeerServer:
    """Connected users, the fixed-rate targeted generator and the broadcaster."""

    def __init__(self) -> None:
        self.connections: dict[str, ServerConnection] = {}
        self.keys: list[str] = []
        self._tasks: set[asyncio.Task] = set()

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "/").query)
        user = query.get("user", [new_id("anon")])[0]
        key = f"{user}/{id(ws)}"
        self.connections[key] = ws
        self.keys.append(key)
        try:
            await ws.send(json.dumps({"v": 1, "type": "session.welcome", "payload": {}}))
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            del self.connections[key]
            self.keys.remove(key)

    async def _deliver(self, ws: ServerConnection, message: str) -> None:
        try:
            await ws.send(message)
        except ConnectionClosed:
            pass

    async def publish(self, rate: float, seconds: float, phase: str) -> int:
        """Generate `rate` events/s for `seconds`, each to one random connection."""
        loop = asyncio.get_running_loop()
        count = 0
        started = loop.time()
        for n in range(int(rate * seconds)):
            delay = started + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
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
            task = asyncio.create_task(self._deliver(ws, json.dumps(envelope)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            count += 1
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return count

    async def broadcast(self, count: int, interval: float) -> int:
        for n in range(count):
            if n:
                await asyncio.sleep(interval)
            notice_id = new_id("evt")
            envelope = {
                "v": 1,
                "id": notice_id,
                "type": "system.notice",
                "sentAt": iso(utcnow()),
                "payload": {"id": notice_id, "text": f"t={time.time():.6f}", "severity": "info"},
            }
            broadcast(list(self.connections.values()), json.dumps(envelope))
        return count

    async def control(self) -> None:
        """Read commands from stdin (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            words = line.split()
            if len(words) in (3, 4) and words[0] == "publish":
                phase = words[3] if len(words) == 4 else "targeted"
                count = await self.publish(float(words[1]), float(words[2]), phase)
                print(f"published {count}", file=sys.stderr, flush=True)
            elif len(words) == 3 and words[0] == "broadcast":
                count = await self.broadcast(int(words[1]), float(words[2]))
                print(f"broadcast {count}", file=sys.stderr, flush=True)


async def _serve() -> None:
    server = PeerServer()
    async with serve(server.handler, "127.0.0.1", 0, compression=None, ping_interval=None) as ws:
        port = next(iter(ws.sockets)).getsockname()[1]
        print(f"peer listening on {port}", file=sys.stderr, flush=True)
        await server.control()


def main() -> None:
    try:
        asyncio.run(_serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
