"""A publish request's commit: one batch append, its keys recalled and remembered in bulk."""

from __future__ import annotations

import pytest

from gateway.auth import AuthConfig, Authenticator
from gateway.errors import StoreUnavailable
from gateway.faults import OmittingStore, parse_faults
from gateway.publish_api import PublishApi
from gateway.store import SqliteTx, run_store
from tests.publish.conftest import API_KEY, SECRET
from tests.publish.test_publish_api import KEY, activity, durable, head, like


def _event(users, n, **extra) -> dict:
    return durable(users=users) | {"payload": activity(n=n)} | extra


async def test_interleaved_recipients_take_contiguous_seqs_in_request_order(api, store, fanout):
    await api.handle(KEY, _event(["carol"], 0))  # carol's stream exists, at 1
    events = [
        _event(["bob", "carol"], 1),
        _event(["dave"], 2),
        _event(["carol"], 3),
        _event(["bob", "dave", "carol"], 4),
        _event(["bob"], 5),
    ]
    status, body = await api.handle(KEY, {"events": events})
    assert status == 202
    assert [r["recipients"] for r in body["results"]] == [
        {"bob": 1, "carol": 2},
        {"dave": 1},
        {"carol": 3},
        {"bob": 2, "dave": 2, "carol": 4},
        {"bob": 3},
    ]
    fanned = fanout.calls[-1][0]
    assert [(e.user_id, e.seq) for e in fanned] == [
        ("bob", 1),
        ("carol", 2),
        ("dave", 1),
        ("carol", 3),
        ("bob", 2),
        ("dave", 2),
        ("carol", 4),
        ("bob", 3),
    ]
    for user, ns in (("bob", [1, 4, 5]), ("carol", [0, 1, 3, 4]), ("dave", [2, 4])):
        stored = await run_store(store.events_after, user, 0)
        assert [e.seq for e in stored] == list(range(1, len(ns) + 1))
        assert [e.payload["activity"]["id"] for e in stored] == [f"a{n}" for n in ns]
        if user != "carol":  # the others' streams hold only this request's events
            assert stored == [e for e in fanned if e.user_id == user]


async def test_a_keyed_batch_replays_with_the_same_seqs_and_appends_nothing(api, store, fanout):
    events = [_event(["bob", "carol"], n, idempotencyKey=f"k{n}") for n in range(4)]
    first_status, first = await api.handle(KEY, {"events": events})
    assert first_status == 202 and first["replayed"] is False
    calls = len(fanout.calls)

    status, body = await api.handle(KEY, {"events": events})
    assert status == 202 and body["replayed"] is True
    assert body["results"] == [{**r, "replayed": True} for r in first["results"]]
    assert [r["recipients"] for r in body["results"]] == [
        {"bob": n, "carol": n} for n in range(1, 5)
    ]
    assert len(fanout.calls) == calls
    assert await head(store, "bob") == 4
    assert await head(store, "carol") == 4

    # Replays and new events in one batch: only the new ones are appended.
    mixed = [events[2], _event(["carol"], 9, idempotencyKey="k9"), events[0]]
    status, body = await api.handle(KEY, {"events": mixed})
    assert [(r["recipients"], r["replayed"]) for r in body["results"]] == [
        ({"bob": 3, "carol": 3}, True),
        ({"carol": 5}, False),
        ({"bob": 1, "carol": 1}, True),
    ]
    assert [(e.user_id, e.seq) for e in fanout.calls[-1][0]] == [("carol", 5)]
    status, body = await api.handle(KEY, _event(["carol"], 9, idempotencyKey="k9"))
    assert (body["replayed"], body["results"][0]["recipients"]) == (True, {"carol": 5})


async def test_a_store_failure_after_the_batch_append_commits_nothing(
    api, store, fanout, monkeypatch
):
    await api.handle(KEY, _event(["bob"], 0))

    def fail(self, scope, records, now):
        raise StoreUnavailable("the store failed")

    monkeypatch.setattr(SqliteTx, "remember_idempotencies", fail)
    events = [_event(["bob", "carol"], 1), _event(["carol"], 2, idempotencyKey="x")]
    with pytest.raises(StoreUnavailable):
        await api.handle(KEY, {"events": events})
    assert await head(store, "bob") == 1
    assert await head(store, "carol") == 0
    assert len(fanout.calls) == 1
    monkeypatch.undo()
    status, body = await api.handle(KEY, {"events": events})
    assert status == 202 and body["replayed"] is False
    assert [r["recipients"] for r in body["results"]] == [{"bob": 2, "carol": 1}, {"carol": 2}]


async def test_omitted_events_of_a_batch_are_left_out_and_the_rest_stay_contiguous(
    store, fanout, registry, clock
):
    omitting = OmittingStore(store, parse_faults("omit_push=feed.like.created:1.0"))
    authenticator = Authenticator(AuthConfig(secret=SECRET))
    api = PublishApi(omitting, fanout, lambda: registry, authenticator, [API_KEY], clock=clock)
    liked = {"type": "feed.like.created", "payload": like(), "to": {"users": ["bob"]}}
    events = [_event(["bob"], 1), liked, _event(["bob", "carol"], 2), liked]
    status, body = await api.handle(KEY, {"events": events})
    assert status == 202
    assert [r["recipients"] for r in body["results"]] == [
        {"bob": 1},
        {"bob": 0},
        {"bob": 2, "carol": 1},
        {"bob": 0},
    ]
    assert [(e.user_id, e.seq) for e in fanout.events] == [
        ("bob", 1),
        ("bob", 0),
        ("bob", 2),
        ("carol", 1),
        ("bob", 0),
    ]
    stored = await run_store(store.events_after, "bob", 0)
    assert [(e.seq, e.type) for e in stored] == [
        (1, "goal.activity.created"),
        (2, "goal.activity.created"),
    ]
