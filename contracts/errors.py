"""The error tree of the contract (see `contracts._errors`)."""

from ._errors import (
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
    "NotFound",
    "ProtocolError",
    "RateLimited",
    "TokenExpired",
    "Unauthorized",
]
