"""The rollout gate: does the parity evidence support the rollout file?

Two kinds of evidence, either or both: harness reports (`--reports DIR`) and
live evidence from real traffic kept in the store (`--live --store URL`: the
shadow audit's and the beacons' counts, `parity.live`). Each verdict names
the evidence it rests on. With both, each must hold: a FAIL of either fails
the domain (conflicting evidence is named as such), an INCONCLUSIVE of either
holds it.

For every domain the rollout file puts at LIVE or beyond, the reports
directory must hold `<domain>.json`: a parity report (not a calibration)
made by this comparator version, at SHADOW or beyond, ended no longer than
`max_age` before `now`, whose outcome is PASS. Live evidence must be the
domain's rows at SHADOW or beyond gathered within the live window (`--since`,
24 h by default), judged by the same rules (Wilson bounds, threshold, minimum
N); rows only from before the window are stale, none at all is missing, and
both fail closed. Domains at OFF or SHADOW need no evidence. Anything else
fails closed:

| finding                                           | verdict      | exit |
| ------------------------------------------------- | ------------ | ---- |
| every required report fresh and PASS              | PASS         | 0    |
| a report says FAIL                                | FAIL         | 1    |
| missing, unreadable, malformed, calibration-only, | FAIL         | 1    |
| foreign comparator, stale, future-dated, made     |              |      |
| below SHADOW, or for another domain               |              |      |
| a report says INCONCLUSIVE (and nothing failed)   | INCONCLUSIVE | 2    |

A FAIL names the domain, the reason and the stage to roll back to (one
stage back). A report made against another rollout file hash is accepted
(the file changes as stages move) and noted.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import attrs

from gateway.events import iso, parse_iso, utcnow
from gateway.rollout import RolloutConfig, RolloutError, Stage, load_rollout
from parity.differ import COMPARATOR_VERSION
from parity.live import LiveDomain, format_live_table, format_samples, read_evidence, summarize
from parity.report import DomainReport, ReportError, format_table, read_report, read_reports
from parity.stats import DEFAULT_MIN_SAMPLES, DEFAULT_THRESHOLD

__all__ = [
    "DEFAULT_LIVE_WINDOW",
    "DEFAULT_MAX_AGE",
    "DomainVerdict",
    "GateResult",
    "gate",
    "parse_duration",
    "run_gate",
    "run_report",
]

DEFAULT_MAX_AGE = _dt.timedelta(days=7)
DEFAULT_LIVE_WINDOW = _dt.timedelta(hours=24)
# How far in the future a report's end may lie before the gate distrusts it.
CLOCK_SKEW = _dt.timedelta(minutes=5)

EXIT_PASS, EXIT_FAIL, EXIT_HOLD = 0, 1, 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> _dt.timedelta:
    """`7d`, `12h`, `30m`, `45s`, `2w` as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r} (expected e.g. 7d, 12h, 30m)")
    amount, unit = match.groups()
    return _dt.timedelta(**{_UNITS[unit]: float(amount)})


@attrs.frozen
class DomainVerdict:
    """The gate's finding for one domain."""

    domain: str
    stage: str
    outcome: str  # PASS, FAIL, INCONCLUSIVE, NOT_REQUIRED
    reason: str
    rollback_to: str | None = None
    notes: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()  # what the verdict rests on
    missing: bool = False  # a FAIL for want of (fresh) evidence, not for what it shows

    def line(self) -> str:
        text = f"{self.domain}: {self.outcome} at {self.stage}: {self.reason}"
        if self.rollback_to:
            text += f"; roll back to {self.rollback_to}"
        if self.outcome == "INCONCLUSIVE":
            text += "; hold at the current stage"
        for note in self.notes:
            text += f" ({note})"
        for item in self.evidence:
            text += f"\n    evidence: {item}"
        return text


@attrs.frozen
class GateResult:
    """Every domain's verdict and the exit code they add up to."""

    verdicts: tuple[DomainVerdict, ...]

    @property
    def exit_code(self) -> int:
        outcomes = {v.outcome for v in self.verdicts}
        if "FAIL" in outcomes:
            return EXIT_FAIL
        if "INCONCLUSIVE" in outcomes:
            return EXIT_HOLD
        return EXIT_PASS

    @property
    def failed(self) -> tuple[DomainVerdict, ...]:
        return tuple(v for v in self.verdicts if v.outcome == "FAIL")

    def render(self) -> str:
        lines = [v.line() for v in self.verdicts]
        summary = {EXIT_PASS: "PASS", EXIT_FAIL: "FAIL", EXIT_HOLD: "INCONCLUSIVE (hold)"}
        lines.append(f"gate: {summary[self.exit_code]}")
        return "\n".join(lines) + "\n"


