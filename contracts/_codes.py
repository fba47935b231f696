"""The contract's version, error codes and WebSocket close codes (PROTOCOL.md 2.6, 4)."""

from __future__ import annotations

import enum

__all__ = ["PROTOCOL_VERSION", "CloseCode", "ErrorCode"]

PROTOCOL_VERSION = 1
"""The protocol major version every frame carries as `v`."""


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` reply (and of HTTP error bodies)."""

    BAD_REQUEST = "BAD_REQUEST"
    UNKNOWN_ACTION = "UNKNOWN_ACTION"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNAUTHORIZED = "UNAUTHORIZED"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    CONFLICT = "CONFLICT"
    INTERNAL = "INTERNAL"


class CloseCode(enum.IntEnum):
    """The WebSocket close codes the server uses and what each means."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009  # a frame over maxFrameBytes
    SERVICE_RESTART = 1012  # sent after system.reconnect
    PROTOCOL_VIOLATION = 4000  # repeated violations, or an unsupported version
    TOKEN_EXPIRED = 4001  # token expired or revoked
    SLOW_CONSUMER = 4008  # send buffer overflowed, or sustained rate-limit abuse
