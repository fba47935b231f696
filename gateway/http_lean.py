"""The lean HTTP/1.1 path: `POST /graphql`, `POST /realtime/events` and
`POST /realtime/tickets` served by the front acceptor itself, without
Hypercorn's ASGI layer and Quart.

A connection whose request line is exactly `POST <path> HTTP/1.1` for one of
those paths, or `OPTIONS <path> HTTP/1.1` for one of them that browsers call
(`gateway.cors`: `/graphql`, `/realtime/tickets`), is served here, one request
after another (keep-alive, pipelining), parsed and written with h11. The first
request on it that is anything else (another route or method, a query string,
HTTP/1.0) goes to Hypercorn with the bytes already read put back in front, and
Hypercorn serves the connection from then on, as it serves any connection
today. An `OPTIONS` that turns out not to be a CORS preflight (no
`Access-Control-Request-Method`) or to carry a body goes to Hypercorn the same
way once its head is read, nothing having been answered yet.

Each request gets what the app gives it (`gateway.app.LeanRoutes`): the same
admission (`gateway.admission.admit`: the credential, then a declared body
over the limit, both before any body is read), the same endpoint functions,
error answers, CORS headers and preflight answers (`gateway.cors.Cors`) and
the headers Hypercorn adds (`date`, `server`). So statuses, bodies and headers are
the app's. The differences are where the app's stack does worse:

- `Expect: 100-continue` is answered `100 Continue` once the request is
  admitted; a refused request gets its refusal without it (Hypercorn sends
  100 before the app has looked at the request).
- A response sent before the request body was read whole (a refusal, a body
  over the limit, a body timeout) carries `Connection: close`, as the app's,
  and the rest of the body is then read and dropped for up to `LINGER_S`
  before the socket is closed, so the client reads the answer instead of a
  reset.
- While the node stops, a response carries `Connection: close` and no further
  request is read; a connection idle between requests, or in the middle of a
  request head, is closed at once (as Hypercorn closes its own).

Timers: the rest of a request head after its request line within
`--head-timeout-s` (the line itself is read by the front under the same
timeout); the next request on a kept-alive connection within Hypercorn's
`keep_alive_timeout`; the body within Quart's `BODY_TIMEOUT` (408, as Quart
answers). A malformed request is answered as Hypercorn answers it: h11's
status (400, 431 for a head over h11's limit), no body, `Connection: close`.

Everything runs in the front's task of the connection: no task, queue or
thread of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator

import attrs
import h11
import trio
from hypercorn.config import Config as HypercornConfig
from werkzeug.exceptions import RequestTimeout

from gateway.admission import BodyState, admit, header_map, refusal, with_close
from gateway.app import (
    INTERNAL_ERROR,
    Endpoint,
    LeanRoutes,
    error_headers,
    http_error_answer,
    log_crash,
)
from gateway.errors import CutoverError

__all__ = ["LINGER_S", "LeanHttp"]

log = logging.getLogger("cutover.front")

RECEIVE_BYTES = 65_536

#: How long the rest of a refused request's body is read and dropped before the
#: socket is closed (a client that sends it whole first then reads the answer).
LINGER_S = 2.0

_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")

# What a connection's next bytes say about its next request.
LEAN, OTHER, MORE = "lean", "other", "more"


class _HandOff(Exception):
    """The request whose head was just read goes to Hypercorn: `data` is every
    byte read of it (and of what follows), none answered."""

    def __init__(self, data: bytes) -> None:
        self.data = data


@attrs.define
class _Exchange:
    """One request served here: its parser and what is known of it."""

    conn: h11.Connection
    method: str
    path: str
    endpoint: Endpoint
    served: int  # requests served on this connection, this one included
    origin: str | None = None
    body: BodyState | None = None


class LeanHttp:
    """Serves the lean path's requests on a connection (`serve`), stopped by `stop`."""

    def __init__(
        self,
        routes: LeanRoutes,
        config: HypercornConfig,
        *,
        head_timeout_s: float,
        linger_s: float = LINGER_S,
    ) -> None:
        self.routes = routes
        self.config = config
        self.head_timeout_s = head_timeout_s
        self.keep_alive_timeout_s = float(config.keep_alive_timeout)
        self.body_timeout_s = (
            math.inf if routes.body_timeout_s is None else float(routes.body_timeout_s)
        )
        self.linger_s = linger_s
        self._lines = {
            f"{method} {path} HTTP/1.1\r\n".encode(): (method, path, endpoint)
            for path, endpoint in routes.endpoints.items()
            for method in ("POST", "OPTIONS")
            if method == "POST" or path in routes.cors.paths
        }
        self._longest = max((len(line) for line in self._lines), default=0)
        self.stopping = False
        self._waiting: set[trio.CancelScope] = set()

    def takes(self, data: bytes) -> bool:
        """Whether the request that `data` (a whole request line at least) starts is served here."""
        return self._classify(data) is LEAN

    def stop(self) -> None:
        """The node stops: no further request is read; waiting connections close."""
        self.stopping = True
        for scope in list(self._waiting):
            scope.cancel()

    async def serve(self, stream: trio.SocketStream, data: bytes) -> bytes | None:
        """Serve the requests of `stream` while they are for this path, the first
        starting `data`. Returns the bytes read of the first request that is not
        (for Hypercorn), or None once the connection is to be closed."""
        served = 0
        try:
            while True:
                served += 1
                try:
                    after = await self._exchange(stream, data, served)
                except _HandOff as handoff:
                    return handoff.data
                if after is None:
                    return None
                kind, data = await self._next_request(stream, after)
                if kind is not LEAN:
                    return data if kind is OTHER else None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        except Exception:  # a bug here ends this connection, never the node
            log.exception("lean HTTP path: the connection is closed after an error")
            return None

    # -- between requests ----------------------------------------------------------

    def _classify(self, data: bytes) -> str:
        head = data[: self._longest]
        for line in self._lines:
            if head.startswith(line):
                return LEAN
            if line.startswith(head):
                return MORE
        return OTHER

    @contextlib.contextmanager
    def _interruptible(self, timeout_s: float) -> Iterator[trio.CancelScope]:
        """A wait that `stop` ends, like Hypercorn's idle timer."""
        with trio.move_on_after(timeout_s) as scope:
            if self.stopping:
                scope.cancel()
            self._waiting.add(scope)
            try:
                yield scope
            finally:
                self._waiting.discard(scope)

    async def _next_request(self, stream: trio.SocketStream, data: bytes) -> tuple[str, bytes]:
        """Wait for the next request on a kept-alive connection (`data`: what is
        already read of it) until its route is known. ("closed", b"") when the
        connection ends: idle too long, the client gone, the node stopping."""
        closed = ("closed", b"")
        if self.stopping:
            # As Hypercorn: pipelined requests are not read once stopping (the
            # answer before said `Connection: close`), but drained, not reset.
            if data:
                await self._linger(stream)
            return closed
        if not data:
            with self._interruptible(self.keep_alive_timeout_s):
                data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return closed
        kind = self._classify(data)
        if kind is MORE:
            with self._interruptible(self.head_timeout_s):
                while kind is MORE:
                    chunk = await stream.receive_some(RECEIVE_BYTES)
                    if not chunk:
                        return OTHER, data  # cut short: Hypercorn answers what there is
                    data += chunk
                    kind = self._classify(data)
            if kind is MORE:
                return closed
        return kind, data

    # -- one request -----------------------------------------------------------------

    async def _exchange(self, stream: trio.SocketStream, data: bytes, served: int) -> bytes | None:
        """Serve the request that `data` starts; the bytes after it when the
        connection is kept alive, None when it is to be closed."""
        conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size
        )
        conn.receive_data(data)
        method, path, endpoint = self._lines[bytes(data[: data.index(b"\r\n") + 2])]
        exchange = _Exchange(conn, method, path, endpoint, served)
        received = [data]
        try:
            request = await self._head(stream, conn, received)
            if request is None:
                return None
            headers = header_map(request.headers)
            exchange.origin = headers.get("origin")
            if method == "OPTIONS":
                return await self._preflight(stream, exchange, headers, received)
            body = exchange.body = BodyState.of(headers, endpoint.admission.max_body_bytes)
            try:
                credential = await admit(endpoint.admission, headers, body, "POST", path)
            except CutoverError as error:
                if body.complete and conn.their_state is h11.SEND_BODY:
                    conn.next_event()  # the end of an empty body: the connection stays in step
                payload, response_headers = refusal(error, body)
                await self._respond(stream, exchange, error.status, response_headers, payload)
                return await self._finish(stream, conn)
            if conn.they_are_waiting_for_100_continue:
                await self._send(stream, conn, self._continue())
            with trio.move_on_after(self.body_timeout_s) as body_timer:
                data = await self._body(stream, conn, body)
            if body_timer.cancelled_caught:
                status, answer, extra = http_error_answer(RequestTimeout())
                payload = json.dumps(answer).encode()
            else:
                status, payload, extra = await self._run(
                    exchange, credential, data, body.overflowed
                )
        except h11.RemoteProtocolError as error:
            await self._refuse_malformed(stream, conn, error)
            return None
        await self._respond(stream, exchange, status, self._headers(payload, extra), payload)
        return await self._finish(stream, conn)

    async def _head(
        self, stream: trio.SocketStream, conn: h11.Connection, received: list[bytes]
    ) -> h11.Request | None:
        """The request's head (`received` gets the bytes read), None when the
        client went away, was too slow, or the node stops."""
        with self._interruptible(self.head_timeout_s):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some(RECEIVE_BYTES)
                    received.append(chunk)
                    conn.receive_data(chunk)
                elif isinstance(event, h11.Request):
                    return event
                else:
                    return None  # the client went away
        return None  # too slow, or the node stops

    async def _preflight(
        self,
        stream: trio.SocketStream,
        exchange: _Exchange,
        headers: dict[str, str],
        received: list[bytes],
    ) -> bytes | None:
        """A CORS preflight, answered as the app's CORS layer answers it; any other
        `OPTIONS` (or one with a body) goes to Hypercorn."""
        request_method = headers.get("access-control-request-method")
        conn = exchange.conn
        if not request_method or not BodyState.of(headers, 0).complete:
            raise _HandOff(b"".join(received))
        if conn.their_state is h11.SEND_BODY:
            conn.next_event()  # the end of its empty body
        status, response_headers, payload = self.routes.cors.preflight(
            exchange.origin, request_method
        )
        await self._respond(stream, exchange, status, response_headers, payload)
        return await self._finish(stream, conn)

    async def _body(
        self, stream: trio.SocketStream, conn: h11.Connection, body: BodyState
    ) -> bytes:
        """The request body; past the limit (a chunked body) reading stops, the body
        is empty and `body.overflowed` set, as admission does for the app."""
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            elif isinstance(event, h11.Data):
                body.received += len(event.data)
                if body.received > body.limit:
                    body.overflowed = True
                    return b""
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                body.complete = True
                return b"".join(chunks)
            else:  # pragma: no cover - h11 raises on a body cut short
                raise h11.RemoteProtocolError("the request body ended early", error_status_hint=400)

    async def _run(
        self, exchange: _Exchange, credential: object, data: bytes, overflowed: bool
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        """The endpoint's answer: (status, JSON body, extra headers), as the app's."""
        try:
            status, answer = await exchange.endpoint.run(credential, data, overflowed)
            return status, json.dumps(answer).encode(), []
        except CutoverError as error:
            payload = json.dumps({"error": error.to_payload()}).encode()
            return error.status, payload, error_headers(error)
        except Exception as error:
            log_crash(exchange.method, exchange.path, error)
            return 500, json.dumps(INTERNAL_ERROR).encode(), []

    # -- answers ---------------------------------------------------------------------

    @staticmethod
    def _headers(payload: bytes, extra: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
        headers = [_JSON, (b"content-length", str(len(payload)).encode())]
        headers += [(name.lower().encode(), value.encode()) for name, value in extra]
        return headers

    def _continue(self) -> h11.InformationalResponse:
        return h11.InformationalResponse(
            status_code=100, headers=self.config.response_headers("h11")
        )

    async def _respond(
        self,
        stream: trio.SocketStream,
        exchange: _Exchange,
        status: int,
        headers: list[tuple[bytes, bytes]],
        payload: bytes,
    ) -> None:
        """Send an answer with the headers the app's stack adds: `connection: close`
        when the body was not read whole (admission), CORS (a preflight's answer
        has its own), Hypercorn's."""
        if exchange.body is not None and not exchange.body.complete:
            headers = with_close(headers)
        if exchange.method == "POST" and exchange.path in self.routes.cors.paths:
            headers = self.routes.cors.response_headers(headers, exchange.origin)
        headers += self.config.response_headers("h11")
        if exchange.served >= self.config.keep_alive_max_requests:
            headers.append(_CLOSE)
        if self.stopping and _CLOSE not in headers:
            headers.append(_CLOSE)
        conn = exchange.conn
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=payload))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, event) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)

    async def _refuse_malformed(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        error: h11.RemoteProtocolError,
    ) -> None:
        """Hypercorn's answer to what h11 cannot parse: its status, no body, then close."""
        if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            return
        headers = [(b"content-length", b"0"), _CLOSE, *self.config.response_headers("h11")]
        try:
            data = conn.send(h11.Response(status_code=error.error_status_hint, headers=headers))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await stream.send_all(data)

    async def _finish(self, stream: trio.SocketStream, conn: h11.Connection) -> bytes | None:
        """After an answer: the bytes of the next request for keep-alive, else None
        (the rest of an unread body dropped for a while first)."""
        data, closed = conn.trailing_data
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            return None if closed and not data else data  # an EOF is read again after `data`
        if data or (conn.their_state is not h11.DONE and conn.their_state is not h11.MUST_CLOSE):
            # Closing with unread bytes (pipelined requests, the rest of a body)
            # would reset the connection, and the answer sent could be lost.
            await self._linger(stream)
        return None

    async def _linger(self, stream: trio.SocketStream) -> None:
        """Read and drop what the client still sends until it closes, for `linger_s`
        at most, so that it reads the answer rather than a reset."""
        with trio.move_on_after(self.linger_s):
            await stream.send_eof()
            while await stream.receive_some(RECEIVE_BYTES):
                pass
