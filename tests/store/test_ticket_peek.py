"""The store contract for looking at a handshake ticket without using it up."""

from __future__ import annotations


def test_a_peeked_ticket_is_kept_until_it_is_taken(store):
    store.put_ticket("h1", "alice", 1000.0, '{"sub":"alice"}')
    assert store.peek_ticket("h1", 999.0) == ("alice", '{"sub":"alice"}')
    assert store.peek_ticket("h1", 999.0) == ("alice", '{"sub":"alice"}')
    assert store.take_ticket("h1", 999.0) == ("alice", '{"sub":"alice"}')
    assert store.peek_ticket("h1", 999.0) is None


def test_peek_refuses_unknown_and_expired_tickets(store):
    store.put_ticket("h1", "alice", 1000.0, "{}")
    assert store.peek_ticket("unknown", 0.0) is None
    assert store.peek_ticket("h1", 1000.0) is None  # expired at its expiry, as take has it
    assert store.take_ticket("h1", 999.0) == ("alice", "{}")  # peeking used nothing up
