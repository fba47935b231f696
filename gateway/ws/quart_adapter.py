"""`GET /ws` on the app: the handshake checks, then one `Connection` per socket.

The push path is mounted at the ASGI level in front of the Quart app: the
handshake (credentials, origin, per-user limit, version) is answered with a
plain HTTP response before any upgrade, and an accepted socket is handed to
`gateway.ws.connection.Connection` through a thin ASGI transport, without
Quart's per-websocket request context, queue and extra tasks on the path of
every frame. Everything else goes to the Quart app unchanged.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio

from contracts import CloseCode, encode_envelope
from gateway.errors import CutoverError, Forbidden, RateLimited, Unauthorized
from gateway.events import iso, new_id, utcnow
from gateway.store import run_store
from gateway.ws.connection import Connection, WsSettings
from gateway.ws.transport import TransportClosed
from ops import metrics

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.runtime import Runtime

__all__ = ["AsgiTransport", "mount_websocket"]

log = logging.getLogger("cutover.ws")

SUPPORTED_VERSIONS = {"1"}


class AsgiTransport:
    """One accepted ASGI WebSocket as a `gateway.ws.transport.Transport`."""

    def __init__(self, receive, send, faults=None) -> None:
        self._receive = receive
        self._send = send
        self._closed = False
        self._faults = faults if faults is not None and faults.touches_frames else None

    async def receive(self) -> str:
        while not self._closed:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is None:
                    data = message.get("bytes") or b""
                    text = data.decode("utf-8", errors="replace")
                return text
            if kind == "websocket.disconnect":
                self._closed = True
        raise TransportClosed("the client is gone")

    async def send(self, text: str) -> None:
        if self._closed:
            raise TransportClosed("the socket is closed")
        if self._faults is not None:
            if self._faults.delay_push_ms and '"seq":' in text:
                await trio.sleep(self._faults.delay_push_ms / 1000)
            rewritten = self._faults.rewrite_frame(text)
            if rewritten is None:
                return
            text = rewritten
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception as exc:
            self._closed = True
            raise TransportClosed(str(exc)) from exc

    async def close(self, code: int, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            log.debug("close after the peer left", exc_info=True)


async def _refuse(send, error: CutoverError) -> None:
    body = json.dumps({"error": error.to_payload()}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(error, RateLimited):
        headers.append((b"retry-after", str(max(1, error.retry_after_ms // 1000)).encode()))
    await send(
        {"type": "websocket.http.response.start", "status": error.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


def _headers(scope: dict) -> dict[str, str]:
    return {
        name.decode("latin1").lower(): value.decode("latin1") for name, value in scope["headers"]
    }


class WebSocketEndpoint:
    """The ASGI app: `/ws` here, every other scope to the wrapped app."""

    def __init__(self, inner, runtime: Runtime) -> None:
        self.inner = inner
        self.runtime = runtime
        settings = runtime.settings
        self.ws_settings = WsSettings(
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            idle_timeout_ms=settings.idle_timeout_ms,
            max_frame_bytes=settings.max_frame_bytes,
            actions_per_second=settings.actions_per_second,
            actions_burst=settings.actions_burst,
            send_buffer_max_items=settings.send_buffer_items,
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "websocket" or scope["path"].rstrip("/") != "/ws":
            await self.inner(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            principal, method, version = await self._admit(scope)
        except CutoverError as error:
            await _refuse(send, error)
            return
        await send({"type": "websocket.accept"})
        transport = AsgiTransport(receive, send, self.runtime.faults)
        if version not in SUPPORTED_VERSIONS:
            await self._unsupported(transport, version)
            return
        metrics.CONNECTS.labels(method).inc()
        connection = Connection(
            transport,
            principal,
            hub=self.runtime.hub,
            domain=self.runtime.domain,
            store=self.runtime.store,
            authenticator=self.runtime.authenticator,
            rollout=self.runtime.rollout,
            settings=self.ws_settings,
            node_id=self.runtime.settings.node_id,
            viewer_factory=self.runtime.viewer,
            topic_authorizer=self.runtime.topics,
        )
        await connection.serve()

    async def _admit(self, scope: dict[str, Any]) -> tuple[Principal, str, str]:
        runtime = self.runtime
        if runtime.draining:
            raise RateLimited("the node is shutting down; reconnect elsewhere", retry_after_ms=1000)
        headers = _headers(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        allowed = runtime.settings.allowed_origins
        origin = headers.get("origin")
        if allowed and origin is not None and origin not in allowed:
            raise Forbidden(f"origin {origin!r} is not allowed")
        if "ticket" in query:
            principal = await run_store(runtime.tickets.redeem, query["ticket"][0])
            method = "ticket"
        elif headers.get("authorization"):
            principal = await runtime.bearer(headers["authorization"])
            method = "bearer"
        elif "token" in query:
            if not runtime.settings.allow_query_token:
                raise Unauthorized("the token query parameter is switched off; use a ticket")
            principal = await runtime.authenticator.verify_async(query["token"][0])
            method = "query"
        else:
            raise Unauthorized("no credentials: use ?ticket=, a Bearer header or ?token=")
        limit = runtime.settings.max_connections_per_user
        if runtime.hub.connection_count(principal.user_id) >= limit:
            raise RateLimited(f"more than {limit} connections for this user", retry_after_ms=5000)
        return principal, method, query.get("v", ["1"])[0]

    async def _unsupported(self, transport: AsgiTransport, version: str) -> None:
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


def mount_websocket(app, runtime: Runtime):
    """Put `/ws` in front of a Quart app's ASGI entry point; returns the app."""
    app.asgi_app = WebSocketEndpoint(app.asgi_app, runtime)
    return app
