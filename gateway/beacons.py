"""Parity beacons: what real users' browsers see on both paths.

A client at SHADOW, LIVE or RAMPDOWN for a domain compares, now and then, the
state it reduced from push with a poll made at the same stream cursor, and
reports the outcome per domain with how soon each path showed each change
(`POST /realtime/parity`, README "Parity beacons"). The node announces the
sample rate and the per-user budget in `session.welcome` (`parity`), checks
each beacon, and aggregates the samples per domain, stage and one-minute
window: counters and latency histograms in `/metrics`, the recent windows at
`GET /realtime/parity` (admin). This is the evidence from real users that a
rollout gate can weigh beside the harness's own runs.

A beacon is refused, and counted by reason, when it is not the contract's
shape (400), when its `userId` is not the caller (403), when its stage or
cursor does not match what this node knows of the user (409), past the
user's budget (429), or when beacons are off on this node (404).

`parse_beacon`, `BeaconBook` and `UserBudget` take values and return values;
`ParityBeacons` ties them to the rollout, the store and the metrics.
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from quart import Response, request

from gateway.admission import body_overflowed, credential_of
from gateway.errors import (
    BadRequest,
    Conflict,
    CutoverError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
)
from gateway.store import run_store
from ops import metrics
from parity.model import key_pattern

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.config import Settings
    from gateway.runtime import Runtime

__all__ = [
    "BEACON_DOMAINS",
    "MAX_BODY_BYTES",
    "Beacon",
    "BeaconBook",
    "BeaconSample",
    "ParityBeacons",
    "UserBudget",
    "announcement",
    "parse_beacon",
]

BEACON_DOMAINS = ("notification", "chat", "follow", "event")  # what the comparison models
SAMPLED_STAGES = ("SHADOW", "LIVE", "RAMPDOWN")
OUTCOMES = ("match", "mismatch", "unaligned")
PATHS = ("push", "poll")
ENDPOINT = "/realtime/parity"
MAX_BODY_BYTES = 4096
MAX_MISMATCHED = 10
MAX_LATENCIES = 20
MAX_LATENCY_MS = 3_600_000
WINDOW_S = 60
# How a sample counts as parity evidence: a mismatch at the same cursor is a
# divergence; an unaligned sample compared nothing (not counted in N).
EVIDENCE_CLASS = {"match": "MATCH", "mismatch": "DIVERGED", "unaligned": "UNALIGNED"}
KEEP_WINDOWS = 60
MAX_USERS_PER_WINDOW = 10_000
LATENCY_RESERVOIR = 512


@attrs.frozen
class BeaconSample:
    """One domain's comparison in a beacon."""

    domain: str
    stage: str
    outcome: str
    keys: int
    mismatched: tuple[str, ...] = ()
    push_ms: tuple[float, ...] = ()
    poll_ms: tuple[float, ...] = ()


@attrs.frozen
class Beacon:
    """A checked beacon of one user."""

    user_id: str
    epoch: str
    seq: int
    samples: tuple[BeaconSample, ...]


# -- the contract ------------------------------------------------------------------


def _field(obj: Mapping[str, Any], name: str, path: str) -> Any:
    if name not in obj:
        raise BadRequest(f"{path}{name} is required", path=f"{path}{name}")
    return obj[name]


