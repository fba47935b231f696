"""The front acceptor: one public port, WebSocket upgrades to our own transport,
everything else to Hypercorn.

Each accepted TCP connection is read up to the end of its request line (`--head-timeout-s`, `--max-head-bytes`). A
`GET /ws` request has its head read whole and goes to
`gateway.ws.endpoint.WebSocketEndpoint` with the raw stream, so the push path
owns its socket (compression, write deadlines, resets). Any other connection
goes to Hypercorn's Trio `TCPServer`, driven on the accepted stream with the
bytes already read put back in front of it (`PrefixedStream`), so HTTP/1.1,
keep-alive and h2c work exactly as under `hypercorn.trio.serve`. With the
app's `LeanRoutes`, a connection whose request line is `POST /graphql
HTTP/1.1`, `POST /realtime/events HTTP/1.1` or `POST /realtime/tickets
HTTP/1.1` (or a CORS preflight's `OPTIONS` line for `/graphql` or
`/realtime/tickets`) is served by the lean HTTP path (`gateway.http_lean`)
instead, for as long as its requests are for those; the first other request
goes to Hypercorn with the bytes already read.

The acceptor also owns every connection's lifetime at shutdown: `drain` waits
until the connections end or the deadline passes, then cancels their tasks
and closes their sockets, which wakes even a write that Hypercorn shields from
cancellation. A node therefore exits within its grace period whatever its
clients do.

This relies on Hypercorn 0.18's `hypercorn.trio.tcp_server.TCPServer(app,
config, context, state, stream)` and its `Lifespan` and `WorkerContext`; the
version is pinned in pyproject.toml and `tests/e2e/test_front.py` covers the
hand-off.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Event
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState

from gateway.http_lean import LeanHttp
from gateway.ws.endpoint import is_websocket_target

if TYPE_CHECKING:
    from gateway.app import LeanRoutes

__all__ = ["Front", "PrefixedStream"]

log = logging.getLogger("cutover.front")

RECEIVE_BYTES = 65_536

WebSocketHandler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first bytes were already read: they come back first."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            data, self._prefix = self._prefix, b""
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _ConnectionServer(TCPServer):
    """Hypercorn's connection server, with its protocol's events handled whole.

    Hypercorn's protocol reports `Updated` (restart the keep-alive timer) and
    `Closed` (send_eof, then aclose) from the task that finished a response,
    which may already be cancelled: a checkpoint inside would raise there and
    skip the rest, leaving an idle connection without its timer or a closed
    one with its socket open, until the client hangs up (behind a proxy's
    keep-alive pool: until the shutdown grace ends). Shielded, each event is
    handled whole; each is quick (a `RawData` write is already shielded by
    Hypercorn itself).
    """

    async def protocol_send(self, event: Event) -> None:
        with trio.CancelScope(shield=True):
            await super().protocol_send(event)


class Front:
    """Routes accepted connections; `handle` is the `trio.serve_listeners` handler."""

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        websocket: WebSocketHandler,
        *,
        lifespan_state: dict | None = None,
        head_timeout_s: float = 10.0,
        max_head_bytes: int = 16_384,
        lean: LeanRoutes | None = None,
    ) -> None:
        self.head_timeout_s = head_timeout_s
        self.max_head_bytes = max_head_bytes
        self.app = app
        self.config = config
        self.context = WorkerContext(None)
        self.websocket = websocket
        self._state = lifespan_state if lifespan_state is not None else {}
        self._streams: dict[trio.SocketStream, trio.CancelScope] = {}
        self._kinds: dict[trio.SocketStream, str] = {}
        self._idle = trio.Event()
        self._idle.set()
        self.lean = (
            LeanHttp(lean, config, head_timeout_s=head_timeout_s) if lean is not None else None
        )

    def __len__(self) -> int:
        return len(self._streams)

    async def handle(self, stream: trio.SocketStream) -> None:
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        try:
            with trio.CancelScope() as scope:
                self._streams[stream] = scope
                await self._route(stream)
        finally:
            self._streams.pop(stream, None)
            self._kinds.pop(stream, None)
            if not self._streams:
                self._idle.set()
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _route(self, stream: trio.SocketStream) -> None:
        data = b""
        upgrade = False
        with trio.move_on_after(self.head_timeout_s):
            try:
                data = await self._read_until(stream, b"\r\n", b"")
                parts = data.split(b" ", 2)
                if len(parts) == 3 and parts[0] == b"GET" and is_websocket_target(parts[1]):
                    self._kinds[stream] = "websocket"
                    upgrade = True
                    data = await self._read_until(stream, b"\r\n\r\n", data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
        if upgrade:
            # Only the head is read under the head timeout; the session runs outside
            # it, for as long as it lasts (its own timers end it).
            if b"\r\n\r\n" in data:
                # The head goes to the handler, and this frame keeps no reference
                # to it (nor to its split) for the session's lifetime.
                session = self.websocket(stream, data)
                del data, parts
                await session
            return
        if not data:
            return  # the client sent nothing in time, or went away
        self._kinds[stream] = "http"
        if self.lean is not None and self.lean.takes(data):
            rest = await self.lean.serve(stream, data)
            if rest is None:
                return
            data = rest
        server = _ConnectionServer(
            self.app,
            self.config,
            self.context,
            ConnectionState(self._state.copy()),
            PrefixedStream(stream, data),  # type: ignore[arg-type]
        )
        await server.run()

    async def _read_until(self, stream: trio.SocketStream, marker: bytes, data: bytes) -> bytes:
        """Read until `marker` arrives (or the peer stops, or the head is too long)."""
        while marker not in data and len(data) < self.max_head_bytes:
            chunk = await stream.receive_some(RECEIVE_BYTES)
            if not chunk:
                break
            data += chunk
        return data

    async def stop_http(self) -> None:
        """Tell Hypercorn's connections that the node stops: idle keep-alive
        connections close, requests in flight finish."""
        if self.lean is not None:
            self.lean.stop()
        await self.context.terminated.set()

    async def drain(self, deadline: float) -> int:
        """Wait for every connection to end until `deadline`, then end the rest
        at once (their tasks cancelled, their sockets closed). Returns how many
        had to be ended."""
        with trio.move_on_at(deadline):
            await self._idle.wait()
        left = len(self._streams)
        if left:
            kinds = Counter(self._kinds.get(stream, "unrouted") for stream in self._streams)
            log.warning(
                "%d connections still open at the shutdown deadline (%s): closing them",
                left,
                ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
            )
            for stream, scope in list(self._streams.items()):
                scope.cancel()
                stream.socket.close()  # wakes any task blocked on it, shielded or not
        return left
