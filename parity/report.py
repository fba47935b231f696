"""Parity reports: one per domain per run, as JSON for machines and Markdown for people.

A run writes `<out>/<domain>.json` (schema `cutover-parity-report/1`), one
`<out>/SUMMARY.md` with the table a release engineer reads and
`<out>/latency.png`, the update-visible latency of each path per domain.
An A/A calibration run writes the same files with `kind: "calibration"`;
the gate accepts only `kind: "parity"`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from gateway.events import iso, parse_iso
from parity.differ import COMPARATOR_VERSION, Classification, DomainDiff
from parity.invariants import Violation
from parity.stats import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_THRESHOLD,
    decide,
    detectable_rate,
    percentiles,
)

__all__ = [
    "SCHEMA",
    "DomainReport",
    "ReportError",
    "Traffic",
    "build_report",
    "format_table",
    "noise_floor",
    "read_report",
    "read_reports",
    "write_report",
    "write_reports",
]

SCHEMA = "cutover-parity-report/1"
KINDS = ("parity", "calibration")


class ReportError(Exception):
    """A report file that cannot be read or is not a report of this schema."""


@attrs.frozen
class Traffic:
    """What one path spent during a run: requests (or frames) and bytes."""

    requests: int = 0
    bytes: int = 0


@attrs.frozen
class DomainReport:
    """The parity evidence for one domain from one run."""

    domain: str
    kind: str  # "parity" or "calibration"
    outcome: str  # PASS, FAIL, INCONCLUSIVE
    reasons: tuple[str, ...]
    counts: dict[str, int]
    n: int
    divergent: int
    wilson_upper: float
    threshold: float
    noise_floor: float | None
    latency: dict[str, dict[str, float | None]]
    latency_samples: dict[str, list[float]]
    traffic: dict[str, Traffic]
    window: float
    detectable_rate: float
    comparator_version: str
    config_hash: str
    stage: str
    started_at: str
    ended_at: str
    users: tuple[str, ...]
    invariant_violations: tuple[Violation, ...] = ()
    censored: int = 0
    unaligned: int = 0  # A/A: versions only one poller read, compared at none
    paths: tuple[str, str] = ("poll", "push")

    @property
    def ended(self) -> _dt.datetime:
        return parse_iso(self.ended_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "domain": self.domain,
            "kind": self.kind,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "counts": dict(self.counts),
            "n": self.n,
            "divergent": self.divergent,
            "wilsonUpper": self.wilson_upper,
            "threshold": self.threshold,
            "noiseFloor": self.noise_floor,
            "latency": self.latency,
            "latencySamples": self.latency_samples,
            "traffic": {p: attrs.asdict(t) for p, t in self.traffic.items()},
            "window": self.window,
            "detectableRate": self.detectable_rate,
            "comparatorVersion": self.comparator_version,
            "configHash": self.config_hash,
            "stage": self.stage,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "users": list(self.users),
            "invariantViolations": [v.to_json() for v in self.invariant_violations],
            "censored": self.censored,
            "unaligned": self.unaligned,
            "paths": list(self.paths),
        }

    @classmethod
    def from_json(cls, data: Any) -> DomainReport:
        """Parse a report; any missing or ill-typed field raises `ReportError`."""
        if not isinstance(data, dict):
            raise ReportError("a report is a JSON object")
        if data.get("schema") != SCHEMA:
            raise ReportError(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
        try:
            report = cls(
                domain=_typed(data, "domain", str),
                kind=_typed(data, "kind", str),
                outcome=_typed(data, "outcome", str),
                reasons=tuple(_typed(data, "reasons", list)),
                counts={str(k): int(v) for k, v in _typed(data, "counts", dict).items()},
                n=_typed(data, "n", int),
                divergent=_typed(data, "divergent", int),
                wilson_upper=float(_typed(data, "wilsonUpper", (int, float))),
                threshold=float(_typed(data, "threshold", (int, float))),
                noise_floor=(None if data.get("noiseFloor") is None else float(data["noiseFloor"])),
                latency={
                    str(p): {str(k): (None if v is None else float(v)) for k, v in q.items()}
                    for p, q in _typed(data, "latency", dict).items()
                },
                latency_samples={
                    str(p): [float(x) for x in xs]
                    for p, xs in _typed(data, "latencySamples", dict).items()
                },
                traffic={
                    str(p): Traffic(int(t["requests"]), int(t["bytes"]))
                    for p, t in _typed(data, "traffic", dict).items()
                },
                window=float(_typed(data, "window", (int, float))),
                detectable_rate=float(_typed(data, "detectableRate", (int, float))),
                comparator_version=_typed(data, "comparatorVersion", str),
                config_hash=_typed(data, "configHash", str),
                stage=_typed(data, "stage", str),
                started_at=_typed(data, "startedAt", str),
                ended_at=_typed(data, "endedAt", str),
                users=tuple(str(u) for u in _typed(data, "users", list)),
                invariant_violations=tuple(
                    Violation.from_json(v) for v in _typed(data, "invariantViolations", list)
                ),
                censored=int(data.get("censored", 0)),
                unaligned=int(data.get("unaligned", 0)),
                paths=tuple(data.get("paths", ("poll", "push"))),
            )
            parse_iso(report.started_at)
            parse_iso(report.ended_at)
        except ReportError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReportError(f"malformed report: {exc!r}") from exc
        if report.kind not in KINDS:
            raise ReportError(f"unknown report kind {report.kind!r}")
        if report.outcome not in ("PASS", "FAIL", "INCONCLUSIVE"):
            raise ReportError(f"unknown outcome {report.outcome!r}")
        return report


def _typed(data: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise ReportError(f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ReportError(f"field {name!r} has the wrong type")
    return value


def noise_floor(calibration: DomainReport) -> float:
    """The divergence rate an A/A calibration run observed for its domain."""
    if calibration.kind != "calibration":
        raise ReportError(f"{calibration.domain}: not a calibration report")
    if calibration.comparator_version != COMPARATOR_VERSION:
        raise ReportError(f"{calibration.domain}: calibrated with another comparator")
    return calibration.divergent / calibration.n if calibration.n else 0.0


def build_report(
    diff: DomainDiff,
    *,
    kind: str = "parity",
    stage: str,
    config_hash: str,
    started_at: _dt.datetime,
    ended_at: _dt.datetime,
    window: float,
    paths: tuple[str, str] = ("poll", "push"),
    traffic: Mapping[str, Traffic] | None = None,
    violations: Sequence[Violation] = (),
    calibration: DomainReport | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    notes: Sequence[str] = (),
    needed: int | None = None,
) -> DomainReport:
    """Turn the differ's result for one domain into a report with a verdict.

    `notes` are added to the reasons (how long the run went on, a time cap);
    `needed`, the comparisons a clean domain needs to pass, is named when the
    verdict is INCONCLUSIVE."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    noise = noise_floor(calibration) if calibration is not None else None
    decision = decide(
        diff.divergent,
        diff.n,
        noise=noise or 0.0,
        threshold=threshold,
        min_samples=min_samples,
        invariant_violations=len(violations),
    )
    reasons = list(decision.reasons)
    reasons += list(notes)
    if decision.outcome.value == "INCONCLUSIVE" and needed is not None:
        reasons.append(f"{diff.n} comparisons of about {needed} needed at this threshold")
    if calibration is None and kind == "parity":
        reasons.append("no A/A calibration given: noise floor taken as 0")
    counts = diff.counts()
    if counts[Classification.NODATA.value]:
        reasons.append(
            f"{counts[Classification.NODATA.value]} user/key(s) without data on one path"
        )
    samples = {p: sorted(diff.latency(p)) for p in paths}
    return DomainReport(
        domain=diff.domain,
        kind=kind,
        outcome=decision.outcome.value,
        reasons=tuple(reasons),
        counts=counts,
        n=diff.n,
        divergent=diff.divergent,
        wilson_upper=decision.upper,
        threshold=threshold,
        noise_floor=noise,
        latency={p: percentiles(s) for p, s in samples.items()},
        latency_samples=samples,
        traffic={p: (traffic or {}).get(p, Traffic()) for p in paths},
        window=window,
        detectable_rate=detectable_rate(diff.n),
        comparator_version=COMPARATOR_VERSION,
        config_hash=config_hash,
        stage=stage,
        started_at=iso(started_at),
        ended_at=iso(ended_at),
        users=diff.users,
        invariant_violations=tuple(violations),
        censored=diff.censored,
        unaligned=diff.unaligned,
        paths=paths,
    )


