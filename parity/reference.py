"""The audit's reference: a user's durable stream reduced as the push path shows it,
and its comparison with what one polling request returned, key by key.

The node's shadow audit (`gateway.audit`) takes a sampled polling request, the
cursor it was read at, and reduces that user's durable events up to the
cursor here. The events up to a cursor are an append-only prefix of the
stream, so reducing them later, in another snapshot, gives exactly what the
poll's own snapshot held: the comparison is exact, whatever happened since.

The keys are the harness's (`parity.model`); what a stream determines:

| key                                | known from the stream when                            |
| ---------------------------------- | ----------------------------------------------------- |
| `notification.unread`, `chat.total`| an event carried it, or the history is complete (0)   |
| `chat.conv:<id>.*`                 | a `chat.conversation.updated` carried the conversation |
| `follow.pending`                   | the history is complete                               |
| `event:<id>.counts`                | the user hosts the event (hosts get every RSVP)       |
| `organization:<id>.role`           | an event about the user's role, or complete history   |
| `organization:<id>.announcement`   | an announcement arrived since the user last joined    |
| `activity.author:<id>.latest`      | complete history (when each follow was accepted)      |

A history is complete when it starts at `seq` 1 of the epoch (retention has
not cut it). `organization:<id>.members` (managers only, and a manager
promoted late lacks the earlier changes) and presence (ephemeral, never in
the stream) are not audited: the harness and the beacons cover them.

Classification, as the harness's differ has it, the poll being the
reference: MATCH; MISSING_PUSH when the stream lacks what the poll shows, no event
of it ever carried the key, or it still shows a value the poll showed at an
earlier cursor (an update that was never produced); MISSING_POLL when a complete polled list lacks what the stream
has; DIVERGED otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from parity.differ import Classification
from parity.model import ConversationState, FeedItem, domain_of, key_pattern

__all__ = [
    "ABSENT",
    "UNKNOWN",
    "Finding",
    "Polled",
    "Reference",
    "compare_poll",
    "redact",
]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNKNOWN: Any = _Sentinel("UNKNOWN")  # the stream does not determine this key
ABSENT: Any = _Sentinel("ABSENT")  # the stream holds no such key


class Reference:
    """One user's durable stream reduced up to `seq` (mutable; `copy()` before sharing)."""

    def __init__(self, user_id: str, epoch: str, *, seq: int = 0, complete: bool = True) -> None:
        self.user_id = user_id
        self.epoch = epoch
        self.seq = seq
        self.complete = complete
        self.notification_unread: int | None = None
        self.chat_total: int | None = None
        self.conversations: dict[str, ConversationState] = {}
        self.follow_in: dict[str, str] = {}  # request id -> status, of requests to the user
        self.followed_since: dict[str, str] = {}  # author -> when the user's follow was accepted
        self.event_counts: dict[str, tuple[int, int]] = {}
        self.event_hosts: dict[str, str] = {}
        self.org_roles: dict[str, str | None] = {}
        self.org_latest: dict[str, str] = {}  # newest announcement since the user last joined
        self.feed: dict[str, FeedItem] = {}  # author -> newest item pushed

    def copy(self) -> Reference:
        return copy.deepcopy(self)

    # -- reducing ------------------------------------------------------------------

    def apply(self, seq: int, type_: str, payload: Mapping[str, Any]) -> None:
        """Apply the event at `seq` (the next one) as a push client would."""
        self.seq = seq
        me = self.user_id
        if type_ in ("notification.new", "notification.read"):
            self.notification_unread = int(payload["unreadCount"])
        elif type_ == "chat.conversation.updated":
            c = payload["conversation"]
            self.conversations[c["id"]] = ConversationState(
                unread=int(c["unreadCount"]),
                last_message_id=(c.get("lastMessage") or {}).get("id"),
                last_read_id=c.get("lastReadMessageId"),
            )
            self.chat_total = int(payload["totalUnread"])
        elif type_ == "chat.message":
            message = payload["message"]
            conv = self.conversations.get(message["conversationId"])
            if conv is not None:
                self.conversations[message["conversationId"]] = attrs.evolve(
                    conv, last_message_id=message["id"]
                )
        elif type_ in ("follow.request.created", "follow.request.updated"):
            request = payload["request"]
            if request.get("toUserId") == me:
                self.follow_in[request["id"]] = request.get("status", "")
            author = request.get("toUserId")
            if (
                request.get("fromUserId") == me
                and request.get("status") == "ACCEPTED"
                and author not in self.followed_since
            ):
                self.followed_since[author] = request.get("updatedAt", "")
        elif type_ == "event.rsvp.updated":
            rsvp = payload["rsvp"]
            event_id = rsvp["eventId"]
            counts = payload["counts"]
            self.event_counts[event_id] = (int(counts["going"]), int(counts["interested"]))
            host = (rsvp.get("event") or {}).get("hostId")
            if host:
                self.event_hosts[event_id] = host
        elif type_ == "organization.member.updated":
            if payload.get("userId") == me:
                org_id = payload["orgId"]
                before = self.org_roles.get(org_id)
                role = payload.get("role")
                self.org_roles[org_id] = role
                if role is None or before is None:
                    self.org_latest.pop(org_id, None)  # joined or left: earlier news unknown
        elif type_ == "organization.announcement":
            announcement = payload["announcement"]
            self.org_latest[announcement["orgId"]] = announcement["id"]
        elif type_ == "activity.feed.item":
            item = payload["item"]
            current = self.feed.get(item["authorId"])
            if current is None or item["createdAt"] >= current.created_at:
                self.feed[item["authorId"]] = FeedItem(
                    item["id"], item["authorId"], item["createdAt"]
                )

    def apply_all(self, events: Iterable[Any]) -> None:
        """Apply stored events (`seq`, `type`, `payload`) in order."""
        for event in events:
            self.apply(event.seq, event.type, event.payload)

    # -- what it shows -------------------------------------------------------------

    def defaulted(self, key: str) -> bool:
        """Whether the key's value is a complete history's default: no event carried it."""
        if not self.complete:
            return False
        if key == "notification.unread":
            return self.notification_unread is None
        if key == "chat.total":
            return self.chat_total is None
        if key == "follow.pending":
            return not self.follow_in
        if key.startswith("event:"):
            return key[len("event:") : -len(".counts")] not in self.event_counts
        if key.startswith("organization:") and key.endswith(".role"):
            return key[len("organization:") : -len(".role")] not in self.org_roles
        return False

    def value(self, key: str, *, host: str | None = None) -> Any:
        """The key's value as the stream shows it; UNKNOWN or ABSENT."""
        complete = self.complete
        if key == "notification.unread":
            if self.notification_unread is not None:
                return self.notification_unread
            return 0 if complete else UNKNOWN
        if key == "chat.total":
            if self.chat_total is not None:
                return self.chat_total
            return 0 if complete else UNKNOWN
        if key.startswith("chat.conv:"):
            conv_id, _, field = key[len("chat.conv:") :].rpartition(".")
            conv = self.conversations.get(conv_id)
            if conv is None:
                return ABSENT if complete else UNKNOWN
            return {
                "unread": conv.unread,
                "lastMessage": conv.last_message_id,
                "lastRead": conv.last_read_id,
            }[field]
        if key == "follow.pending":
            if not complete:
                return UNKNOWN
            return tuple(sorted(r for r, status in self.follow_in.items() if status == "PENDING"))
        if key.startswith("event:"):
            event_id = key[len("event:") : -len(".counts")]
            if (host or self.event_hosts.get(event_id)) != self.user_id:
                return UNKNOWN  # only a host is told of every RSVP
            if event_id in self.event_counts:
                return self.event_counts[event_id]
            return (0, 0) if complete else UNKNOWN
        if key.startswith("organization:"):
            org_id, _, field = key[len("organization:") :].rpartition(".")
            if field == "role":
                if org_id in self.org_roles:
                    return self.org_roles[org_id]
                return None if complete else UNKNOWN
            if field == "announcement":
                return self.org_latest.get(org_id, UNKNOWN)
        return UNKNOWN


