"""Chat: conversations, messages, unread counting, reads, deliveries, typing, authorization."""

from __future__ import annotations

import pytest

from gateway.domain import Viewer
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound

from .conftest import assert_streams_contiguous, by_user, types_for


@pytest.fixture
def pair(domain, alice, bob):
    return domain.create_conversation(alice, ["bob"]).value


def test_create_conversation_includes_the_caller_and_tells_everyone(domain, alice):
    outcome = domain.create_conversation(alice, ["bob", "carol", "bob"])
    conversation = outcome.value
    assert conversation["participantIds"] == ["alice", "bob", "carol"]
    assert conversation["lastMessage"] is None
    assert conversation["unreadCount"] == 0
    assert conversation["lastReadMessageId"] is None
    assert sorted(by_user(outcome)) == ["alice", "bob", "carol"]
    for user_id in ("alice", "bob", "carol"):
        assert types_for(outcome, user_id) == ["chat.conversation.updated"]


@pytest.mark.parametrize("ids", [[], ["alice"], "bob", [None]])
def test_create_conversation_needs_someone_else(domain, alice, ids):
    with pytest.raises(BadRequest):
        domain.create_conversation(alice, ids)


def test_send_appends_message_and_updates_to_every_participant(domain, store, pair, alice, bob):
    outcome = domain.send_chat_message(alice, pair["id"], "hello", "c-1")
    message = outcome.value
    assert message["senderId"] == "alice" and message["body"] == "hello"
    assert message["clientMessageId"] == "c-1"
    assert message["deliveredTo"] == [] and message["readBy"] == []
    events = by_user(outcome)
    for user_id in ("alice", "bob"):
        assert [t for t, _ in events[user_id]] == ["chat.message", "chat.conversation.updated"]
        assert events[user_id][0][1] == {"message": message}
    alice_view = events["alice"][1][1]
    bob_view = events["bob"][1][1]
    assert alice_view["conversation"]["unreadCount"] == 0 and alice_view["totalUnread"] == 0
    assert bob_view["conversation"]["unreadCount"] == 1 and bob_view["totalUnread"] == 1
    assert bob_view["conversation"]["lastMessage"]["id"] == message["id"]
    assert_streams_contiguous(store, "alice", "bob")


def test_send_is_idempotent_on_client_message_id(domain, store, pair, alice):
    first = domain.send_chat_message(alice, pair["id"], "hello", "c-1")
    head = store.stream_position("bob").seq
    replay = domain.send_chat_message(alice, pair["id"], "hello again", "c-1")
    assert replay.value == first.value
    assert replay.events == ()
    assert store.stream_position("bob").seq == head
    assert len(domain.messages(alice, pair["id"])) == 1
    other = domain.create_conversation(alice, ["carol"]).value
    with pytest.raises(Conflict):
        domain.send_chat_message(alice, other["id"], "hello", "c-1")


def test_unread_counts_messages_from_others_after_the_last_read(domain, pair, alice, bob):
    group = domain.create_conversation(bob, ["alice", "carol"]).value
    domain.send_chat_message(alice, pair["id"], "a1")
    b1 = domain.send_chat_message(bob, pair["id"], "b1").value
    domain.send_chat_message(bob, pair["id"], "b2")
    domain.send_chat_message(bob, group["id"], "g1")
    assert domain.chat_unread_count(alice) == 3
    assert domain.chat_unread_count(bob) == 1
    assert domain.conversation(alice, pair["id"])["unreadCount"] == 2

    read = domain.mark_conversation_read(alice, pair["id"], b1["id"])
    assert read.value["unreadCount"] == 1
    assert read.value["lastReadMessageId"] == b1["id"]
    assert domain.chat_unread_count(alice) == 2
    events = by_user(read)
    assert [t for t, _ in events["alice"]] == ["chat.read", "chat.conversation.updated"]
    assert [t for t, _ in events["bob"]] == ["chat.read"]
    read_payload = events["bob"][0][1]
    assert read_payload["conversationId"] == pair["id"]
    assert read_payload["userId"] == "alice"
    assert read_payload["upToMessageId"] == b1["id"]
    assert events["alice"][1][1]["totalUnread"] == 2

    latest = domain.mark_conversation_read(alice, pair["id"])
    assert latest.value["unreadCount"] == 0
    assert domain.chat_unread_count(alice) == 1
    # Reading an older message again moves nothing and tells nobody.
    back = domain.mark_conversation_read(alice, pair["id"], b1["id"])
    assert back.events == ()
    assert back.value["unreadCount"] == 0
    listed = {c["id"]: c["unreadCount"] for c in domain.conversations(alice)}
    assert listed == {pair["id"]: 0, group["id"]: 1}
    assert sum(listed.values()) == domain.chat_unread_count(alice)