def write_report(report: DomainReport, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.domain}.json"
    path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def read_report(path: Path) -> DomainReport:
    """Read one report file; unreadable or malformed files raise `ReportError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from exc
    return DomainReport.from_json(data)


def read_reports(reports_dir: Path) -> dict[str, DomainReport | ReportError]:
    """Every `<domain>.json` in a directory, each parsed or the error it raised."""
    out: dict[str, DomainReport | ReportError] = {}
    for path in sorted(reports_dir.glob("*.json")):
        try:
            out[path.stem] = read_report(path)
        except ReportError as exc:
            out[path.stem] = exc
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _age(report: DomainReport, now: _dt.datetime | None) -> str:
    if now is None:
        return "-"
    seconds = (now - report.ended).total_seconds()
    if seconds < 0:
        return "future"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


TABLE_HEADER = (
    "domain",
    "stage",
    "outcome",
    "N",
    "div. upper",
    "noise",
    "p95 left",
    "p95 right",
    "age",
)


def _rows(reports: Iterable[DomainReport], now: _dt.datetime | None) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in sorted(reports, key=lambda r: r.domain):
        left, right = r.paths
        rows.append(
            (
                r.domain if r.kind == "parity" else f"{r.domain} (A/A)",
                r.stage,
                r.outcome,
                str(r.n),
                _pct(r.wilson_upper),
                _pct(r.noise_floor),
                f"{left} {_secs(r.latency.get(left, {}).get('p95'))}",
                f"{right} {_secs(r.latency.get(right, {}).get('p95'))}",
                _age(r, now),
            )
        )
    return rows


def format_table(reports: Iterable[DomainReport], *, now: _dt.datetime | None = None) -> str:
    """A plain-text table: domain, stage, outcome, N, divergence upper bound,
    noise, p95 latency of each path and the report's age at `now`."""
    return plain_table([TABLE_HEADER, *_rows(reports, now)])


