"""One mutation in progress: its transaction, its time, and the events it implies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.errors import BadRequest
from gateway.events import Ephemeral, StoredEvent, iso
from gateway.store import Tx

__all__ = ["Change", "check_limit", "require_text"]

MAX_TEXT = 10_000
MAX_PAGE = 200


class Change:
    """Collects the durable and ephemeral events of one mutation's transaction."""

    def __init__(self, tx: Tx, now: dt.datetime) -> None:
        self.tx = tx
        self.now = now
        self.stamp = iso(now)
        self.events: list[StoredEvent] = []
        self.ephemeral: list[Ephemeral] = []

    def emit(self, user_id: str, type: str, payload: dict[str, Any]) -> StoredEvent:
        """Append a durable event to one user's stream in this transaction."""
        event = self.tx.append_event(user_id, type, payload)
        self.events.append(event)
        return event

    def announce(self, event: Ephemeral) -> None:
        """Queue an ephemeral event, handed out after commit."""
        self.ephemeral.append(event)


def require_text(value: Any, field: str, *, max_length: int = MAX_TEXT) -> str:
    """A non-blank string argument, or BadRequest."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be a non-empty string", path=field)
    if len(value) > max_length:
        raise BadRequest(f"{field} is longer than {max_length} characters", path=field)
    return value


def check_limit(value: Any, field: str, *, maximum: int = MAX_PAGE) -> int:
    """A page size: at least 0, at most `maximum`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"{field} must be a non-negative integer", path=field)
    return min(value, maximum)
