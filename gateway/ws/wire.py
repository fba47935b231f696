"""The push path's own WebSocket: wsproto driven over the accepted TCP stream.

`gateway.front` hands every `GET /ws` upgrade here with the raw stream, so the
connection owns its socket end to end (DESIGN.md, "The WebSocket transport"):

- **Every frame is written exactly once, whole, in order.** wsproto turns an
  event into bytes (compressing it when permessage-deflate is on, which moves
  the compressor's state on), and those bytes are written under one lock, in
  a shielded scope: a cancelled caller cannot leave a frame half-sent or make
  the next frame repeat one the compressor already consumed.
- **A write is bounded.** The shielded write has a deadline (the slow-consumer
  timeout); a peer that stops reading past it gets its TCP connection reset at
  once (a partly written frame leaves no way to send a close frame), the write
  raises `TransportClosed`, the connection ends and frees its slot, and
  nothing waits on it during shutdown.
- **Inflating is bounded.** A compressed message is inflated in steps capped by
  the frame-size limit, so a small frame that inflates to hundreds of MB costs
  the limit, not the bomb, before the 1009 close.
- **Compression is a setting** (`--ws-compression`). When on, the server
  answers an offer with `server_no_context_takeover` and
  `client_no_context_takeover`: each message is deflated and inflated on its
  own, so an idle connection holds no zlib state, and the window bits and
  memory level of the compressor are bounded.
"""

from __future__ import annotations

import logging
import socket
import struct
import zlib
from typing import TYPE_CHECKING, Literal

import attrs
import trio
from wsproto.connection import Connection as WsProtocol
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits
from wsproto.utilities import LocalProtocolError

from contracts import CloseCode
from gateway.ws.transport import TransportClosed

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = [
    "BoundedDeflate",
    "WireSettings",
    "WireTransport",
    "negotiate_deflate",
]

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65_536
_LINGER_RESET = struct.pack("ii", 1, 0)


