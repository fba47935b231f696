"""End to end: a clean server and an A/A run pass the gate; each fault fails it.

Each run starts its own `cutover serve` under the repository's example rollout
file (chat and notification LIVE, follow and event SHADOW), drives a seeded
scenario over both paths, and gates the example file with the reports.

Sizes: on two cores the server answers about 40 polls/s while the driver
runs, and each poll of a user at a new cursor is one comparison per domain
(an A/A run: only cursors both pollers read). 12 users give notification,
follow and event about 30 comparisons a second when the machine is idle.
The A/A run goes on until every domain holds the ~765 comparisons a PASS at
the 0.5% threshold needs (`--until-decided`, capped at 240 s), and it runs
while another process keeps one of the two cores busy, so it proves the
calibration does not depend on the machine's load; the clean run (34 s)
clears the count with a third to spare.
"""

from __future__ import annotations

import json

import pytest

from parity.report import read_reports
from tests.parity_e2e.conftest import EXAMPLE_ROLLOUT, busy_machine, gate, parity_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def calibration(reports_root):
    """The A/A run on a busy machine: two pollers, until every domain is decided,
    written where the parity run looks for it."""
    with busy_machine():
        return parity_run(
            reports_root / "node-aa",
            reports_root / "clean" / "calibration",
            users=12,
            duration=15,
            seed=101,
            extra=("--calibrate", "--until-decided", "--max-duration", "240"),
        )


@pytest.fixture(scope="module")
def clean(reports_root, calibration):
    return parity_run(
        reports_root / "node-clean", reports_root / "clean", users=12, duration=34, seed=102
    )


def test_an_aa_calibration_passes_on_a_busy_machine(calibration):
    assert calibration.exit_code == 0
    reports = read_reports(calibration.out)
    assert sorted(reports) == ["chat", "event", "follow", "notification"]
    for name, report in reports.items():
        assert not isinstance(report, Exception), report
        assert report.kind == "calibration"
        assert report.paths == ("poll", "poll_b")
        assert report.outcome == "PASS", (name, report.reasons, report.invariant_violations[:3])
        assert report.divergent == 0, (name, report.counts)
        assert report.n >= 765, (name, report.n)  # what a PASS at 0.5% needs
        ran = [r for r in report.reasons if r.startswith("ran ")]
        assert ran, report.reasons  # decided before the time cap
        print(f"A/A {name}: N={report.n}, {ran[0]}")


def test_a_clean_server_passes_the_gate(clean):
    assert clean.exit_code == 0
    code, text = gate(clean.out)
    assert code == 0, text
    assert "chat: PASS at LIVE" in text and "notification: PASS at LIVE" in text
    data = json.loads((clean.out / "chat.json").read_text())
    assert data["kind"] == "parity" and data["stage"] == "LIVE"
    assert data["noiseFloor"] is not None  # taken from the A/A run beside it
    assert data["n"] >= 770 and data["counts"]["MATCH"] > 0
    assert data["traffic"]["poll"]["requests"] > 0 and data["traffic"]["push"]["bytes"] > 0
    assert data["latency"]["push"]["p50"] is not None
    assert (clean.out / "SUMMARY.md").exists() and (clean.out / "latency.png").exists()


def _seq_gaps(report) -> int:
    return sum(1 for v in report.invariant_violations if v.invariant == "seq-gap")


def _skewed(reports) -> None:
    # Push reaches every version with the wrong unread count.
    for name in ("notification", "chat"):
        assert reports[name].counts["DIVERGED"] > 0, (name, reports[name].counts)
    assert _seq_gaps(reports["chat"]) == 0


def _dropped(reports) -> None:
    # Dropped frames leave holes in the stream: seq gaps, versions push never reached.
    report = reports["chat"]
    assert _seq_gaps(report) > 0 or report.counts["MISSING_PUSH"] > 0, report.counts
    assert report.outcome == "FAIL"


def _omitted(reports) -> None:
    # An event never produced takes no seq: the stream has no gap, push reaches
    # every version, and still shows the previous unread count at the poll's
    # cursor: the update is missing on push.
    report = reports["notification"]
    assert report.outcome == "FAIL", report.reasons
    assert report.counts["MISSING_PUSH"] > report.counts["DIVERGED"], report.counts
    assert _seq_gaps(report) == 0
    assert reports["chat"].divergent == 0, reports["chat"].counts


def _delayed(reports) -> None:
    # Every frame arrives after W: push does not reach the poll's versions in time.
    for name in ("notification", "chat"):
        report = reports[name]
        assert report.counts["MISSING_PUSH"] > report.counts["MATCH"], (name, report.counts)
        assert report.counts["DIVERGED"] == 0, (name, report.counts)


@pytest.mark.parametrize(
    ("faults", "check"),
    [
        ("skew_unread=1", _skewed),
        ("drop_push=0.05", _dropped),
        ("omit_push=notification.new:0.2", _omitted),
        ("delay_push_ms=4000", _delayed),
    ],
)
def test_each_fault_fails_the_gate_for_its_reason(reports_root, faults, check):
    name = faults.split("=")[0]
    run = parity_run(
        reports_root / f"node-{name}",
        reports_root / name,
        faults=faults,
        users=8,
        duration=10,
        seed=200 + len(name),
    )
    assert run.exit_code == 0
    code, text = gate(run.out, EXAMPLE_ROLLOUT)
    assert code == 1, text
    assert "roll back to" in text
    reports = read_reports(run.out)
    for report in reports.values():
        assert not isinstance(report, Exception), report
    check(reports)
