"""The front acceptor: one port, `/ws` upgrades to the push path's own transport,
every other connection to Hypercorn (keep-alive, pipelining, slow clients)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e

UPGRADE = (
    "GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n"
    "{extra}\r\n"
)


def _raw(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65536)
    return status, headers, body[:length]


def test_keep_alive_http_and_websockets_share_the_port(server):
    token = server.token("fr-alice")
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(5):
            assert http.get(f"{server.url}/healthz").status_code == 200
            response = http.post(
                f"{server.url}/graphql",
                json={"query": "{ unreadNotificationCount }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            with connect(
                server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}
            ) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "session.welcome"


def test_pipelined_requests_are_answered_in_order(server):
    with _raw(server) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        statuses = [_read_response(sock)[0] for _ in range(3)]
    assert statuses == [200, 404, 200]


def test_a_trickled_request_line_is_routed(server):
    token = server.token("fr-bob")
    request = UPGRADE.format(
        query="", version=13, extra=f"Authorization: Bearer {token}\r\n"
    ).encode()
    with _raw(server) as sock:
        for i in range(0, len(request), 7):
            sock.sendall(request[i : i + 7])
            time.sleep(0.001)
        status, headers, _ = _read_response(sock)
    assert status == 101 and headers["upgrade"] == "websocket"
    with _raw(server) as sock:
        for part in (b"GE", b"T /hea", b"lthz HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
            sock.sendall(part)
            time.sleep(0.01)
        assert _read_response(sock)[0] == 200


@pytest.mark.parametrize(
    ("request_text", "status", "code"),
    [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, "BAD_REQUEST"),
        (UPGRADE.format(query="", version=8, extra=""), 426, "BAD_REQUEST"),
        (UPGRADE.format(query="", version=13, extra=""), 401, "UNAUTHORIZED"),
        (UPGRADE.format(query="?ticket=forged", version=13, extra=""), 401, "UNAUTHORIZED"),
    ],
    ids=["no-upgrade", "version-8", "no-credentials", "forged-ticket"],
)
def test_refused_handshakes_answer_json_and_close(server, request_text, status, code):
    with _raw(server) as sock:
        sock.sendall(request_text.encode())
        got, headers, body = _read_response(sock)
        assert sock.recv(1) == b""  # the connection is closed after a refusal
    assert got == status
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == code
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
    if status == 401:
        assert headers["www-authenticate"] == "Bearer"