@attrs.define(frozen=True)
class WireSettings:
    """How the push path's sockets behave: a view of `gateway.config.Settings`
    (`from_settings` says which setting each field comes from)."""

    compression: Literal["off", "on"] = "off"
    max_message_bytes: int = 65_536
    # A write blocked longer than this resets the connection.
    send_timeout_s: float = 5.0
    # How long a close waits for the peer's close frame before dropping the socket.
    close_timeout_s: float = 2.0
    # permessage-deflate bounds when compression is on.
    window_bits: int = 12
    memory_level: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> WireSettings:
        return cls(
            compression=settings.ws_compression,
            max_message_bytes=settings.max_frame_bytes,
            send_timeout_s=settings.slow_consumer_timeout_s,
            close_timeout_s=settings.ws_close_timeout_s,
            window_bits=settings.ws_window_bits,
            memory_level=settings.ws_memory_level,
        )


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate without context takeover, with bounded zlib state.

    Outbound: every message gets its own compressor with `window_bits` and
    `memory_level` (a smaller window than the negotiated one is always valid).
    Inbound: inflating stops and the message is refused (1009) once its
    inflated size passes `max_message_bytes`.
    """

    def __init__(self, *, window_bits: int, memory_level: int, max_message_bytes: int) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)
        self._window_bits = window_bits
        self._memory_level = memory_level
        self._max_message_bytes = max_message_bytes
        self._inflated = 0

    def accept(self, offer: str) -> bool | str | None:
        client_bits, _server_bits = self._parse_params(offer)
        parameters = ["server_no_context_takeover", "client_no_context_takeover"]
        if client_bits is not None:
            # The client may only name the bits if it offered the parameter.
            bits = max(9, min(client_bits, self._window_bits))
            self.client_max_window_bits = bits
            parameters.append(f"client_max_window_bits={bits}")
        if _server_bits is not None:
            bits = max(9, min(_server_bits, self._window_bits))
            self.server_max_window_bits = bits
            parameters.append(f"server_max_window_bits={bits}")
        self._enabled = True
        return "; ".join(parameters)

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if self._inbound_compressed is None:
            self._inflated = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        budget = self._max_message_bytes - self._inflated
        try:
            inflated = self._decompressor.decompress(bytes(data), budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(inflated)
        if self._inflated > self._max_message_bytes or self._decompressor.unconsumed_tail:
            self._decompressor = None
            self._inbound_compressed = None
            return CloseReason.MESSAGE_TOO_BIG
        return inflated

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or not self._inbound_compressed or not self._inbound_is_compressible:
            return super().frame_inbound_complete(proto, fin)
        assert self._decompressor is not None
        budget = self._max_message_bytes - self._inflated
        try:
            tail = self._decompressor.decompress(b"\x00\x00\xff\xff", budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._decompressor = None  # no context takeover: nothing kept between messages
        self._inbound_compressed = None
        if len(tail) > budget:
            return CloseReason.MESSAGE_TOO_BIG
        return tail

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        starts = opcode is not Opcode.CONTINUATION and self._compressible_opcode(opcode)
        if starts and self._compressor is None:
            bits = min(self._window_bits, self.server_max_window_bits)
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, self._memory_level
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)


def negotiate_deflate(
    offers: list[str], settings: WireSettings
) -> tuple[BoundedDeflate, str] | None:
    """The extension and its response header for the first acceptable offer, if any."""
    if settings.compression != "on":
        return None
    for offer in offers:
        if offer.split(";", 1)[0].strip().lower() != PerMessageDeflate.name:
            continue
        extension = BoundedDeflate(
            window_bits=settings.window_bits,
            memory_level=settings.memory_level,
            max_message_bytes=settings.max_message_bytes,
        )
        try:
            accepted = extension.accept(offer)
        except ValueError:
            continue
        if isinstance(accepted, str):
            return extension, f"{PerMessageDeflate.name}; {accepted}"
    return None


class WireTransport:
    """One accepted WebSocket on a trio stream: a `gateway.ws.transport.Transport`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        settings: WireSettings,
        *,
        extension: BoundedDeflate | None = None,
        trailing_data: bytes = b"",
    ) -> None:
        self._stream = stream
        self._settings = settings
        self._ws = WsProtocol(
            ConnectionType.SERVER,
            extensions=[extension] if extension is not None else None,
            trailing_data=trailing_data,
        )
        self._send_lock = trio.Lock()
        self._parts: list[str] = []
        self._size = 0
        self._broken = False
        self._closed = False
        self.compressed = extension is not None

    # -- receiving -----------------------------------------------------------

    async def receive(self) -> str:
        """The next text message (a binary one is decoded as UTF-8)."""
        while True:
            if self._closed or self._broken:
                raise TransportClosed("the socket is closed")
            text = await self._next_message()
            if text is not None:
                return text
            data = await self._read()
            self._ws.receive_data(data or None)

    async def _next_message(self) -> str | None:
        for event in self._ws.events():
            if isinstance(event, Message):
                text = self._gather(event)
                if text is not None:
                    return text
            elif isinstance(event, Ping):
                await self._write_event(event.response())
            elif isinstance(event, CloseConnection):
                state = self._ws.state
                if state is ConnectionState.OPEN:
                    # wsproto refused a frame (bad framing, bad UTF-8, inflated
                    # past the limit): the connection closes with its code.
                    raise TransportClosed(event.reason or "protocol error", close_code=event.code)
                if state is ConnectionState.REMOTE_CLOSING:
                    await self._write_event(event.response())
                self._closed = True
                raise TransportClosed(f"the client closed ({event.code})")
        return None

    def _gather(self, event: Message) -> str | None:
        data = event.data
        part = data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")
        self._size += len(data)
        if self._size > self._settings.max_message_bytes:
            self._parts = []
            raise TransportClosed("frame too big", close_code=CloseCode.MESSAGE_TOO_BIG)
        if event.message_finished and not self._parts:
            self._size = 0
            return part
        self._parts.append(part)
        if not event.message_finished:
            return None
        text = "".join(self._parts)
        self._parts = []
        self._size = 0
        return text

    async def _read(self) -> bytes:
        try:
            return bytes(await self._stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broken = True
            raise TransportClosed("the connection was lost") from exc

    # -- sending -------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send one text frame, whole, or raise `TransportClosed`."""
        if self._closed or self._broken:
            raise TransportClosed("the socket is closed")
        await self._write_event(TextMessage(data=text))

    async def _write_event(self, event: Event) -> None:
        # Shielded from the lock on: a caller cancelled after taking a batch from
        # its send buffer must not lose it. Bounded: each write has a deadline.
        with trio.CancelScope(shield=True):
            async with self._send_lock:
                if self._broken:
                    raise TransportClosed("the socket is closed")
                try:
                    data = self._ws.send(event)
                except LocalProtocolError as exc:  # a frame after our close frame
                    raise TransportClosed(str(exc)) from exc
                await self._write(data)

    async def _write(self, data: bytes) -> None:
        """Write `data` whole; past the send timeout, reset the connection."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._settings.send_timeout_s
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._broken = True
                raise TransportClosed("the connection was lost") from exc
        if scope.cancelled_caught:
            self.abort()
            raise TransportClosed("slow consumer: a write blocked past the send timeout")

    # -- ending --------------------------------------------------------------

    async def close(self, code: int, reason: str = "") -> None:
        """Send a close frame, wait briefly for the peer's, then drop the socket."""
        if self._broken:
            return
        if not self._closed and self._ws.state in (
            ConnectionState.OPEN,
            ConnectionState.REMOTE_CLOSING,
        ):
            self._closed = True
            try:
                await self._write_event(CloseConnection(code=int(code), reason=reason))
            except TransportClosed:
                return
            await self._await_peer_close()
        self._closed = True
        await self._drop()

    async def _await_peer_close(self) -> None:
        # Closing the socket with unread input would reset it and could destroy
        # the close frame before the client reads it: read until the peer closes.
        with trio.move_on_after(self._settings.close_timeout_s):
            while self._ws.state is not ConnectionState.CLOSED:
                try:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                self._ws.receive_data(bytes(data))
                for _event in self._ws.events():
                    pass

    async def _drop(self) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._settings.close_timeout_s
            try:
                await self._stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if scope.cancelled_caught:
            self.abort()

    def abort(self) -> None:
        """Reset the TCP connection now (RST): nothing more is written or read."""
        self._broken = True
        sock = getattr(self._stream, "socket", None)
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        sock.close()
