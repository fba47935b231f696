"""`POST /graphql` and the CORS preflights on the front's lean HTTP path, over real
sockets against `cutover serve`: polls after polls on one kept-alive connection,
answers the same as Hypercorn's (statuses, bodies, headers), a preflight then
posts on one connection staying on the lean path, refusals before the body,
and an `OPTIONS` that is no preflight going to Hypercorn.

Which stack answered shows in one place: a refused request with
`Expect: 100-continue` gets its refusal straight from the lean path, while
Hypercorn sends `100 Continue` before the app looks at the request."""

from __future__ import annotations

import json
import socket

import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.test_lean_http import Reader, _connect, _request

pytestmark = pytest.mark.e2e

ORIGIN = "http://app.example"
POLL = (
    "{ me { id } unreadNotificationCount realtimeCursor { epoch } "
    "realtimeConfig { websocketUrl domains { domain stage pollIntervalMs } } }"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    server = ServerProcess(
        tmp_path_factory.mktemp("lean-gql"), ["--allowed-origins", ORIGIN]
    ).start()
    yield server
    server.stop()


def _graphql(token: str | None, body: bytes, *headers: str) -> bytes:
    auth = [f"Authorization: Bearer {token}"] if token else []
    return _request("POST", "/graphql", [*auth, "Content-Type: application/json", *headers], body)


def _query(token: str | None, query: str, *headers: str, **variables) -> bytes:
    body = {"query": query, **({"variables": variables} if variables else {})}
    return _graphql(token, json.dumps(body).encode(), *headers)


def _preflight(origin: str, method: str = "POST") -> bytes:
    return _request(
        "OPTIONS",
        "/graphql",
        [
            f"Origin: {origin}",
            f"Access-Control-Request-Method: {method}",
            "Access-Control-Request-Headers: authorization, content-type",
        ],
        body=None,
    )


HEALTHZ = _request("GET", "/healthz", body=None)


def _answers(node: ServerProcess, requests: list[bytes], *, via_hypercorn: bool) -> list:
    """The answers to `requests` on one connection; with `via_hypercorn`, the
    connection starts with a `GET /healthz`, so Hypercorn serves all of them."""
    with _connect(node) as sock:
        reader = Reader(sock)
        if via_hypercorn:
            sock.sendall(HEALTHZ)
            assert reader.response()[0] == 200
        answers = []
        for request in requests:
            sock.sendall(request)
            status, headers, body = reader.response()
            headers.pop("date")
            answers.append((status, headers, body))
    return answers


def _refused_with_expect(sock: socket.socket, reader: Reader) -> list[int]:
    """Send a refused request (bad token) announcing a body behind `Expect: 100-continue`;
    the statuses read: [401] from the lean path, [100, 401] from Hypercorn."""
    head = _graphql("not-a-jwt", b"", "Expect: 100-continue")
    sock.sendall(head.replace(b"Content-Length: 0\r\n", b"Content-Length: 5\r\n"))
    statuses = [reader.response()[0]]
    if statuses[0] == 100:
        sock.sendall(b"{}{}{")
        statuses.append(reader.response()[0])
    return statuses


def test_answers_are_hypercorns_on_one_kept_alive_connection(node):
    alice = node.token("lean-gql-alice")
    requests = [
        _query(alice, POLL),
        _query(alice, POLL, f"Origin: {ORIGIN}"),
        _query(alice, POLL, "Origin: http://other.example"),
        _query(alice, "query($n: Int!) { me { id } }", n="x"),  # a variable of the wrong type
        _query(alice, "{ me { id }"),  # a syntax error
        _query(alice, '{ event(id: "none") { id } }'),
        _graphql(alice, b"{nope"),  # not JSON
        _graphql(alice, b"[1]"),  # not an object
        _graphql(None, b""),  # no token, an empty body: kept alive
        _graphql("not-a-jwt", b""),
        _query(alice, POLL).replace(b"Host: test\r\n", b"Host: test:80\r\n"),
        _query(alice, "{ me { id } }", "Connection: close"),
    ]
    lean = _answers(node, requests, via_hypercorn=False)
    hypercorn = _answers(node, requests, via_hypercorn=True)
    assert [status for status, _, _ in lean] == [200] * 3 + [400, 400, 200, 400, 400] + [
        401,
        401,
        200,
        200,
    ]
    for (status, headers, body), theirs in zip(lean, hypercorn, strict=True):
        assert (status, headers, json.loads(body)) == (theirs[0], theirs[1], json.loads(theirs[2]))
    data = json.loads(lean[0][2])["data"]
    assert data["me"] == {"id": "lean-gql-alice"}
    assert data["realtimeConfig"]["websocketUrl"] == "ws://test/ws"  # the Host header's
    default_port = json.loads(lean[-2][2])["data"]["realtimeConfig"]["websocketUrl"]
    assert default_port == "ws://test/ws"  # `Host: test:80`, as Quart's `request.host`
    assert lean[1][1]["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in lean[2][1]
    assert lean[8][1]["www-authenticate"] == "Bearer"
    assert lean[-1][1]["connection"] == "close"


def test_a_mutation_then_polls_on_one_connection(node):
    bob = "lean-gql-bob"
    admin, token = node.token("lean-gql-ops", admin=True), node.token(bob)
    create = 'mutation($u: ID!) { createNotification(userId: $u, kind: "K", text: "t") { id } }'
    requests = [
        _query(token, "{ unreadNotificationCount }"),
        _query(admin, create, u=bob),
        *[_query(token, "{ unreadNotificationCount }") for _ in range(5)],
    ]
    with _connect(node) as sock:
        sock.sendall(b"".join(requests[:2]))  # pipelined
        reader = Reader(sock)
        answers = [reader.response(), reader.response()]
        for request in requests[2:]:
            sock.sendall(request)
            answers.append(reader.response())
        assert _refused_with_expect(sock, reader) == [401]  # still the lean path
    assert [status for status, _, _ in answers] == [200] * 7
    counts = [json.loads(body)["data"].get("unreadNotificationCount") for _, _, body in answers]
    assert counts[0] == 0 and counts[2:] == [1] * 5
    assert json.loads(answers[1][2])["data"]["createNotification"]["id"]


def test_a_preflight_then_posts_stay_on_the_lean_path(node):
    alice = node.token("lean-gql-browser")
    with _connect(node) as sock:
        reader = Reader(sock)
        sock.sendall(_preflight(ORIGIN))
        status, headers, body = reader.response()
        assert (status, body) == (204, b"")
        assert headers["access-control-allow-origin"] == ORIGIN
        assert headers["access-control-allow-methods"] == "POST"
        assert headers["access-control-allow-headers"] == "Authorization, Content-Type"
        sock.sendall(_query(alice, "{ me { id } }", f"Origin: {ORIGIN}"))
        status, headers, body = reader.response()
        assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
        assert _refused_with_expect(sock, reader) == [401]
    # a preflight for the tickets endpoint keeps its connection on the lean path too
    with _connect(node) as sock:
        reader = Reader(sock)
        sock.sendall(_preflight(ORIGIN).replace(b"/graphql", b"/realtime/tickets", 1))
        assert reader.response()[0] == 204
        assert _refused_with_expect(sock, reader) == [401]


def test_preflight_answers_are_hypercorns(node):
    requests = [
        _preflight(ORIGIN),
        _preflight("http://other.example"),
        _preflight(ORIGIN, "DELETE"),
        _preflight(ORIGIN).replace(b"/graphql", b"/realtime/tickets", 1),
        _preflight(ORIGIN + "/"),
    ]
    lean = _answers(node, requests, via_hypercorn=False)
    hypercorn = _answers(node, requests, via_hypercorn=True)
    assert [status for status, _, _ in lean] == [204, 403, 403, 204, 204]
    assert lean == hypercorn
    assert json.loads(lean[1][2])["error"] == {
        "code": "FORBIDDEN",
        "message": "origin 'http://other.example' is not allowed",
    }


@pytest.mark.parametrize(
    "options",
    [
        _request("OPTIONS", "/graphql", [f"Origin: {ORIGIN}"], body=None),  # no preflight
        _request(  # a preflight with a body
            "OPTIONS",
            "/graphql",
            [f"Origin: {ORIGIN}", "Access-Control-Request-Method: POST"],
            body=b"{}",
        ),
    ],
    ids=["not-a-preflight", "with-a-body"],
)
def test_another_options_goes_to_hypercorn(node, options):
    lean = _answers(node, [options], via_hypercorn=False)
    hypercorn = _answers(node, [options], via_hypercorn=True)
    assert lean == hypercorn
    with _connect(node) as sock:
        reader = Reader(sock)
        sock.sendall(options)
        reader.response()
        assert _refused_with_expect(sock, reader) == [100, 401]  # Hypercorn's from then on


def test_refused_before_the_body_is_read(node):
    alice = node.token("lean-gql-big")
    big = (b"Content-Length: 0\r\n", b"Content-Length: 8388608\r\n")
    cases = [(_graphql(None, b"").replace(*big), 401), (_graphql(alice, b"").replace(*big), 413)]
    for head, expected in cases:
        with _connect(node) as sock:
            sock.sendall(head)  # and no body
            reader = Reader(sock)
            status, headers, body = reader.response()
            assert reader.closed()
        assert (status, headers["connection"]) == (expected, "close")
        assert json.loads(body)["error"]["code"] in {"UNAUTHORIZED", "PAYLOAD_TOO_LARGE"}
    assert "131,072" in json.loads(body)["error"]["message"]
