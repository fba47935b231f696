"""Checks each path must pass on its own, whatever the other path shows.

- the badge: per-conversation unread counts sum to `chat.total`;
- monotonicity: an unread count (`notification.unread`, `chat.total`,
  `chat.conv:<id>.unread`) falls only when the user read something;
- continuity: on a live connection `seq` rises by exactly one, and after a
  resume it continues from the resume cursor;
- organizations: the viewer's own entry in an organization's members is its
  `role`, and the members always hold an OWNER;
- activity: an author's latest feed item never goes back to an item it
  already moved past;
- presence: a status is ONLINE, AWAY or OFFLINE.

Each check takes values and returns `Violation`s; an empty list is a pass.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from parity.model import Observation

__all__ = [
    "Read",
    "Received",
    "Violation",
    "check_badge_sum",
    "check_counts_fall_only_on_read",
    "check_domain_invariants",
    "check_feed_forward",
    "check_org_consistency",
    "check_presence_values",
    "check_seq_continuity",
]


@attrs.frozen
class Violation:
    """One broken invariant on one path."""

    # "badge-sum", "fall-without-read", "seq-gap", "org-role", "org-owner",
    # "feed-regress", "presence-status"
    invariant: str
    path: str
    user_id: str
    domain: str
    at: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Violation:
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls)})


@attrs.frozen
class Read:
    """A read the user made: notifications (`conversation_id` None) or a chat.

    `version` is the `seq` of the read's own event when known (the push
    observer sees `notification.read` / `chat.conversation.read`); `at` is
    when the driver or observer saw it.
    """

    user_id: str
    domain: str  # "notification" or "chat"
    at: float
    conversation_id: str | None = None
    version: int | None = None


@attrs.frozen
class Received:
    """One event as a push connection received it.

    `resumed_from` is set on the first event after a (re)connect that resumed
    from that cursor `seq`; `connection` names the connection it came on.
    """

    seq: int
    at: float
    resumed_from: int | None = None
    connection: str = ""


def _snapshots(observations: Iterable[Observation]) -> dict[tuple[str, str, Any, float], dict]:
    """Group one path's chat observations into snapshots keyed by user and moment."""
    snaps: dict[tuple[str, str, Any, float], dict] = defaultdict(dict)
    for obs in observations:
        if obs.error is None and obs.domain == "chat":
            snaps[(obs.path, obs.user_id, obs.version, obs.observed_at)][obs.key] = obs.value
    return snaps


def check_badge_sum(observations: Iterable[Observation]) -> list[Violation]:
    """Per-conversation unread counts sum to the chat badge in every snapshot.

    A snapshot is every chat observation a path made for one user with the
    same version and time (one `parity.model.observe` call).
    """
    out = []
    for (path, user, version, at), keys in sorted(
        _snapshots(observations).items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][3])
    ):
        if "chat.total" not in keys:
            continue
        parts = {
            k: v for k, v in keys.items() if k.startswith("chat.conv:") and k.endswith(".unread")
        }
        total = sum(parts.values())
        if total != keys["chat.total"]:
            out.append(
                Violation(
                    "badge-sum",
                    path,
                    user,
                    "chat",
                    at,
                    f"conversations sum to {total} but the badge shows {keys['chat.total']} "
                    f"at version {version!r}",
                )
            )
    return out


def _explains(read: Read, key: str, prev: Observation, cur: Observation, window: float) -> bool:
    if read.user_id != cur.user_id:
        return False
    if key == "notification.unread":
        if read.domain != "notification":
            return False
    elif key == "chat.total":
        if read.domain != "chat":
            return False
    else:  # chat.conv:<id>.unread
        conv = key[len("chat.conv:") : -len(".unread")]
        if read.domain != "chat" or read.conversation_id != conv:
            return False
    if (
        read.version is not None
        and isinstance(prev.version, int)
        and isinstance(cur.version, int)
        and prev.version < read.version <= cur.version
    ):
        return True
    return prev.observed_at - window <= read.at <= cur.observed_at


def _is_count_key(key: str) -> bool:
    return key in ("notification.unread", "chat.total") or (
        key.startswith("chat.conv:") and key.endswith(".unread")
    )


def check_counts_fall_only_on_read(
    observations: Iterable[Observation], reads: Sequence[Read], *, window: float
) -> list[Violation]:
    """An unread count falls only when a matching read explains it.

    A fall from one observation to the next of the same path, user and key
    is explained by a read of that scope (notifications; any chat read for
    the badge; that conversation for its count) whose `version` lies in
    `(previous version, current version]`, or whose time lies in
    `[previous time - window, current time]` (a poll may show a read late).
    """
    series: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
    for obs in observations:
        if obs.error is None and _is_count_key(obs.key) and isinstance(obs.value, int):
            series[(obs.path, obs.user_id, obs.key)].append(obs)
    out = []
    for (path, user, key), rows in sorted(series.items()):
        rows.sort(key=lambda o: o.observed_at)
        for prev, cur in itertools.pairwise(rows):
            if cur.value < prev.value and not any(
                _explains(r, key, prev, cur, window) for r in reads
            ):
                out.append(
                    Violation(
                        "fall-without-read",
                        path,
                        user,
                        cur.domain,
                        cur.observed_at,
                        f"{key} fell from {prev.value} to {cur.value} with no read",
                    )
                )
    return out


