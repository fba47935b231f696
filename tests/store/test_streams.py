"""The store contract for per-user event streams: seq, atomicity, paging, retention, epochs."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.errors import HistoryExpired
from gateway.store import open_store


class Boom(Exception):
    pass


def test_first_append_starts_a_stream_at_seq_1(store):
    with store.transaction() as tx:
        first = tx.append_event("alice", "notification.new", {"n": 1})
        second = tx.append_event("alice", "notification.new", {"n": 2})
    assert (first.seq, second.seq) == (1, 2)
    assert first.epoch == second.epoch
    assert first.id != second.id and first.id.startswith("evt_")
    assert first.created_at == "2026-02-17T00:00:00.000Z"
    assert store.stream_position("alice").seq == 2
    assert store.stream_position("alice").epoch == first.epoch


def test_a_user_without_events_has_a_stable_position_at_seq_0(store):
    position = store.stream_position("nobody")
    assert position.seq == 0
    assert store.stream_position("nobody") == position
    assert store.events_after("nobody", 0) == []
    with store.transaction() as tx:
        event = tx.append_event("nobody", "t.x.y", {})
    assert (event.epoch, event.seq) == (position.epoch, 1)


def test_streams_are_per_user(store):
    with store.transaction() as tx:
        a = tx.append_event("alice", "t.x.y", {})
        b = tx.append_event("bob", "t.x.y", {})
        a2 = tx.append_event("alice", "t.x.y", {})
    assert (a.seq, b.seq, a2.seq) == (1, 1, 2)
    assert a.epoch != b.epoch


@pytest.mark.slow
@pytest.mark.parametrize("users", [["same"], [f"user{i}" for i in range(8)]])
def test_seq_is_contiguous_under_concurrent_writers(make_store, users):
    threads, per_thread = 8, 200
    stores = [make_store() for _ in range(2)]  # two stores on one file, like two processes
    barrier = threading.Barrier(threads)

    def writer(index: int) -> list[tuple[str, int]]:
        store = stores[index % len(stores)]
        user = users[index % len(users)]
        barrier.wait()
        seqs = []
        for n in range(per_thread):
            with store.transaction() as tx:
                event = tx.append_event(user, "t.x.y", {"writer": index, "n": n})
            seqs.append((user, event.seq))
        return seqs

    with ThreadPoolExecutor(threads) as pool:
        results = [seq for part in pool.map(writer, range(threads)) for seq in part]
    total_per_user = threads * per_thread // len(users)
    for user in users:
        seqs = sorted(seq for who, seq in results if who == user)
        assert seqs == list(range(1, total_per_user + 1))
        events = []
        after = 0
        while page := stores[0].events_after(user, after, limit=500):
            events.extend(page)
            after = page[-1].seq
        assert [event.seq for event in events] == list(range(1, total_per_user + 1))
        # Each writer's events appear in the order it wrote them.
        for index in range(threads):
            ns = [e.payload["n"] for e in events if e.payload["writer"] == index]
            assert ns == sorted(ns)


def test_an_exception_rolls_back_state_and_events(store):
    with store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {"kept": True})
    with pytest.raises(Boom), store.transaction() as tx:
        tx.upsert_user("alice", "Alice")
        tx.insert_notification(
            {"id": "n1", "user_id": "alice", "kind": "K", "text": "t", "created_at": "x"}
        )
        tx.append_event("alice", "notification.new", {"lost": True})
        tx.append_event("bob", "notification.new", {"lost": True})
        raise Boom
    assert [e.payload for e in store.events_after("alice", 0)] == [{"kept": True}]
    assert store.stream_position("alice").seq == 1
    assert store.stream_position("bob").seq == 0
    with store.snapshot() as tx:
        assert tx.get_user("alice") is None
        assert tx.count_unread_notifications("alice") == 0
    # The seq the rolled-back event had is given to the next one: no gap.
    with store.transaction() as tx:
        assert tx.append_event("alice", "t.x.y", {}).seq == 2


def test_a_snapshot_refuses_writes(store):
    with pytest.raises(RuntimeError), store.snapshot() as tx:
        tx.append_event("alice", "t.x.y", {})
    assert store.stream_position("alice").seq == 0


def test_events_after_orders_and_limits(store):
    with store.transaction() as tx:
        for n in range(1, 11):
            tx.append_event("alice", "t.x.y", {"n": n})
    assert [e.seq for e in store.events_after("alice", 0)] == list(range(1, 11))
    assert [e.seq for e in store.events_after("alice", 3, limit=4)] == [4, 5, 6, 7]
    assert [e.payload["n"] for e in store.events_after("alice", 8)] == [9, 10]
    assert store.events_after("alice", 10) == []
    assert store.events_after("alice", 50) == []
    event = store.events_after("alice", 0, limit=1)[0]
    assert (event.user_id, event.type) == ("alice", "t.x.y")


def test_retention_by_count_and_history_expired(store, clock):
    with store.transaction() as tx:
        for n in range(1, 11):
            tx.append_event("alice", "t.x.y", {"n": n})
            tx.append_event("bob", "t.x.y", {"n": n})
    with store.transaction() as tx:
        tx.append_event("bob", "t.x.y", {"n": 11})
    removed = store.prune(clock(), max_count=4)
    assert removed == 6 + 7
    assert [e.seq for e in store.events_after("alice", 6)] == [7, 8, 9, 10]
    assert [e.seq for e in store.events_after("bob", 7)] == [8, 9, 10, 11]
    with pytest.raises(HistoryExpired):
        store.events_after("alice", 5)
    with pytest.raises(HistoryExpired):
        store.events_after("alice", 0)
    assert store.events_after("alice", 10) == []  # up to date: nothing is missing
    assert store.prune(clock(), max_count=4) == 0
    # Appending after a prune continues the same seq.
    with store.transaction() as tx:
        assert tx.append_event("alice", "t.x.y", {}).seq == 11


def test_retention_by_age_even_when_everything_is_gone(store, clock):
    with store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {"n": 1})
        tx.append_event("alice", "t.x.y", {"n": 2})
    clock.advance(days=3)
    with store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {"n": 3})
    assert store.prune(clock(), max_age=dt.timedelta(days=7)) == 0
    assert store.prune(clock(), max_age=dt.timedelta(days=2)) == 2
    assert [e.seq for e in store.events_after("alice", 2)] == [3]
    with pytest.raises(HistoryExpired):
        store.events_after("alice", 1)
    clock.advance(days=3)
    assert store.prune(clock(), max_age=dt.timedelta(days=2)) == 1
    with pytest.raises(HistoryExpired):
        store.events_after("alice", 2)
    assert store.events_after("alice", 3) == []
    assert store.stream_position("alice").seq == 3


def test_reset_stream_starts_a_new_epoch(store):
    with store.transaction() as tx:
        old = tx.append_event("alice", "t.x.y", {})
        tx.append_event("alice", "t.x.y", {})
    cursor = store.reset_stream("alice")
    assert cursor.epoch != old.epoch and cursor.seq == 0
    assert store.stream_position("alice") == cursor
    assert store.events_after("alice", 0) == []
    with store.transaction() as tx:
        fresh = tx.append_event("alice", "t.x.y", {})
    assert (fresh.epoch, fresh.seq) == (cursor.epoch, 1)
    assert [e.id for e in store.events_after("alice", 0)] == [fresh.id]


def test_data_survives_reopening_the_file(make_store):
    first = make_store()
    with first.transaction() as tx:
        event = tx.append_event("alice", "t.x.y", {"n": 1})
    first.close()
    again = make_store()
    assert again.events_after("alice", 0) == [event]


def test_open_store_accepts_relative_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///var/rel.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    try:
        assert (tmp_path / "var" / "rel.db").exists()
        assert (tmp_path / "abs.db").exists()
        assert relative.stream_position("u").seq == 0
    finally:
        relative.close()
        absolute.close()
    for bad in ("sqlite:///", "mysql://x", "sqlite:///:memory:"):
        with pytest.raises(ValueError):
            open_store(bad)


@pytest.mark.slow
def test_stream_heads_reads_many_positions_at_once(store):
    users = [f"u{n}" for n in range(1200)]  # more than one chunk of the batched query
    with store.transaction() as tx:
        for n, user in enumerate(users[:700]):
            for _ in range(n % 3 + 1):
                tx.append_event(user, "t.x.y", {})
    heads = store.stream_heads([*users, "u5"])
    assert set(heads) == set(users[:700])  # users without a stream are left out
    for n, user in enumerate(users[:700]):
        assert heads[user] == store.stream_position(user)
        assert heads[user].seq == n % 3 + 1
