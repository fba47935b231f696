"""The lean HTTP path in process, over in-memory streams with a virtual clock: its
timers (head, keep-alive, body, linger), the node stopping, a crash in an
endpoint, and the hand-off of another route's request."""

from __future__ import annotations

import json
import logging

import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig

from gateway.admission import Route
from gateway.app import Endpoint, LeanRoutes
from gateway.cors import Cors
from gateway.errors import Unauthorized
from gateway.http_lean import LINGER_S, LeanHttp

HEAD_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 75.0
BODY_TIMEOUT_S = 60.0


async def _authenticate(headers) -> str:
    if headers.get("x-api-key") != "k":
        raise Unauthorized("unknown API key")
    return "credential"


async def _echo(credential, data: bytes, overflowed: bool) -> tuple[int, object]:
    return 202, {"credential": credential, "body": data.decode(), "overflowed": overflowed}


async def _crash(credential, data: bytes, overflowed: bool) -> tuple[int, object]:
    raise RuntimeError("a bug, not a refusal")


async def _app(scope, receive, send) -> None:  # pragma: no cover - never called here
    raise AssertionError


def _lean(run=_echo) -> LeanHttp:
    config = HypercornConfig()
    config.keep_alive_timeout = KEEP_ALIVE_S
    routes = LeanRoutes(
        endpoints={
            "/realtime/events": Endpoint(Route(100, _authenticate), run),
            "/realtime/tickets": Endpoint(Route(100, _authenticate), run),
        },
        cors=Cors(_app, ["http://app.example"]),
        body_timeout_s=BODY_TIMEOUT_S,
    )
    return LeanHttp(routes, config, head_timeout_s=HEAD_TIMEOUT_S)


