"""Live parity evidence: what real traffic showed, as the store keeps it per domain and hour.

Every node's shadow audit and the browsers' beacons add counts to the store
(`gateway.evidence`); this module reads them back for `cutover parity report
--live` and the gate. A domain's live evidence over a window is the sum of
its rows at SHADOW or beyond (the audit and the beacons together, each named
with its own N), judged by the same rules as a harness report
(`parity.stats.decide`: Wilson bounds, the threshold, the minimum N); the
audit compares at the poll's exact cursor, so no A/A noise is subtracted.
"""

from __future__ import annotations

import collections
import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from gateway.events import iso, parse_iso
from gateway.rollout import Stage
from parity.differ import AGAINST
from parity.report import plain_table
from parity.stats import DEFAULT_MIN_SAMPLES, DEFAULT_THRESHOLD, Decision, decide, wilson_upper

__all__ = [
    "LiveDomain",
    "format_live_table",
    "hour_floor",
    "read_evidence",
    "summarize",
]

# Classes that compare nothing: left out of N.
NOT_COUNTED = frozenset({"NODATA", "UNALIGNED"})
AGAINST_NAMES = frozenset(c.value for c in AGAINST)


def hour_floor(moment: _dt.datetime) -> str:
    """The contract time of the start of `moment`'s hour."""
    return iso(moment.replace(minute=0, second=0, microsecond=0))


def read_evidence(store_url: str, since: _dt.datetime) -> list[dict[str, Any]]:
    """The evidence rows of every hour from `since`'s hour on, from the store at `store_url`."""
    from gateway.store import open_store

    store = open_store(store_url)
    try:
        return store.evidence_since(hour_floor(since))
    finally:
        store.close()


@attrs.frozen
class LiveDomain:
    """One domain's live evidence over a window."""

    domain: str
    counts: Mapping[str, int]
    by_source: Mapping[str, int]  # N per source (audit, beacon)
    by_stage: Mapping[str, int]  # N per stage the users were at
    first_at: str | None
    last_at: str | None
    samples: tuple[dict[str, Any], ...] = ()

    @property
    def n(self) -> int:
        return sum(v for k, v in self.counts.items() if k not in NOT_COUNTED)

    @property
    def divergent(self) -> int:
        return sum(v for k, v in self.counts.items() if k in AGAINST_NAMES)

    @property
    def wilson_upper(self) -> float:
        return wilson_upper(self.divergent, self.n)

    def decide(
        self, *, threshold: float = DEFAULT_THRESHOLD, min_samples: int = DEFAULT_MIN_SAMPLES
    ) -> Decision:
        return decide(self.divergent, self.n, threshold=threshold, min_samples=min_samples)

    def describe(self) -> str:
        """Which evidence this is: N per source and stage, and when it was gathered."""
        sources = ", ".join(f"{s} N={n}" for s, n in sorted(self.by_source.items()))
        stages = ", ".join(f"{s} {n}" for s, n in sorted(self.by_stage.items()))
        return (
            f"live evidence N={self.n} ({sources or 'none'}; by stage: {stages or 'none'}) "
            f"from {self.first_at} to {self.last_at}"
        )


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    after: _dt.datetime | None = None,
    stages: Sequence[str] | None = None,
) -> dict[str, LiveDomain]:
    """Each domain's evidence of rows gathered after `after` (each row's last
    evidence), at the given stages (default: SHADOW and beyond)."""
    wanted = set(stages) if stages is not None else {s.value for s in Stage if s >= Stage.SHADOW}
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    sources: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    at_stage: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    samples: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        if row["stage"] not in wanted:
            continue
        if after is not None and parse_iso(row["last_at"]) < after:
            continue
        domain = row["domain"]
        n = sum(int(v) for k, v in row["counts"].items() if k not in NOT_COUNTED)
        counts[domain].update({k: int(v) for k, v in row["counts"].items()})
        sources[domain][row["source"]] += n
        at_stage[domain][row["stage"]] += n
        first[domain] = min(first.get(domain, row["first_at"]), row["first_at"])
        last[domain] = max(last.get(domain, row["last_at"]), row["last_at"])
        samples[domain].extend(row.get("samples") or ())
    return {
        domain: LiveDomain(
            domain,
            dict(counts[domain]),
            dict(sources[domain]),
            dict(at_stage[domain]),
            first.get(domain),
            last.get(domain),
            tuple(samples[domain][-10:]),
        )
        for domain in counts
    }


LIVE_HEADER = ("domain", "outcome", "N", "div. upper", "against", "audit N", "beacon N", "last")


def _against(counts: Mapping[str, int]) -> str:
    found = [f"{k} {v}" for k, v in sorted(counts.items()) if k in AGAINST_NAMES and v]
    return ", ".join(found) or "-"


def format_live_table(
    domains: Mapping[str, LiveDomain],
    *,
    now: _dt.datetime,
    threshold: float = DEFAULT_THRESHOLD,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> str:
    """A plain-text table of each domain's live evidence and the verdict it supports."""
    rows: list[tuple[str, ...]] = [LIVE_HEADER]
    for name in sorted(domains):
        d = domains[name]
        age = "-"
        if d.last_at is not None:
            minutes = (now - parse_iso(d.last_at)).total_seconds() / 60
            age = f"{minutes:.0f}m ago" if minutes < 120 else f"{minutes / 60:.1f}h ago"
        rows.append(
            (
                name,
                d.decide(threshold=threshold, min_samples=min_samples).outcome.value,
                str(d.n),
                f"{d.wilson_upper:.3%}",
                _against(d.counts),
                str(d.by_source.get("audit", 0)),
                str(d.by_source.get("beacon", 0)),
                age,
            )
        )
    return plain_table(rows)


def format_samples(domains: Mapping[str, LiveDomain]) -> str:
    """The redacted samples of what differed, per domain."""
    out = []
    for name in sorted(domains):
        for sample in domains[name].samples:
            detail = f": {sample['detail']}" if sample.get("detail") else ""
            shown = ""
            if "poll" in sample or "push" in sample:
                shown = f" (poll {sample.get('poll')!r}, push {sample.get('push')!r})"
            out.append(
                f"{name}: {sample.get('class')} {sample.get('key')} "
                f"[{sample.get('check', '?')}]{shown}{detail}"
            )
    return "\n".join(out) + ("\n" if out else "")