def test_read_by_and_delivered_to(domain, pair, alice, bob):
    sent = domain.send_chat_message(alice, pair["id"], "hi").value
    delivered = domain.mark_delivered(bob, pair["id"], [sent["id"]])
    assert delivered.value == 1
    (event,) = delivered.events
    assert (event.user_id, event.type) == ("alice", "chat.message.delivered")
    assert event.payload["messageId"] == sent["id"] and event.payload["userId"] == "bob"
    assert domain.mark_delivered(bob, pair["id"], [sent["id"]]).events == ()
    # The sender's own devices do not count as deliveries.
    assert domain.mark_delivered(alice, pair["id"], [sent["id"]]).value == 0
    with pytest.raises(BadRequest):
        domain.mark_delivered(bob, pair["id"], ["msg_unknown"])
    domain.mark_conversation_read(bob, pair["id"])
    (message,) = domain.messages(alice, pair["id"])
    assert message["deliveredTo"] == ["bob"]
    assert message["readBy"] == ["bob"]


def test_messages_last_and_before(domain, pair, alice):
    ids = [domain.send_chat_message(alice, pair["id"], f"m{i}").value["id"] for i in range(6)]
    assert [m["id"] for m in domain.messages(alice, pair["id"])] == ids
    assert [m["id"] for m in domain.messages(alice, pair["id"], last=2)] == ids[-2:]
    assert [m["id"] for m in domain.messages(alice, pair["id"], last=2, before=ids[3])] == ids[1:3]
    with pytest.raises(BadRequest):
        domain.messages(alice, pair["id"], before="msg_elsewhere")


def test_conversations_most_recent_first(domain, alice):
    first = domain.create_conversation(alice, ["bob"]).value
    second = domain.create_conversation(alice, ["carol"]).value
    assert [c["id"] for c in domain.conversations(alice)] == [second["id"], first["id"]]
    domain.send_chat_message(alice, first["id"], "bump")
    assert [c["id"] for c in domain.conversations(alice)] == [first["id"], second["id"]]
    assert [c["id"] for c in domain.conversations(alice, first=1)] == [first["id"]]


def test_outsiders_are_refused_and_nothing_changes(domain, store, pair, alice, carol):
    domain.send_chat_message(alice, pair["id"], "secret")
    heads = {u: store.stream_position(u).seq for u in ("alice", "bob", "carol")}
    for call in (
        lambda: domain.conversation(carol, pair["id"]),
        lambda: domain.messages(carol, pair["id"]),
        lambda: domain.send_chat_message(carol, pair["id"], "let me in"),
        lambda: domain.mark_conversation_read(carol, pair["id"]),
        lambda: domain.mark_delivered(carol, pair["id"], []),
        lambda: domain.typing(carol, pair["id"], "started"),
    ):
        with pytest.raises(Forbidden):
            call()
    with pytest.raises(NotFound):
        domain.conversation(alice, "cnv_unknown")
    with pytest.raises(NotFound):
        domain.send_chat_message(alice, "cnv_unknown", "x")
    assert {u: store.stream_position(u).seq for u in heads} == heads
    assert len(domain.messages(alice, pair["id"])) == 1


def test_empty_body_is_refused_without_effects(domain, store, pair, alice):
    head = store.stream_position("bob").seq
    for body in ("", "   ", None):
        with pytest.raises(BadRequest):
            domain.send_chat_message(alice, pair["id"], body)
    assert store.stream_position("bob").seq == head
    assert domain.messages(alice, pair["id"]) == []


def test_typing_is_ephemeral_to_the_topic_without_the_typist(domain, store, pair, alice):
    head = store.stream_position("bob").seq
    outcome = domain.typing(alice, pair["id"], "started")
    assert outcome.events == ()
    (event,) = outcome.ephemeral
    assert event.type == "chat.typing.started"
    assert event.payload == {"conversationId": pair["id"], "userId": "alice"}
    assert (event.cls, event.topic, event.exclude_user) == (
        "drop",
        f"conversation:{pair['id']}",
        "alice",
    )
    assert domain.typing(alice, pair["id"], "stopped").ephemeral[0].type == "chat.typing.stopped"
    with pytest.raises(BadRequest):
        domain.typing(alice, pair["id"], "dancing")
    assert store.stream_position("bob").seq == head


def test_leaving_tells_the_others_and_revokes_the_leavers_topic(domain):
    alice, bob, carol = Viewer("alice"), Viewer("bob"), Viewer("carol")
    conv = domain.create_conversation(alice, ["bob", "carol"]).value["id"]
    outcome = domain.leave_conversation(bob, conv)
    assert outcome.value is True
    assert {e.user_id for e in outcome.events} == {"alice", "carol"}
    assert all(e.type == "chat.conversation.updated" for e in outcome.events)
    assert outcome.events[0].payload["conversation"]["participantIds"] == ["alice", "carol"]
    (revoked,) = outcome.ephemeral
    assert revoked.type == "subscription.revoked" and revoked.users == ("bob",)
    assert revoked.payload == {"topic": f"conversation:{conv}", "reason": "LEFT_CONVERSATION"}
    assert not domain.can_subscribe(bob, f"conversation:{conv}")
    with pytest.raises(Forbidden):
        domain.send_chat_message(bob, conv, "still here?")
    with pytest.raises(Forbidden):
        domain.leave_conversation(bob, conv)
    assert domain.conversations(bob) == []
    assert [c["id"] for c in domain.conversations(carol)] == [conv]