def _post(body: bytes = b"{}", *headers: bytes, path: bytes = b"/realtime/events") -> bytes:
    head = [b"POST " + path + b" HTTP/1.1", b"Host: t", b"X-Api-Key: k", *headers]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Client:
    """The client side of an in-memory connection: responses read in order."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.data = bytearray()

    async def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.data:
            chunk = await self.stream.receive_some()
            assert chunk, bytes(self.data)
            self.data += chunk
        end = self.data.index(b"\r\n\r\n")
        lines = bytes(self.data[:end]).split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), value.strip())
        length = int(headers.get(b"content-length", b"0"))
        while len(self.data) < end + 4 + length:
            self.data += await self.stream.receive_some()
        body = bytes(self.data[end + 4 : end + 4 + length])
        del self.data[: end + 4 + length]
        return int(lines[0].split(b" ")[1]), headers, body

    async def closed(self) -> bool:
        return not self.data and await self.stream.receive_some() == b""


async def _serve(lean: LeanHttp, server, data: bytes, result: list) -> None:
    """As the front: serve, then close the connection."""
    try:
        result.append(await lean.serve(server, data))
    finally:
        await server.aclose()


async def test_a_crash_in_the_endpoint_answers_500_in_json(caplog):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(_crash), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post(b"{}", b"Connection: close"), result)
        status, headers, body = await Client(client).response()
    assert status == 500
    assert json.loads(body) == {"error": {"code": "INTERNAL", "message": "internal error"}}
    assert headers[b"content-type"] == b"application/json"
    assert result == [None]
    crash = [r for r in caplog.records if r.name == "cutover.app" and r.levelno == logging.ERROR]
    assert crash and crash[0].getMessage() == "unhandled error in POST /realtime/events"


async def test_keep_alive_until_the_idle_timeout(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    reader = Client(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post(b'{"n": 1}'), result)
        status, headers, body = await reader.response()
        assert status == 202 and json.loads(body)["body"] == '{"n": 1}'
        await trio.sleep(KEEP_ALIVE_S - 1)
        await client.send_all(_post(b'{"n": 2}', path=b"/realtime/tickets"))
        status, headers, body = await reader.response()
        assert status == 202 and json.loads(body)["body"] == '{"n": 2}'
        assert headers[b"vary"] == b"Origin"  # CORS on the tickets path
        started = trio.current_time()
        assert await reader.closed()
        assert trio.current_time() - started == pytest.approx(KEEP_ALIVE_S)
    assert result == [None]


async def test_the_rest_of_a_head_within_the_head_timeout(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _serve, lean, server, b"POST /realtime/events HTTP/1.1\r\nHost: t\r\n", result
        )
        started = trio.current_time()
        assert await Client(client).closed()  # silently, as Hypercorn's idle timer
        assert trio.current_time() - started == pytest.approx(HEAD_TIMEOUT_S)
    assert result == [None]


async def test_a_body_within_quarts_body_timeout(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    reader = Client(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post(b'{"n": 1}')[:-3], result)
        started = trio.current_time()
        status, headers, body = await reader.response()
        assert trio.current_time() - started == pytest.approx(BODY_TIMEOUT_S)
        assert await reader.closed()
    assert status == 408
    assert headers[b"connection"] == b"close"
    assert json.loads(body)["error"]["code"] == "BAD_REQUEST"
    assert result == [None]


async def test_another_routes_request_is_handed_back_with_its_bytes(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    following = b"POST /realtime/events?x=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /x"
    async with trio.open_nursery() as nursery:  # its line arrives in two parts
        nursery.start_soon(_serve, lean, server, _post() + following[:17], result)
        assert (await Client(client).response())[0] == 202
        await trio.testing.wait_all_tasks_blocked()
        assert not result  # the route is not known yet
        await client.send_all(following[17:])
    assert result == [following]


@pytest.mark.parametrize(
    "following",
    [
        b"POST /realtime/events HTTP/1.0\r\n",
        b"POST /realtime/events?x=1 HTTP/1.1\r\n",
        b"OPTIONS /realtime/events HTTP/1.1\r\n",  # no preflight of browsers on this path
    ],
)
async def test_only_the_exact_request_lines_stay(autojump_clock, following):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post() + following, result)
        assert (await Client(client).response())[0] == 202
    assert result == [following]


async def test_stopping_closes_an_idle_connection_at_once(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    reader = Client(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post(), result)
        assert (await reader.response())[0] == 202
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        lean.stop()
    assert result == [None] and trio.current_time() == started


async def test_stopping_mid_request_answers_with_connection_close(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    reader = Client(client)
    request = _post(b'{"n": 1}')
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, request[:-3], result)  # its body in flight
        await trio.testing.wait_all_tasks_blocked()
        lean.stop()
        await client.send_all(request[-3:] + _post(b'{"n": 2}'))  # the second is not served
        status, headers, body = await reader.response()
        assert await reader.closed()
    assert status == 202 and json.loads(body)["body"] == '{"n": 1}'
    assert headers[b"connection"] == b"close"
    assert result == [None]


async def test_a_refused_bodys_rest_is_dropped_for_a_while(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    reader = Client(client)
    refused = _post(b"x" * 5_000)  # over the limit of 100 bytes
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, refused[:200], result)
        status, headers, _ = await reader.response()
        assert status == 413
        assert headers[b"connection"] == b"close"
        started = trio.current_time()
        for _ in range(3):  # the client still sends; it is read and dropped
            await client.send_all(b"x" * 1000)
            await trio.sleep(0.5)
        assert not result  # still reading
    assert result == [None]
    assert trio.current_time() - started == pytest.approx(LINGER_S)


async def test_an_error_of_the_path_itself_ends_the_connection_only(caplog, monkeypatch):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []

    def broken(*args) -> None:
        raise RuntimeError("a bug in the lean path")

    monkeypatch.setattr(lean, "_headers", broken)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post(), result)
        assert await Client(client).closed()
    assert result == [None]
    assert any("lean HTTP path" in r.getMessage() for r in caplog.records)


async def test_a_close_with_pipelined_requests_unread_drains_them_first(autojump_clock):
    """Closing with unread bytes would reset the connection and could lose the
    answer already sent: the rest is read and dropped until the client closes."""
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    lean.config.keep_alive_max_requests = 1
    reader = Client(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, _post(b'{"n": 1}') + _post(b'{"n": 2}'), result)
        status, headers, _ = await reader.response()
        assert status == 202 and headers[b"connection"] == b"close"
        assert await reader.closed()  # the server's end is shut for writing ...
        await trio.testing.wait_all_tasks_blocked()
        assert not result  # ... while it still reads
        await client.aclose()
    assert result == [None]
