"""End to end: the shadow audit judges real (driven) polling traffic, with no harness
observer running. A clean node shows no mismatch; each injected fault is caught,
classified for what it is, kept in the store with redacted samples, and read back
by `cutover parity report --live` and the gate.

Each run starts its own `cutover serve` with every poll audited
(`audit_sample = 1.0`), drives changes over both paths for a few seconds while
legacy clients poll, waits out the audit window, and stops the node (its last
evidence is written on the way out).
"""

from __future__ import annotations

import collections
import io
import time
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from gateway.store import open_store
from parity.gate import run_gate, run_live_report
from tests.e2e.server import ServerProcess
from tests.parity_e2e.conftest import ROOT
from tests.parity_e2e.traffic import Traffic, drive_and_poll

pytestmark = pytest.mark.e2e

FLAGS = """\
# every poll audited, for the test
[parity]
audit_sample = 1.0
audit_window_ms = 2000

[defaults]
stage = "SHADOW"

[domains.chat]
stage = "LIVE"

[domains.presence]
stage = "OFF"
"""
SECONDS = 5.0


@attrs.frozen
class AuditRun:
    counts: dict[str, collections.Counter]
    samples: dict[str, list[dict]]
    flags: Path
    store_url: str
    traffic: Traffic
    audited: float


def _metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def audited_run(workdir: Path, faults: str | None = None, *, seed: int = 7) -> AuditRun:
    workdir.mkdir(parents=True, exist_ok=True)
    flags = workdir / "rollout.toml"
    flags.write_text(FLAGS)
    args = ["--flags", str(flags), "--evidence-flush-s", "1"]
    env = {"PYTHONPATH": str(ROOT)}
    if faults:
        args.append("--allow-faults")
        env["CUTOVER_FAULTS"] = faults
    server = ServerProcess(workdir, args=args, env=env).start()
    try:
        traffic = trio.run(
            lambda: drive_and_poll([server.url], server.secret, seconds=SECONDS, seed=seed)
        )
        time.sleep(2.0 + 1.5)  # the audit window, then a flush
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    store_url = f"sqlite:///{workdir / 'cutover.db'}"
    store = open_store(store_url)
    try:
        rows = store.evidence_since("2000-01-01T00:00:00.000Z")
    finally:
        store.close()
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    samples: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        assert row["source"] == "audit" and row["stage"] in ("SHADOW", "LIVE"), row
        counts[row["domain"]].update(row["counts"])
        samples[row["domain"]].extend(row["samples"])
    audited = _metric(metrics, "cutover_parity_audit_samples_total", 'outcome="audited"')
    return AuditRun(dict(counts), dict(samples), flags, store_url, traffic, audited)


def _gate(run: AuditRun) -> tuple[int, str]:
    out = io.StringIO()
    code = run_gate(run.flags, None, "7d", out=out, store_url=run.store_url)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def audit_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit")


def test_a_clean_node_shows_no_mismatch(audit_root):
    run = audited_run(audit_root / "clean")
    assert run.traffic.polls > 50 and run.traffic.driver.done > 30, run.traffic
    assert run.audited > 50
    for domain in ("notification", "chat", "follow", "event", "organization"):
        assert run.counts[domain]["MATCH"] > 0, (domain, run.counts)
    for domain, counts in run.counts.items():
        assert set(counts) == {"MATCH"}, (domain, counts, run.samples.get(domain))
    code, text = _gate(run)
    assert "chat: PASS at LIVE" in text, text
    assert code == 0, text
    out = io.StringIO()
    assert run_live_report(run.store_url, "24h", out=out) == 0
    assert "what differed" not in out.getvalue()


def _checks(run: AuditRun, domain: str) -> set[str]:
    return {s.get("check") for s in run.samples.get(domain, ())}


def _skewed(run: AuditRun) -> None:
    # The sockets wrote every count one too high: a wrong value, seen by the delivery check.
    for domain in ("notification", "chat"):
        assert run.counts[domain]["DIVERGED"] > 0, (domain, run.counts[domain])
        assert "delivery" in _checks(run, domain)
    assert run.counts["follow"]["DIVERGED"] == 0  # no unread count in follow's payloads


def _dropped(run: AuditRun) -> None:
    # Frames that never reached the socket: the polled versions were never delivered.
    assert run.counts["chat"]["MISSING_PUSH"] > 0, run.counts["chat"]
    assert "delivery" in _checks(run, "chat")
    assert run.counts["chat"]["DIVERGED"] == 0


def _omitted(run: AuditRun) -> None:
    # Events never produced: the stream itself lacks the update the poll shows. It
    # reads MISSING_PUSH where the stream shows a value polled before (or none at
    # all); a stale value no audited poll had shown reads DIVERGED.
    notification = run.counts["notification"]
    assert notification["MISSING_PUSH"] > 0, notification
    assert _checks(run, "notification") == {"stream"}
    assert set(run.counts["chat"]) == {"MATCH"}, run.counts["chat"]


def _delayed(run: AuditRun) -> None:
    # Every frame written after the audit window: late, not wrong.
    for domain in ("notification", "chat"):
        assert run.counts[domain]["MISSING_PUSH"] > 0, (domain, run.counts[domain])
        assert run.counts[domain]["DIVERGED"] == 0, (domain, run.counts[domain])


@pytest.mark.parametrize(
    ("faults", "check", "gated"),
    [
        ("skew_unread=1", _skewed, "chat"),
        ("drop_push=0.2", _dropped, "chat"),
        ("omit_push=notification.new:0.5", _omitted, None),
        ("delay_push_ms=4000", _delayed, "chat"),
    ],
)
def test_each_fault_is_caught_on_real_traffic(audit_root, faults, check, gated):
    name = faults.split("=")[0]
    run = audited_run(audit_root / name, faults, seed=11 + len(name))
    assert run.audited > 30, run
    check(run)
    for samples in run.samples.values():
        for sample in samples:
            assert "audit-" not in repr(sample), sample  # redacted: no user or record id
    out = io.StringIO()
    assert run_live_report(run.store_url, "24h", out=out) == 0
    assert "what differed (redacted)" in out.getvalue()
    if gated:
        code, text = _gate(run)
        assert code == 1, text
        assert f"{gated}: FAIL at LIVE" in text and "roll back to SHADOW" in text
