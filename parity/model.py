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
| `organization:<id>.role`           | `organization` | the viewer's role or None    |
| `organization:<id>.members`        | `organization` | sorted ((user, role), ...)   |
| `organization:<id>.announcement`   | `organization` | newest announcement id/None  |
| `activity.author:<id>.latest`      | `activity`     | feed item id                 |
| `presence:<id>.status`             | `presence`     | ONLINE, AWAY or OFFLINE      |

What each path is expected to show follows the contract's audiences
(PROTOCOL.md 2.3): `organization.member.updated` reaches the affected user
and the organization's owners and admins, so `members` is a key only while
the viewer is an OWNER or ADMIN; `activity.feed.item` reaches the author's
followers from the moment a follow is accepted, so an author's `latest` is
the newest item posted at or after the viewer's follow of that author was
accepted (the polled feed also lists earlier items; pushing them is not in
the contract) and the viewer's own items are not compared; presence is
ephemeral (`user.presence.updated` to the subscribers of `presence:<id>`),
so its keys carry no version and are aligned by time.

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
    "MANAGER_ROLES",
    "PATHS",
    "UNVERSIONED",
    "ConversationState",
    "Domain",
    "FeedItem",
    "Observation",
    "OrgState",
    "Path",
    "UserState",
    "Version",
    "domain_of",
    "error_observation",
    "flatten",
    "key_pattern",
    "newest_since",
    "observe",
    "wildcard_key",
]

Path = Literal["poll", "push", "poll_b"]
Domain = Literal["notification", "chat", "follow", "event", "organization", "activity", "presence"]
Version = int | str | None

PATHS: tuple[str, ...] = ("poll", "push", "poll_b")
DOMAINS: tuple[str, ...] = (
    "notification",
    "chat",
    "follow",
    "event",
    "organization",
    "activity",
    "presence",
)
# Domains whose keys change only through ephemeral events: no stream version.
UNVERSIONED: frozenset[str] = frozenset({"presence"})
MANAGER_ROLES: frozenset[str] = frozenset({"OWNER", "ADMIN"})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted((value or {}).items())))


def _frozen_ids(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _frozen_optional_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if value is None else _frozen_mapping(value)


@attrs.frozen
class OrgState:
    """One organization as one member sees it.

    `members` is None when the viewer is not told of every member change
    (neither OWNER nor ADMIN), so the path holds no members key for it.
    """

    role: str | None = None
    members: tuple[tuple[str, str], ...] | None = None
    announcement: str | None = None


@attrs.frozen
class FeedItem:
    """An item of the activity feed as the comparison needs it."""

    id: str
    author_id: str
    created_at: str


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
    orgs: Mapping[str, OrgState] = attrs.field(factory=dict, converter=_frozen_mapping)
    # author -> when the viewer's follow of them was accepted (None: the feed is not held)
    followed_since: Mapping[str, str] | None = attrs.field(
        default=None, converter=_frozen_optional_mapping
    )
    # author -> the newest item of theirs the path showed (posted since the follow)
    feed_latest: Mapping[str, FeedItem] = attrs.field(factory=dict, converter=_frozen_mapping)
    presence: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)

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


_PREFIXED = (("event:", "event"), ("organization:", "organization"), ("presence:", "presence"))


def domain_of(key: str) -> str:
    """The domain a key belongs to (`chat.conv:c1.unread` -> `chat`)."""
    for prefix, domain in _PREFIXED:
        if key.startswith(prefix):
            return domain
    head = key.split(".", 1)[0]
    if head in DOMAINS:
        return head
    raise ValueError(f"key {key!r} belongs to no known domain")


def wildcard_key(domain: str) -> str:
    """The key an error observation uses to cover every key of a domain."""
    return f"{domain}.*"


def key_pattern(key: str) -> str:
    """A key without its record id, as evidence groups mismatches
    (`chat.conv:cnv_1.unread` -> `chat.conv:*.unread`); an id may hold dots
    (a user id), a field never does."""
    head, sep, rest = key.partition(":")
    if not sep:
        return key
    _ident, dot, tail = rest.rpartition(".")
    return f"{head}:*{dot}{tail}"


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
    elif domain == "organization":
        for org_id, org in state.orgs.items():
            out[f"organization:{org_id}.role"] = org.role
            if org.role is not None:
                out[f"organization:{org_id}.announcement"] = org.announcement
            if org.role in MANAGER_ROLES and org.members is not None:
                out[f"organization:{org_id}.members"] = tuple(sorted(org.members))
    elif domain == "activity":
        if state.followed_since is not None:
            for author, item in state.feed_latest.items():
                if author != state.user_id and author in state.followed_since:
                    out[f"activity.author:{author}.latest"] = item.id
    elif domain == "presence":
        for user_id, status in state.presence.items():
            out[f"presence:{user_id}.status"] = status
    else:
        raise ValueError(f"unknown domain {domain!r}")
    return out


def newest_since(items: Iterable[FeedItem], followed_since: Mapping[str, str], me: str) -> dict:
    """Per followed author, the newest of `items` (newest first) posted at or after
    the follow was accepted: what the push path delivers of a feed."""
    out: dict[str, FeedItem] = {}
    for item in items:
        since = followed_since.get(item.author_id)
        if item.author_id == me or since is None or item.created_at < since:
            continue
        current = out.get(item.author_id)
        if current is None or item.created_at > current.created_at:
            out[item.author_id] = item
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
        at = None if domain in UNVERSIONED else version
        for key, value in flatten(state, domain).items():
            out.append(
                Observation(
                    path=path,
                    user_id=state.user_id,
                    domain=domain,
                    key=key,
                    value=value,
                    version=at,
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
