"""The store contract for parity evidence: counts per hour, domain, source and stage,
added by any number of nodes at once and read back by any of them."""

from __future__ import annotations

import threading

import pytest

from gateway.store.base import EVIDENCE_SAMPLES

H1 = "2026-02-17T10:00:00.000Z"
H2 = "2026-02-17T11:00:00.000Z"
H3 = "2026-02-17T12:00:00.000Z"


def row(hour=H1, domain="chat", source="audit", stage="SHADOW", counts=None, samples=(), at=None):
    at = at or hour.replace(":00:00.000Z", ":05:00.000Z")
    return {
        "hour": hour,
        "domain": domain,
        "source": source,
        "stage": stage,
        "counts": dict(counts or {"MATCH": 1}),
        "samples": list(samples),
        "first_at": at,
        "last_at": at,
    }


def test_evidence_rows_are_read_back_in_order(store):
    assert store.evidence_since(H1) == []
    store.add_evidence(
        [
            row(H2, "notification", counts={"MATCH": 5, "DIVERGED": 1}),
            row(H1, "chat", "beacon", "LIVE", counts={"MATCH": 3}),
            row(H1, "chat", "audit", "LIVE", counts={"MISSING_PUSH": 2}, samples=[{"k": "x"}]),
        ]
    )
    rows = store.evidence_since(H1)
    assert [(r["hour"], r["domain"], r["source"], r["stage"]) for r in rows] == [
        (H1, "chat", "audit", "LIVE"),
        (H1, "chat", "beacon", "LIVE"),
        (H2, "notification", "audit", "SHADOW"),
    ]
    assert rows[0]["counts"] == {"MISSING_PUSH": 2}
    assert rows[0]["samples"] == [{"k": "x"}]
    assert rows[2]["counts"] == {"MATCH": 5, "DIVERGED": 1}
    assert [r["hour"] for r in store.evidence_since(H2)] == [H2]
    assert store.evidence_since(H3) == []


def test_added_counts_are_summed_and_times_widened(store):
    store.add_evidence([row(counts={"MATCH": 2}, at="2026-02-17T10:20:00.000Z")])
    store.add_evidence([row(counts={"MATCH": 3, "DIVERGED": 1}, at="2026-02-17T10:10:00.000Z")])
    store.add_evidence([row(counts={"DIVERGED": 1}, at="2026-02-17T10:50:00.000Z")])
    (only,) = store.evidence_since(H1)
    assert only["counts"] == {"MATCH": 5, "DIVERGED": 2}
    assert only["first_at"] == "2026-02-17T10:10:00.000Z"
    assert only["last_at"] == "2026-02-17T10:50:00.000Z"


def test_samples_keep_the_newest_few(store):
    for i in range(EVIDENCE_SAMPLES + 7):
        store.add_evidence([row(samples=[{"i": i}])])
    (only,) = store.evidence_since(H1)
    assert [s["i"] for s in only["samples"]] == list(range(7, EVIDENCE_SAMPLES + 7))


@pytest.mark.slow
def test_nodes_adding_at_once_lose_no_count(make_store):
    nodes = [make_store() for _ in range(2)]
    rounds, threads_per_node = 25, 4

    def add(store) -> None:
        for _ in range(rounds):
            store.add_evidence(
                [row(counts={"MATCH": 1}), row(domain="follow", counts={"DIVERGED": 2})]
            )

    threads = [
        threading.Thread(target=add, args=(node,))
        for node in nodes
        for _ in range(threads_per_node)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = len(threads) * rounds
    for node in nodes:
        rows = {r["domain"]: r["counts"] for r in node.evidence_since(H1)}
        assert rows == {"chat": {"MATCH": total}, "follow": {"DIVERGED": 2 * total}}
