"""The rollout gate's exit codes on report sets written into tmp_path."""

from __future__ import annotations

import datetime as _dt
import io
import json

import pytest

from gateway.rollout import parse_rollout
from parity.gate import gate, parse_duration, run_gate, run_report
from parity.report import write_report

from .conftest import NOW

ROLLOUT = """
[domains.notification]
stage = "{notification}"

[domains.chat]
stage = "{chat}"

[domains.follow]
stage = "OFF"

[domains.event]
stage = "SHADOW"

[domains.organization]
stage = "SHADOW"

[domains.activity]
stage = "OFF"

[domains.presence]
stage = "OFF"
"""


def rollout(notification="LIVE", chat="SHADOW"):
    return parse_rollout(ROLLOUT.format(notification=notification, chat=chat))


def verdict(result, domain):
    return next(v for v in result.verdicts if v.domain == domain)


def test_fresh_pass_report_passes(make_report, tmp_path):
    write_report(make_report(), tmp_path)
    result = gate(rollout(), tmp_path, now=NOW)
    assert result.exit_code == 0
    assert verdict(result, "notification").outcome == "PASS"
    assert "made against rollout" in verdict(result, "notification").line()


def test_domains_at_off_or_shadow_need_no_report(tmp_path):
    result = gate(rollout(notification="SHADOW", chat="OFF"), tmp_path, now=NOW)
    assert result.exit_code == 0
    assert {v.outcome for v in result.verdicts} == {"NOT_REQUIRED"}


def test_failing_report_names_the_rollback_stage(make_report, tmp_path):
    write_report(make_report(skew_every=10), tmp_path)
    result = gate(rollout(notification="RAMPDOWN"), tmp_path, now=NOW)
    assert result.exit_code == 1
    (failed,) = result.failed
    assert failed.domain == "notification" and failed.rollback_to == "LIVE"
    assert "parity FAIL" in failed.reason and "divergence rate" in failed.reason


def test_inconclusive_report_holds(make_report, tmp_path):
    write_report(make_report(users=1, changes=100), tmp_path)
    result = gate(rollout(), tmp_path, now=NOW)
    assert result.exit_code == 2
    assert verdict(result, "notification").outcome == "INCONCLUSIVE"
    assert "too few" in verdict(result, "notification").reason


def test_fail_outweighs_inconclusive(make_report, tmp_path):
    write_report(make_report("notification", users=1), tmp_path)
    write_report(make_report("chat", skew_every=10), tmp_path)
    assert gate(rollout(chat="LIVE"), tmp_path, now=NOW).exit_code == 1


def test_missing_report_fails_closed(make_report, tmp_path):
    write_report(make_report(), tmp_path)
    result = gate(rollout(chat="COMPLETE"), tmp_path, now=NOW)
    assert result.exit_code == 1
    chat = verdict(result, "chat")
    assert chat.reason == "no parity report" and chat.rollback_to == "RAMPDOWN"


def test_stale_report_fails_closed(make_report, tmp_path):
    write_report(make_report(ended=NOW - _dt.timedelta(days=8)), tmp_path)
    result = gate(rollout(), tmp_path, now=NOW)
    assert result.exit_code == 1
    assert "stale" in verdict(result, "notification").reason
    assert verdict(result, "notification").rollback_to == "SHADOW"
    assert gate(rollout(), tmp_path, now=NOW, max_age=_dt.timedelta(days=9)).exit_code == 0


def test_future_dated_report_fails_closed(make_report, tmp_path):
    write_report(make_report(ended=NOW + _dt.timedelta(days=1)), tmp_path)
    assert gate(rollout(), tmp_path, now=NOW).exit_code == 1


@pytest.mark.parametrize(
    "content", [b"{broken", b"\xff\xfe", b'{"schema": "cutover-parity-report/1"}']
)
def test_unreadable_or_malformed_report_fails_closed(tmp_path, content):
    (tmp_path / "notification.json").write_bytes(content)
    result = gate(rollout(), tmp_path, now=NOW)
    assert result.exit_code == 1
    assert "unreadable report" in verdict(result, "notification").reason


def test_foreign_comparator_fails_closed(make_report, tmp_path):
    path = write_report(make_report(), tmp_path)
    data = json.loads(path.read_text())
    data["comparatorVersion"] = "cutover-parity/0"
    path.write_text(json.dumps(data))
    result = gate(rollout(), tmp_path, now=NOW)
    assert result.exit_code == 1
    assert "foreign comparator" in verdict(result, "notification").reason


def test_calibration_or_pre_shadow_report_fails_closed(make_report, tmp_path):
    write_report(make_report(kind="calibration"), tmp_path)
    assert "calibration" in verdict(gate(rollout(), tmp_path, now=NOW), "notification").reason
    write_report(make_report(stage="OFF"), tmp_path)
    result = gate(rollout(), tmp_path, now=NOW)
    assert result.exit_code == 1
    assert "made at OFF" in verdict(result, "notification").reason


def test_report_for_another_domain_fails_closed(make_report, tmp_path):
    report = make_report("chat")
    path = write_report(report, tmp_path)
    path.rename(tmp_path / "notification.json")
    assert gate(rollout(), tmp_path, now=NOW).exit_code == 1


def test_parse_duration():
    assert parse_duration("7d") == _dt.timedelta(days=7)
    assert parse_duration("12h") == _dt.timedelta(hours=12)
    assert parse_duration("30m") == _dt.timedelta(minutes=30)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_run_gate_prints_and_returns_the_exit_code(make_report, tmp_path):
    flags = tmp_path / "rollout.toml"
    flags.write_text(ROLLOUT.format(notification="LIVE", chat="LIVE"))
    reports = tmp_path / "reports"
    write_report(make_report(), reports)
    out = io.StringIO()
    assert run_gate(flags, reports, "7d", now=NOW, out=out) == 1
    text = out.getvalue()
    assert "chat: FAIL at LIVE: no parity report; roll back to SHADOW" in text
    assert "notification: PASS" in text and text.endswith("gate: FAIL\n")
    out = io.StringIO()
    assert run_gate(tmp_path / "absent.toml", reports, now=NOW, out=out) == 1
    assert "cannot read the rollout file" in out.getvalue()


def test_run_report_prints_the_table(make_report, tmp_path):
    write_report(make_report(), tmp_path)
    out = io.StringIO()
    assert run_report(tmp_path, out=out, now=NOW) == 0
    assert "notification  SHADOW  PASS" in out.getvalue()
    (tmp_path / "chat.json").write_text("[]")
    out = io.StringIO()
    assert run_report(tmp_path, out=out, now=NOW) == 1
    assert "chat: " in out.getvalue()
    assert run_report(tmp_path / "nothing", out=io.StringIO(), now=NOW) == 1
