"""Topic authorization for custom topics: public, tenant, and the app's callback.

The callback tests talk to a real HTTP server on a free local port, run in
a thread (`http.server`), so the client under test (httpx on Trio) is not
the server's stack.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs
import pytest
import trio

from gateway.registry import TopicAuthorizer, build_registry, tenant_of_topic


@attrs.define
class AuthApp:
    """The app's authorization endpoint: answers by a table, records each request."""

    allowed: set[tuple[str, str]] = attrs.Factory(set)
    status: int = 200
    body: str | None = None
    hold: threading.Event | None = None
    requests: list[dict] = attrs.Factory(list)
    url: str = ""


@pytest.fixture
def auth_app() -> Iterator[AuthApp]:
    app = AuthApp()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            request = json.loads(self.rfile.read(length))
            app.requests.append(request)
            if app.hold is not None:
                app.hold.wait(5)
            body = app.body
            if body is None:
                verdict = (request["userId"], request["topic"]) in app.allowed
                body = json.dumps({"allow": verdict})
            data = body.encode()
            self.send_response(app.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            pass  # the client gave up on a held answer: expected in the timeout test

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    app.url = f"http://127.0.0.1:{server.server_address[1]}/realtime/authorize"
    try:
        yield app
    finally:
        if app.hold is not None:
            app.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def registry_for(callback_url: str = "http://127.0.0.1:9/none", cache_seconds: float = 30):
    return build_registry(
        [],
        [
            ("mem:room", {"topic": "room", "auth": "public"}),
            ("mem:goal", {"topic": "goal", "auth": "tenant"}),
            (
                "mem:post",
                {
                    "topic": "post",
                    "auth": "callback",
                    "callbackUrl": callback_url,
                    "cacheSeconds": cache_seconds,
                },
            ),
        ],
    )


def test_tenant_of_topic():
    assert tenant_of_topic("goal:acme/g1") == "acme"
    assert tenant_of_topic("goal:acme/team/g1") == "acme"
    assert tenant_of_topic("goal:g1") is None
    assert tenant_of_topic("goal:/g1") is None
    assert tenant_of_topic("goal:acme/") is None


async def test_public_tenant_and_builtin_topics():
    auth = TopicAuthorizer(registry_for())
    assert await auth.allowed("u1", None, "room:lobby") is True
    assert await auth.allowed("u1", "acme", "goal:acme/g1") is True
    assert await auth.allowed("u1", "globex", "goal:acme/g1") is False
    assert await auth.allowed("u1", None, "goal:acme/g1") is False
    assert await auth.allowed("u1", "acme", "goal:g1") is False
    assert await auth.allowed("u1", "acme", "conversation:c1") is None
    assert await auth.allowed("u1", "acme", "unknown:x") is None


async def test_callback_allows_and_denies(auth_app: AuthApp, mock_clock):
    auth_app.allowed.add(("u1", "post:p1"))
    auth = TopicAuthorizer(registry_for(auth_app.url))
    with trio.fail_after(10):
        assert await auth.allowed("u1", "acme", "post:p1") is True
        assert await auth.allowed("u2", None, "post:p1") is False
    assert auth_app.requests == [
        {"userId": "u1", "tenant": "acme", "topic": "post:p1"},
        {"userId": "u2", "tenant": None, "topic": "post:p1"},
    ]


async def test_callback_answers_are_cached_per_user_and_topic(auth_app: AuthApp, mock_clock):
    auth_app.allowed.add(("u1", "post:p1"))
    auth = TopicAuthorizer(registry_for(auth_app.url, cache_seconds=30))
    with trio.fail_after(100):  # the test itself moves the clock 31 s
        assert await auth.allowed("u1", None, "post:p1") is True
        assert await auth.allowed("u2", None, "post:p1") is False
        mock_clock.jump(29)
        auth_app.allowed.clear()
        auth_app.allowed.add(("u2", "post:p1"))
        # Within cacheSeconds: the app is not asked again, allow and deny alike.
        assert await auth.allowed("u1", None, "post:p1") is True
        assert await auth.allowed("u2", None, "post:p1") is False
        assert len(auth_app.requests) == 2
        # A different topic for the same user is its own question.
        assert await auth.allowed("u1", None, "post:p2") is False
        assert len(auth_app.requests) == 3
        mock_clock.jump(2)
        # Expired: asked again, the new answers hold.
        assert await auth.allowed("u1", None, "post:p1") is False
        assert await auth.allowed("u2", None, "post:p1") is True
        assert len(auth_app.requests) == 5


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, '{"allow": true}'),
        (403, '{"allow": true}'),
        (200, "not json"),
        (200, '{"allow": "yes"}'),
        (200, "[true]"),
    ],
)
async def test_callback_fails_closed_on_bad_answers(auth_app: AuthApp, mock_clock, status, body):
    auth_app.status, auth_app.body = status, body
    auth = TopicAuthorizer(registry_for(auth_app.url))
    with trio.fail_after(10):
        assert await auth.allowed("u1", None, "post:p1") is False
        # Failures are not cached: the next subscribe asks again.
        auth_app.status, auth_app.body = 200, '{"allow": true}'
        assert await auth.allowed("u1", None, "post:p1") is True
    assert len(auth_app.requests) == 2


async def test_callback_fails_closed_when_unreachable():
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: connection refused.
    auth = TopicAuthorizer(registry_for(f"http://127.0.0.1:{port}/authorize"))
    with trio.fail_after(10):
        assert await auth.allowed("u1", None, "post:p1") is False


async def test_callback_fails_closed_on_timeout(auth_app: AuthApp):
    """Real clock: the app holds its answer past the (shortened) timeout."""
    auth_app.hold = threading.Event()
    auth = TopicAuthorizer(registry_for(auth_app.url), callback_timeout_s=0.2)
    with trio.fail_after(5):
        started = trio.current_time()
        assert await auth.allowed("u1", None, "post:p1") is False
        assert trio.current_time() - started < 2
    auth_app.hold.set()


async def test_follows_the_watchers_current_registry(auth_app: AuthApp):
    class Holder:
        current = registry_for(auth_app.url)

    auth = TopicAuthorizer(Holder())
    assert await auth.allowed("u1", None, "room:r1") is True
    Holder.current = build_registry([], [("mem:room", {"topic": "room", "auth": "tenant"})])
    assert await auth.allowed("u1", None, "room:r1") is False
