"""What a path shows, as pure functions: no I/O, no clock.

The observers (`parity.observers`) do the I/O around these:

- `state_query` is the GraphQL query that reads the cursor and every state
  field of the observed domains, and `state_from_graphql` the user's state
  (with the cursor's epoch and seq) from its response: the poller's whole
  reading and the push observer's snapshot;
- `apply_event` is the push observer's reducer of durable events (PROTOCOL.md
  2.3, absolute values), and `apply_presence` of the ephemeral presence of a
  watched user; `place` says what a received seq means for the stream;
- `merge_refetch` folds a domain refetched over GraphQL into the pushed state,
  as a client does when the contract pushes it no history, and
  `members_unknown` says when one is due.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from parity.invariants import Read
from parity.model import (
    MANAGER_ROLES,
    ConversationState,
    FeedItem,
    OrgState,
    UserState,
    newest_since,
)

__all__ = [
    "FEED_PAGE",
    "Seq",
    "UserSetup",
    "apply_event",
    "apply_presence",
    "followed_since_from",
    "members_unknown",
    "merge_refetch",
    "place",
    "state_from_graphql",
    "state_query",
]

# -- reading a response --------------------------------------------------------

FEED_PAGE = 50  # the feed items a state query reads


def state_query(
    domains: Iterable[str],
    events: Sequence[str],
    orgs: Sequence[str] = (),
    presence_of: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The GraphQL query (and variables) that reads the cursor and every state field."""
    domains = set(domains)
    fields = ["realtimeCursor { epoch seq }"]
    params: list[str] = []
    variables: dict[str, Any] = {}
    if "notification" in domains:
        fields.append("unreadNotificationCount")
    if "chat" in domains:
        fields.append("chatUnreadCount")
        fields.append(
            "conversations(first: 200) { id unreadCount lastReadMessageId lastMessage { id } }"
        )
    if "follow" in domains:
        fields.append("followRequests { id }")
    if "event" in domains:
        for i, event_id in enumerate(events):
            params.append(f"$e{i}: ID!")
            variables[f"e{i}"] = event_id
            fields.append(f"e{i}: event(id: $e{i}) {{ id rsvpCounts {{ going interested }} }}")
    if "organization" in domains:
        for i, org_id in enumerate(orgs):
            params.append(f"$o{i}: ID!")
            variables[f"o{i}"] = org_id
            fields.append(
                f"o{i}: organization(id: $o{i}) {{ viewerRole members {{ userId role }} }}"
            )
            fields.append(f"a{i}: announcements(orgId: $o{i}, first: 1) {{ id }}")
    if "activity" in domains:
        fields.append(f"feed(first: {FEED_PAGE}) {{ id authorId createdAt }}")
        fields.append("sentFollowRequests { toUserId status updatedAt }")
    if "presence" in domains and presence_of:
        params.append("$pu: [ID!]!")
        variables["pu"] = list(presence_of)
        fields.append("presence(userIds: $pu) { userId status }")
    head = f"query ParityState({', '.join(params)})" if params else "query ParityState"
    return head + " { " + " ".join(fields) + " }", variables


def _org_state(view: Mapping[str, Any] | None, latest: Any) -> OrgState | None:
    if view is None:
        return None
    role = view.get("viewerRole")
    members = view.get("members") or []
    known = "members" in view and view["members"] is not None and role in MANAGER_ROLES
    return OrgState(
        role=role,
        members=tuple(sorted((m["userId"], m["role"]) for m in members)) if known else None,
        announcement=(latest[0]["id"] if latest else None) if isinstance(latest, list) else None,
    )


