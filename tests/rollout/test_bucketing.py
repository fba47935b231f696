"""Sticky bucketing: who is at which stage, and what each user's client is told."""

from __future__ import annotations

import pytest

from gateway.rollout import DOMAINS, Stage, bucket, parse_rollout

USERS = [f"usr_{n:05d}" for n in range(10_000)]


def _config(domain: str = "chat", stage: str = "LIVE", percent: float = 100, **extra):
    lines = [f"[domains.{domain}]", f'stage = "{stage}"', f"percent = {percent}"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return parse_rollout("\n".join(lines) + "\n")


def test_a_users_bucket_never_changes():
    # Pinned values: changing the hash would move users between stages mid-rollout.
    assert bucket("alice") == pytest.approx(17.12650529798836, abs=1e-12)
    assert bucket("usr_01J0000000") == pytest.approx(5.562886963717006, abs=1e-12)
    assert bucket("alice") == bucket("alice")
    assert all(0 <= bucket(user) < 100 for user in USERS)


def test_raising_the_percentage_only_adds_users():
    thirty, sixty = _config(percent=30), _config(percent=60)
    at_30 = {u for u in USERS if thirty.stage_for(u, "chat") is Stage.LIVE}
    at_60 = {u for u in USERS if sixty.stage_for(u, "chat") is Stage.LIVE}
    assert at_30 < at_60
    assert abs(len(at_30) / len(USERS) - 0.30) < 0.02
    assert abs(len(at_60) / len(USERS) - 0.60) < 0.02


def test_the_same_users_move_together_across_domains():
    text = "\n".join(f'[domains.{d}]\nstage = "LIVE"\npercent = 40' for d in DOMAINS)
    config = parse_rollout(text)
    live = {d: {u for u in USERS[:2000] if config.stage_for(u, d) is Stage.LIVE} for d in DOMAINS}
    first = live["chat"]
    assert 0 < len(first) < 2000
    assert all(users == first for users in live.values())


def test_users_outside_the_percentage_stay_one_stage_back():
    config = _config(stage="LIVE", percent=50)
    stages = {config.stage_for(u, "chat") for u in USERS[:500]}
    assert stages == {Stage.LIVE, Stage.SHADOW}
    for user in USERS[:500]:
        expected = Stage.LIVE if bucket(user) < 50 else Stage.SHADOW
        assert config.stage_for(user, "chat") is expected


def test_zero_and_full_percentages():
    none, everyone = _config(percent=0), _config(percent=100)
    assert {none.stage_for(u, "chat") for u in USERS} == {Stage.SHADOW}
    assert {everyone.stage_for(u, "chat") for u in USERS} == {Stage.LIVE}


def test_off_stays_off_for_everyone():
    config = _config(stage="OFF", percent=30)
    assert {config.stage_for(u, "chat") for u in USERS[:500]} == {Stage.OFF}
    assert not any(config.push_enabled(u, "chat") for u in USERS[:500])


def test_shadow_below_the_percentage_is_off_and_gets_no_push():
    config = _config(stage="SHADOW", percent=50)
    for user in USERS[:300]:
        inside = bucket(user) < 50
        assert config.push_enabled(user, "chat") is inside
        assert config.poll_interval_for(user, "chat") == 30_000


def test_poll_intervals_follow_the_users_stage():
    config = _config(
        stage="RAMPDOWN", percent=50, poll_interval_ms=15_000, rampdown_poll_interval_ms=900_000
    )
    inside = next(u for u in USERS if bucket(u) < 50)
    outside = next(u for u in USERS if bucket(u) >= 50)
    assert config.poll_interval_for(inside, "chat") == 900_000
    assert config.poll_interval_for(outside, "chat") == 15_000

    complete = _config(stage="COMPLETE", percent=50, rampdown_poll_interval_ms=600_000)
    assert complete.poll_interval_for(inside, "chat") is None
    assert complete.poll_interval_for(outside, "chat") == 600_000
    assert complete.push_enabled(inside, "chat") and complete.push_enabled(outside, "chat")


def test_view_for_is_the_welcome_frames_domains():
    config = parse_rollout(
        '[domains.chat]\nstage = "LIVE"\n'
        '[domains.notification]\nstage = "COMPLETE"\n'
        '[domains.presence]\nstage = "RAMPDOWN"\nrampdown_poll_interval_ms = 120000\n'
    )
    view = config.view_for("alice")
    assert list(view) == list(DOMAINS)
    assert view["chat"] == {"stage": "LIVE", "pollIntervalMs": 30_000}
    assert view["notification"] == {"stage": "COMPLETE", "pollIntervalMs": None}
    assert view["presence"] == {"stage": "RAMPDOWN", "pollIntervalMs": 120_000}
    assert view["follow"] == {"stage": "SHADOW", "pollIntervalMs": 30_000}


def test_unknown_domain_is_refused():
    with pytest.raises(ValueError, match="email"):
        _config().stage_for("alice", "email")
