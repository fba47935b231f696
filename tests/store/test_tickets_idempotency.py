"""The store contract for handshake tickets and idempotency records."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest


def test_a_ticket_is_taken_once(store):
    store.put_ticket("h1", "alice", 1000.0, '{"sub":"alice"}')
    assert store.take_ticket("h1", 999.0) == ("alice", '{"sub":"alice"}')
    assert store.take_ticket("h1", 999.0) is None
    assert store.take_ticket("unknown", 0.0) is None


def test_an_expired_ticket_is_refused_and_gone(store):
    store.put_ticket("h1", "alice", 1000.0, "{}")
    assert store.take_ticket("h1", 1000.0) is None
    store.put_ticket("h1", "alice", 2000.0, "{}")  # the hash is free again
    assert store.take_ticket("h1", 1500.0) == ("alice", "{}")


def test_concurrent_takes_succeed_once(store):
    store.put_ticket("h1", "alice", 1000.0, "{}")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.take_ticket("h1", 1.0), range(8)))
    assert results.count(("alice", "{}")) == 1
    assert results.count(None) == 7


def test_idempotency_records(store):
    with store.transaction() as tx:
        assert tx.recall_idempotency("pub", "k1", since=0.0) is None
        tx.remember_idempotency("pub", "k1", '{"ok":1}', now=100.0)
    with store.snapshot() as tx:
        assert tx.recall_idempotency("pub", "k1", since=50.0) == '{"ok":1}'
        assert tx.recall_idempotency("pub", "k1", since=100.0) == '{"ok":1}'
        assert tx.recall_idempotency("pub", "k1", since=150.0) is None
        assert tx.recall_idempotency("other", "k1", since=0.0) is None


def test_idempotency_record_rolls_back_with_its_transaction(store):
    with pytest.raises(KeyError), store.transaction() as tx:
        tx.remember_idempotency("pub", "k1", "{}", now=1.0)
        raise KeyError
    with store.snapshot() as tx:
        assert tx.recall_idempotency("pub", "k1", since=0.0) is None
