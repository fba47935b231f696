"""The action token bucket and the abuse detector."""

from __future__ import annotations

import pytest

from gateway.ws.ratelimit import AbuseDetector, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_wait():
    clock = Clock()
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    assert all(bucket.take() == 0.0 for _ in range(40))
    wait = bucket.take()
    assert wait == pytest.approx(1 / 20)


def test_refills_at_rate_up_to_burst():
    clock = Clock()
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    for _ in range(40):
        bucket.take()
    clock.now += 0.5
    allowed = sum(bucket.take() == 0.0 for _ in range(20))
    assert allowed == 10
    clock.now += 100
    assert bucket.tokens == pytest.approx(40)


def test_sustained_rate_is_allowed():
    clock = Clock()
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    for _ in range(1000):
        assert bucket.take() == 0.0
        clock.now += 0.05


def test_abuse_needs_sustained_refusals_within_window():
    clock = Clock()
    detector = AbuseDetector(max_refusals=5, window_s=10, clock=clock)
    for _ in range(5):
        assert not detector.refused()
        clock.now += 3  # spread out: old refusals leave the window
    assert not detector.refused()
    for _ in range(5):
        detector.refused()
    assert detector.refused()
