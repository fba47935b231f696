"""The front's lean HTTP path for `POST /realtime/events` and `POST /realtime/tickets`,
over real sockets against `cutover serve`: keep-alive with other routes on the same
connection, pipelining, chunked bodies, bodies refused before they are read,
`Expect: 100-continue`, malformed requests, and a node stopping mid keep-alive."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "examples" / "registry"
API_KEY = "pk_lean_0123456789abcdef"
LIMIT = 2_000  # --publish-max-body-bytes of these nodes
NODE_ARGS = [
    "--registry",
    str(REGISTRY),
    "--publish-api-keys",
    API_KEY,
    "--publish-max-body-bytes",
    str(LIMIT),
    "--allowed-origins",
    "http://app.example",
]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("lean"), list(NODE_ARGS)).start()
    yield server
    server.stop()


def _event(user: str, n: int = 1) -> bytes:
    return json.dumps(
        {
            "type": "goal.activity.created",
            "payload": {
                "goalId": "g1",
                "activity": {
                    "id": f"a{n}",
                    "kind": "progress",
                    "actorId": "alice",
                    "progress": n,
                    "createdAt": "2026-02-17T10:00:00Z",
                },
            },
            "to": {"users": [user]},
        }
    ).encode()


def _request(
    method: str, path: str, headers: Sequence[str] = (), body: bytes | None = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    if body is not None and not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def _publish(user: str, *headers: str, n: int = 1) -> bytes:
    return _request(
        "POST", "/realtime/events", [f"X-Api-Key: {API_KEY}", *headers], _event(user, n)
    )


def _ticket(node: ServerProcess, *headers: str) -> bytes:
    token = node.token("lean-ticket-user")
    return _request("POST", "/realtime/tickets", [f"Authorization: Bearer {token}", *headers])


def _connect(node: ServerProcess) -> socket.socket:
    host, port = node.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


class Reader:
    """Responses read off one socket, in order (informational ones too)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.data += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.data:
            assert self._fill(), f"closed mid-response: {bytes(self.data)!r}"
        end = self.data.index(b"\r\n\r\n")
        lines = self.data[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        length = int(headers.get("content-length", "0")) if status >= 200 else 0
        while len(self.data) < end + 4 + length:
            assert self._fill(), "closed mid-body"
        body = bytes(self.data[end + 4 : end + 4 + length])
        del self.data[: end + 4 + length]
        return status, headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (after what was read)."""
        try:
            return not self.data and not self._fill()
        except ConnectionResetError:
            return True


def test_keep_alive_then_other_routes_on_the_same_connection(node):
    with _connect(node) as sock:
        reader = Reader(sock)
        steps = [
            (_publish("lean-ka", n=1), 202),
            (_ticket(node), 201),
            (_request("GET", "/healthz", body=None), 200),  # from here on: Hypercorn
            (_publish("lean-ka", n=2), 202),
            (_ticket(node), 201),
            (_request("POST", "/graphql", [f"Authorization: Bearer {node.token('x')}"], b"{"), 400),
            (_publish("lean-ka", "Connection: close", n=3), 202),
        ]
        answers = []
        for request, _status in steps:
            sock.sendall(request)
            answers.append(reader.response())
        assert [status for status, _, _ in answers] == [status for _, status in steps]
        assert reader.closed()
    seqs = [
        json.loads(body)["results"][0]["recipients"]["lean-ka"]
        for s, _, body in answers
        if s == 202
    ]
    assert seqs == [1, 2, 3]
    for _, headers, _ in answers:
        assert headers["content-type"] == "application/json"
        assert headers["server"] == "hypercorn-h11" and "date" in headers
    ticket = json.loads(answers[1][2])
    assert set(ticket) == {"ticket", "expiresAt"} and answers[1][1]["vary"] == "Origin"


def test_pipelined_requests_are_answered_in_order(node):
    requests = [
        _publish("lean-pipe", n=1),
        _ticket(node, "Origin: http://app.example"),
        _publish("lean-pipe", n=2),
        _request("POST", "/realtime/events", [f"X-Api-Key: {API_KEY}"], b"{not json"),
        _publish("lean-pipe", n=3),
        _request("GET", "/healthz", body=None),
        _publish("lean-pipe", "Connection: close", n=4),
    ]
    with _connect(node) as sock:
        sock.sendall(b"".join(requests))
        reader = Reader(sock)
        answers = [reader.response() for _ in requests]
        assert reader.closed()
    assert [status for status, _, _ in answers] == [202, 201, 202, 400, 202, 200, 202]
    assert answers[1][1]["access-control-allow-origin"] == "http://app.example"
    assert json.loads(answers[3][2])["error"]["code"] == "BAD_REQUEST"
    seqs = [
        json.loads(body)["results"][0]["recipients"]["lean-pipe"]
        for s, _, body in answers
        if s == 202
    ]
    assert seqs == [1, 2, 3, 4]


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_and_one_over_the_limit_refused(node):
    event = _event("lean-chunked")
    head = _request(
        "POST",
        "/realtime/events",
        [f"X-Api-Key: {API_KEY}", "Transfer-Encoding: chunked"],
        body=None,
    )
    with _connect(node) as sock:
        reader = Reader(sock)
        sock.sendall(head + _chunked(event[:7], event[7:100], event[100:]))
        status, headers, body = reader.response()
        assert status == 202, body
        assert "connection" not in headers
        sock.sendall(head)
        for part in (b"x" * 1500, b"y" * 1500):  # over the limit on the second chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        status, headers, body = reader.response()
        assert reader.closed()
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "code": "PAYLOAD_TOO_LARGE",
            "message": f"the request body is over {LIMIT:,} bytes, this endpoint's limit",
        }
    }


def test_an_oversized_body_is_refused_before_it_is_read(node):
    head = _request(
        "POST", "/realtime/events", [f"X-Api-Key: {API_KEY}", "Content-Length: 10000000"], None
    )
    with _connect(node) as sock:
        sock.sendall(head)  # and no body: the answer comes anyway
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert reader.closed()
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["message"] == (
        f"the request body is 10,000,000 bytes; this endpoint takes at most {LIMIT:,}"
    )
    # a client that sends the body whole before reading reads the answer, not a reset
    with _connect(node) as sock:
        sock.sendall(_request("POST", "/realtime/events", ["X-Api-Key: wrong"], b"x" * 3_000_000))
        status, headers, body = Reader(sock).response()
    assert status == 401 and headers["connection"] == "close"
    assert headers["www-authenticate"] == "Bearer"


def test_expect_100_continue_only_once_admitted(node):
    event = _event("lean-expect")
    with _connect(node) as sock:
        reader = Reader(sock)
        sock.sendall(_publish("lean-expect", "Expect: 100-continue")[: -len(event)])
        assert reader.response()[0] == 100
        sock.sendall(event)
        status, _, body = reader.response()
        assert status == 202, body
    with _connect(node) as sock:
        reader = Reader(sock)
        sock.sendall(
            _request(
                "POST", "/realtime/events", ["X-Api-Key: wrong", "Expect: 100-continue"], event
            )[: -len(event)]
        )
        status, headers, body = reader.response()  # the refusal, without a 100 first
        assert reader.closed()
    assert status == 401 and headers["connection"] == "close"
    assert json.loads(body)["error"] == {"code": "UNAUTHORIZED", "message": "unknown API key"}


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /realtime/events HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"POST /realtime/tickets HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400),
        (b"POST /realtime/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),  # no Host
        # a head still incomplete past h11's 16 KiB
        (b"POST /realtime/events HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 20_000, 431),
    ],
    ids=["bad-header", "bad-length", "no-host", "head-too-large"],
)
def test_a_malformed_request_is_answered_and_closed(node, request_bytes, status):
    with _connect(node) as sock:
        sock.sendall(request_bytes)
        reader = Reader(sock)
        got, headers, body = reader.response()
        assert reader.closed()
    assert (got, headers["content-length"], headers["connection"], body) == (
        status,
        "0",
        "close",
        b"",
    )


def test_a_stopping_node_closes_idle_connections_and_finishes_requests(tmp_path):
    node = ServerProcess(tmp_path, [*NODE_ARGS, "--grace-s", "20"]).start()
    try:
        event = _event("lean-stop", 2)
        with _connect(node) as idle, _connect(node) as busy:
            idle_reader, busy_reader = Reader(idle), Reader(busy)
            idle.sendall(_publish("lean-stop", n=1))
            assert idle_reader.response()[0] == 202  # then kept alive, idle
            # a request in flight: its head read (the 100 says so), its body not yet whole
            busy.sendall(_publish("lean-stop", "Expect: 100-continue", n=2)[: -len(event)])
            assert busy_reader.response()[0] == 100
            busy.sendall(event[:-10])
            started = time.monotonic()
            node.signal(signal.SIGTERM)
            assert idle_reader.closed()  # closed at once, not at the grace deadline
            assert time.monotonic() - started < 10
            busy.sendall(event[-10:])
            status, headers, body = busy_reader.response()
            assert busy_reader.closed()
        assert status == 202, body
        assert headers["connection"] == "close"
        assert node.wait(20) == 0
        assert time.monotonic() - started < 15
    finally:
        node.stop()