def _int(value: Any, path: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{path} must be an integer from {low} to {high:,}", path=path)
    return value


def _text(value: Any, path: str, max_length: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise BadRequest(f"{path} must be a string of 1 to {max_length} characters", path=path)
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadRequest(f"{path} must be one of {', '.join(choices)}", path=path)
    return value


def _latencies(value: Any, path: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) > MAX_LATENCIES:
        raise BadRequest(f"{path} must be a list of at most {MAX_LATENCIES} numbers", path=path)
    out = []
    for i, item in enumerate(value):
        if (
            not isinstance(item, int | float)
            or isinstance(item, bool)
            or not math.isfinite(item)
            or not 0 <= item <= MAX_LATENCY_MS
        ):
            raise BadRequest(
                f"{path}[{i}] must be a number of milliseconds from 0 to {MAX_LATENCY_MS:,}",
                path=f"{path}[{i}]",
            )
        out.append(float(item))
    return tuple(out)


def _sample(raw: Any, path: str) -> BeaconSample:
    if not isinstance(raw, dict):
        raise BadRequest(f"{path} must be an object", path=path)
    domain = _choice(_field(raw, "domain", f"{path}."), f"{path}.domain", BEACON_DOMAINS)
    stage = _choice(_field(raw, "stage", f"{path}."), f"{path}.stage", SAMPLED_STAGES)
    outcome = _choice(_field(raw, "outcome", f"{path}."), f"{path}.outcome", OUTCOMES)
    keys = _int(_field(raw, "keys", f"{path}."), f"{path}.keys", 0, 100_000)
    mismatched: tuple[str, ...] = ()
    if "mismatched" in raw:
        value = raw["mismatched"]
        if not isinstance(value, list) or len(value) > MAX_MISMATCHED:
            raise BadRequest(
                f"{path}.mismatched must be a list of at most {MAX_MISMATCHED} keys",
                path=f"{path}.mismatched",
            )
        mismatched = tuple(_text(k, f"{path}.mismatched[{i}]", 200) for i, k in enumerate(value))
    if outcome == "mismatch" and not mismatched:
        raise BadRequest(
            f"{path}.mismatched must name the differing keys of a mismatch",
            path=f"{path}.mismatched",
        )
    if outcome != "mismatch" and mismatched:
        raise BadRequest(
            f"{path}.mismatched is only for a mismatch (outcome is {outcome})",
            path=f"{path}.mismatched",
        )
    push_ms: tuple[float, ...] = ()
    poll_ms: tuple[float, ...] = ()
    if "latencyMs" in raw:
        latency = raw["latencyMs"]
        if not isinstance(latency, dict):
            raise BadRequest(f"{path}.latencyMs must be an object", path=f"{path}.latencyMs")
        push_ms = _latencies(latency.get("push", []), f"{path}.latencyMs.push")
        poll_ms = _latencies(latency.get("poll", []), f"{path}.latencyMs.poll")
    return BeaconSample(domain, stage, outcome, keys, mismatched, push_ms, poll_ms)


def parse_beacon(body: Any, user_id: str) -> Beacon:
    """The beacon in a request body sent by `user_id`: BadRequest (naming the field)
    for anything but the contract's shape, Forbidden for another user's beacon.
    Unknown fields are ignored (the contract is additive)."""
    if not isinstance(body, dict):
        raise BadRequest("a beacon is a JSON object")
    if _field(body, "v", "") != 1:
        raise BadRequest("v must be 1 (the beacon's version)", path="v")
    reported = _text(_field(body, "userId", ""), "userId", 300)
    if reported != user_id:
        raise Forbidden("a beacon reports on its sender only: userId is not the token's user")
    cursor = _field(body, "cursor", "")
    if not isinstance(cursor, dict):
        raise BadRequest("cursor must be an object {epoch, seq}", path="cursor")
    epoch = _text(_field(cursor, "epoch", "cursor."), "cursor.epoch", 128)
    seq = _int(_field(cursor, "seq", "cursor."), "cursor.seq", 0, 2**53)
    raw = _field(body, "samples", "")
    if not isinstance(raw, list) or not 1 <= len(raw) <= len(BEACON_DOMAINS):
        raise BadRequest(
            f"samples must be a list of 1 to {len(BEACON_DOMAINS)} samples", path="samples"
        )
    samples = tuple(_sample(item, f"samples[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, sample in enumerate(samples):
        if sample.domain in seen:
            raise BadRequest(f"domain {sample.domain} twice", path=f"samples[{i}].domain")
        seen.add(sample.domain)
    return Beacon(user_id, epoch, seq, samples)


def announcement(settings: Settings) -> dict[str, Any]:
    """What `session.welcome` tells clients: `parity {sampleRate, maxPerMinute, endpoint}`."""
    return {
        "sampleRate": settings.parity_sample_rate,
        "maxPerMinute": settings.parity_beacons_per_minute,
        "endpoint": ENDPOINT,
    }


# -- per-user budget ---------------------------------------------------------------


class UserBudget:
    """A token bucket per user (`per_minute`, burst `burst`), for at most
    `max_users` users at a time (the least recently seen are forgotten)."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 50_000,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self.max_users = max_users
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, user_id: str) -> float:
        """0 when the user may send now (a token is taken), else the seconds to wait."""
        now = self.clock()
        tokens, at = self._buckets.pop(user_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate if self.rate > 0 else math.inf
        self._buckets[user_id] = (tokens, now)
        while len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
        return wait


# -- aggregation ------------------------------------------------------------------------


@attrs.define
class _Tally:
    match: int = 0
    mismatch: int = 0
    unaligned: int = 0
    users: set[str] = attrs.Factory(set)
    keys: collections.Counter[str] = attrs.Factory(collections.Counter)
    latency: dict[str, list[float]] = attrs.Factory(lambda: {path: [] for path in PATHS})
    seen: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(PATHS, 0))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class BeaconBook:
    """Samples per (window, domain, stage), the last `keep` windows of `window_s`."""

    def __init__(
        self,
        *,
        window_s: int = WINDOW_S,
        keep: int = KEEP_WINDOWS,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.window_s = window_s
        self.keep = keep
        self.clock = clock
        self._windows: collections.OrderedDict[int, dict[tuple[str, str], _Tally]] = (
            collections.OrderedDict()
        )
        self._draws = seed

    def record(self, beacon: Beacon) -> int:
        """Add a beacon's samples to the current window; returns the window's start."""
        start = int(self.clock() // self.window_s * self.window_s)
        window = self._windows.get(start)
        if window is None:
            window = self._windows[start] = {}
            while len(self._windows) > self.keep:
                self._windows.popitem(last=False)
        for sample in beacon.samples:
            tally = window.setdefault((sample.domain, sample.stage), _Tally())
            setattr(tally, sample.outcome, getattr(tally, sample.outcome) + 1)
            if len(tally.users) < MAX_USERS_PER_WINDOW:
                tally.users.add(beacon.user_id)
            for key in sample.mismatched:
                tally.keys[key_pattern(key)] += 1
            for path, values in (("push", sample.push_ms), ("poll", sample.poll_ms)):
                for value in values:
                    self._keep(tally, path, value)
        return start

    def _keep(self, tally: _Tally, path: str, value: float) -> None:
        """A bounded reservoir of latencies per path (every value equally likely kept)."""
        tally.seen[path] += 1
        kept = tally.latency[path]
        if len(kept) < LATENCY_RESERVOIR:
            kept.append(value)
            return
        self._draws = (self._draws * 6364136223846793005 + 1442695040888963407) % 2**64
        slot = self._draws % tally.seen[path]
        if slot < LATENCY_RESERVOIR:
            kept[slot] = value

    def windows(self) -> list[dict[str, Any]]:
        """Every kept window's tallies, oldest first, as JSON-ready rows."""
        rows = []
        for start, window in self._windows.items():
            for (domain, stage), tally in sorted(window.items()):
                compared = tally.match + tally.mismatch
                rows.append(
                    {
                        "start": _iso(start),
                        "domain": domain,
                        "stage": stage,
                        "match": tally.match,
                        "mismatch": tally.mismatch,
                        "unaligned": tally.unaligned,
                        "mismatchRate": tally.mismatch / compared if compared else None,
                        "users": len(tally.users),
                        "mismatchedKeys": dict(tally.keys.most_common(10)),
                        "latencyMs": {
                            path: {
                                "n": tally.seen[path],
                                "p50": _percentile(tally.latency[path], 0.5),
                                "p95": _percentile(tally.latency[path], 0.95),
                            }
                            for path in PATHS
                        },
                    }
                )
        return rows


def _iso(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch_s))


# -- the endpoint -------------------------------------------------------------------------


class ParityBeacons:
    """Checks, budgets, aggregates and counts the beacons a node receives."""

    def __init__(
        self,
        settings: Settings,
        *,
        stage_for: Callable[[str, str], str],
        position: Callable[[str], Any],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        evidence: Any = None,
    ) -> None:
        self.settings = settings
        self.stage_for = stage_for
        self.position = position
        # gateway.evidence.EvidenceBook: the samples, kept in the store per hour
        self.evidence = evidence
        per_minute = settings.parity_beacons_per_minute
        self.budget = UserBudget(per_minute, burst=max(1, per_minute // 2), clock=clock)
        self.book = BeaconBook(clock=wall_clock)

    @property
    def enabled(self) -> bool:
        return self.settings.parity_sample_rate > 0 and self.settings.parity_beacons_per_minute > 0

    async def receive(self, principal: Principal, body: Any) -> dict[str, Any]:
        """Check and record one beacon; raises the refusal (counted by reason)."""
        try:
            return await self._receive(principal, body)
        except CutoverError as error:
            metrics.PARITY_BEACONS_REFUSED.labels(error.code.lower()).inc()
            raise

    async def _receive(self, principal: Principal, body: Any) -> dict[str, Any]:
        if not self.enabled:
            raise NotFound("parity beacons are off on this node (parity sample rate 0)")
        beacon = parse_beacon(body, principal.user_id)
        wait_s = self.budget.take(principal.user_id)
        if wait_s > 0:
            raise RateLimited(
                f"at most {self.settings.parity_beacons_per_minute} beacons a minute per user",
                retry_after_ms=max(1, math.ceil(wait_s * 1000)),
            )
        for i, sample in enumerate(beacon.samples):
            stage = self.stage_for(principal.user_id, sample.domain)
            if stage != sample.stage:
                raise Conflict(
                    f"{sample.domain} is at {stage} for this user, not {sample.stage}: "
                    "refetch realtimeConfig",
                    path=f"samples[{i}].stage",
                )
        cursor = await run_store(self.position, principal.user_id)
        if beacon.epoch != cursor.epoch or beacon.seq > cursor.seq:
            raise Conflict(
                f"cursor is not a position of this user's stream (now {cursor.epoch}:{cursor.seq})",
                path="cursor",
            )
        start = self.book.record(beacon)
        if self.evidence is not None:
            for sample in beacon.samples:
                mismatched = [
                    {"key": key_pattern(key), "class": "DIVERGED", "check": "beacon"}
                    for key in sample.mismatched[:3]
                ]
                counts = {EVIDENCE_CLASS[sample.outcome]: 1}
                self.evidence.add("beacon", sample.domain, sample.stage, counts, mismatched)
        for sample in beacon.samples:
            metrics.PARITY_BEACON_SAMPLES.labels(sample.domain, sample.stage, sample.outcome).inc()
            for path, values in (("push", sample.push_ms), ("poll", sample.poll_ms)):
                histogram = metrics.PARITY_BEACON_LATENCY.labels(sample.domain, path)
                for value in values:
                    histogram.observe(value / 1000)
        return {"accepted": len(beacon.samples), "window": _iso(start)}

    def summary(self) -> dict[str, Any]:
        return {
            "sampleRate": self.settings.parity_sample_rate,
            "maxPerMinute": self.settings.parity_beacons_per_minute,
            "windowS": self.book.window_s,
            "windows": self.book.windows(),
        }

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> ParityBeacons:
        def stage_for(user_id: str, domain: str) -> str:
            return runtime.rollout.current.stage_for(user_id, domain).value

        def position(user_id: str) -> Any:
            return runtime.store.stream_position(user_id)

        return cls(
            runtime.settings,
            stage_for=stage_for,
            position=position,
            evidence=runtime.evidence,
        )

    def install(self, app: Any, bearer: Callable[[Any], Any]) -> None:
        """`POST /realtime/parity` (the user's Bearer JWT) and `GET /realtime/parity` (admin)."""

        def answer(payload: dict[str, Any], status: int) -> Response:
            return Response(json.dumps(payload), status=status, content_type="application/json")

        @app.post(ENDPOINT)
        async def parity_beacon() -> Response:
            principal = credential_of(request.scope) or await bearer(request.headers)
            data = await request.get_data()
            if body_overflowed(request.scope) or len(data) > MAX_BODY_BYTES:
                metrics.PARITY_BEACONS_REFUSED.labels("payload_too_large").inc()
                raise PayloadTooLarge(f"a beacon is at most {MAX_BODY_BYTES:,} bytes")
            try:
                body = json.loads(data)
            except (ValueError, RecursionError):
                metrics.PARITY_BEACONS_REFUSED.labels("bad_request").inc()
                raise BadRequest("a beacon is a JSON object") from None
            return answer(await self.receive(principal, body), 202)

        @app.get(ENDPOINT)
        async def parity_summary() -> Response:
            principal = await bearer(request.headers)
            if not principal.is_admin:
                raise Forbidden("the beacons' summary is for admins")
            return answer(self.summary(), 200)
