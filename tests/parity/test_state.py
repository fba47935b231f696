"""The pure state of a path (`parity.state`): reading a poll response, applying push
events, placing a seq in the stream, merging a refetch."""

from __future__ import annotations

import pytest

from parity.model import ConversationState, OrgState, UserState
from parity.state import (
    Seq,
    UserSetup,
    apply_event,
    followed_since_from,
    members_unknown,
    merge_refetch,
    place,
    state_from_graphql,
    state_query,
)

DOMAINS = ("notification", "chat", "follow", "event")  # the first four domains


def test_the_state_query_reads_the_cursor_and_each_watched_event():
    query, variables = state_query(DOMAINS, ["ev1", "ev2"])
    assert "realtimeCursor { epoch seq }" in query
    assert variables == {"e0": "ev1", "e1": "ev2"}
    assert "unreadNotificationCount" in query and "followRequests { id }" in query


def test_a_poll_response_becomes_the_user_state_at_its_cursor():
    data = {
        "realtimeCursor": {"epoch": "ep", "seq": 7},
        "unreadNotificationCount": 2,
        "chatUnreadCount": 3,
        "conversations": [
            {"id": "c1", "unreadCount": 3, "lastReadMessageId": "m1", "lastMessage": {"id": "m4"}},
            {"id": "c2", "unreadCount": 0, "lastReadMessageId": None, "lastMessage": None},
        ],
        "followRequests": [{"id": "f1"}],
        "e0": {"id": "ev1", "rsvpCounts": {"going": 2, "interested": 1}},
    }
    state, epoch, seq = state_from_graphql("u", data, DOMAINS, ["ev1"])
    assert (epoch, seq) == ("ep", 7)
    assert state.notification_unread == 2 and state.chat_total == 3
    assert state.conversations["c1"] == ConversationState(3, "m4", "m1")
    assert state.conversations["c2"] == ConversationState(0, None, None)
    assert state.follow_pending == frozenset({"f1"})
    assert state.event_counts["ev1"] == (2, 1)


def test_push_events_carry_absolute_values():
    state = UserState(
        "u",
        notification_unread=0,
        chat_total=0,
        conversations={"c1": ConversationState(0)},
        follow_pending=frozenset(),
        event_counts={"ev1": (0, 0)},
    )
    state, read = apply_event(state, "notification.new", {"unreadCount": 4}, watched_events=())
    assert state.notification_unread == 4 and read is None
    state, read = apply_event(state, "notification.read", {"unreadCount": 0}, watched_events=())
    assert state.notification_unread == 0 and read is not None and read.domain == "notification"
    state, _ = apply_event(
        state, "chat.message", {"message": {"id": "m9", "conversationId": "c1"}}, watched_events=()
    )
    assert state.conversations["c1"].last_message_id == "m9"
    conv = {"id": "c1", "unreadCount": 2, "lastReadMessageId": "m7", "lastMessage": {"id": "m9"}}
    state, _ = apply_event(
        state,
        "chat.conversation.updated",
        {"conversation": conv, "totalUnread": 2},
        watched_events=(),
    )
    assert state.conversations["c1"] == ConversationState(2, "m9", "m7") and state.chat_total == 2
    request = {"id": "f1", "toUserId": "u", "status": "PENDING"}
    state, _ = apply_event(state, "follow.request.created", {"request": request}, watched_events=())
    assert state.follow_pending == frozenset({"f1"})
    state, _ = apply_event(
        state,
        "follow.request.updated",
        {"request": {**request, "status": "ACCEPTED"}},
        watched_events=(),
    )
    assert state.follow_pending == frozenset()
    rsvp = {"rsvp": {"eventId": "ev1"}, "counts": {"going": 1, "interested": 3}}
    state, _ = apply_event(state, "event.rsvp.updated", rsvp, watched_events=("ev1",))
    assert state.event_counts["ev1"] == (1, 3)
    other = {"rsvp": {"eventId": "ev2"}, "counts": {"going": 9, "interested": 9}}
    assert apply_event(state, "event.rsvp.updated", other, watched_events=("ev1",))[0] == state


def test_only_accepted_follows_with_a_time_start_a_feed():
    sent = [
        {"toUserId": "a", "status": "ACCEPTED", "updatedAt": "2024-06-01T12:00:00Z"},
        {"toUserId": "b", "status": "PENDING", "updatedAt": "2024-06-01T12:00:01Z"},
        {"toUserId": "c", "status": "ACCEPTED", "updatedAt": None},
        {"toUserId": "d", "status": "DECLINED", "updatedAt": "2024-06-01T12:00:02Z"},
    ]
    assert followed_since_from(sent) == {"a": "2024-06-01T12:00:00Z"}


