"""Per-connection action rate limiting (PROTOCOL.md 2.6: 20/s, burst 40).

`TokenBucket` answers whether one action may run now and, if not, how long
until it may. `AbuseDetector` watches the refusals: a client that keeps
sending far past its limit is closed with 4008 instead of being answered
forever. Both take a clock (seconds, monotonic) so tests drive them with
plain numbers or Trio's virtual clock.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["AbuseDetector", "TokenBucket"]


class TokenBucket:
    """A token bucket: `rate` tokens per second, holding at most `burst`."""

    def __init__(self, rate: float = 20.0, burst: float = 40.0, *, clock: Callable[[], float]):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    def take(self) -> float:
        """Take one token: 0.0 when allowed, else the seconds until a token is available."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens


class AbuseDetector:
    """Sustained refusals: more than `max_refusals` within `window_s` seconds."""

    def __init__(
        self, *, max_refusals: int = 100, window_s: float = 10.0, clock: Callable[[], float]
    ):
        self.max_refusals = max_refusals
        self.window_s = window_s
        self._clock = clock
        # Made on the first refusal: most connections are never refused, and an
        # empty deque still costs a 0.7 KiB block per connection.
        self._refusals: collections.deque[float] | None = None

    def refused(self) -> bool:
        """Record one refusal; True when the client is abusing the limit."""
        now = self._clock()
        if self._refusals is None:
            self._refusals = collections.deque(maxlen=self.max_refusals + 1)
        self._refusals.append(now)
        while self._refusals and self._refusals[0] <= now - self.window_s:
            self._refusals.popleft()
        return len(self._refusals) > self.max_refusals
