"""What a connection needs from a WebSocket: receive text, send text, close.

The push path's core talks only to this interface, so it runs the same over
Quart's websocket (the adapter beside it) and over `MemoryTransport`, the
in-memory pair the tests drive.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

import trio

__all__ = ["MemoryClient", "MemoryTransport", "Transport", "TransportClosed"]


class TransportClosed(Exception):
    """The peer is gone (or the transport was closed): nothing more can be exchanged."""


class Transport(Protocol):
    """One accepted WebSocket, text frames only."""

    async def receive(self) -> str:
        """The next text frame; raises `TransportClosed` when the peer is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one text frame; raises `TransportClosed` when the peer is gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Send a close frame with `code` (idempotent)."""
        ...


class MemoryTransport:
    """The server side of an in-memory WebSocket; `client` is the other end."""

    def __init__(self, *, client_buffer: int = 64, server_buffer: int = 16) -> None:
        self._to_client_send, to_client_receive = trio.open_memory_channel[str](client_buffer)
        to_server_send, self._to_server_receive = trio.open_memory_channel[str](server_buffer)
        self.close_code: int | None = None
        self.close_reason = ""
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
        if self.close_code is not None:
            raise TransportClosed("closed by the server")
        try:
            await self._to_client_send.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed("the client went away") from exc

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