def test_a_user_setup_reads_back_what_its_query_asked_for():
    user = UserSetup(
        "u",
        "token",
        ("event", "organization", "presence"),
        ("event",),
        events=("ev1",),
        orgs=("o1",),
        presence_of=("v",),
    )
    query, variables = user.query(user.domains)
    assert variables == {"e0": "ev1", "o0": "o1", "pu": ["v"]}
    assert query.startswith("query ParityState($e0: ID!, $o0: ID!, $pu: [ID!]!)")
    data = {
        "realtimeCursor": {"epoch": "ep", "seq": 3},
        "e0": {"id": "ev1", "rsvpCounts": {"going": 1, "interested": 0}},
        "o0": {"viewerRole": "ADMIN", "members": [{"userId": "w", "role": "MEMBER"}]},
        "a0": [{"id": "an1"}],
        "presence": [{"userId": "v", "status": "ONLINE"}, {"userId": "x", "status": "AWAY"}],
    }
    state, epoch, seq = user.parse(data, user.domains)
    assert (epoch, seq) == ("ep", 3)
    assert state.event_counts == {"ev1": (1, 0)}
    assert state.orgs["o1"] == OrgState("ADMIN", (("w", "MEMBER"),), "an1")
    assert state.presence == {"v": "ONLINE"}  # only the watched users
    only_events, _, _ = user.parse(data, user.push_domains)
    assert only_events.orgs == {} and only_events.presence == {}


def test_a_member_sees_its_role_but_not_the_members():
    data = {
        "realtimeCursor": {"epoch": "ep", "seq": 1},
        "o0": {"viewerRole": "MEMBER", "members": [{"userId": "w", "role": "OWNER"}]},
        "a0": [],
    }
    state, _, _ = state_from_graphql("u", data, ["organization"], (), ["o1"])
    assert state.orgs["o1"] == OrgState("MEMBER", None, None)


@pytest.mark.parametrize(
    ("seq", "resuming", "expected"),
    [
        (4, False, Seq.REPEAT),
        (5, True, Seq.REPEAT),
        (6, False, Seq.NEXT),
        (6, True, Seq.NEXT),
        (8, False, Seq.GAP),
        (8, True, Seq.EARLY),
    ],
)
def test_a_seq_falls_before_at_or_past_the_next_one(seq, resuming, expected):
    assert place(seq, 5, resuming=resuming) is expected


def test_a_promoted_manager_needs_the_members_refetched():
    known = OrgState("ADMIN", (("u", "ADMIN"),), None)
    promoted = OrgState("ADMIN", None, None)
    member = OrgState("MEMBER", None, None)
    assert not members_unknown(UserState("u", orgs={"o1": known, "o2": member}))
    assert members_unknown(UserState("u", orgs={"o1": known, "o2": promoted}))


def test_a_refetch_fills_only_what_push_did_not_tell():
    pushed = UserState(
        "u",
        notification_unread=2,
        orgs={
            "o1": OrgState("ADMIN", None, "an1"),
            "o2": OrgState("OWNER", (("u", "OWNER"),), None),
        },
        presence={"v": "ONLINE"},
    )
    fresh = UserState(
        "u",
        notification_unread=9,
        orgs={
            "o1": OrgState("ADMIN", (("u", "ADMIN"), ("w", "MEMBER")), "an0"),
            "o2": OrgState("OWNER", (("u", "OWNER"), ("z", "MEMBER")), None),
            "o3": OrgState("OWNER", (), None),
        },
        presence={"v": "AWAY"},
    )
    orgs = merge_refetch(pushed, fresh, "organization")
    assert orgs.orgs["o1"] == OrgState("ADMIN", (("u", "ADMIN"), ("w", "MEMBER")), "an1")
    assert orgs.orgs["o2"] == pushed.orgs["o2"]  # pushed members stand
    assert (
        "o3" not in orgs.orgs and orgs.notification_unread == 2 and orgs.presence == {"v": "ONLINE"}
    )
    presence = merge_refetch(pushed, fresh, "presence")
    assert presence.presence == {"v": "AWAY"} and presence.orgs == pushed.orgs
    assert merge_refetch(pushed, fresh, "notification") == pushed