def check_seq_continuity(
    received: Sequence[Received], *, user_id: str, path: str = "push"
) -> list[Violation]:
    """No gap, repeat or reordering of `seq` on a live connection.

    Events are taken in the order received. Each must carry the previous
    `seq` plus one, except the first after a resume, which must carry the
    resume cursor plus one. The very first event sets the starting point.
    """
    out = []
    expected: int | None = None
    for event in received:
        if event.resumed_from is not None:
            expected = event.resumed_from + 1
        if expected is not None and event.seq != expected:
            kind = "gap" if event.seq > expected else "repeat or reorder"
            out.append(
                Violation(
                    "seq-gap",
                    path,
                    user_id,
                    "stream",
                    event.at,
                    f"{kind}: expected seq {expected}, received {event.seq}"
                    + (f" on {event.connection}" if event.connection else ""),
                )
            )
        expected = event.seq + 1
    return out


def _domain_snapshots(
    observations: Iterable[Observation], domain: str
) -> dict[tuple[str, str, Any, float], dict]:
    snaps: dict[tuple[str, str, Any, float], dict] = defaultdict(dict)
    for obs in observations:
        if obs.error is None and obs.domain == domain:
            snaps[(obs.path, obs.user_id, obs.version, obs.observed_at)][obs.key] = obs.value
    return snaps


def check_org_consistency(observations: Iterable[Observation]) -> list[Violation]:
    """In every snapshot of an organization: the viewer's entry in `members` is its
    `role`, and the members hold at least one OWNER."""
    out = []
    for (path, user, version, at), keys in sorted(
        _domain_snapshots(observations, "organization").items(),
        key=lambda kv: (kv[0][0], kv[0][1], kv[0][3]),
    ):
        for key, members in sorted(keys.items()):
            if not key.endswith(".members") or not isinstance(members, tuple):
                continue
            org = key[len("organization:") : -len(".members")]
            roles = dict(members)
            role_key = f"organization:{org}.role"
            if role_key in keys and roles.get(user) != keys[role_key]:
                out.append(
                    Violation(
                        "org-role",
                        path,
                        user,
                        "organization",
                        at,
                        f"{org}: members list the viewer as {roles.get(user)!r} but its role "
                        f"is {keys[role_key]!r} at version {version!r}",
                    )
                )
            if "OWNER" not in roles.values():
                out.append(
                    Violation(
                        "org-owner",
                        path,
                        user,
                        "organization",
                        at,
                        f"{org}: no OWNER among the members at version {version!r}",
                    )
                )
    return out


def check_feed_forward(observations: Iterable[Observation]) -> list[Violation]:
    """An author's latest item, once replaced by a newer one, never comes back."""
    series: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
    for obs in observations:
        if obs.error is None and obs.domain == "activity" and obs.key.endswith(".latest"):
            series[(obs.path, obs.user_id, obs.key)].append(obs)
    out = []
    for (path, user, key), rows in sorted(series.items()):
        rows.sort(key=lambda o: o.observed_at)
        passed: set[Any] = set()
        for prev, cur in itertools.pairwise(rows):
            if cur.value == prev.value:
                continue
            passed.add(prev.value)
            if cur.value in passed:
                out.append(
                    Violation(
                        "feed-regress",
                        path,
                        user,
                        "activity",
                        cur.observed_at,
                        f"{key} went back to {cur.value!r}, an item it had moved past",
                    )
                )
    return out


PRESENCE_STATUSES = frozenset({"ONLINE", "AWAY", "OFFLINE"})


def check_presence_values(observations: Iterable[Observation]) -> list[Violation]:
    """Every presence status is ONLINE, AWAY or OFFLINE."""
    return [
        Violation(
            "presence-status",
            obs.path,
            obs.user_id,
            "presence",
            obs.observed_at,
            f"{obs.key} is {obs.value!r}",
        )
        for obs in observations
        if obs.error is None and obs.domain == "presence" and obs.value not in PRESENCE_STATUSES
    ]


def check_domain_invariants(observations: Sequence[Observation]) -> list[Violation]:
    """The organization, activity and presence checks together."""
    return (
        check_org_consistency(observations)
        + check_feed_forward(observations)
        + check_presence_values(observations)
    )
