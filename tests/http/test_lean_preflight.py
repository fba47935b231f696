"""CORS preflights on the lean HTTP path, in process: answered there (the connection
stays), and an `OPTIONS` that is no preflight handed to Hypercorn with every byte
read of it and after it."""

from __future__ import annotations

import trio
import trio.testing

from tests.http.test_lean import Client, _lean, _post, _serve

PREFLIGHT = (
    b"OPTIONS /realtime/tickets HTTP/1.1\r\nHost: t\r\nOrigin: http://app.example\r\n"
    b"Access-Control-Request-Method: POST\r\n\r\n"
)


async def test_a_preflight_is_answered_and_the_connection_stays(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    reader = Client(client)
    following = _post(
        b"{}", b"Origin: http://app.example", b"Connection: close", path=b"/realtime/tickets"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, PREFLIGHT + following, result)
        status, headers, body = await reader.response()
        assert (status, body) == (204, b"")
        assert headers[b"access-control-allow-origin"] == b"http://app.example"
        assert headers[b"access-control-max-age"] == b"600"
        assert b"access-control-expose-headers" not in headers  # a preflight's own headers
        status, headers, _ = await reader.response()
        assert status == 202 and headers[b"access-control-allow-origin"] == b"http://app.example"
        assert await reader.closed()
    assert result == [None]  # served here to the end


async def test_an_options_that_is_no_preflight_is_handed_over_whole(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    options = b"OPTIONS /realtime/tickets HTTP/1.1\r\nHost: t\r\n"
    rest = b"Origin: http://app.example\r\n\r\n" + _post()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, options, result)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(rest)  # its head arrives in two parts
    assert result == [options + rest]


async def test_a_preflight_with_a_body_is_handed_over_whole(autojump_clock):
    _client, server = trio.testing.memory_stream_pair()
    lean, result = _lean(), []
    request = PREFLIGHT.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n{}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, lean, server, request, result)
    assert result == [request]
