"""CORS for browser clients on other origins: an ASGI layer in front of the app.

A page served from another origin calls `POST /realtime/tickets`,
`POST /graphql` and `POST /realtime/parity` with an `Authorization` header,
so the browser first sends a preflight (`OPTIONS` with
`Access-Control-Request-Method`). For an `Origin` in the configured allow-list
(`--allowed-origins`, the same list the WebSocket handshake checks) the
preflight is answered 204 with the allowed method and headers, and every
response of those endpoints carries `Access-Control-Allow-Origin: <origin>`
(errors included, so a page can read a 401 or a 429). An origin not in the
list gets nothing: its preflight is refused with 403 and its responses carry
no CORS header, so the browser keeps them from the page. Without an
allow-list no origin is allowed (same-origin pages need no CORS).

No cookies are involved (credentials travel in `Authorization`), so
`Access-Control-Allow-Credentials` is never sent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["BROWSER_ENDPOINTS", "Cors"]

BROWSER_ENDPOINTS = ("/realtime/tickets", "/graphql", "/realtime/parity")
ALLOWED_METHODS = "POST"
ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = "Retry-After, WWW-Authenticate"
MAX_AGE_S = 600


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _with_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for i, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            if b"origin" not in value.lower():
                headers[i] = (key, value + b", Origin")
            return headers
    headers.append((b"vary", b"Origin"))
    return headers


class Cors:
    """The layer described in the module docstring, for `paths` of `app`."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        origins: Iterable[str],
        paths: Iterable[str] = BROWSER_ENDPOINTS,
    ) -> None:
        self.app = app
        self.origins = frozenset(origin.rstrip("/") for origin in origins)
        self.paths = frozenset(paths)

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and origin.rstrip("/") in self.origins

    def response_headers(
        self, headers: list[tuple[bytes, bytes]], origin: str | None
    ) -> list[tuple[bytes, bytes]]:
        """The headers of a response to a request from `origin` on one of `paths`
        (a preflight aside): `Vary: Origin`, and for an allowed origin the CORS
        headers. `headers` is changed in place and returned."""
        headers = _with_vary(headers)
        if origin is not None and self.allowed(origin):
            headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
            headers.append((b"access-control-expose-headers", EXPOSED_HEADERS.encode()))
        return headers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, origin, send)
            return

        async def cors_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = self.response_headers(list(message.get("headers") or ()), origin)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, cors_send)

    def preflight(
        self, origin: str | None, request_method: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to a preflight from `origin` asking for `request_method`:
        (status, headers, body). The app's layer and the front's lean HTTP path
        (`gateway.http_lean`) both send it."""
        method = request_method.upper()
        if not self.allowed(origin) or method not in ALLOWED_METHODS.split(", "):
            reason = (
                f"origin {origin!r} is not allowed"
                if not self.allowed(origin)
                else f"method {method} is not allowed here"
            )
            body = json.dumps({"error": {"code": "FORBIDDEN", "message": reason}}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin"),
            ]
            return 403, headers, body
        assert origin is not None
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(MAX_AGE_S).encode()),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        return 204, headers, b""

    async def _preflight(self, scope: dict[str, Any], origin: str | None, send: Any) -> None:
        status, headers, body = self.preflight(
            origin, _header(scope, b"access-control-request-method") or ""
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
