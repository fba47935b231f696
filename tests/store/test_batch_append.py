"""The store contract for appending many events at once (`Tx.append_events`) and
recalling or remembering many idempotency keys at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest


class Boom(Exception):
    pass


def _all_events(store, user):
    events, after = [], 0
    while page := store.events_after(user, after, limit=500):
        events.extend(page)
        after = page[-1].seq
    return events


def test_a_batch_takes_each_users_next_seqs_in_its_order(store):
    with store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {"n": 0})
        tx.append_event("alice", "t.x.y", {"n": 1})
    alice_epoch = store.stream_position("alice").epoch
    appends = [
        ("alice", "t.x.y", {"n": 2}),
        ("bob", "t.x.z", {"n": 0}),
        ("alice", "t.x.y", {"n": 3}),
        ("carol", "t.x.y", {"n": 0}),
        ("bob", "t.x.z", {"n": 1}),
        ("alice", "t.x.y", {"n": 4}),
    ]
    with store.transaction() as tx:
        events = tx.append_events(appends)
    assert [(e.user_id, e.type, e.payload) for e in events] == appends
    assert [(e.user_id, e.seq) for e in events] == [
        ("alice", 3),
        ("bob", 1),
        ("alice", 4),
        ("carol", 1),
        ("bob", 2),
        ("alice", 5),
    ]
    assert {e.epoch for e in events if e.user_id == "alice"} == {alice_epoch}
    assert len({e.epoch for e in events}) == 3
    assert len({e.id for e in events}) == len(events)
    assert all(e.id.startswith("evt_") for e in events)
    assert {e.created_at for e in events} == {"2026-02-17T00:00:00.000Z"}
    for user, seq in (("alice", 5), ("bob", 2), ("carol", 1)):
        assert store.stream_position(user).seq == seq
        stored = _all_events(store, user)
        assert [e.seq for e in stored] == list(range(1, seq + 1))
    assert [e.payload["n"] for e in _all_events(store, "alice")] == [0, 1, 2, 3, 4]
    assert [e for e in _all_events(store, "bob")] == [e for e in events if e.user_id == "bob"]


def test_batches_and_single_appends_share_one_sequence(store):
    with store.transaction() as tx:
        assert tx.append_events([("alice", "t.x.y", {"n": 1})])[0].seq == 1
        assert tx.append_event("alice", "t.x.y", {"n": 2}).seq == 2
        assert [e.seq for e in tx.append_events([("alice", "t.x.y", {})] * 3)] == [3, 4, 5]
        assert tx.stream_position("alice").seq == 5
        assert tx.append_event("alice", "t.x.y", {}).seq == 6
    with store.transaction() as tx:
        assert [e.seq for e in tx.append_events([("alice", "t.x.y", {})] * 2)] == [7, 8]
    assert [e.seq for e in _all_events(store, "alice")] == list(range(1, 9))


def test_an_empty_batch_appends_nothing(store):
    with store.transaction() as tx:
        assert tx.append_events([]) == []
    assert store.stream_position("alice").seq == 0


def test_a_snapshot_refuses_a_batch(store):
    with pytest.raises(RuntimeError), store.snapshot() as tx:
        tx.append_events([("alice", "t.x.y", {})])
    assert store.stream_position("alice").seq == 0


def test_an_exception_after_a_batch_rolls_it_back(store):
    with store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {"kept": True})
    with pytest.raises(Boom), store.transaction() as tx:
        tx.append_events([("alice", "t.x.y", {"lost": 1}), ("bob", "t.x.y", {"lost": 1})])
        tx.remember_idempotencies("pub", [("k1", "{}")], now=1.0)
        raise Boom
    assert [e.payload for e in store.events_after("alice", 0)] == [{"kept": True}]
    assert store.stream_position("bob").seq == 0
    with store.snapshot() as tx:
        assert tx.recall_idempotencies("pub", ["k1"], since=0.0) == {}
    with store.transaction() as tx:
        assert [e.seq for e in tx.append_events([("alice", "t.x.y", {})] * 2)] == [2, 3]


def test_a_batch_failing_midway_rolls_back_the_whole_transaction(store):
    with store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {"kept": True})
    with pytest.raises(TypeError), store.transaction() as tx:
        tx.append_event("carol", "t.x.y", {"lost": 0})
        tx.append_events(
            [
                ("alice", "t.x.y", {"lost": 1}),
                ("bob", "t.x.y", {"lost": 1}),
                ("alice", "t.x.y", {"unencodable": object()}),
                ("bob", "t.x.y", {"lost": 2}),
            ]
        )
    assert [e.payload for e in store.events_after("alice", 0)] == [{"kept": True}]
    assert store.stream_position("alice").seq == 1
    assert store.stream_position("bob").seq == 0
    assert store.stream_position("carol").seq == 0


@pytest.mark.slow  # a stress test: concurrent writers on two store handles
@pytest.mark.parametrize("users", [["same"], ["a", "b", "c"]])
def test_batches_keep_seq_contiguous_under_concurrent_writers(make_store, users):
    threads, rounds, batch = 6, 30, 7
    stores = [make_store() for _ in range(2)]  # two stores on one data, like two processes
    barrier = threading.Barrier(threads)

    def writer(index: int) -> list[tuple[str, int]]:
        store = stores[index % len(stores)]
        barrier.wait()
        seqs = []
        for n in range(rounds):
            with store.transaction() as tx:
                if n % 3 == 0:  # a single append between batches
                    events = [tx.append_event(users[index % len(users)], "t.x.y", {"w": index})]
                else:
                    appends = [
                        (users[(index + i) % len(users)], "t.x.y", {"w": index, "i": i})
                        for i in range(batch)
                    ]
                    events = tx.append_events(appends)
            seqs.extend((event.user_id, event.seq) for event in events)
        return seqs

    with ThreadPoolExecutor(threads) as pool:
        results = [seq for part in pool.map(writer, range(threads)) for seq in part]
    for user in users:
        seqs = sorted(seq for who, seq in results if who == user)
        assert seqs == list(range(1, len(seqs) + 1))
        stored = _all_events(stores[0], user)
        assert [e.seq for e in stored] == seqs
        # A batch's events of one user are adjacent and in the batch's order.
        by_writer: dict[int, list[int]] = {}
        for event in stored:
            if "i" in event.payload:
                by_writer.setdefault(event.payload["w"], []).append(event.payload["i"])
        for index, order in by_writer.items():
            per_batch = [i for i in range(batch) if users[(index + i) % len(users)] == user]
            assert order == per_batch * (len(order) // len(per_batch))


def test_idempotency_records_in_bulk(store):
    with store.transaction() as tx:
        assert tx.recall_idempotencies("pub", ["k1", "k2"], since=0.0) == {}
        tx.remember_idempotencies("pub", [("k1", '{"a":1}'), ("k2", '{"b":2}')], now=100.0)
        tx.remember_idempotency("pub", "k3", '{"c":3}', now=200.0)
        tx.remember_idempotencies("other", [("k1", '{"o":1}')], now=100.0)
        tx.remember_idempotencies("pub", [], now=100.0)
    with store.snapshot() as tx:
        assert tx.recall_idempotencies("pub", ["k1", "k2", "k3", "k4"], since=50.0) == {
            "k1": '{"a":1}',
            "k2": '{"b":2}',
            "k3": '{"c":3}',
        }
        assert tx.recall_idempotencies("pub", ["k1", "k3"], since=150.0) == {"k3": '{"c":3}'}
        assert tx.recall_idempotencies("other", ["k1", "k2"], since=0.0) == {"k1": '{"o":1}'}
        assert tx.recall_idempotencies("pub", [], since=0.0) == {}
        assert tx.recall_idempotency("pub", "k2", since=0.0) == '{"b":2}'
    # Remembering a key again replaces its record and its time, as one at a time does.
    with store.transaction() as tx:
        tx.remember_idempotencies("pub", [("k1", '{"a":2}')], now=300.0)
    with store.snapshot() as tx:
        assert tx.recall_idempotencies("pub", ["k1"], since=250.0) == {"k1": '{"a":2}'}
