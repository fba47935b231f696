"""The rollout file's `[parity]` and `[schedule]` tables and a domain's `since`."""

from __future__ import annotations

import pytest

from gateway.rollout import ParitySettings, RolloutError, Stage, Step, parse_duration, parse_rollout

FILE = """\
[parity]
audit_sample = 0.1   # a tenth of the polls
audit_window_ms = 1500

[schedule]
steps = [
  { stage = "SHADOW", percent = 100, soak = "1h" },
  { stage = "LIVE", percent = 1, soak = "30m" },
  { stage = "LIVE", percent = 100, soak = "2d" },
  { stage = "COMPLETE" },
]

[domains.chat]
stage = "LIVE"
percent = 1
since = "2026-02-17T10:00:00.000Z"
"""


def test_the_parity_and_schedule_tables_are_read():
    config = parse_rollout(FILE)
    assert config.parity == ParitySettings(audit_sample=0.1, audit_window_ms=1500)
    assert config.schedule == (
        Step(Stage.SHADOW, 100.0, 3600.0, "1h"),
        Step(Stage.LIVE, 1.0, 1800.0, "30m"),
        Step(Stage.LIVE, 100.0, 172800.0, "2d"),
        Step(Stage.COMPLETE, 100.0, 0.0, "0s"),
    )
    chat = config.domains["chat"]
    assert chat.since == "2026-02-17T10:00:00.000Z" and chat.position == (2, 1.0)
    assert config.domains["follow"].since is None


def test_without_them_the_audit_is_off_and_there_is_no_schedule():
    config = parse_rollout("")
    assert config.parity == ParitySettings(0.0, 2000) and config.schedule == ()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[parity]\naudit_sample = 1.5\n", 2, "parity.audit_sample must be a number within 0..1"),
        ("[parity]\naudit_sample = true\n", 2, "parity.audit_sample"),
        ("[parity]\n\naudit_rate = 0.1\n", 3, "unknown key parity.audit_rate"),
        ("[parity]\naudit_window_ms = 0\n", 2, "parity.audit_window_ms must be a positive"),
        (
            '[schedule]\nsteps = [\n  { stage = "SHADOW" },\n  { stage = "LIVE", soak = "1y" },\n]\n',
            4,
            "schedule.steps[1].soak: bad duration '1y'",
        ),
        (
            '[schedule]\nsteps = [\n  { stage = "LIVE" },\n  { stage = "SHADOW" },\n]\n',
            4,
            "must come after LIVE 100%",
        ),
        ('[schedule]\nsteps = [{ stage = "LATER" }]\n', 2, "schedule.steps[0].stage"),
        (
            '[schedule]\nsteps = [{ stage = "LIVE", percent = 0 }]\n',
            2,
            "schedule.steps[0].percent",
        ),
        ('[schedule]\nsteps = [{ stage = "LIVE", rate = 1 }]\n', 2, "schedule.steps[0].rate"),
        ("[schedule]\nevery = 1\n", 2, "unknown key schedule.every"),
        ('[domains.chat]\nstage = "LIVE"\nsince = "yesterday"\n', 3, "domains.chat.since"),
        ('[defaults]\nsince = "2026-02-17T10:00:00.000Z"\n', 2, "defaults.since"),
        ("[later]\nx = 1\n", 1, "unknown key 'later'"),
    ],
)
def test_errors_name_the_line(text, line, fragment):
    with pytest.raises(RolloutError) as caught:
        parse_rollout(text, "rollout.toml")
    assert caught.value.line == line, str(caught.value)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"rollout.toml:{line}: ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1w", 604800)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_refused():
    with pytest.raises(ValueError):
        parse_duration("soon")