def followed_since_from(sent: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Author -> when the viewer's follow was accepted, from `sentFollowRequests`."""
    return {
        r["toUserId"]: r["updatedAt"]
        for r in sent
        if r.get("status") == "ACCEPTED" and r.get("updatedAt")
    }


def state_from_graphql(
    user_id: str,
    data: Mapping[str, Any],
    domains: Iterable[str],
    events: Sequence[str],
    orgs: Sequence[str] = (),
    presence_of: Sequence[str] = (),
) -> tuple[UserState, str, int]:
    """The user's state, the cursor's epoch and its seq, from a `state_query` response.

    The domains added after the first four (organization, activity, presence)
    read only what the response holds, so a response without them (an older
    snapshot) leaves them empty.
    """
    domains = set(domains)
    cursor = data["realtimeCursor"]
    state = UserState(user_id)
    changes: dict[str, Any] = {}
    if "notification" in domains:
        changes["notification_unread"] = int(data["unreadNotificationCount"])
    if "chat" in domains:
        changes["chat_total"] = int(data["chatUnreadCount"])
        changes["conversations"] = {
            c["id"]: ConversationState(
                unread=int(c["unreadCount"]),
                last_message_id=(c.get("lastMessage") or {}).get("id"),
                last_read_id=c.get("lastReadMessageId"),
            )
            for c in data["conversations"]
        }
    if "follow" in domains:
        changes["follow_pending"] = frozenset(r["id"] for r in data["followRequests"])
    if "event" in domains:
        counts = {}
        for i, event_id in enumerate(events):
            event = data.get(f"e{i}")
            if event is not None:
                rsvp = event["rsvpCounts"]
                counts[event_id] = (int(rsvp["going"]), int(rsvp["interested"]))
        changes["event_counts"] = counts
    if "organization" in domains:
        held = {}
        for i, org_id in enumerate(orgs):
            org = _org_state(data.get(f"o{i}"), data.get(f"a{i}"))
            if org is not None:
                held[org_id] = org
        changes["orgs"] = held
    if "activity" in domains and "feed" in data and "sentFollowRequests" in data:
        since = followed_since_from(data["sentFollowRequests"])
        items = [FeedItem(i["id"], i["authorId"], i["createdAt"]) for i in data["feed"]]
        changes["followed_since"] = since
        changes["feed_latest"] = newest_since(items, since, user_id)
    if "presence" in domains and isinstance(data.get("presence"), list):
        wanted = set(presence_of)
        changes["presence"] = {
            p["userId"]: p["status"] for p in data["presence"] if p["userId"] in wanted
        }
    return state.evolve(**changes), str(cursor["epoch"]), int(cursor["seq"])


def apply_event(
    state: UserState, type_: str, payload: Mapping[str, Any], *, watched_events: Iterable[str]
) -> tuple[UserState, Read | None]:
    """The user's state after one durable event (absolute values), and the read it
    reports, if the event is the user's own read (its `at` and `version` are left to
    the caller)."""
    me = state.user_id
    if type_ in ("notification.new", "notification.read"):
        if state.notification_unread is None:
            return state, None
        read = Read(me, "notification", 0.0) if type_ == "notification.read" else None
        return state.evolve(notification_unread=int(payload["unreadCount"])), read
    if type_ == "chat.message":
        message = payload["message"]
        conv = state.conversations.get(message["conversationId"])
        if conv is None:
            return state, None
        conversations = dict(state.conversations)
        conversations[message["conversationId"]] = attrs.evolve(conv, last_message_id=message["id"])
        return state.evolve(conversations=conversations), None
    if type_ == "chat.conversation.updated":
        if state.chat_total is None:
            return state, None
        c = payload["conversation"]
        conversations = dict(state.conversations)
        conversations[c["id"]] = ConversationState(
            unread=int(c["unreadCount"]),
            last_message_id=(c.get("lastMessage") or {}).get("id"),
            last_read_id=c.get("lastReadMessageId"),
        )
        return state.evolve(
            conversations=conversations, chat_total=int(payload["totalUnread"])
        ), None
    if type_ == "chat.read":
        if payload.get("userId") == me:
            return state, Read(me, "chat", 0.0, conversation_id=payload.get("conversationId"))
        return state, None
    if type_ in ("follow.request.created", "follow.request.updated"):
        request = payload["request"]
        if request.get("fromUserId") == me and state.followed_since is not None:
            since = dict(state.followed_since)
            author = request.get("toUserId")
            if request.get("status") == "ACCEPTED" and author not in since:
                since[author] = request.get("updatedAt")
                state = state.evolve(followed_since=since)
        if state.follow_pending is None or request.get("toUserId") != me:
            return state, None
        pending = set(state.follow_pending)
        if request.get("status") == "PENDING":
            pending.add(request["id"])
        else:
            pending.discard(request["id"])
        return state.evolve(follow_pending=pending), None
    if type_ == "organization.member.updated":
        org_id = str(payload.get("orgId"))
        org = state.orgs.get(org_id)
        if org is None:
            return state, None
        user, role = str(payload.get("userId")), payload.get("role")
        if user == me:
            members = org.members
            if role not in MANAGER_ROLES:
                members = None  # no longer told of every change
            elif org.role not in MANAGER_ROLES:
                members = None  # promoted: the members so far are not pushed (refetch)
            if members is not None:
                members = _with_member(members, me, role)
            org = OrgState(role=role, members=members, announcement=org.announcement)
        elif org.members is not None:
            org = attrs.evolve(org, members=_with_member(org.members, user, role))
        return state.evolve(orgs={**state.orgs, org_id: org}), None
    if type_ == "organization.announcement":
        announcement = payload.get("announcement") or {}
        org = state.orgs.get(str(announcement.get("orgId")))
        if org is None or org.role is None:
            return state, None
        org = attrs.evolve(org, announcement=announcement.get("id"))
        return state.evolve(orgs={**state.orgs, announcement["orgId"]: org}), None
    if type_ == "activity.feed.item":
        item = payload.get("item") or {}
        if state.followed_since is None or item.get("authorId") not in state.followed_since:
            return state, None
        latest = dict(state.feed_latest)
        current = latest.get(item["authorId"])
        if current is None or item["createdAt"] >= current.created_at:
            latest[item["authorId"]] = FeedItem(item["id"], item["authorId"], item["createdAt"])
        return state.evolve(feed_latest=latest), None
    if type_ == "event.rsvp.updated":
        event_id = payload["rsvp"]["eventId"]
        if event_id not in set(watched_events) or event_id not in state.event_counts:
            return state, None
        counts = dict(state.event_counts)
        counts[event_id] = (int(payload["counts"]["going"]), int(payload["counts"]["interested"]))
        return state.evolve(event_counts=counts), None
    return state, None


def _with_member(
    members: tuple[tuple[str, str], ...], user: str, role: str | None
) -> tuple[tuple[str, str], ...]:
    kept = [(u, r) for u, r in members if u != user]
    if role is not None:
        kept.append((user, role))
    return tuple(sorted(kept))


def apply_presence(state: UserState, payload: Mapping[str, Any]) -> UserState:
    """The state after a `user.presence.updated` (ephemeral) of a watched user."""
    user = payload.get("userId")
    if user not in state.presence:
        return state
    return state.evolve(presence={**state.presence, user: payload.get("status")})


# -- one observed user and its stream ------------------------------------------


@attrs.define
class UserSetup:
    """One observed user: who, with which token, watching what, at which stages."""

    user_id: str
    token: str
    domains: tuple[str, ...]  # the domains observed for this user
    push_domains: tuple[str, ...]  # those whose push is on (stage >= SHADOW)
    events: tuple[str, ...] = ()  # the events whose RSVP counts are watched
    orgs: tuple[str, ...] = ()  # the organizations (of which the user is a member) watched
    presence_of: tuple[str, ...] = ()  # the users whose presence is watched

    def query(self, domains: Iterable[str]) -> tuple[str, dict[str, Any]]:
        return state_query(domains, self.events, self.orgs, self.presence_of)

    def parse(self, data: Mapping[str, Any], domains: Iterable[str]) -> tuple[UserState, str, int]:
        return state_from_graphql(
            self.user_id, data, domains, self.events, self.orgs, self.presence_of
        )


class Seq(enum.Enum):
    """What a durable event's seq means for a stream applied up to `last_seq`."""

    REPEAT = "repeat"  # at or before last_seq: already applied
    EARLY = "early"  # past a gap while a resume is awaited: live traffic the replay brings
    GAP = "gap"  # past a gap on a live connection: resume from the last contiguous seq
    NEXT = "next"  # last_seq + 1: apply it


def place(seq: int, last_seq: int, *, resuming: bool) -> Seq:
    """Where `seq` falls for a stream applied up to `last_seq` (`resuming`: a
    `session.resume` is awaiting its reply)."""
    if seq <= last_seq:
        return Seq.REPEAT
    if seq > last_seq + 1:
        return Seq.EARLY if resuming else Seq.GAP
    return Seq.NEXT


def members_unknown(state: UserState) -> bool:
    """Whether the user manages an organization whose members it was not pushed
    (promoted: the members so far come from a refetch)."""
    return any(org.role in MANAGER_ROLES and org.members is None for org in state.orgs.values())


def merge_refetch(state: UserState, fresh: UserState, domain: str) -> UserState:
    """The pushed `state` with what a GraphQL refetch of `domain` read (`fresh`):
    every watched user's presence; the members of the organizations whose members
    were unknown (the rest of an organization stays as pushed)."""
    if domain == "presence":
        return state.evolve(presence=fresh.presence)
    if domain == "organization":
        orgs = dict(state.orgs)
        for org_id, org in fresh.orgs.items():
            if org_id in orgs and orgs[org_id].members is None:
                orgs[org_id] = attrs.evolve(orgs[org_id], members=org.members)
        return state.evolve(orgs=orgs)
    return state
