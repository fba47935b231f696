"""The rollout gate: does the parity evidence support the rollout file?

For every domain the rollout file puts at LIVE or beyond, the reports
directory must hold `<domain>.json`: a parity report (not a calibration)
made by this comparator version, at SHADOW or beyond, ended no longer than
`max_age` before `now`, whose outcome is PASS. Domains at OFF or SHADOW need
no report. Anything else fails closed:

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

from gateway.events import utcnow
from gateway.rollout import RolloutConfig, RolloutError, Stage, load_rollout
from parity.differ import COMPARATOR_VERSION
from parity.report import DomainReport, ReportError, format_table, read_report, read_reports

__all__ = [
    "DEFAULT_MAX_AGE",
    "DomainVerdict",
    "GateResult",
    "gate",
    "parse_duration",
    "run_gate",
    "run_report",
]

DEFAULT_MAX_AGE = _dt.timedelta(days=7)
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

    def line(self) -> str:
        text = f"{self.domain}: {self.outcome} at {self.stage}: {self.reason}"
        if self.rollback_to:
            text += f"; roll back to {self.rollback_to}"
        if self.outcome == "INCONCLUSIVE":
            text += "; hold at the current stage"
        for note in self.notes:
            text += f" ({note})"
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
) -> DomainVerdict:
    back = stage.previous.name

    def fail(reason: str, *notes: str) -> DomainVerdict:
        return DomainVerdict(domain, stage.name, "FAIL", reason, back, notes)

    if report is None:
        return fail("no parity report")
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
        return fail(f"stale report: ended {report.ended_at}, older than {max_age}")
    notes = []
    if report.config_hash != source_hash:
        notes.append(
            f"report made against rollout {report.config_hash[:12]}, now {source_hash[:12]}"
        )
    summary = f"N={report.n}, divergence upper bound {report.wilson_upper:.3%}"
    reasons = "; ".join(report.reasons[:1])
    if report.outcome == "PASS":
        return DomainVerdict(
            domain, stage.name, "PASS", f"{summary}: {reasons}", None, tuple(notes)
        )
    if report.outcome == "INCONCLUSIVE":
        return DomainVerdict(
            domain, stage.name, "INCONCLUSIVE", f"{summary}: {reasons}", None, tuple(notes)
        )
    return fail(f"parity FAIL ({summary}): {reasons}", *notes)


def gate(
    rollout: RolloutConfig,
    reports_dir: Path,
    *,
    max_age: _dt.timedelta = DEFAULT_MAX_AGE,
    now: _dt.datetime,
) -> GateResult:
    """Judge every domain of the rollout against the reports in `reports_dir`."""
    verdicts = []
    for domain, rollout_line in sorted(rollout.domains.items()):
        stage = rollout_line.stage
        if stage < Stage.LIVE:
            verdicts.append(DomainVerdict(domain, stage.name, "NOT_REQUIRED", "no report needed"))
            continue
        path = reports_dir / f"{domain}.json"
        report: DomainReport | ReportError | None
        if not path.exists():
            report = None
        else:
            try:
                report = read_report(path)
            except ReportError as exc:
                report = exc
        verdicts.append(
            _judge(domain, stage, report, source_hash=rollout.source_hash, max_age=max_age, now=now)
        )
    return GateResult(tuple(verdicts))


def run_gate(
    flags_path: str | Path,
    reports_dir: str | Path,
    max_age: _dt.timedelta | str = DEFAULT_MAX_AGE,
    now: _dt.datetime | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """`cutover parity gate`: print each domain's verdict, return the exit code."""
    try:
        age = parse_duration(max_age) if isinstance(max_age, str) else max_age
    except ValueError as exc:
        print(f"gate: FAIL: {exc}", file=out)
        return EXIT_FAIL
    try:
        rollout = load_rollout(flags_path)
    except RolloutError as exc:
        print(f"gate: FAIL: {exc}", file=out)
        return EXIT_FAIL
    result = gate(rollout, Path(reports_dir), max_age=age, now=now or utcnow())
    out.write(result.render())
    return result.exit_code


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
