"""Every exception the gateway raises on purpose, in one place.

Each carries one of the contract's error codes (PROTOCOL.md 2.6), so the
GraphQL path, the WebSocket path and the HTTP endpoints map them the same way.
Foreign exceptions (sqlite3, jwt, pymongo) are mapped into these at the
boundary where they are caught.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "CutoverError",
    "Forbidden",
    "HistoryExpired",
    "NotFound",
    "PayloadTooLarge",
    "QueryTimeout",
    "RateLimited",
    "TokenExpired",
    "Unauthorized",
]


class CutoverError(Exception):
    """Base class: a refusal with a contract error code and an HTTP status."""

    code = "INTERNAL"
    status = 500

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.path = path

    def to_payload(self) -> dict:
        payload = {"code": self.code, "message": self.message}
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


class PayloadTooLarge(CutoverError):
    """A request body over its endpoint's limit (refused before it is read)."""

    code = "PAYLOAD_TOO_LARGE"
    status = 413


class QueryTimeout(CutoverError):
    """A GraphQL request ran past its time limit; its remaining fields are not resolved."""

    code = "TIMEOUT"
    status = 503


class RateLimited(CutoverError):
    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str = "", *, retry_after_ms: int = 1000) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def to_payload(self) -> dict:
        return {**super().to_payload(), "retryAfterMs": self.retry_after_ms}


class HistoryExpired(CutoverError):
    """The events after a cursor are no longer retained: the client must reset."""

    code = "CONFLICT"
    status = 409
