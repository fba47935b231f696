"""Admission of HTTP requests: credentials and body size before any body is read.

An ASGI layer in front of the Quart app. For each request it knows the
endpoint's body limit and, for the endpoints that take a body, how the caller
authenticates. Before the app sees the request it

- checks the credentials of `POST /graphql`, `POST /realtime/tickets`
  (`Authorization: Bearer <jwt>`) and `POST /realtime/events` (`X-Api-Key`,
  or a Bearer JWT with the `publish` scope), and refuses a request without
  valid ones (401, 403, or 404 where the publish API is off) with the
  contract's JSON error, without reading its body;
- refuses a declared `Content-Length` over the endpoint's limit with 413
  `PAYLOAD_TOO_LARGE`, without reading it;
- counts a body without `Content-Length` (chunked) as it arrives: past the
  limit it ends the body the app sees, discards the rest, and marks the
  request so the app answers 413 (`body_overflowed`).

A response sent before the request's body was read whole carries
`Connection: close`: the unread rest is discarded, and the connection is not
reused out of step. While a refusal is sent the rest of the body is read and
dropped (never kept): Hypercorn's queue towards the app must drain for the
response to complete.

The credential found is kept in the ASGI scope (`credential_of`), so the
endpoint does not verify it twice.

The checks themselves (`header_map`, `BodyState`, `admit`, `refusal`) take
plain values, so the front's lean HTTP path (`gateway.http_lean`) admits the
requests it serves without ASGI exactly as this layer does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from gateway.errors import CutoverError, PayloadTooLarge

__all__ = [
    "Admission",
    "BodyState",
    "Route",
    "admit",
    "body_overflowed",
    "credential_of",
    "header_map",
    "refusal",
]

log = logging.getLogger("cutover.admission")

Authenticate = Callable[[Mapping[str, str]], Awaitable[object]]

CREDENTIAL_KEY = "cutover.credential"
OVERFLOW_KEY = "cutover.body_overflowed"


@attrs.frozen
class Route:
    """One endpoint's admission: its body limit and, when it takes a body, its credentials."""

    max_body_bytes: int
    authenticate: Authenticate | None = None


def credential_of(scope: Mapping[str, Any]) -> Any:
    """The credential admission found for this request, None without one: what the
    route's `authenticate` returned (a Principal, a publish credential), typed by it."""
    return scope.get(CREDENTIAL_KEY)


def body_overflowed(scope: Mapping[str, Any]) -> bool:
    """Whether the body went past its limit while it was read (the app answers 413)."""
    return bool(scope.get(OVERFLOW_KEY))


def header_map(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's headers by lower-case name; the first of repeated ones counts."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


@attrs.define
class BodyState:
    """What is known of a request's body."""

    length: int | None  # declared Content-Length, None when chunked
    complete: bool  # the whole body was received
    limit: int
    received: int = 0
    overflowed: bool = False

    @classmethod
    def of(cls, headers: Mapping[str, str], limit: int) -> BodyState:
        length: int | None = None
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit():
            length = int(declared)
        chunked = "transfer-encoding" in headers
        empty = not chunked and not length
        return cls(length=None if chunked else length, complete=empty, limit=limit)


def _too_large(limit: int, length: int | None = None) -> PayloadTooLarge:
    size = f"{length:,} bytes" if length is not None else "more"
    return PayloadTooLarge(f"the request body is {size}; this endpoint takes at most {limit:,}")


async def admit(
    route: Route, headers: Mapping[str, str], body: BodyState, method: str, path: str
) -> object:
    """The request's credential (None where the route takes none), or a CutoverError
    raised to refuse it: bad credentials, or a declared body over the limit. A
    crash while admitting is logged and refused as an internal error."""
    try:
        credential = None
        if route.authenticate is not None:
            credential = await route.authenticate(headers)
        if body.length is not None and body.length > body.limit:
            raise _too_large(body.limit, body.length)
    except CutoverError:
        raise
    except Exception:
        log.exception("admission of %s %s failed", method, path)
        raise CutoverError("internal error") from None
    return credential


def refusal(error: CutoverError, body: BodyState) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A refusal's JSON body and headers; `Connection: close` unless the body was
    read whole (HTTP/1.x)."""
    payload = json.dumps({"error": error.to_payload()}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if not body.complete:
        headers = with_close(headers)
    return payload, headers


def with_close(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with one `connection: close`, last."""
    headers = [(k, v) for k, v in headers if k.lower() != b"connection"]
    headers.append((b"connection", b"close"))
    return headers


class Admission:
    """The ASGI layer described in the module docstring, in front of `app`."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        routes: Mapping[tuple[str, str], Route],
        *,
        default_max_body_bytes: int,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.default = Route(default_max_body_bytes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = header_map(scope.get("headers") or ())
        route = self.routes.get((scope["method"], scope["path"]), self.default)
        body = BodyState.of(headers, route.max_body_bytes)
        try:
            credential = await admit(route, headers, body, scope["method"], scope["path"])
        except CutoverError as error:
            await self._refuse(scope, error, body, receive, send)
            return
        if credential is not None:
            scope[CREDENTIAL_KEY] = credential
        await self.app(scope, self._receiver(scope, body, receive), self._sender(scope, body, send))

    # -- an admitted request ---------------------------------------------------

    def _receiver(self, scope: dict[str, Any], body: BodyState, receive: Any) -> Any:
        async def limited_receive() -> dict[str, Any]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                if not message.get("more_body", False):
                    body.complete = True
                if body.overflowed:
                    continue  # discard the rest until the client is done
                chunk = message.get("body", b"")
                body.received += len(chunk)
                if body.received > body.limit:
                    body.overflowed = True
                    scope[OVERFLOW_KEY] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return message

        return limited_receive

    def _sender(self, scope: dict[str, Any], body: BodyState, send: Any) -> Any:
        async def closing_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not body.complete:
                message = _with_close(scope, message)
            await send(message)

        return closing_send

    # -- a refused request -----------------------------------------------------

    async def _refuse(
        self, scope: dict[str, Any], error: CutoverError, body: BodyState, receive: Any, send: Any
    ) -> None:
        payload, headers = refusal(error, body)
        if scope.get("http_version") not in ("1.0", "1.1"):
            headers = [(k, v) for k, v in headers if k != b"connection"]  # HTTP/2: none
        start = {"type": "http.response.start", "status": error.status, "headers": headers}
        async with trio.open_nursery() as nursery:
            if not body.complete:
                nursery.start_soon(_discard, receive)
            await send(start)
            await send({"type": "http.response.body", "body": payload, "more_body": False})
            nursery.cancel_scope.cancel()


def _with_close(scope: Mapping[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    if scope.get("http_version") not in ("1.0", "1.1"):
        return start  # HTTP/2 has no Connection header; the stream ends on its own
    return {**start, "headers": with_close(list(start.get("headers", ())))}


async def _discard(receive: Any) -> None:
    """Read and drop the rest of a refused request's body until the client is done."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