def _judge(
    domain: str,
    stage: Stage,
    report: DomainReport | ReportError | None,
    *,
    source_hash: str,
    max_age: _dt.timedelta,
    now: _dt.datetime,
    since: _dt.datetime | None = None,
    soak: _dt.timedelta | None = None,
    path: Path | None = None,
) -> DomainVerdict:
    back = stage.previous.name
    where = str(path) if path is not None else f"{domain}.json"

    def fail(reason: str, *notes: str, missing: bool = False) -> DomainVerdict:
        return DomainVerdict(
            domain, stage.name, "FAIL", reason, back, notes, (f"report {where}",), missing
        )

    if report is None:
        return fail("no parity report", missing=True)
    if isinstance(report, ReportError):
        return fail(f"unreadable report: {report}")
    if report.domain != domain:
        return fail(f"the report is for domain {report.domain!r}")
    if report.kind != "parity":
        return fail(f"the report is a {report.kind} run, not a parity run")
    if report.comparator_version != COMPARATOR_VERSION:
        return fail(
            f"foreign comparator {report.comparator_version!r} (this gate reads "
            f"{COMPARATOR_VERSION!r})"
        )
    try:
        observed = Stage.parse(report.stage)
    except ValueError:
        return fail(f"the report names an unknown stage {report.stage!r}")
    if observed < Stage.SHADOW:
        return fail(f"the report was made at {observed.name}; it must be made at SHADOW or beyond")
    ended = report.ended
    if ended > now + CLOCK_SKEW:
        return fail(f"the report ends in the future ({report.ended_at})")
    if now - ended > max_age:
        return fail(f"stale report: ended {report.ended_at}, older than {max_age}", missing=True)
    if since is not None and parse_iso(report.started_at) < since:
        return fail(
            f"the report started {report.started_at}, before the current step began ({iso(since)})",
            missing=True,
        )
    notes = []
    if report.config_hash != source_hash:
        notes.append(
            f"report made against rollout {report.config_hash[:12]}, now {source_hash[:12]}"
        )
    summary = f"N={report.n}, divergence upper bound {report.wilson_upper:.3%}"
    reasons = "; ".join(report.reasons[:1])
    evidence = (
        f"report {where}: {report.kind} run at {report.stage}, {report.started_at} to "
        f"{report.ended_at}, N={report.n}, {report.outcome}",
    )
    if report.outcome == "PASS":
        young = _soaking(parse_iso(report.started_at), soak, now)
        if young:
            return DomainVerdict(
                domain, stage.name, "INCONCLUSIVE", young, None, tuple(notes), evidence
            )
        return DomainVerdict(
            domain, stage.name, "PASS", f"{summary}: {reasons}", None, tuple(notes), evidence
        )
    if report.outcome == "INCONCLUSIVE":
        return DomainVerdict(
            domain,
            stage.name,
            "INCONCLUSIVE",
            f"{summary}: {reasons}",
            None,
            tuple(notes),
            evidence,
        )
    verdict = fail(f"parity FAIL ({summary}): {reasons}", *notes)
    return attrs.evolve(verdict, evidence=evidence)


def _soaking(oldest: _dt.datetime, soak: _dt.timedelta | None, now: _dt.datetime) -> str | None:
    """Why evidence is too young for the step's soak time (None: old enough)."""
    if soak is None or now - oldest >= soak:
        return None
    return (
        f"soaking: the evidence began {iso(oldest)}, {_span(now - oldest)} ago; "
        f"the step needs {_span(soak)}"
    )


