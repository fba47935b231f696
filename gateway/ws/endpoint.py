"""`GET /ws` on the raw stream: the handshake, then one `Connection` per socket.

`gateway.front` hands over every connection whose request is `GET /ws` with
the bytes of its request head. The handshake checks (credentials, origin, the
per-user limit, the protocol version) are answered with a plain HTTP response
in the API's JSON error shape before any upgrade; an admitted request gets
`101 Switching Protocols` and a `gateway.ws.wire.WireTransport` on the same
stream, and a `Connection` runs on it until it ends.

The per-user slot is claimed during admission, before the ticket is redeemed
and before the upgrade, and released when the socket ends: concurrent
handshakes of one user never exceed the limit, and a handshake refused with
429 leaves its ticket unused.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
from wsproto.utilities import generate_accept_token

from contracts import CloseCode, encode_envelope
from gateway.errors import BadRequest, CutoverError, Forbidden, RateLimited, Unauthorized
from gateway.events import Cursor, iso, new_id, utcnow
from gateway.faults import FaultyTransport
from gateway.store import run_store
from gateway.ws.connection import Connection, WsSettings
from gateway.ws.transport import Transport, TransportClosed
from gateway.ws.wire import WireSettings, WireTransport, negotiate_deflate
from ops import metrics

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.runtime import Runtime

__all__ = ["UpgradeRequest", "WebSocketEndpoint", "is_websocket_target"]

log = logging.getLogger("cutover.ws")

SUPPORTED_VERSIONS = {"1"}
WS_PATHS = {"/ws", "/ws/"}
RESPONSE_TIMEOUT_S = 5.0


def is_websocket_target(target: bytes) -> bool:
    """Whether a request target names the push path (`/ws`, with any query)."""
    path = target.split(b"?", 1)[0]
    return path in (b"/ws", b"/ws/")


@attrs.frozen
class UpgradeRequest:
    """The parts of a WebSocket upgrade request the handshake reads."""

    target: str
    headers: dict[str, str]
    trailing: bytes = b""

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @classmethod
    def parse(cls, head: bytes) -> UpgradeRequest:
        """Parse a request head (with whatever followed it); BadRequest if it is not
        a WebSocket upgrade this server can answer."""
        parser = h11.Connection(h11.SERVER)
        try:
            parser.receive_data(head)
            event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(f"malformed request: {exc}") from None
        if not isinstance(event, h11.Request):
            raise BadRequest("incomplete request head")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin1").lower()
            text = value.decode("latin1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        trailing, _closed = parser.trailing_data
        request = cls(event.target.decode("latin1"), headers, bytes(trailing))
        request._check(event.method)
        return request

    def _check(self, method: bytes) -> None:
        if method != b"GET":
            raise BadRequest("a WebSocket upgrade is a GET request")
        if "websocket" not in _tokens(self.headers.get("upgrade", "")):
            raise BadRequest("/ws needs a WebSocket upgrade (Upgrade: websocket)")
        if "upgrade" not in _tokens(self.headers.get("connection", "")):
            raise BadRequest("/ws needs a WebSocket upgrade (Connection: Upgrade)")
        if self.headers.get("sec-websocket-version", "").strip() != "13":
            raise UnsupportedWebSocketVersion("only WebSocket version 13 is served")
        key = self.headers.get("sec-websocket-key", "").strip()
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid = False
        if not valid:
            raise BadRequest("Sec-WebSocket-Key is missing or malformed")
        query = self.query
        if "lastSeq" in query or "epoch" in query:
            last_seq = query.get("lastSeq", [""])[0]
            if not query.get("epoch", [""])[0] or not last_seq.isdigit():
                raise BadRequest(
                    "resume in the handshake needs epoch and a lastSeq of 0 or more",
                    path="lastSeq",
                )

    @property
    def resume_from(self) -> Cursor | None:
        """`?epoch=E&lastSeq=N`: resume in the handshake (checked by `_check`)."""
        query = self.query
        if "lastSeq" not in query:
            return None
        return Cursor(query.get("epoch", [""])[0], int(query["lastSeq"][0]))

    @property
    def extension_offers(self) -> list[str]:
        value = self.headers.get("sec-websocket-extensions", "")
        return [offer.strip() for offer in value.split(",") if offer.strip()]


class UnsupportedWebSocketVersion(BadRequest):
    status = 426


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def _http_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin1") + body


_REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def refusal_response(error: CutoverError) -> bytes:
    """The HTTP answer to a refused handshake, in the API's JSON error shape."""
    body = json.dumps({"error": error.to_payload()}).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    if isinstance(error, RateLimited):
        headers.append(("retry-after", str(max(1, error.retry_after_ms // 1000))))
    if isinstance(error, Unauthorized):
        headers.append(("www-authenticate", "Bearer"))
    if isinstance(error, UnsupportedWebSocketVersion):
        headers.append(("sec-websocket-version", "13"))
    return _http_response(error.status, headers, body)


class WebSocketEndpoint:
    """Serves `/ws` upgrades handed over by the front acceptor."""

    def __init__(self, runtime: Runtime, wire: WireSettings, settings: WsSettings) -> None:
        self.runtime = runtime
        self.wire = wire
        self.ws_settings = settings

    async def __call__(self, stream: trio.SocketStream, head: bytes) -> None:
        # Each frame of the handshake hands its request on and drops it, so a
        # session does not keep its raw head, its headers (with the bearer token)
        # or their parse alive for as long as it lasts.
        serving = self._serve(stream, head)
        del head
        try:
            await serving
        finally:
            with trio.CancelScope(shield=True):
                await _aclose(stream)

    async def _serve(self, stream: trio.SocketStream, head: bytes) -> None:
        try:
            request = UpgradeRequest.parse(head)
            del head
            principal, method, version = await self._admit(request)
        except CutoverError as error:
            await _send_quietly(stream, refusal_response(error))
            return
        user_id = principal.user_id
        upgraded = self._upgraded(stream, request, principal, method, version)
        del request, principal
        try:
            await upgraded
        finally:
            self.runtime.hub.release_slot(user_id)

    async def _upgraded(
        self,
        stream: trio.SocketStream,
        request: UpgradeRequest,
        principal: Principal,
        method: str,
        version: str,
    ) -> None:
        resume_from = request.resume_from
        negotiated = negotiate_deflate(request.extension_offers, self.wire)
        accept = generate_accept_token(request.headers["sec-websocket-key"].strip().encode())
        headers = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept.decode()),
        ]
        if negotiated is not None:
            headers.append(("sec-websocket-extensions", negotiated[1]))
        if not await _send_quietly(stream, _http_response(101, headers)):
            return
        transport: Transport = WireTransport(
            stream,
            self.wire,
            extension=negotiated[0] if negotiated is not None else None,
            trailing_data=request.trailing,
        )
        if self.runtime.audit is not None:  # below the faults: what reached the socket
            transport = self.runtime.audit.wrap(principal.user_id, transport)
        faults = self.runtime.faults
        if faults is not None and faults.touches_frames:
            transport = FaultyTransport(transport, faults)
        if version not in SUPPORTED_VERSIONS:
            await _unsupported(transport, version)
            return
        metrics.CONNECTS.labels(method).inc()
        runtime = self.runtime
        connection = Connection(
            transport,
            principal,
            hub=runtime.hub,
            domain=runtime.domain,
            store=runtime.store,
            authenticator=runtime.authenticator,
            rollout=runtime.rollout,
            settings=self.ws_settings,
            node_id=runtime.settings.node_id,
            viewer_factory=runtime.viewer,
            topic_authorizer=runtime.topics,
            resume_from=resume_from,
        )
        del request, headers, accept, negotiated, principal
        await connection.serve()

    async def _admit(self, request: UpgradeRequest) -> tuple[Principal, str, str]:
        runtime = self.runtime
        if runtime.draining:
            raise RateLimited("the node is shutting down; reconnect elsewhere", retry_after_ms=1000)
        headers = request.headers
        query = request.query
        allowed = runtime.settings.allowed_origins
        origin = headers.get("origin")
        if allowed and origin is not None and origin not in allowed:
            raise Forbidden(f"origin {origin!r} is not allowed")
        limit = runtime.settings.max_connections_per_user
        version = query.get("v", ["1"])[0]
        if "ticket" in query:
            ticket = query["ticket"][0]
            principal = await run_store(runtime.tickets.inspect, ticket)
            await runtime.hub.claim(principal.user_id, limit)
            try:
                await run_store(runtime.tickets.redeem, ticket)
            except BaseException:
                runtime.hub.release_slot(principal.user_id)
                raise
            return principal, "ticket", version
        if headers.get("authorization"):
            principal = await runtime.bearer(headers["authorization"])
            method = "bearer"
        elif "token" in query:
            if not runtime.settings.allow_query_token:
                raise Unauthorized("the token query parameter is switched off; use a ticket")
            principal = await runtime.authenticator.verify_async(query["token"][0])
            method = "query"
        else:
            raise Unauthorized("no credentials: use ?ticket=, a Bearer header or ?token=")
        await runtime.hub.claim(principal.user_id, limit)
        return principal, method, version


async def _unsupported(transport: Transport, version: str) -> None:
    payload = {
        "code": "UNSUPPORTED_VERSION",
        "message": f"protocol version {version!r} is not served here; supported: 1",
    }
    text = encode_envelope("error", payload, id=new_id("evt"), sent_at=iso(utcnow()))
    try:
        await transport.send(text)
    except TransportClosed:
        return
    await transport.close(CloseCode.PROTOCOL_VIOLATION, "unsupported version")


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> bool:
    """Write a handshake answer; False if the client is gone or does not read it."""
    with trio.move_on_after(RESPONSE_TIMEOUT_S):
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
    return False


async def _aclose(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
