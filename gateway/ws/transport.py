"""What a connection needs from a WebSocket: receive text, send text, close.

The push path's core talks only to this interface, so it runs the same over
the server's own socket (`gateway.ws.wire`) and over `MemoryTransport`, the
in-memory pair the tests drive.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

import trio

__all__ = ["MemoryClient", "MemoryTransport", "Transport", "TransportClosed"]


class TransportClosed(Exception):
    """The peer is gone (or the transport was closed): nothing more can be exchanged.

    `close_code` is set when the peer broke the protocol or a limit (1002, 1007,
    1009): the connection then closes with that code.
    """

    def __init__(self, message: str = "", *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class Transport(Protocol):
    """One accepted WebSocket, text frames only."""

    async def receive(self) -> str:
        """The next text frame; raises `TransportClosed` when the peer is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one text frame; raises `TransportClosed` when the peer is gone.

        Cancellation does not interrupt a send: the frame is written whole (or
        the transport ends), so a caller cancelled after taking a frame from its
        buffer never loses it nor leaves it half-written. A send that cannot
        complete within the transport's send timeout ends the transport.
        """
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Send a close frame with `code` (idempotent)."""
        ...


class MemoryTransport:
    """The server side of an in-memory WebSocket; `client` is the other end."""

    def __init__(
        self, *, client_buffer: int = 64, server_buffer: int = 16, send_timeout_s: float = 5.0
    ) -> None:
        self.send_timeout_s = send_timeout_s
        self._to_client_send, to_client_receive = trio.open_memory_channel[str](client_buffer)
        to_server_send, self._to_server_receive = trio.open_memory_channel[str](server_buffer)
        self.close_code: int | None = None
        self.close_reason = ""
        self.reset = False
        self.closed = trio.Event()
        self.client = MemoryClient(self, to_server_send, to_client_receive)

    async def receive(self) -> str:
        if self.close_code is not None:
            raise TransportClosed("closed by the server")
        try:
            return await self._to_server_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise TransportClosed("the client went away") from exc

    async def send(self, text: str) -> None:
        if self.close_code is not None or self.reset:
            raise TransportClosed("closed by the server")
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.send_timeout_s
            try:
                await self._to_client_send.send(text)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportClosed("the client went away") from exc
        if scope.cancelled_caught:
            # A socket would be reset here; in memory a close code can still be set.
            self.reset = True
            raise TransportClosed("slow consumer: a send blocked past the send timeout")

    async def close(self, code: int, reason: str = "") -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self._to_client_send.close()
        self._to_server_receive.close()
        self.closed.set()


class MemoryClient:
    """The client end of a `MemoryTransport`, with helpers for tests."""

    def __init__(
        self,
        server: MemoryTransport,
        outbox: trio.MemorySendChannel[str],
        inbox: trio.MemoryReceiveChannel[str],
    ) -> None:
        self._server = server
        self._outbox = outbox
        self._inbox = inbox
        self._pending: list[dict[str, Any]] = []

    @property
    def close_code(self) -> int | None:
        return self._server.close_code

    async def send_text(self, text: str) -> None:
        await self._outbox.send(text)

    async def send(self, action: str, payload: Any = None, *, id: str | None = None, v: int = 1):
        """Send one action frame."""
        frame: dict[str, Any] = {"v": v, "action": action, "payload": payload or {}}
        if id is not None:
            frame["id"] = id
        await self._outbox.send(json.dumps(frame))

    async def receive_frame(self) -> str:
        """The next raw frame; raises `trio.EndOfChannel` after the server closed."""
        return await self._inbox.receive()

    async def receive(self) -> dict[str, Any]:
        """The next envelope (frames are split on newlines)."""
        while not self._pending:
            frame = await self._inbox.receive()
            self._pending.extend(json.loads(line) for line in frame.split("\n"))
        return self._pending.pop(0)

    async def receive_until(self, predicate, *, limit: float = math.inf) -> tuple[dict, list]:
        """Envelopes up to the first that matches; returns (match, those before it)."""
        skipped: list[dict[str, Any]] = []
        while len(skipped) < limit:
            envelope = await self.receive()
            if predicate(envelope):
                return envelope, skipped
            skipped.append(envelope)
        raise AssertionError(f"no matching envelope among {skipped}")

    async def drain(self) -> list[dict[str, Any]]:
        """Every envelope until the server closes."""
        envelopes: list[dict[str, Any]] = []
        while True:
            try:
                envelopes.append(await self.receive())
            except trio.EndOfChannel:
                return envelopes

    def close(self) -> None:
        """The client goes away: the server's `receive` raises `TransportClosed`."""
        self._outbox.close()
        self._inbox.close()
