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


def _read_response(sock: socket.socket, pending: bytearray | None = None):
    """One response: (status, headers, body); bytes read beyond it stay in `pending`."""
    data = pending if pending is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, bytes(data)
        data += chunk
    end = data.index(b"\r\n\r\n")
    lines = data[:end].decode("latin1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(data) < end + 4 + length:
        data += sock.recv(65536)
    body = bytes(data[end + 4 : end + 4 + length])
    del data[: end + 4 + length]
    return status, headers, body


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
        pending = bytearray()
        statuses = [_read_response(sock, pending)[0] for _ in range(3)]
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


def _notify(server, user: str, text: str) -> None:
    admin = server.token("fr-admin", admin=True)
    response = httpx.post(
        f"{server.url}/graphql",
        json={
            "query": "mutation($u: ID!, $t: String!) { createNotification(userId: $u, "
            'kind: "test", text: $t) { id } }',
            "variables": {"u": user, "t": text},
        },
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text


def test_resume_in_the_handshake_replays_before_any_live_event(server):
    user = "fr-resumer"
    token = server.token(user)
    headers = {"Authorization": f"Bearer {token}"}
    with connect(server.ws_url, additional_headers=headers) as ws:
        welcome = json.loads(ws.recv(timeout=10))
    epoch, start = welcome["payload"]["epoch"], welcome["payload"]["seq"]
    for n in range(5):
        _notify(server, user, f"missed {n}")
    url = f"{server.ws_url}?epoch={epoch}&lastSeq={start}"
    seqs, kinds = [], []
    with connect(url, additional_headers=headers) as ws:
        while "session.resumed" not in kinds:
            for line in ws.recv(timeout=10).split("\n"):
                envelope = json.loads(line)
                kinds.append(envelope["type"])
                if envelope.get("seq") is not None:
                    seqs.append(envelope["seq"])
        _notify(server, user, "live")
        while len(seqs) < 6:
            for line in ws.recv(timeout=10).split("\n"):
                envelope = json.loads(line)
                if envelope.get("seq") is not None:
                    seqs.append(envelope["seq"])
    assert kinds[0] == "session.welcome"
    assert seqs == list(range(start + 1, start + 7))  # the replay, then live, each once


def test_a_malformed_handshake_resume_is_refused_before_the_upgrade(server):
    token = server.token("fr-badresume")
    with _raw(server) as sock:
        sock.sendall(
            UPGRADE.format(
                query="?epoch=e1&lastSeq=-3", version=13, extra=f"Authorization: Bearer {token}\r\n"
            ).encode()
        )
        status, _headers, body = _read_response(sock)
    assert status == 400
    assert json.loads(body)["error"]["path"] == "lastSeq"


def test_a_websocket_session_outlives_the_request_head_timeout(make_server):
    """Only the request head is read under `--head-timeout-s`; the session is not."""
    node = make_server("--head-timeout-s", "1")
    token = node.token("fr-long")
    with connect(node.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.welcome"
        time.sleep(2.5)
        ws.send(json.dumps({"v": 1, "id": "p", "action": "ping", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ping.pong"
    with _raw(node) as sock:  # a client that sends nothing is dropped after the timeout
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 5
