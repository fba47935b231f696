"""Beacons as parity evidence: accepted samples reach the evidence book (and so the
store), refused ones never do: a bad payload, a foreign user, a flood, a stale
cursor (a position of an epoch the stream has left)."""

from __future__ import annotations

import pytest

from gateway.auth import Principal
from gateway.beacons import ParityBeacons
from gateway.config import Settings
from gateway.errors import BadRequest, Conflict, Forbidden, RateLimited
from gateway.evidence import EvidenceBook
from gateway.store import open_store


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/b.db")
    yield store
    store.close()


def beacon(user, cursor, *samples):
    return {
        "v": 1,
        "userId": user,
        "cursor": {"epoch": cursor.epoch, "seq": cursor.seq},
        "samples": list(samples)
        or [{"domain": "chat", "stage": "SHADOW", "outcome": "match", "keys": 3}],
    }


def beacons_of(store, evidence, per_minute=4):
    settings = Settings(jwt_secret="s" * 32, parity_beacons_per_minute=per_minute)
    return ParityBeacons(
        settings,
        stage_for=lambda user, domain: "SHADOW",
        position=store.stream_position,
        evidence=evidence,
    )


async def test_accepted_samples_become_evidence(store):
    evidence = EvidenceBook()
    beacons = beacons_of(store, evidence)
    alice = Principal("alice")
    cursor = store.stream_position("alice")
    await beacons.receive(
        alice,
        beacon(
            "alice",
            cursor,
            {"domain": "chat", "stage": "SHADOW", "outcome": "match", "keys": 3},
            {
                "domain": "notification",
                "stage": "SHADOW",
                "outcome": "mismatch",
                "keys": 1,
                "mismatched": ["notification.unread"],
            },
            {"domain": "follow", "stage": "SHADOW", "outcome": "unaligned", "keys": 1},
        ),
    )
    rows = {r["domain"]: r for r in evidence.take()}
    assert {d: r["counts"] for d, r in rows.items()} == {
        "chat": {"MATCH": 1},
        "notification": {"DIVERGED": 1},
        "follow": {"UNALIGNED": 1},
    }
    assert all(r["source"] == "beacon" and r["stage"] == "SHADOW" for r in rows.values())
    assert rows["notification"]["samples"] == [
        {"key": "notification.unread", "class": "DIVERGED", "check": "beacon"}
    ]
    store.add_evidence(list(rows.values()))  # what the flush writes, read back by the gate
    assert {r["domain"] for r in store.evidence_since("2000-01-01T00:00:00.000Z")} == set(rows)


async def test_refused_beacons_add_no_evidence(store):
    evidence = EvidenceBook()
    beacons = beacons_of(store, evidence, per_minute=6)  # a burst of 3
    alice = Principal("alice")
    cursor = store.stream_position("alice")
    with pytest.raises(BadRequest):
        await beacons.receive(alice, {**beacon("alice", cursor), "samples": "all good"})
    with pytest.raises(Forbidden):
        await beacons.receive(alice, beacon("bob", cursor))
    stale = store.stream_position("alice")
    store.reset_stream("alice")  # a new epoch: the old position is stale
    with pytest.raises(Conflict):
        await beacons.receive(alice, beacon("alice", stale))
    fresh = store.stream_position("alice")
    accepted = 0
    with pytest.raises(RateLimited):  # a flood: past the user's budget
        for _ in range(5):
            await beacons.receive(alice, beacon("alice", fresh))
            accepted += 1
    assert accepted == 2  # the stale beacon took one of the burst of 3
    (row,) = evidence.take()
    assert row["counts"] == {"MATCH": accepted}
