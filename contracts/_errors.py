"""The one error tree: every refusal the product makes, with its contract code.

Each carries one of the contract's error codes (PROTOCOL.md 2.6) and an HTTP
status, so the GraphQL path, the WebSocket path and the HTTP endpoints map
them the same way; `gateway.errors` re-exports these and adds the server's
own (store unavailable, history expired, ...). Foreign exceptions (sqlite3,
psycopg, pymongo, jwt, wsproto) are mapped into this tree at the boundary
where they are caught.
"""

from __future__ import annotations

from typing import Any

from ._codes import ErrorCode

__all__ = [
    "BadRequest",
    "Conflict",
    "CutoverError",
    "Forbidden",
    "NotFound",
    "ProtocolError",
    "RateLimited",
    "TokenExpired",
    "Unauthorized",
]


class CutoverError(Exception):
    """Base class: a refusal with a contract error code and an HTTP status."""

    code: str = "INTERNAL"
    status: int = 500

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.path = path

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.path:
            payload["path"] = self.path
        return payload


class BadRequest(CutoverError):
    code = "BAD_REQUEST"
    status = 400


class Unauthorized(CutoverError):
    code = "UNAUTHORIZED"
    status = 401


class TokenExpired(Unauthorized):
    code = "TOKEN_EXPIRED"


class Forbidden(CutoverError):
    code = "FORBIDDEN"
    status = 403


class NotFound(CutoverError):
    code = "NOT_FOUND"
    status = 404


class Conflict(CutoverError):
    code = "CONFLICT"
    status = 409


class RateLimited(CutoverError):
    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str = "", *, retry_after_ms: int = 1000) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), "retryAfterMs": self.retry_after_ms}


_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_ACTION: 400,
    ErrorCode.UNSUPPORTED_VERSION: 400,
}


class ProtocolError(BadRequest):
    """A frame or payload that does not follow the wire contract.

    `code` is `BAD_REQUEST`, `UNKNOWN_ACTION` or `UNSUPPORTED_VERSION`;
    `path` names the offending field (`payload.conversationId`) when there is
    one; `action_id` is the frame's `id` when it could be read, so the error
    reply can carry it as `replyTo`.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        path: str | None = None,
        action_id: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.code = str(ErrorCode(code))
        self.status = _STATUS.get(ErrorCode(code), 400)
        self.action_id = action_id

    def __repr__(self) -> str:
        return (
            f"ProtocolError(code={self.code!r}, message={self.message!r}, "
            f"path={self.path!r}, action_id={self.action_id!r})"
        )
