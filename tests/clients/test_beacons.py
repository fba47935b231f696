"""Parity beacons without a server: the contract's checks, the per-user budget and
the aggregation per domain, stage and window."""

from __future__ import annotations

import copy

import pytest

from gateway.beacons import BeaconBook, UserBudget, parse_beacon
from gateway.errors import BadRequest, Forbidden

GOOD = {
    "v": 1,
    "userId": "alice",
    "cursor": {"epoch": "ep_1", "seq": 42},
    "samples": [
        {"domain": "notification", "stage": "LIVE", "outcome": "match", "keys": 1},
        {
            "domain": "chat",
            "stage": "SHADOW",
            "outcome": "mismatch",
            "keys": 7,
            "mismatched": ["chat.conv:cnv_1.unread"],
            "latencyMs": {"push": [35, 40.5], "poll": [1800]},
        },
    ],
    "somethingNewer": {"ignored": True},
}


def with_change(path: str, value):
    """GOOD with one field replaced (`samples.1.outcome`), or removed (value ...)."""
    body = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return body


def test_a_good_beacon_parses_and_unknown_fields_are_ignored():
    beacon = parse_beacon(GOOD, "alice")
    assert (beacon.epoch, beacon.seq) == ("ep_1", 42)
    chat = beacon.samples[1]
    assert chat.mismatched == ("chat.conv:cnv_1.unread",)
    assert chat.push_ms == (35.0, 40.5) and chat.poll_ms == (1800.0,)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("v", 2, "v"),
        ("v", ..., "v"),
        ("cursor", "ep_1:42", "cursor"),
        ("cursor.seq", -1, "cursor.seq"),
        ("cursor.seq", "42", "cursor.seq"),
        ("cursor.epoch", "", "cursor.epoch"),
        ("samples", [], "samples"),
        ("samples", [GOOD["samples"][0]] * 5, "samples"),
        ("samples.0.domain", "presence", "samples[0].domain"),
        ("samples.0.stage", "OFF", "samples[0].stage"),
        ("samples.0.stage", "COMPLETE", "samples[0].stage"),
        ("samples.0.outcome", "maybe", "samples[0].outcome"),
        ("samples.0.keys", True, "samples[0].keys"),
        ("samples.0.mismatched", ["x"], "samples[0].mismatched"),
        ("samples.1.mismatched", ..., "samples[1].mismatched"),
        ("samples.1.mismatched", ["k"] * 11, "samples[1].mismatched"),
        ("samples.1.latencyMs", [1, 2], "samples[1].latencyMs"),
        ("samples.1.latencyMs.push", [1] * 21, "samples[1].latencyMs.push"),
        ("samples.1.latencyMs.poll", [-5], "samples[1].latencyMs.poll[0]"),
        ("samples.1.latencyMs.poll", [float("nan")], "samples[1].latencyMs.poll[0]"),
        ("samples.1.latencyMs.poll", [4_000_000], "samples[1].latencyMs.poll[0]"),
        ("samples.1.domain", "notification", "samples[1].domain"),
    ],
)
def test_a_bad_beacon_is_refused_naming_the_field(path, value, field):
    with pytest.raises(BadRequest) as refused:
        parse_beacon(with_change(path, value), "alice")
    assert refused.value.path == field


@pytest.mark.parametrize("body", [[], "beacon", None, 42])
def test_a_beacon_is_an_object(body):
    with pytest.raises(BadRequest):
        parse_beacon(body, "alice")


def test_a_beacon_about_another_user_is_forbidden():
    with pytest.raises(Forbidden):
        parse_beacon(GOOD, "bob")
    with pytest.raises(Forbidden):
        parse_beacon(GOOD, "acme/alice")  # a tenant's alice is another user


def test_the_budget_allows_a_burst_then_the_rate():
    now = [0.0]
    budget = UserBudget(6, burst=3, clock=lambda: now[0])
    assert [budget.take("alice") for _ in range(3)] == [0, 0, 0]
    assert budget.take("alice") == pytest.approx(10.0)
    assert budget.take("bob") == 0, "each user has a budget of their own"
    now[0] += 10
    assert budget.take("alice") == 0
    assert budget.take("alice") > 0


def test_the_budget_forgets_the_least_recent_users_past_its_size():
    budget = UserBudget(6, burst=1, clock=lambda: 0.0, max_users=2)
    budget.take("a")
    budget.take("b")
    budget.take("c")
    assert len(budget._buckets) == 2


def test_the_book_tallies_per_window_domain_and_stage():
    now = [120.0]
    book = BeaconBook(window_s=60, keep=2, clock=lambda: now[0])
    book.record(parse_beacon(GOOD, "alice"))
    other = with_change("userId", "bob")
    other["samples"][0]["outcome"] = "unaligned"
    book.record(parse_beacon(other, "bob"))
    rows = {(r["domain"], r["stage"]): r for r in book.windows()}
    chat = rows[("chat", "SHADOW")]
    assert (chat["match"], chat["mismatch"], chat["users"]) == (0, 2, 2)
    assert chat["mismatchRate"] == 1.0
    assert chat["mismatchedKeys"] == {"chat.conv:*.unread": 2}
    assert chat["latencyMs"]["push"] == {"n": 4, "p50": 35.0, "p95": 40.5}
    assert chat["latencyMs"]["poll"]["p50"] == 1800.0
    notification = rows[("notification", "LIVE")]
    assert (notification["match"], notification["unaligned"]) == (1, 1)
    assert notification["mismatchRate"] == 0.0
    assert chat["start"] == "1970-01-01T00:02:00.000Z"
    for minute in (3, 4, 5):
        now[0] = minute * 60.0
        book.record(parse_beacon(GOOD, "alice"))
    assert sorted({r["start"] for r in book.windows()}) == [
        "1970-01-01T00:04:00.000Z",
        "1970-01-01T00:05:00.000Z",
    ], "only the last `keep` windows are kept"


def test_latencies_are_kept_in_a_bounded_reservoir():
    book = BeaconBook(clock=lambda: 0.0)
    body = copy.deepcopy(GOOD)
    body["samples"][1]["latencyMs"] = {"push": [1.0] * 20, "poll": []}
    for _ in range(100):
        book.record(parse_beacon(body, "alice"))
    row = next(r for r in book.windows() if r["domain"] == "chat")
    assert row["latencyMs"]["push"]["n"] == 2000
    tally = next(iter(book._windows.values()))[("chat", "SHADOW")]
    assert len(tally.latency["push"]) == 512
