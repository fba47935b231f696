"""Reports: verdicts, JSON round trip, Markdown, plot and the table."""

from __future__ import annotations

import json

import pytest

from parity.differ import COMPARATOR_VERSION
from parity.invariants import Violation
from parity.report import (
    SCHEMA,
    DomainReport,
    ReportError,
    format_table,
    noise_floor,
    read_report,
    read_reports,
    write_reports,
)

from .conftest import NOW


def test_clean_run_passes_and_skewed_run_fails(make_report):
    clean = make_report()
    assert clean.outcome == "PASS"
    assert clean.n == 1000 and clean.counts["MATCH"] == 1000
    assert clean.comparator_version == COMPARATOR_VERSION
    assert clean.latency["poll"]["p95"] == pytest.approx(2.0)
    assert clean.latency["push"]["p50"] == 0.0
    assert len(clean.users) == 10
    skewed = make_report(skew_every=10)
    assert skewed.outcome == "FAIL"
    assert skewed.counts["DIVERGED"] > 0


def test_invariant_violation_fails_the_domain(make_report):
    v = Violation(
        "badge-sum", "push", "u1", "chat", 1.0, "conversations sum to 3 but the badge shows 4"
    )
    report = make_report(violations=[v])
    assert report.outcome == "FAIL"
    assert report.invariant_violations == (v,)


def test_calibration_noise_is_used(make_report):
    calibration = make_report(kind="calibration", skew_every=50)
    assert calibration.kind == "calibration"
    noise = noise_floor(calibration)
    assert noise == pytest.approx(calibration.divergent / calibration.n)
    report = make_report(calibration=calibration)
    assert report.noise_floor == noise
    with pytest.raises(ReportError):
        noise_floor(report)


def test_json_round_trip(make_report, tmp_path):
    v = Violation("seq-gap", "push", "u1", "stream", 2.0, "gap: expected seq 2, received 3")
    report = make_report(violations=[v])
    paths = write_reports([report], tmp_path, now=NOW)
    data = json.loads((tmp_path / "notification.json").read_text())
    assert data["schema"] == SCHEMA and data["kind"] == "parity"
    assert read_report(tmp_path / "notification.json") == report
    assert DomainReport.from_json(report.to_json()) == report
    assert {p.name for p in paths} == {"notification.json", "SUMMARY.md", "latency.png"}


def test_markdown_and_png_are_produced(make_report, tmp_path):
    write_reports(
        [make_report("notification"), make_report("chat", skew_every=10)], tmp_path, now=NOW
    )
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "| notification | SHADOW | PASS | 1000 |" in summary
    assert "## chat: FAIL" in summary
    assert "![latency per path](latency.png)" in summary
    png = (tmp_path / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("n"), "missing field 'n'"),
        (lambda d: d.update(schema="other/9"), "schema"),
        (lambda d: d.update(n="many"), "wrong type"),
        (lambda d: d.update(kind="guess"), "kind"),
        (lambda d: d.update(endedAt="yesterday"), "malformed"),
    ],
)
def test_malformed_reports_are_refused(make_report, mutate, message):
    data = make_report().to_json()
    mutate(data)
    with pytest.raises(ReportError, match=message):
        DomainReport.from_json(data)


def test_unreadable_files_are_reported(tmp_path):
    (tmp_path / "chat.json").write_text("{not json")
    found = read_reports(tmp_path)
    assert isinstance(found["chat"], ReportError)


def test_format_table(make_report):
    table = format_table([make_report(), make_report("chat", skew_every=10)], now=NOW)
    lines = table.splitlines()
    assert lines[0].split() == [
        "domain",
        "stage",
        "outcome",
        "N",
        "div.",
        "upper",
        "noise",
        "p95",
        "left",
        "p95",
        "right",
        "age",
    ]
    assert lines[2].split()[:4] == ["chat", "SHADOW", "FAIL", "1000"]
    notification = lines[3]
    assert notification.split()[:4] == ["notification", "SHADOW", "PASS", "1000"]
    assert "poll 2000 ms" in notification and "push 0 ms" in notification
    assert notification.endswith("1.0h")
