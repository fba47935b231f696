"""The parity harness: observers of both paths, differ, statistics, reports and the gate.

The pure core: `parity.model` (the state each observer keeps and the
observations it reports), `parity.differ` (classifies comparisons),
`parity.invariants` (per-path checks), `parity.stats` (Wilson bounds,
percentiles, the verdict), `parity.report` (JSON, Markdown, plot) and
`parity.gate` (the rollout gate).
"""

from parity.differ import (
    COMPARATOR_VERSION,
    Classification,
    Comparator,
    Comparison,
    DiffResult,
    DomainDiff,
    LatencySample,
    Write,
)
from parity.invariants import (
    Read,
    Received,
    Violation,
    check_badge_sum,
    check_counts_fall_only_on_read,
    check_seq_continuity,
)
from parity.model import (
    ConversationState,
    Observation,
    UserState,
    domain_of,
    error_observation,
    flatten,
    observe,
)
from parity.report import (
    DomainReport,
    ReportError,
    Traffic,
    build_report,
    format_table,
    noise_floor,
    read_report,
    read_reports,
    write_reports,
)
from parity.stats import Decision, Outcome, decide, detectable_rate, percentile, wilson_interval

__all__ = [
    "COMPARATOR_VERSION",
    "Classification",
    "Comparator",
    "Comparison",
    "ConversationState",
    "Decision",
    "DiffResult",
    "DomainDiff",
    "DomainReport",
    "LatencySample",
    "Observation",
    "Outcome",
    "Read",
    "Received",
    "ReportError",
    "Traffic",
    "UserState",
    "Violation",
    "Write",
    "build_report",
    "check_badge_sum",
    "check_counts_fall_only_on_read",
    "check_seq_continuity",
    "decide",
    "detectable_rate",
    "domain_of",
    "error_observation",
    "flatten",
    "format_table",
    "noise_floor",
    "observe",
    "percentile",
    "read_report",
    "read_reports",
    "wilson_interval",
    "write_reports",
]
