"""The values that flow from a domain change to the connections.

A domain service returns an `Outcome`: its result, the durable events it
committed (`StoredEvent`, one per recipient, each with that user's `seq`)
and the ephemeral events it implies (`Ephemeral`, no `seq`, never stored).
The caller hands both to the hub after the transaction has committed.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import time
from typing import Any, Generic, TypeVar

import attrs

from contracts import EphemeralClass

__all__ = [
    "Cursor",
    "Ephemeral",
    "EphemeralClass",
    "Outcome",
    "StoredEvent",
    "iso",
    "new_id",
    "parse_iso",
    "utcnow",
]

T = TypeVar("T", covariant=True)  # an Outcome is frozen: Outcome[Message] is an Outcome[object]

# How an ephemeral event behaves when a connection's send buffer is full
# (DESIGN.md, "How a change flows" step 5).


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def iso(moment: _dt.datetime) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, the contract's time format."""
    moment = moment.astimezone(_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.astimezone(_dt.UTC)


def new_id(prefix: str) -> str:
    """A unique, roughly time-ordered opaque id such as `evt_0192f3a1b2c3d4e5f6a7`."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


@attrs.frozen
class Cursor:
    """A position in one user's stream."""

    epoch: str
    seq: int


@attrs.frozen
class StoredEvent:
    """A durable event as committed to one user's stream."""

    user_id: str
    epoch: str
    seq: int
    id: str
    type: str
    payload: dict[str, Any]
    created_at: str  # contract time format


@attrs.frozen
class Ephemeral:
    """An event with no `seq` that is delivered to whoever is connected now.

    Exactly one of `topic`, `users` or `broadcast` names the audience.
    `tenant` keeps it inside one tenant: only users `<tenant>/<sub>` receive it
    (a tenant admin's broadcast); a broadcast without one reaches every
    connected user (the operator's, from an admin outside any tenant).
    `exclude_user` leaves one user out (a typist does not see their own typing).
    `key` is the coalescing key of a `latest` event: a newer value with the
    same key replaces an older one still waiting in a send buffer.
    """

    type: str
    payload: dict[str, Any]
    cls: EphemeralClass = "notice"
    topic: str | None = None
    users: tuple[str, ...] = ()
    broadcast: bool = False
    tenant: str | None = None
    exclude_user: str | None = None
    key: str | None = None
    id: str = attrs.field(factory=lambda: new_id("evt"))


@attrs.frozen
class Outcome(Generic[T]):
    """What a domain mutation returns: its value and the events to fan out."""

    value: T
    events: tuple[StoredEvent, ...] = ()
    ephemeral: tuple[Ephemeral, ...] = ()
