"""The state model's flattening and the per-path invariants."""

from __future__ import annotations

import pytest

from parity.invariants import (
    Read,
    Received,
    check_badge_sum,
    check_counts_fall_only_on_read,
    check_seq_continuity,
)
from parity.model import ConversationState, Observation, UserState, domain_of, flatten, observe


def state(**kw):
    return UserState(
        user_id="u1",
        notification_unread=kw.get("notes", 2),
        chat_total=kw.get("total", 3),
        conversations=kw.get(
            "convs",
            {"c2": ConversationState(1, "m9", "m8"), "c1": ConversationState(2, "m5", None)},
        ),
        follow_pending={"f2", "f1"},
        event_counts={"e1": (4, 1)},
    )


def test_flatten_each_domain():
    s = state()
    assert flatten(s, "notification") == {"notification.unread": 2}
    assert flatten(s, "chat") == {
        "chat.total": 3,
        "chat.conv:c1.unread": 2,
        "chat.conv:c1.lastMessage": "m5",
        "chat.conv:c1.lastRead": None,
        "chat.conv:c2.unread": 1,
        "chat.conv:c2.lastMessage": "m9",
        "chat.conv:c2.lastRead": "m8",
    }
    assert flatten(s, "follow") == {"follow.pending": ("f1", "f2")}
    assert flatten(s, "event") == {"event:e1.counts": (4, 1)}
    assert flatten(UserState("u2"), "notification") == {}


def test_every_key_maps_back_to_its_domain():
    s = state()
    for domain in ("notification", "chat", "follow", "event"):
        assert {domain_of(k) for k in flatten(s, domain)} == {domain}
    with pytest.raises(ValueError):
        domain_of("weather.today")


def test_state_is_immutable_and_evolves():
    s = state()
    with pytest.raises(TypeError):
        s.conversations["c3"] = ConversationState(0)  # type: ignore[index]
    assert s.evolve(notification_unread=0).notification_unread == 0
    assert s.notification_unread == 2


def test_observe_emits_one_observation_per_key():
    rows = observe("push", state(), domains=["chat", "notification"], version=7, observed_at=1.5)
    assert len(rows) == 8
    assert {(o.path, o.version, o.observed_at) for o in rows} == {("push", 7, 1.5)}
    with pytest.raises(ValueError):
        Observation("carrier-pigeon", "u1", "chat", "chat.total", 1, 1, 0.0)


def test_badge_sum_holds_and_breaks():
    good = observe("poll", state(), domains=["chat"], version=3, observed_at=1.0)
    bad = observe("push", state(total=4), domains=["chat"], version=3, observed_at=1.0)
    assert check_badge_sum(good) == []
    (violation,) = check_badge_sum(good + bad)
    assert violation.invariant == "badge-sum" and violation.path == "push"
    assert "sum to 3" in violation.detail


def _count(value, version, t, key="notification.unread"):
    domain = key.split(".")[0]
    return Observation("push", "u1", domain, key, value, version, t)


def test_counts_fall_only_on_a_read():
    series = [_count(3, 1, 1.0), _count(4, 2, 2.0), _count(1, 4, 3.0)]
    (violation,) = check_counts_fall_only_on_read(series, [], window=5.0)
    assert violation.invariant == "fall-without-read"
    assert (
        check_counts_fall_only_on_read(series, [Read("u1", "notification", 2.5)], window=5.0) == []
    )
    by_version = [Read("u1", "notification", 99.0, version=3)]
    assert check_counts_fall_only_on_read(series, by_version, window=5.0) == []


def test_a_read_elsewhere_does_not_explain_a_fall():
    key = "chat.conv:c1.unread"
    series = [_count(2, 1, 1.0, key), _count(0, 2, 2.0, key)]
    other = [
        Read("u1", "chat", 1.5, conversation_id="c2"),
        Read("u2", "chat", 1.5, conversation_id="c1"),
    ]
    assert len(check_counts_fall_only_on_read(series, other, window=5.0)) == 1
    mine = [Read("u1", "chat", 1.5, conversation_id="c1")]
    assert check_counts_fall_only_on_read(series, mine, window=5.0) == []


def test_seq_continuity_with_resume():
    clean = [Received(1, 0.0), Received(2, 0.1), Received(5, 2.0, resumed_from=4), Received(6, 2.1)]
    assert check_seq_continuity(clean, user_id="u1") == []
    gap = [Received(1, 0.0), Received(3, 0.1, connection="ws-1")]
    (violation,) = check_seq_continuity(gap, user_id="u1")
    assert "gap: expected seq 2, received 3 on ws-1" in violation.detail
    lost_on_resume = [Received(1, 0.0), Received(7, 1.0, resumed_from=5)]
    assert len(check_seq_continuity(lost_on_resume, user_id="u1")) == 1
    repeat = [Received(1, 0.0), Received(2, 0.1), Received(2, 0.2)]
    assert "repeat" in check_seq_continuity(repeat, user_id="u1")[0].detail
