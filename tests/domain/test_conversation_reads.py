"""The conversation list's batched reads: the same answers as the per-conversation
reads, a fixed number of statements, and views of only the wanted fields."""

from __future__ import annotations

import pytest

from gateway.domain import Viewer, chat
from gateway.store import SqliteStore, Tx


@pytest.fixture
def chats(domain, alice, bob, carol):
    """Conversations in every state: read, unread, own messages only, empty, delivered."""
    read = domain.create_conversation(alice, ["bob"]).value["id"]
    domain.send_chat_message(bob, read, "one")
    second = domain.send_chat_message(bob, read, "two").value
    domain.mark_conversation_read(alice, read, second["id"])
    domain.send_chat_message(bob, read, "three")
    unread = domain.create_conversation(carol, ["alice", "bob"]).value["id"]
    for text in ("a", "b"):
        domain.send_chat_message(carol, unread, text)
    domain.mark_delivered(bob, unread, [domain.messages(bob, unread)[-1]["id"]])
    own = domain.create_conversation(alice, ["carol"]).value["id"]
    domain.send_chat_message(alice, own, "mine")
    empty = domain.create_conversation(bob, ["alice"]).value["id"]
    return [read, unread, own, empty]


def test_batched_reads_answer_as_the_per_conversation_reads(store, chats):
    ids = [*chats, chats[0], "cnv-unknown"]
    with store.snapshot() as tx:
        for user_id in ("alice", "bob", "carol"):
            assert tx.unread_counts(user_id, ids) == Tx.unread_counts(tx, user_id, ids)
        assert tx.last_messages(ids) == Tx.last_messages(tx, ids)
        assert tx.participants_of(ids) == Tx.participants_of(tx, ids)
        assert tx.read_states_of(ids) == Tx.read_states_of(tx, ids)
        assert tx.last_messages([]) == {} and tx.unread_counts("alice", []) == {}
        assert tx.unread_counts("alice", chats) == {
            chats[0]: 1,
            chats[1]: 2,
            chats[2]: 0,
            chats[3]: 0,
        }
        assert set(tx.last_messages(ids)) == set(chats[:3])


def test_views_are_the_single_conversation_views(domain, store, chats, alice):
    listed = domain.conversations(alice)
    assert [view["id"] for view in listed] == list(reversed(chats))
    with store.snapshot() as tx:
        for view in listed:
            one = chat.conversation_view(tx, tx.get_conversation(view["id"]), "alice")
            assert one == view
    unread = next(view for view in listed if view["id"] == chats[1])
    assert unread["unreadCount"] == 2 and unread["lastReadMessageId"] is None
    assert unread["lastMessage"]["deliveredTo"] == ["bob"]
    read = next(view for view in listed if view["id"] == chats[0])
    assert read["lastMessage"]["body"] == "three" and read["unreadCount"] == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"id", "unreadCount", "lastMessage", "lastMessage.id", "lastMessage.body"},
        {"id"},
        {"participantIds", "updatedAt"},
        {"lastReadMessageId"},
        {"lastMessage", "lastMessage.readBy"},
        {"lastMessage", "lastMessage.deliveredTo"},
    ],
)
def test_a_view_of_some_fields_holds_those_of_the_full_view(domain, chats, alice, fields):
    full = domain.conversations(alice)
    some = domain.conversations(alice, fields=frozenset(fields))
    assert [view["id"] for view in some] == [view["id"] for view in full]
    for part, whole in zip(some, full, strict=True):
        for name in fields:
            top, _, inner = name.partition(".")
            if inner and whole[top] is not None:
                assert part[top][inner] == whole[top][inner]
            elif isinstance(whole[top], dict):  # the message: what it holds is the same
                assert {key: whole[top][key] for key in part[top]} == part[top]
            else:
                assert part[top] == whole[top]


def test_the_poll_reads_no_participants_read_states_or_deliveries(domain, chats, alice):
    poll = domain.conversations(
        alice, fields=frozenset({"id", "unreadCount", "lastMessage", "lastMessage.id"})
    )
    assert all("participantIds" not in view for view in poll)
    assert all("lastReadMessageId" not in view for view in poll)
    assert all(
        view["lastMessage"] is None
        or view["lastMessage"].keys().isdisjoint({"readBy", "deliveredTo"})
        for view in poll
    )


def test_listing_takes_the_same_statements_for_two_or_twenty_conversations(tmp_path, clock):
    """No statement per conversation (SQLite: every statement traced)."""
    from gateway.domain import Domain

    store = SqliteStore(tmp_path / "count.db", clock=clock)
    domain = Domain(store, clock=clock)
    alice = Viewer("alice")
    statements: list[str] = []

    def listed() -> int:
        statements.clear()
        conn = store._connection()
        conn.set_trace_callback(statements.append)
        try:
            with domain.consistent_read():
                domain.unread_notification_count(alice)
                views = domain.conversations(alice)
                domain.chat_unread_count(alice)
        finally:
            conn.set_trace_callback(None)
        assert all(view["lastMessage"] is not None for view in views)
        return len(statements)

    try:
        counts = []
        for size in (2, 20):
            while len(domain.conversations(alice)) < size:
                other = Viewer(f"u{len(domain.conversations(alice))}")
                conversation = domain.create_conversation(other, ["alice"]).value["id"]
                domain.send_chat_message(other, conversation, "hi")
            counts.append(listed())
        assert counts[0] == counts[1]
    finally:
        store.close()
