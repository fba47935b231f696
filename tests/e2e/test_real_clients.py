"""The push path against the clients people use and against hostile ones.

A real `cutover serve` per test; the clients are the `websockets` library with
permessage-deflate offered (what browsers do) or not, Node's `ws`, and raw
sockets that stop reading, race handshakes or send compression bombs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "examples" / "registry"
NODE_CLIENTS = Path(__file__).resolve().parent / "node"
API_KEY = "real-clients-key"


def _client(server, user: str, *, compression: str | None = "deflate", token=None, **kwargs):
    return connect(
        server.ws_url,
        compression=compression,
        additional_headers={"Authorization": f"Bearer {token or server.token(user)}"},
        open_timeout=10,
        max_size=None,
        **kwargs,
    )


def _read_to_close(ws, timeout: float = 30.0) -> tuple[list[dict], int | None]:
    """Every envelope until the server closes (each frame must parse), and the code."""
    envelopes: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            envelopes.extend(json.loads(line) for line in frame.split("\n"))
    except ConnectionClosed as closed:
        return envelopes, closed.rcvd.code if closed.rcvd is not None else None


def _deflate_negotiated(ws) -> bool:
    return any(ext.name == "permessage-deflate" for ext in ws.protocol.extensions)


@pytest.mark.parametrize("compression", ["on", "off"])
def test_every_frame_parses_including_the_last_before_each_close(make_server, compression):
    """Browsers negotiate permessage-deflate: the frame before 4001, 4000 and 1012
    arrives intact, after enough traffic to move the compressor on."""
    server = make_server("--ws-compression", compression)

    # 4000: an unsupported protocol version, after 30 pings (the burst is 40)
    with _client(server, "fr-alice") as ws:
        assert _deflate_negotiated(ws) is (compression == "on")
        for i in range(30):
            ws.send(json.dumps({"v": 1, "id": f"p{i}", "action": "ping", "payload": {}}))
        ws.send(json.dumps({"v": 9, "id": "v9", "action": "ping", "payload": {}}))
        envelopes, code = _read_to_close(ws)
    assert code == 4000
    assert sum(e["type"] == "ping.pong" for e in envelopes) == 30
    assert envelopes[-1]["type"] == "error"
    assert envelopes[-1]["payload"]["code"] == "UNSUPPORTED_VERSION"

    # 4001: the token expires while connected
    short = server.token("fr-bob", ttl_s=2)
    with _client(server, "fr-bob", token=short) as ws:
        for i in range(20):
            ws.send(json.dumps({"v": 1, "id": f"p{i}", "action": "ping", "payload": {}}))
        envelopes, code = _read_to_close(ws)
    assert code == 4001
    assert envelopes[-1]["payload"]["code"] == "TOKEN_EXPIRED"

    # 1012: SIGTERM; nine clients each get their system.reconnect intact
    with ExitStack() as stack:
        clients = [stack.enter_context(_client(server, f"fr-tab{i}")) for i in range(9)]
        for ws in clients:
            ws.send(json.dumps({"v": 1, "id": "p", "action": "ping", "payload": {}}))
            while json.loads(ws.recv(timeout=10).split("\n")[-1])["type"] != "ping.pong":
                pass
        server.signal()
        for ws in clients:
            envelopes, code = _read_to_close(ws)
            assert code == 1012
            assert envelopes[-1]["type"] == "system.reconnect"
            assert 1000 <= envelopes[-1]["payload"]["retryAfterMs"] <= 30_000
    assert server.wait(20) == 0


def test_node_ws_client_with_compression(make_server):
    """Node's `ws` offers permessage-deflate by default; every frame parses."""
    node = shutil.which("node")
    if node is None or not (NODE_CLIENTS / "node_modules" / "ws").exists():
        pytest.fail("node and tests/e2e/node/node_modules are installed by `make test`")
    server = make_server("--ws-compression", "on")
    result = subprocess.run(
        [node, str(NODE_CLIENTS / "ws_client.mjs"), server.ws_url, server.token("nd-alice"), "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary.get("error") is None, summary
    assert "permessage-deflate" in summary["extensions"]
    assert summary["unparsable"] == []
    assert summary["types"][0] == "session.welcome"
    assert summary["types"].count("ping.pong") == 30
    assert summary["last"]["payload"]["code"] == "UNSUPPORTED_VERSION"
    assert summary["code"] == 4000


class StuckReader:
    """A raw WebSocket client that completes the handshake and never reads again."""

    def __init__(self, server, user: str) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {server.token(user)}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def outcome(self) -> str:
        """After the server gave up on it: 'reset', 'closed 4008' or what it read."""
        self.sock.settimeout(10)
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "still open"
        close = data.rfind(b"\x88")
        if close >= 0 and len(data) >= close + 4:
            return f"closed {int.from_bytes(data[close + 2 : close + 4], 'big')}"
        return "eof"

    def close(self) -> None:
        self.sock.close()


def _flood(server, user: str, batches: int, size: int = 1000) -> None:
    """Durable events for `user` through the publish API, `size` per request."""
    with httpx.Client(timeout=60) as http:
        for b in range(batches):
            events = [
                {
                    "type": "sms.message.received",
                    "payload": {
                        "messageId": f"m{b}-{i}",
                        "from": "+15550001111",
                        "body": "x" * 400,
                        "receivedAt": "2026-12-01T00:00:00Z",
                    },
                    "to": {"users": [user]},
                }
                for i in range(size)
            ]
            response = http.post(
                f"{server.url}/realtime/events",
                json={"events": events},
                headers={"X-Api-Key": API_KEY},
            )
            assert response.status_code == 202, response.text


def _publishing_server(make_server, *args: str):
    return make_server(
        "--registry", str(REGISTRY), "--publish-api-keys", API_KEY, "--slow-consumer-timeout-s",
        "1", *args,
    )  # fmt: skip


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot(make_server):
    server = _publishing_server(make_server, "--max-connections-per-user", "1")
    stuck = StuckReader(server, "sr-alice")
    with pytest.raises(InvalidStatus) as refused:
        _client(server, "sr-alice")
    assert refused.value.response.status_code == 429
    started = time.monotonic()
    _flood(server, "sr-alice", batches=4)
    flooded = time.monotonic()
    while True:  # the slot comes back once the server has given up on the reader
        try:
            with _client(server, "sr-alice") as ws:
                welcome = json.loads(ws.recv(timeout=10).split("\n")[0])
            break
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            assert time.monotonic() - flooded < 30, "the stuck reader kept its slot"
            time.sleep(0.1)
    freed = time.monotonic()
    outcome = stuck.outcome()
    stuck.close()
    print(
        f"\nstuck reader: flood of 4,000 events took {flooded - started:.2f} s; slot free "
        f"{freed - flooded:.2f} s after it (slow-consumer timeout 1 s); the reader saw: {outcome}"
    )
    assert outcome in {"reset", "closed 4008"}
    assert welcome["payload"]["seq"] == 4000  # nothing was lost: all of it is in the stream


def test_sigterm_with_stuck_readers_exits_within_the_grace_period(make_server):
    grace = 3.0
    server = _publishing_server(make_server, "--grace-s", str(grace))
    readers = [StuckReader(server, f"sg-user{i}") for i in range(3)]
    for i in range(3):
        _flood(server, f"sg-user{i}", batches=1, size=600)
    started = time.monotonic()
    server.signal()
    code = server.wait(grace + 20)
    elapsed = time.monotonic() - started
    for reader in readers:
        reader.close()
    print(f"\nSIGTERM with 3 stuck readers: exited {code} after {elapsed:.2f} s (grace {grace} s)")
    assert code == 0
    assert elapsed < grace + 2.0


def test_concurrent_handshakes_never_exceed_the_limit_and_refusals_keep_tickets(make_server):
    limit = 5
    server = make_server("--max-connections-per-user", str(limit))
    token = server.token("hs-alice")
    with httpx.Client(timeout=10) as http:
        tickets = [
            http.post(
                f"{server.url}/realtime/tickets", headers={"Authorization": f"Bearer {token}"}
            ).json()["ticket"]
            for _ in range(30)
        ]
    barrier = threading.Barrier(len(tickets))

    stack = ExitStack()

    def attempt(ticket: str):
        barrier.wait()
        try:
            return stack.enter_context(connect(f"{server.ws_url}?ticket={ticket}", open_timeout=20))
        except InvalidStatus as exc:
            return exc.response.status_code

    with stack, ThreadPoolExecutor(len(tickets)) as pool:
        results = list(pool.map(attempt, tickets))
        accepted = [r for r in results if not isinstance(r, int)]
        refused = [t for t, r in zip(tickets, results, strict=True) if r == 429]
        print(f"\n{len(tickets)} concurrent handshakes, limit {limit}: {len(accepted)} accepted")
        assert len(accepted) == limit
        assert len(refused) == len(tickets) - limit
    # a ticket refused with 429 was not used up
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(f"{server.ws_url}?ticket={refused[0]}", open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "session.welcome"
            break
        except InvalidStatus as exc:
            assert exc.response.status_code == 429 and time.monotonic() < deadline
            time.sleep(0.05)


def test_a_compression_bomb_closes_1009_without_inflating(make_server):
    server = make_server("--ws-compression", "on")
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    for _ in range(3):
        with _client(server, "cb-alice") as ws:
            assert _deflate_negotiated(ws)
            ws.recv(timeout=10)
            ws.send("a" * 100_000_000)  # about 100 KB on the wire
            _envelopes, code = _read_to_close(ws)
        assert code == 1009
    grown = (process.memory_info().rss - before) / 2**20
    print(f"\nthree 100 MB compression bombs: server RSS grew {grown:.1f} MiB")
    assert grown < 32
