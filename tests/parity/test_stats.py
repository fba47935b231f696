"""Wilson bounds, percentiles, detectable rate and the verdict rules."""

from __future__ import annotations

import pytest

from parity.stats import Outcome, decide, detectable_rate, percentile, percentiles, wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 100, 0.0, 0.0370),
        (5, 100, 0.0215, 0.1118),
        (50, 100, 0.4038, 0.5962),
        (1, 10, 0.0179, 0.4042),
    ],
)
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_with_no_samples_knows_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_nearest_rank_percentiles():
    samples = list(range(1, 101))  # 1..100
    assert percentiles(samples) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([], 50) is None


def test_detectable_rate_is_about_three_over_n():
    assert detectable_rate(1000) == pytest.approx(0.002991, abs=1e-6)
    assert detectable_rate(100) == pytest.approx(1 - 0.05**0.01)
    assert (1 - detectable_rate(300)) ** 300 == pytest.approx(0.05)
    assert detectable_rate(0) == 1.0


def test_clean_large_run_passes():
    d = decide(0, 1000)
    assert d.outcome is Outcome.PASS
    assert d.upper == pytest.approx(0.00383, abs=1e-5)


def test_too_few_samples_is_inconclusive():
    d = decide(0, 150)
    assert d.outcome is Outcome.INCONCLUSIVE
    assert "too few" in d.reasons[0]


def test_clean_but_not_enough_to_clear_the_threshold_is_inconclusive():
    d = decide(0, 400)  # upper bound ~0.95% > 0.5%
    assert d.outcome is Outcome.INCONCLUSIVE
    assert "more comparisons" in d.reasons[0]


def test_observed_rate_over_threshold_fails():
    assert decide(8, 1000).outcome is Outcome.FAIL  # 0.8%
    assert decide(3, 1000).outcome is Outcome.INCONCLUSIVE  # 0.3%: upper bound straddles


def test_conclusive_divergence_fails_even_with_few_samples():
    d = decide(30, 100)
    assert d.outcome is Outcome.FAIL
    assert "lower bound" in d.reasons[0]


def test_noise_floor_is_subtracted():
    assert decide(8, 1000).outcome is Outcome.FAIL
    assert decide(8, 2000, noise=0.003).outcome is Outcome.PASS
    assert decide(8, 2000).outcome is Outcome.INCONCLUSIVE


def test_any_invariant_violation_fails():
    d = decide(0, 5000, invariant_violations=1)
    assert d.outcome is Outcome.FAIL
    assert "invariant" in d.reasons[0]