def _span(delta: _dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _judge_live(
    domain: str,
    stage: Stage,
    live: LiveDomain | None,
    *,
    stale: LiveDomain | None,
    window: str,
    step_began: bool = False,
    threshold: float,
    min_samples: int,
    soak: _dt.timedelta | None = None,
    now: _dt.datetime,
) -> DomainVerdict:
    back = stage.previous.name
    since = f"the current step began ({window})" if step_began else window
    if live is None or live.n == 0:
        if stale is not None and stale.n:
            what = (
                "live evidence only from an earlier step" if step_began else "stale live evidence"
            )
            return DomainVerdict(
                domain,
                stage.name,
                "FAIL",
                f"{what}: the newest ended {stale.last_at}, before {since}",
                back,
                (),
                (stale.describe(),),
                True,
            )
        return DomainVerdict(
            domain, stage.name, "FAIL", f"no live evidence since {since}", back, (), (), True
        )
    decision = live.decide(threshold=threshold, min_samples=min_samples)
    summary = f"live N={live.n}, divergence upper bound {live.wilson_upper:.3%}"
    reason = f"{summary}: {'; '.join(decision.reasons[:1])}"
    evidence = (live.describe(),)
    outcome = decision.outcome.value
    if outcome == "PASS" and live.first_at is not None:
        young = _soaking(parse_iso(live.first_at), soak, now)
        if young:
            return DomainVerdict(domain, stage.name, "INCONCLUSIVE", young, None, (), evidence)
    if outcome == "FAIL":
        return DomainVerdict(domain, stage.name, "FAIL", reason, back, (), evidence)
    return DomainVerdict(domain, stage.name, outcome, reason, None, (), evidence)


def _combine(parts: list[DomainVerdict]) -> DomainVerdict:
    """One verdict from the report's and the live evidence's: FAIL if either fails,
    INCONCLUSIVE if either holds, PASS when both pass."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    outcomes = [p.outcome for p in parts]
    outcome = (
        "FAIL" if "FAIL" in outcomes else "INCONCLUSIVE" if "INCONCLUSIVE" in outcomes else "PASS"
    )
    reason = "; ".join(
        f"{name}: {p.outcome} ({p.reason})"
        for name, p in zip(("report", "live"), parts, strict=False)
    )
    notes = [n for p in parts for n in p.notes]
    if "PASS" in outcomes and "FAIL" in outcomes:
        notes.append("conflicting evidence: one source passes, the other fails")
    failed = [p for p in parts if p.outcome == "FAIL"]
    return DomainVerdict(
        first.domain,
        first.stage,
        outcome,
        reason,
        Stage.parse(first.stage).previous.name if outcome == "FAIL" else None,
        tuple(notes),
        tuple(e for p in parts for e in p.evidence),
        bool(failed) and all(p.missing for p in failed),
    )


def _report_of(reports_dir: Path, domain: str) -> DomainReport | ReportError | None:
    path = reports_dir / f"{domain}.json"
    if not path.exists():
        return None
    try:
        return read_report(path)
    except ReportError as exc:
        return exc


def judge_domain(
    domain: str,
    stage: Stage,
    *,
    rollout: RolloutConfig,
    reports_dir: Path | None,
    live_rows: list[dict] | None,
    now: _dt.datetime,
    max_age: _dt.timedelta = DEFAULT_MAX_AGE,
    live_window: _dt.timedelta = DEFAULT_LIVE_WINDOW,
    since: _dt.datetime | None = None,
    soak: _dt.timedelta | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DomainVerdict:
    """One domain's verdict at `stage` on the evidence given (reports, live or both).

    `since`: only evidence gathered since then counts (the current step began);
    `soak`: a PASS needs its evidence to go back at least that far (else INCONCLUSIVE).
    """
    parts = []
    if reports_dir is not None:
        parts.append(
            _judge(
                domain,
                stage,
                _report_of(reports_dir, domain),
                source_hash=rollout.source_hash,
                max_age=max_age,
                now=now,
                since=since,
                soak=soak,
                path=reports_dir / f"{domain}.json",
            )
        )
    if live_rows is not None:
        start = now - live_window
        step_began = since is not None and since > start
        if since is not None and since > start:
            start = since
        live = summarize(live_rows, after=start).get(domain)
        stale = summarize(live_rows, after=now - max_age).get(domain)
        parts.append(
            _judge_live(
                domain,
                stage,
                live,
                stale=stale,
                window=iso(start),
                step_began=step_began,
                threshold=threshold,
                min_samples=min_samples,
                soak=soak,
                now=now,
            )
        )
    if not parts:
        return DomainVerdict(
            domain, stage.name, "FAIL", "no evidence given", stage.previous.name, (), ()
        )
    return _combine(parts)


def gate(
    rollout: RolloutConfig,
    reports_dir: Path | None,
    *,
    max_age: _dt.timedelta = DEFAULT_MAX_AGE,
    now: _dt.datetime,
    live_rows: list[dict] | None = None,
    live_window: _dt.timedelta = DEFAULT_LIVE_WINDOW,
) -> GateResult:
    """Judge every domain of the rollout against the reports in `reports_dir`, the
    live evidence rows from the store, or both."""
    verdicts = []
    for domain, rollout_line in sorted(rollout.domains.items()):
        stage = rollout_line.stage
        if stage < Stage.LIVE:
            verdicts.append(DomainVerdict(domain, stage.name, "NOT_REQUIRED", "no evidence needed"))
            continue
        verdicts.append(
            judge_domain(
                domain,
                stage,
                rollout=rollout,
                reports_dir=reports_dir,
                live_rows=live_rows,
                now=now,
                max_age=max_age,
                live_window=live_window,
            )
        )
    return GateResult(tuple(verdicts))


def run_gate(
    flags_path: str | Path,
    reports_dir: str | Path | None,
    max_age: _dt.timedelta | str = DEFAULT_MAX_AGE,
    now: _dt.datetime | None = None,
    out: TextIO = sys.stdout,
    *,
    store_url: str | None = None,
    live_window: _dt.timedelta | str = DEFAULT_LIVE_WINDOW,
) -> int:
    """`cutover parity gate`: print each domain's verdict, return the exit code.
    `store_url` adds the live evidence kept in that store (`--live --store URL`)."""
    try:
        age = parse_duration(max_age) if isinstance(max_age, str) else max_age
        window = parse_duration(live_window) if isinstance(live_window, str) else live_window
    except ValueError as exc:
        print(f"gate: FAIL: {exc}", file=out)
        return EXIT_FAIL
    if reports_dir is None and store_url is None:
        print("gate: FAIL: no evidence: give --reports DIR, --live --store URL, or both", file=out)
        return EXIT_FAIL
    try:
        rollout = load_rollout(flags_path)
    except RolloutError as exc:
        print(f"gate: FAIL: {exc}", file=out)
        return EXIT_FAIL
    now = now or utcnow()
    live_rows = None
    if store_url is not None:
        try:
            live_rows = read_evidence(store_url, now - max(age, window))
        except Exception as exc:
            print(f"gate: FAIL: cannot read live evidence: {exc}", file=out)
            return EXIT_FAIL
    result = gate(
        rollout,
        Path(reports_dir) if reports_dir is not None else None,
        max_age=age,
        now=now,
        live_rows=live_rows,
        live_window=window,
    )
    out.write(result.render())
    return result.exit_code


def run_live_report(
    store_url: str,
    since: _dt.timedelta | str = DEFAULT_LIVE_WINDOW,
    out: TextIO = sys.stdout,
    now: _dt.datetime | None = None,
) -> int:
    """`cutover parity report --live`: each domain's live evidence over the window,
    the verdict it supports and the redacted samples of what differed; 1 when
    there is none or the store cannot be read."""
    try:
        window = parse_duration(since) if isinstance(since, str) else since
    except ValueError as exc:
        print(f"report: {exc}", file=out)
        return 1
    now = now or utcnow()
    start = now - window
    try:
        rows = read_evidence(store_url, start)
    except Exception as exc:
        print(f"report: cannot read live evidence: {exc}", file=out)
        return 1
    domains = summarize(rows, after=start)
    if not domains:
        print(f"no live evidence since {iso(start)}", file=out)
        return 1
    print(f"live evidence since {iso(start)} (audit and beacons, every node)", file=out)
    out.write(format_live_table(domains, now=now))
    samples = format_samples(domains)
    if samples:
        print("\nwhat differed (redacted):", file=out)
        out.write(samples)
    return 0


def run_report(
    reports_dir: str | Path, out: TextIO = sys.stdout, now: _dt.datetime | None = None
) -> int:
    """`cutover parity report`: print the reports' table; 1 if none or any is unreadable."""
    found: Mapping[str, DomainReport | ReportError] = read_reports(Path(reports_dir))
    good = [r for r in found.values() if isinstance(r, DomainReport)]
    bad = {name: r for name, r in found.items() if isinstance(r, ReportError)}
    if good:
        out.write(format_table(good, now=now or utcnow()))
    for name, error in bad.items():
        print(f"{name}: {error}", file=out)
    if not good:
        print(f"no parity reports in {reports_dir}", file=out)
    return 1 if bad or not good else 0
