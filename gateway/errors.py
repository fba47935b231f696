"""Every exception the gateway raises on purpose: the contract's error tree
(`contracts.errors`, re-exported here) and the server's own refusals.

Each carries one of the contract's error codes (PROTOCOL.md 2.6), so the
GraphQL path, the WebSocket path and the HTTP endpoints map them the same way.
Foreign exceptions (sqlite3, psycopg, jwt, pymongo) are mapped into these at the
boundary where they are caught.
"""

from __future__ import annotations

from contracts.errors import (
    BadRequest,
    Conflict,
    CutoverError,
    Forbidden,
    NotFound,
    ProtocolError,
    RateLimited,
    TokenExpired,
    Unauthorized,
)

__all__ = [
    "BadRequest",
    "Conflict",
    "CutoverError",
    "Forbidden",
    "HistoryExpired",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "QueryTimeout",
    "RateLimited",
    "StoreUnavailable",
    "TokenExpired",
    "Unauthorized",
]


class PayloadTooLarge(CutoverError):
    """A request body over its endpoint's limit (refused before it is read)."""

    code = "PAYLOAD_TOO_LARGE"
    status = 413


class QueryTimeout(CutoverError):
    """A GraphQL request ran past its time limit; its remaining fields are not resolved."""

    code = "TIMEOUT"
    status = 503


class StoreUnavailable(CutoverError):
    """The store cannot be reached or cannot take the request now; retrying later may work."""

    code = "UNAVAILABLE"
    status = 503


class HistoryExpired(CutoverError):
    """The events after a cursor are no longer retained: the client must reset."""

    code = "CONFLICT"
    status = 409
