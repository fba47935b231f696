"""The state each parity observer keeps per user, and what it reports.

Both observers (the GraphQL poller and the WebSocket push observer) build a
`UserState` for each watched user from what their path shows, then call
`observe(...)` to turn it into `Observation` records, one per key. The
differ only ever sees observations; it never needs to know how a path got
its state.

Keys are flat strings so that every comparison is between two scalars:

| key                                | domain         | value                        |
| ---------------------------------- | -------------- | ---------------------------- |
| `notification.unread`              | `notification` | int                          |
| `chat.total`                       | `chat`         | int                          |
| `chat.conv:<id>.unread`            | `chat`         | int                          |
| `chat.conv:<id>.lastMessage`       | `chat`         | message id or None           |
| `chat.conv:<id>.lastRead`          | `chat`         | message id or None           |
| `follow.pending`                   | `follow`       | sorted tuple of request ids  |
| `event:<id>.counts`                | `event`        | (going, interested)          |

A `version` says which state of the user's stream a value belongs to, so
the two paths are compared at matching versions rather than at the same
instant. Observers should use the user's stream `seq`: the push observer the
`seq` of the last event applied, the poller the `realtimeCursor.seq` it read
in the same request (the server reads the cursor and every other field of
a polling request from one snapshot, so the data is exactly at the cursor). Keys that change only through ephemeral events
(`event:<id>.counts` from `event.counters.updated`) may carry `None`; the
differ then aligns them by time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

__all__ = [
    "DOMAINS",
    "PATHS",
    "ConversationState",
    "Domain",
    "Observation",
    "Path",
    "UserState",
    "Version",
    "domain_of",
    "error_observation",
    "flatten",
    "observe",
    "wildcard_key",
]

Path = Literal["poll", "push", "poll_b"]
Domain = Literal["notification", "chat", "follow", "event"]
Version = int | str | None

PATHS: tuple[str, ...] = ("poll", "push", "poll_b")
DOMAINS: tuple[str, ...] = ("notification", "chat", "follow", "event")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted((value or {}).items())))


def _frozen_ids(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@attrs.frozen
class ConversationState:
    """One conversation as one user sees it."""

    unread: int
    last_message_id: str | None = None
    last_read_id: str | None = None


@attrs.frozen
class UserState:
    """What one path shows one user, at one moment.

    A field left at `None` (or an empty mapping for the per-id fields) means
    the path does not hold that domain for this user; `flatten` then yields
    no keys for it, which is different from a count of zero.
    """

    user_id: str
    notification_unread: int | None = None
    chat_total: int | None = None
    conversations: Mapping[str, ConversationState] = attrs.field(
        factory=dict, converter=_frozen_mapping
    )
    follow_pending: frozenset[str] | None = attrs.field(default=None, converter=_frozen_ids)
    event_counts: Mapping[str, tuple[int, int]] = attrs.field(
        factory=dict, converter=_frozen_mapping
    )

    def evolve(self, **changes: Any) -> UserState:
        """A copy with some fields replaced (the state is immutable)."""
        return attrs.evolve(self, **changes)


@attrs.frozen
class Observation:
    """One value of one key as one path showed it to the harness.

    `error` set means the observer tried and failed to read this key (a
    GraphQL error, a dropped connection, a refused resume); `value` is then
    meaningless. An error may name a whole domain with `wildcard_key(domain)`.
    """

    path: str
    user_id: str
    domain: str
    key: str
    value: Any
    version: Version
    observed_at: float
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}")


def domain_of(key: str) -> str:
    """The domain a key belongs to (`chat.conv:c1.unread` -> `chat`)."""
    if key.startswith("event:"):
        return "event"
    head = key.split(".", 1)[0]
    if head in DOMAINS:
        return head
    raise ValueError(f"key {key!r} belongs to no known domain")


def wildcard_key(domain: str) -> str:
    """The key an error observation uses to cover every key of a domain."""
    return f"{domain}.*"


def flatten(state: UserState, domain: str) -> dict[str, Any]:
    """The keys and scalar values of one domain of a user's state."""
    out: dict[str, Any] = {}
    if domain == "notification":
        if state.notification_unread is not None:
            out["notification.unread"] = state.notification_unread
    elif domain == "chat":
        if state.chat_total is not None:
            out["chat.total"] = state.chat_total
        for conv_id, conv in state.conversations.items():
            out[f"chat.conv:{conv_id}.unread"] = conv.unread
            out[f"chat.conv:{conv_id}.lastMessage"] = conv.last_message_id
            out[f"chat.conv:{conv_id}.lastRead"] = conv.last_read_id
    elif domain == "follow":
        if state.follow_pending is not None:
            out["follow.pending"] = tuple(sorted(state.follow_pending))
    elif domain == "event":
        for event_id, (going, interested) in state.event_counts.items():
            out[f"event:{event_id}.counts"] = (int(going), int(interested))
    else:
        raise ValueError(f"unknown domain {domain!r}")
    return out


def observe(
    path: str,
    state: UserState,
    *,
    domains: Iterable[str],
    version: Version,
    observed_at: float,
) -> list[Observation]:
    """Every key of the given domains of `state`, as observations.

    Observers call this each time their view changes (push: after applying
    an event; poll: after each response), with every domain the change could
    touch. Emitting unchanged keys is fine: the differ collapses repeats.
    """
    out: list[Observation] = []
    for domain in domains:
        for key, value in flatten(state, domain).items():
            out.append(
                Observation(
                    path=path,
                    user_id=state.user_id,
                    domain=domain,
                    key=key,
                    value=value,
                    version=version,
                    observed_at=observed_at,
                )
            )
    return out


def error_observation(
    path: str,
    user_id: str,
    domain: str,
    message: str,
    *,
    observed_at: float,
    key: str | None = None,
    version: Version = None,
) -> Observation:
    """An observer's report that it could not read a key (or a whole domain)."""
    return Observation(
        path=path,
        user_id=user_id,
        domain=domain,
        key=key or wildcard_key(domain),
        value=None,
        version=version,
        observed_at=observed_at,
        error=message,
    )
