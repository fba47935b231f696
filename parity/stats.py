"""The statistics behind a parity verdict.

- `wilson_interval`: the Wilson score interval of a proportion. The default
  `z = 1.959964` is the two-sided 95% interval, so its upper bound alone is a
  one-sided 97.5% bound: deliberately a little conservative for a gate.
  0 of 100 gives an upper bound of 0.0370.
- `percentile`: nearest-rank percentiles (the smallest sample with at least
  p% of the samples at or below it), so a reported p99 is always a latency
  that was actually measured.
- `detectable_rate`: the smallest divergence rate the run could have
  detected: the rate at which seeing zero divergences in N comparisons would
  happen with probability `alpha` (5%), `1 - alpha ** (1 / N)`, about 3/N.
- `decide`: PASS / FAIL / INCONCLUSIVE from the counts, the A/A noise floor
  and the domain's threshold; the rules are on `decide` itself.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import attrs

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_THRESHOLD",
    "Z_95_TWO_SIDED",
    "Decision",
    "Outcome",
    "decide",
    "detectable_rate",
    "needed_samples",
    "percentile",
    "percentiles",
    "wilson_interval",
    "wilson_upper",
]

Z_95_TWO_SIDED = 1.959963984540054

# The divergence rate, above the A/A noise floor, that a domain may show and
# still pass: 0.5% of comparisons. A run needs about 770 clean comparisons
# for the Wilson upper bound of 0 divergences to fall below it.
DEFAULT_THRESHOLD = 0.005

# Below this many comparisons a run proves nothing either way (unless the
# divergences it did see are already conclusive).
DEFAULT_MIN_SAMPLES = 200


class Outcome(enum.Enum):
    """A parity verdict for one domain."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


def wilson_interval(successes: int, n: int, z: float = Z_95_TWO_SIDED) -> tuple[float, float]:
    """The Wilson score interval `(low, high)` of `successes` out of `n`.

    With `n == 0` nothing is known: `(0.0, 1.0)`.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def wilson_upper(successes: int, n: int, z: float = Z_95_TWO_SIDED) -> float:
    return wilson_interval(successes, n, z)[1]


def needed_samples(
    threshold: float = DEFAULT_THRESHOLD, *, noise: float = 0.0, min_samples: int = 0
) -> int:
    """The fewest comparisons with no divergence whose Wilson upper bound, minus the
    noise, clears `threshold`: what a clean domain needs for a PASS (767 at 0.5%)."""
    if threshold + noise >= 1:
        return max(1, min_samples)
    low, high = 1, 1
    while wilson_upper(0, high) - noise >= threshold:
        high *= 2
    while low < high:
        mid = (low + high) // 2
        if wilson_upper(0, mid) - noise < threshold:
            high = mid
        else:
            low = mid + 1
    return max(low, min_samples)


def percentile(samples: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`-th percentile (0 < p <= 100); None when empty."""
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    if not samples:
        return None
    ordered = sorted(samples)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 (nearest rank) of the samples."""
    return {
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
    }


def detectable_rate(n: int, alpha: float = 0.05) -> float:
    """The smallest divergence rate a run of `n` comparisons would have seen.

    The rate `r` at which zero divergences in `n` independent comparisons has
    probability `alpha`: `(1 - r) ** n == alpha`. 1.0 when `n == 0`.
    """
    if n <= 0:
        return 1.0
    return 1 - alpha ** (1 / n)


@attrs.frozen
class Decision:
    """A verdict and the figures it was drawn from."""

    outcome: Outcome
    reasons: tuple[str, ...]
    rate: float
    lower: float
    upper: float
    noise: float
    threshold: float


def decide(
    divergent: int,
    n: int,
    *,
    noise: float = 0.0,
    threshold: float = DEFAULT_THRESHOLD,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    invariant_violations: int = 0,
) -> Decision:
    """The verdict for one domain.

    `noise` is the divergence rate an A/A calibration run (two pollers, the
    same comparator) observed: the harness's own noise, subtracted before
    comparing with `threshold`. The point rate is used, not its upper bound,
    so that a noisy calibration cannot buy a pass. In order:

    1. FAIL if any invariant was violated on either path.
    2. FAIL if the Wilson lower bound minus the noise exceeds the threshold
       (conclusive whatever N is).
    3. INCONCLUSIVE if `n < min_samples` (hold: run longer).
    4. FAIL if the observed rate minus the noise exceeds the threshold.
    5. PASS if the Wilson upper bound minus the noise is below the threshold.
    6. INCONCLUSIVE otherwise: the interval straddles the threshold.
    """
    if not 0 <= noise <= 1:
        raise ValueError("noise must be a rate in [0, 1]")
    rate = divergent / n if n else 0.0
    lower, upper = wilson_interval(divergent, n)

    def verdict(outcome: Outcome, *reasons: str) -> Decision:
        return Decision(outcome, reasons, rate, lower, upper, noise, threshold)

    if invariant_violations:
        return verdict(Outcome.FAIL, f"{invariant_violations} invariant violation(s)")
    if lower - noise > threshold:
        return verdict(
            Outcome.FAIL,
            f"divergence rate at least {lower:.4%} (Wilson lower bound) minus noise "
            f"{noise:.4%} exceeds threshold {threshold:.4%}",
        )
    if n < min_samples:
        return verdict(Outcome.INCONCLUSIVE, f"too few comparisons: {n} < {min_samples}")
    if rate - noise > threshold:
        return verdict(
            Outcome.FAIL,
            f"divergence rate {rate:.4%} ({divergent}/{n}) minus noise {noise:.4%} "
            f"exceeds threshold {threshold:.4%}",
        )
    if upper - noise < threshold:
        return verdict(
            Outcome.PASS,
            f"divergence upper bound {upper:.4%} minus noise {noise:.4%} is below "
            f"threshold {threshold:.4%}",
        )
    return verdict(
        Outcome.INCONCLUSIVE,
        f"divergence upper bound {upper:.4%} minus noise {noise:.4%} does not clear "
        f"threshold {threshold:.4%}: more comparisons needed",
    )
