"""The push path's own WebSocket transport, over in-memory streams.

The peer is wsproto's client side, so what the server writes is parsed by an
independent WebSocket implementation, with permessage-deflate on or off.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from wsproto.connection import Connection as WsProtocol
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from gateway.ws.transport import TransportClosed
from gateway.ws.wire import BoundedDeflate, WireSettings, WireTransport, negotiate_deflate

ON = WireSettings(compression="on", max_message_bytes=65_536, send_timeout_s=5.0)
OFF = WireSettings(compression="off", max_message_bytes=65_536, send_timeout_s=5.0)


class Peer:
    """The client end: wsproto over the other half of the stream pair."""

    def __init__(self, stream: trio.abc.Stream, compressed: bool) -> None:
        self.stream = stream
        extensions = None
        if compressed:
            deflate = PerMessageDeflate()
            deflate.finalize(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            )
            extensions = [deflate]
        self.ws = WsProtocol(ConnectionType.CLIENT, extensions=extensions)
        self.pending: list[str] = []
        self.parts: list[str] = []

    async def send(self, event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self):
        while True:
            for event in self.ws.events():
                return event
            data = await self.stream.receive_some(65_536)
            self.ws.receive_data(data or None)

    async def message(self) -> str:
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage):
                self.parts.append(event.data)
                if event.message_finished:
                    text, self.parts = "".join(self.parts), []
                    return text
            elif not isinstance(event, Ping | Pong):
                raise AssertionError(f"expected a message, got {event!r}")


def _pair(settings: WireSettings, *, lockstep: bool = False) -> tuple[WireTransport, Peer]:
    make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    server_stream, client_stream = make()
    extension = None
    if settings.compression == "on":
        negotiated = negotiate_deflate(["permessage-deflate; client_max_window_bits"], settings)
        assert negotiated is not None
        extension = negotiated[0]
    transport = WireTransport(server_stream, settings, extension=extension)
    return transport, Peer(client_stream, compressed=extension is not None)


def test_negotiation_answers_without_context_takeover_and_bounds_the_window():
    negotiated = negotiate_deflate(["permessage-deflate; client_max_window_bits"], ON)
    assert negotiated is not None
    assert negotiated[1] == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "client_max_window_bits=12"
    )
    _ext, header = negotiate_deflate(["permessage-deflate; server_max_window_bits=15"], ON)
    assert "server_max_window_bits=12" in header
    assert negotiate_deflate(["permessage-deflate"], OFF) is None
    assert negotiate_deflate(["x-webkit-deflate-frame"], ON) is None
    assert negotiate_deflate([], ON) is None


@pytest.mark.parametrize("settings", [ON, OFF], ids=["deflate", "plain"])
async def test_frames_arrive_whole_and_in_order_when_senders_are_cancelled(settings):
    """A send cancelled while its frame is half-written still writes it whole, once,
    so the next frame (compressed after it) decodes too."""
    transport, peer = _pair(settings, lockstep=True)
    texts = [json.dumps({"n": n, "pad": "x" * (5_000 + n)}) for n in range(6)]

    async def sender(text: str, cancel_after: bool) -> None:
        with trio.CancelScope() as scope:
            if cancel_after:
                scope.cancel()  # cancelled before its first checkpoint inside send
            await transport.send(text)

    received: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for n, text in enumerate(texts):
                nursery.start_soon(sender, text, n % 2 == 0)
                await trio.testing.wait_all_tasks_blocked()
            for _ in texts:
                received.append(await peer.message())
    assert sorted(received, key=lambda t: json.loads(t)["n"]) == texts
    assert len(set(received)) == len(texts)


async def test_a_write_blocked_past_the_send_timeout_ends_the_transport(autojump_clock):
    settings = WireSettings(send_timeout_s=1.0)
    transport, _peer = _pair(settings, lockstep=True)  # the peer never reads
    start = trio.current_time()
    with pytest.raises(TransportClosed, match="slow consumer"):
        await transport.send("x" * 100)
    assert trio.current_time() - start == pytest.approx(1.0)
    with pytest.raises(TransportClosed):
        await transport.send("again")
    await transport.close(4008, "slow consumer")  # nothing more can be written: no wait


async def test_a_compressed_message_inflating_past_the_limit_closes_1009():
    settings = WireSettings(compression="on", max_message_bytes=10_000, close_timeout_s=1.0)
    transport, peer = _pair(settings)
    await peer.send(TextMessage(data="a" * 5_000_000))  # about 5 KB on the wire
    with pytest.raises(TransportClosed) as closed:
        await transport.receive()
    assert closed.value.close_code == 1009


async def test_a_message_within_the_limit_inflates_whole():
    transport, peer = _pair(ON)
    text = json.dumps({"v": 1, "action": "ping", "payload": {"pad": "y" * 60_000}})
    await peer.send(TextMessage(data=text))
    assert await transport.receive() == text


async def test_fragments_are_joined_and_an_oversized_fragmented_message_closes_1009():
    transport, peer = _pair(WireSettings(max_message_bytes=1_000))
    await peer.send(TextMessage(data="ab", message_finished=False))
    await peer.send(TextMessage(data="cd", message_finished=True))
    assert await transport.receive() == "abcd"
    for _ in range(3):
        await peer.send(TextMessage(data="z" * 400, message_finished=False))
    with pytest.raises(TransportClosed) as closed:
        await transport.receive()
    assert closed.value.close_code == 1009


async def test_pings_are_answered_while_receiving():
    transport, peer = _pair(OFF)
    await peer.send(Ping(payload=b"hi"))
    await peer.send(TextMessage(data="after"))
    assert await transport.receive() == "after"
    event = await peer.next_event()
    assert isinstance(event, Pong) and event.payload == b"hi"


async def test_close_sends_the_code_and_waits_for_the_peers_close():
    transport, peer = _pair(ON)
    await transport.send("last words")

    async def client() -> list:
        seen = [await peer.message()]
        event = await peer.next_event()
        seen.append(event)
        await peer.send(event.response())
        return seen

    async with trio.open_nursery() as nursery:
        results: list = []

        async def run_client() -> None:
            results.extend(await client())

        nursery.start_soon(run_client)
        await transport.close(4001, "token expired")
    assert results[0] == "last words"
    assert isinstance(results[1], CloseConnection) and results[1].code == 4001
    with pytest.raises(TransportClosed):
        await transport.send("after close")


async def test_the_peers_close_is_answered_and_ends_receive():
    transport, peer = _pair(OFF)
    await peer.send(CloseConnection(code=1000, reason="bye"))
    with pytest.raises(TransportClosed) as closed:
        await transport.receive()
    assert closed.value.close_code is None
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1000


def test_bounded_deflate_compresses_with_the_bounded_window():
    extension = BoundedDeflate(window_bits=10, memory_level=4, max_message_bytes=1_000)
    assert extension.accept("permessage-deflate") == (
        "server_no_context_takeover; client_no_context_takeover"
    )