@attrs.define
class Polled:
    """What one polling request showed, as the harness's keys.

    `values`: key -> value. `conversations_complete`: the polled conversation
    list holds every conversation of the user (fewer than the page asked for).
    `feed`: the polled feed page (newest first) when it carried ids, authors and
    times; `feed_full`: the page was full (older items may lie beyond it).
    `hosts`: event id -> host, where the poll showed it.
    """

    values: dict[str, Any] = attrs.Factory(dict)
    conversations_complete: bool = False
    feed: list[FeedItem] | None = None
    feed_full: bool = False
    hosts: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class Finding:
    """One audited comparison."""

    domain: str
    key: str
    classification: Classification
    poll_value: Any = None
    push_value: Any = None
    detail: str = ""


def _classify(
    key: str,
    polled: Any,
    pushed: Any,
    previous: Mapping[str, Collection[Any]],
    defaulted: bool = False,
) -> Finding | None:
    domain = domain_of(key)
    if pushed is UNKNOWN:
        return None
    if pushed is ABSENT:
        return Finding(
            domain, key, Classification.MISSING_PUSH, polled, None, "the stream never showed it"
        )
    if pushed == polled:
        return Finding(domain, key, Classification.MATCH, polled, pushed)
    if defaulted:
        return Finding(
            domain,
            key,
            Classification.MISSING_PUSH,
            polled,
            pushed,
            "no event of the stream ever carried it",
        )
    if pushed in previous.get(key, ()):
        return Finding(
            domain,
            key,
            Classification.MISSING_PUSH,
            polled,
            pushed,
            "the stream still shows a value polled before: an update never reached it",
        )
    return Finding(domain, key, Classification.DIVERGED, polled, pushed)


