"""The observers' pure halves: reading a poll response and applying push events."""

from __future__ import annotations

from parity.model import ConversationState, UserState
from parity.observers import apply_event, state_from_graphql, state_query

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
