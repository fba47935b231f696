"""End to end: a clean server and an A/A run pass the gate; each fault fails it.

Each run starts its own `cutover serve` under the repository's example rollout
file (chat and notification LIVE, follow and event SHADOW), drives a seeded
scenario over both paths, and gates the example file with the reports.
"""

from __future__ import annotations

import json

import pytest

from parity.report import read_reports
from tests.parity_e2e.conftest import EXAMPLE_ROLLOUT, gate, parity_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def calibration(reports_root):
    """The A/A run: two pollers, written where the parity run looks for it."""
    return parity_run(
        reports_root / "node-aa",
        reports_root / "clean" / "calibration",
        users=12,
        duration=22,
        seed=101,
        extra=("--calibrate",),
    )


@pytest.fixture(scope="module")
def clean(reports_root, calibration):
    return parity_run(
        reports_root / "node-clean", reports_root / "clean", users=12, duration=28, seed=102
    )


def test_an_aa_calibration_passes(calibration):
    assert calibration.exit_code == 0
    reports = read_reports(calibration.out)
    assert sorted(reports) == ["chat", "event", "follow", "notification"]
    for name, report in reports.items():
        assert not isinstance(report, Exception), report
        assert report.kind == "calibration"
        assert report.paths == ("poll", "poll_b")
        assert report.outcome == "PASS", (name, report.reasons, report.invariant_violations[:3])


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


@pytest.mark.parametrize(
    "faults",
    [
        "skew_unread=1",
        "drop_push=0.05",
        "omit_push=notification.new:0.2",
        "delay_push_ms=4000",
    ],
)
def test_each_fault_fails_the_gate(reports_root, faults):
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