def _feed_findings(polled: Polled, ref: Reference) -> list[Finding]:
    if polled.feed is None or not ref.complete:
        return []
    me = ref.user_id
    oldest = polled.feed[-1].created_at if polled.feed else None
    out = []
    for author, since in sorted(ref.followed_since.items()):
        if author == me:
            continue
        key = f"activity.author:{author}.latest"
        shown = next(
            (i for i in polled.feed if i.author_id == author and i.created_at >= since), None
        )
        pushed = ref.feed.get(author)
        if pushed is not None and pushed.created_at < since:
            pushed = None
        if shown is None and pushed is None:
            continue
        if shown is None:
            assert pushed is not None
            if polled.feed_full and oldest is not None and pushed.created_at < oldest:
                continue  # beyond the polled page
            out.append(
                Finding(
                    "activity",
                    key,
                    Classification.MISSING_POLL,
                    None,
                    pushed.id,
                    "the polled feed lacks an item the stream delivered",
                )
            )
        elif pushed is None or shown.created_at > pushed.created_at:
            out.append(
                Finding(
                    "activity",
                    key,
                    Classification.MISSING_PUSH,
                    shown.id,
                    pushed.id if pushed else None,
                    "the stream never delivered the newest item polled",
                )
            )
        elif shown.id == pushed.id:
            out.append(Finding("activity", key, Classification.MATCH, shown.id, pushed.id))
        elif pushed.created_at > shown.created_at:
            out.append(
                Finding(
                    "activity",
                    key,
                    Classification.MISSING_POLL,
                    shown.id,
                    pushed.id,
                    "the polled feed lacks the newest item the stream delivered",
                )
            )
        else:
            out.append(Finding("activity", key, Classification.DIVERGED, shown.id, pushed.id))
    return out


def compare_poll(
    polled: Polled, ref: Reference, *, previous: Mapping[str, Collection[Any]] | None = None
) -> tuple[list[Finding], int]:
    """Each polled key classified against the reference, and how many polled keys
    the stream does not determine (not compared). `previous`: per key, the values
    the poll path showed of this user at earlier audited cursors (a stream still
    showing one of them is missing an update)."""
    previous = previous or {}
    findings, unknown = [], 0
    for key, value in polled.values.items():
        host = None
        if key.startswith("event:"):
            host = polled.hosts.get(key[len("event:") : -len(".counts")])
        finding = _classify(key, value, ref.value(key, host=host), previous, ref.defaulted(key))
        if finding is None:
            unknown += 1
        else:
            findings.append(finding)
    if polled.conversations_complete and ref.complete:
        shown = {
            key.split(":", 1)[1].rsplit(".", 1)[0]
            for key in polled.values
            if key.startswith("chat.conv:")
        }
        for conv_id in sorted(set(ref.conversations) - shown):
            findings.append(
                Finding(
                    "chat",
                    f"chat.conv:{conv_id}.unread",
                    Classification.MISSING_POLL,
                    None,
                    ref.conversations[conv_id].unread,
                    "the polled list lacks a conversation the stream holds",
                )
            )
    findings += _feed_findings(polled, ref)
    return findings, unknown


def _shape(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return list(value)
    if isinstance(value, tuple):
        return f"<{len(value)} ids>"
    return "<id>"


def redact(finding: Finding, **extra: Any) -> dict[str, Any]:
    """A finding with no user or record id: the key's pattern, the class, counts kept,
    ids replaced by their kind."""
    return {
        "domain": finding.domain,
        "key": key_pattern(finding.key),
        "class": finding.classification.value,
        "poll": _shape(finding.poll_value),
        "push": _shape(finding.push_value),
        "detail": finding.detail,
        **extra,
    }