def plain_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first a header) as left-aligned columns, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _markdown(reports: Sequence[DomainReport], now: _dt.datetime | None, plot: str | None) -> str:
    lines = ["# Parity summary", ""]
    lines.append("| " + " | ".join(TABLE_HEADER) + " |")
    lines.append("|" + "---|" * len(TABLE_HEADER))
    for row in _rows(reports, now):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for r in sorted(reports, key=lambda r: r.domain):
        lines.append(f"## {r.domain}: {r.outcome}")
        lines.append("")
        for reason in r.reasons:
            lines.append(f"- {reason}")
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items() if v)
        lines.append(
            f"- comparisons: {counts or 'none'}; censored at the end of the run: {r.censored}; "
            f"unaligned: {r.unaligned}"
        )
        lines.append(
            f"- W {r.window:g} s; smallest detectable divergence {r.detectable_rate:.3%}; "
            f"comparator {r.comparator_version}; config {r.config_hash[:12]}"
        )
        for p, t in r.traffic.items():
            q = r.latency.get(p, {})
            lines.append(
                f"- {p}: {t.requests} requests, {t.bytes} bytes; latency p50 {_secs(q.get('p50'))}, "
                f"p95 {_secs(q.get('p95'))}, p99 {_secs(q.get('p99'))}"
            )
        lines.append(f"- {len(r.users)} users, {r.started_at} to {r.ended_at}")
        for v in r.invariant_violations:
            lines.append(f"- invariant {v.invariant} on {v.path} for {v.user_id}: {v.detail}")
        lines.append("")
    if plot:
        lines += ["## Update-visible latency", "", f"![latency per path]({plot})", ""]
    return "\n".join(lines)


def plot_latency(reports: Sequence[DomainReport], path: Path) -> None:
    """The empirical CDF of each path's update-visible latency, one panel per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(reports, key=lambda r: r.domain)
    cols = min(2, max(1, len(ordered)))
    rows = max(1, math.ceil(len(ordered) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.5 * rows), squeeze=False)
    for ax, report in zip(axes.flat, ordered, strict=False):
        for p, samples in report.latency_samples.items():
            if samples:
                xs = sorted(x * 1000 for x in samples)
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.step(xs, ys, where="post", label=f"{p} (n={len(xs)})")
        ax.set_title(f"{report.domain} ({report.kind})")
        ax.set_xlabel("update-visible latency (ms)")
        ax.set_ylabel("fraction of updates")
        ax.grid(True, alpha=0.3)
        if any(report.latency_samples.values()):
            ax.legend(loc="lower right")
    for ax in list(axes.flat)[len(ordered) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(
    reports: Sequence[DomainReport], out_dir: Path, *, now: _dt.datetime | None = None
) -> list[Path]:
    """Write each domain's JSON, `SUMMARY.md` and `latency.png` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_report(r, out_dir) for r in reports]
    png = out_dir / "latency.png"
    plot_latency(reports, png)
    summary = out_dir / "SUMMARY.md"
    summary.write_text(_markdown(reports, now, png.name))
    return [*written, summary, png]
