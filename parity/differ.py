"""The differ: classifies what two paths showed the same users.

Input is the observation history of both paths (`parity.model.Observation`)
and the end of the run; output is a `DiffResult`: one `Comparison` per
comparison made, the update-visible latency of each path, and how many
comparisons the end of the run cut short. Pure: no clock, no I/O.

Terms. The *reference* path is `left` (normally `poll`), the *candidate*
path is `right` (normally `push`; `poll_b` in an A/A calibration run). `W`
is the convergence window in seconds. MISSING_PUSH always means "the
candidate path is missing something" and MISSING_POLL "the reference path
is", whatever the paths are called in the run.

Algorithm, for each user and key:

1. Non-error observations of each path are sorted by time. The reference
   path's history is cut into *entries*: each distinct consecutive
   `(version, value)` pair, seen first at time `t`. The candidate's history is
   cut into *states*: a push candidate's are the runs of equal values,
   starting at the version and time each was first shown and holding until
   the next state starts; a polled candidate's are cut like entries.
2. A version span is what a value is known to stand for. A push value at seq
   `u` stands for `[u, next)` (the next state's version excluded). A polled
   value read with cursor `c` stands for exactly `c`: a polling request reads
   its cursor and its data from one store snapshot, and between two polls
   the state may have changed and changed back.
   The *deadline* of something one path showed at `t` is `W` after `t`, or
   `W` after the other path first showed this user anything, if later.
3. Each reference entry `(v, x, t)` is one comparison:
   - NODATA if the candidate has no observation of this user in this domain
     at all (one per user and key, not per entry);
   - ERROR if the candidate reported an error for this key (or its whole
     domain) within `[t - W, t + W]`;
   - MISSING_PUSH if the candidate did not reach version `v` (showed any key
     of this user at a version >= `v`) by the deadline; for an unversioned
     entry, or a key the candidate never showed: if the candidate showed
     nothing for this key by the deadline;
   - UNALIGNED (no comparison, counted apart) if the candidate is polled
     and never read version `v`: two samplers each skip states the other
     saw, so neither agreement nor disagreement is known at `v`; and for an
     unversioned entry made before the candidate first showed the key;
   - MATCH if a candidate state whose span intersects the entry's span has
     the value `x` (unversioned: the candidate's state at time `t` is `x`);
   - CONVERGED_LATE if, failing that, the candidate showed `x` in a state
     alive at some moment of `[t - W, t + W]`;
   - MISSING_PUSH if the candidate still shows, at the matching version,
     the value the reference had before it changed to `x`: the change never
     reached the candidate (an event that was never produced takes no `seq`,
     so the candidate reaches every version with a stale value);
   - DIVERGED otherwise: the candidate shows a value the reference never
     showed there.
   A comparison whose outcome still depends on what could happen after the
   end of the run (`t + W > end` and not yet MATCH, CONVERGED_LATE or ERROR)
   (the deadline or `t + W` falls after `end`) is *censored*: counted apart,
   never classified.
4. Each candidate state `(u, y, t')` checks the converse: MISSING_POLL if the
   reference path neither reached version `u` by the deadline (unversioned:
   showed this key at some moment of `[t' - W, deadline]`) nor showed the
   value `y` at some moment of `[t' - W, deadline]`. Reached states make no
   comparison of their own: the reference entries already compare them.
5. Every error the reference path reported is one ERROR comparison, and so
   is every candidate error that tainted no reference entry.

So W must exceed the slowest poll interval plus a round trip, or a correct
candidate path shows as MISSING_POLL.

Latency. For each reference entry classified MATCH or CONVERGED_LATE whose
value differs from the previous entry's (a value change), each path's first
showing of that value is known: the entry's `t` and the matched candidate
state's start. The origin of the change is the latest `Write` the scenario
driver recorded for that user and domain at or before the earlier of the
two; without one (watch-only runs) it is the earlier of the two, so the
slower path's latency is then relative to the faster path's.

Versions must not decrease along one path for one user within a run (an
observer that changes stream epoch starts a new run).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

import attrs

from parity.model import Observation, Version, wildcard_key

__all__ = [
    "AGAINST",
    "COMPARATOR_VERSION",
    "Classification",
    "Comparator",
    "Comparison",
    "DiffResult",
    "DomainDiff",
    "LatencySample",
    "Write",
]

COMPARATOR_VERSION = "cutover-parity/3"

SAMPLED_PATHS = frozenset({"poll", "poll_b"})
_FIRST = object()  # no previous entry yet


class Classification(enum.Enum):
    """What one comparison found."""

    MATCH = "MATCH"
    CONVERGED_LATE = "CONVERGED_LATE"
    DIVERGED = "DIVERGED"
    MISSING_PUSH = "MISSING_PUSH"
    MISSING_POLL = "MISSING_POLL"
    ERROR = "ERROR"
    NODATA = "NODATA"


# The classifications that count as a divergence in the rate; NODATA is
# excluded from N altogether, MATCH and CONVERGED_LATE count as agreement.
AGAINST = frozenset(
    {
        Classification.DIVERGED,
        Classification.MISSING_PUSH,
        Classification.MISSING_POLL,
        Classification.ERROR,
    }
)


@attrs.frozen
class Comparison:
    """One classified comparison of one key of one user."""

    user_id: str
    domain: str
    key: str
    classification: Classification
    at: float
    version: Version = None
    left_value: Any = None
    right_value: Any = None
    detail: str = ""


@attrs.frozen
class LatencySample:
    """How long after a change one path first showed it."""

    user_id: str
    domain: str
    key: str
    path: str
    seconds: float
    from_write: bool


@attrs.frozen
class Write:
    """A mutation the scenario driver made that changes a user's domain."""

    user_id: str
    domain: str
    at: float


@attrs.frozen
class DomainDiff:
    """The differ's result restricted to one domain."""

    domain: str
    comparisons: tuple[Comparison, ...]
    latencies: tuple[LatencySample, ...]
    censored: int
    unaligned: int = 0  # reference entries a polled candidate never read the version of

    def counts(self) -> dict[str, int]:
        out = {c.value: 0 for c in Classification}
        for comparison in self.comparisons:
            out[comparison.classification.value] += 1
        return out

    @property
    def n(self) -> int:
        """Comparisons that count in the divergence rate (all but NODATA)."""
        return sum(1 for c in self.comparisons if c.classification is not Classification.NODATA)

    @property
    def divergent(self) -> int:
        return sum(1 for c in self.comparisons if c.classification in AGAINST)

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted({c.user_id for c in self.comparisons}))

    def latency(self, path: str) -> list[float]:
        return [s.seconds for s in self.latencies if s.path == path]


@attrs.frozen
class DiffResult:
    """Every comparison of a run, with latencies and the censored count."""

    left: str
    right: str
    window: float
    comparisons: tuple[Comparison, ...]
    latencies: tuple[LatencySample, ...]
    censored: dict[str, int]
    unaligned: dict[str, int] = attrs.Factory(dict)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted({c.domain for c in self.comparisons} | set(self.censored)))

    def for_domain(self, domain: str) -> DomainDiff:
        return DomainDiff(
            domain=domain,
            comparisons=tuple(c for c in self.comparisons if c.domain == domain),
            latencies=tuple(s for s in self.latencies if s.domain == domain),
            censored=self.censored.get(domain, 0),
            unaligned=self.unaligned.get(domain, 0),
        )


@attrs.frozen
class _Entry:
    value: Any
    version: Version
    first_seen: float
    until: float  # when the next entry or state started; inf for the last
    version_end: Version  # the next one's version; None for the last


def _comparable(a: Version, b: Version) -> bool:
    return a is not None and b is not None and type(a) is type(b)


def _cut(observations: Sequence[Observation], *, by_version: bool) -> list[_Entry]:
    """Runs of equal values (or of equal (version, value) pairs)."""
    heads: list[Observation] = []
    for obs in observations:
        same = heads and heads[-1].value == obs.value
        if same and (not by_version or heads[-1].version == obs.version):
            continue
        heads.append(obs)
    out = []
    for i, obs in enumerate(heads):
        nxt = heads[i + 1] if i + 1 < len(heads) else None
        out.append(
            _Entry(
                value=obs.value,
                version=obs.version,
                first_seen=obs.observed_at,
                until=nxt.observed_at if nxt else math.inf,
                version_end=nxt.version if nxt else None,
            )
        )
    return out


class _Reach:
    """When a path first showed a user at or beyond a version (any key)."""

    def __init__(self, observations: Iterable[Observation]) -> None:
        by_type: dict[type, list[tuple[float, Any]]] = defaultdict(list)
        self.start = math.inf  # when the path first showed this user anything
        for obs in observations:
            if obs.error is None:
                self.start = min(self.start, obs.observed_at)
            if obs.version is not None and obs.error is None:
                by_type[type(obs.version)].append((obs.observed_at, obs.version))
        self._times: dict[type, list[float]] = {}
        self._maxima: dict[type, list[Any]] = {}
        for kind, rows in by_type.items():
            rows.sort(key=lambda r: r[0])
            maxima: list[Any] = []
            for _, version in rows:
                maxima.append(version if not maxima or version > maxima[-1] else maxima[-1])
            self._times[kind] = [r[0] for r in rows]
            self._maxima[kind] = maxima

    def time_of(self, version: Any) -> float | None:
        maxima = self._maxima.get(type(version))
        if not maxima:
            return None
        i = bisect.bisect_left(maxima, version)
        return self._times[type(version)][i] if i < len(maxima) else None


def _below(v: Version, hi: Version, inclusive: bool) -> bool:
    """Whether `v` lies below the upper end `hi` of a span (None: unbounded)."""
    if hi is None or not _comparable(v, hi):
        return True
    # _comparable: both are of one type (int seqs, or str timestamps)
    a, b = cast(Any, v), cast(Any, hi)
    return bool(a <= b if inclusive else a < b)


def _spans_meet(left: _Entry, left_sampled: bool, right: _Entry, right_sampled: bool) -> bool:
    """Whether the version spans of a reference entry and a candidate state
    intersect: a sampled value stands for exactly its version, a pushed one
    for `[version, version_end)`."""
    l_hi = left.version if left_sampled else left.version_end
    r_hi = right.version if right_sampled else right.version_end
    return _below(left.version, r_hi, right_sampled) and _below(right.version, l_hi, left_sampled)


def _alive_in(state: _Entry, start: float, end: float) -> bool:
    return state.first_seen <= end and state.until > start


class Comparator:
    """Compares a reference path with a candidate path; see the module doc."""

    version = COMPARATOR_VERSION

    def __init__(self, window: float, *, left: str = "poll", right: str = "push") -> None:
        if window <= 0:
            raise ValueError("the convergence window must be positive")
        if left == right:
            raise ValueError("compare two different paths")
        self.window = float(window)
        self.left = left
        self.right = right

    def compare(
        self, observations: Iterable[Observation], *, end: float, writes: Iterable[Write] = ()
    ) -> DiffResult:
        paths = (self.left, self.right)
        values: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
        errors: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
        by_user: dict[tuple[str, str], list[Observation]] = defaultdict(list)
        domain_seen: set[tuple[str, str, str]] = set()
        key_domain: dict[str, str] = {}
        for obs in observations:
            if obs.path not in paths:
                continue
            domain_seen.add((obs.path, obs.user_id, obs.domain))
            if obs.error is not None:
                errors[(obs.path, obs.user_id, obs.domain)].append(obs)
                continue
            values[(obs.path, obs.user_id, obs.key)].append(obs)
            by_user[(obs.path, obs.user_id)].append(obs)
            key_domain[obs.key] = obs.domain
        for rows in values.values():
            rows.sort(key=lambda o: o.observed_at)
        reach = {k: _Reach(v) for k, v in by_user.items()}
        write_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        for write in writes:
            write_times[(write.user_id, write.domain)].append(write.at)
        for times in write_times.values():
            times.sort()

        run = _Run(self, end, values, errors, reach, domain_seen, write_times)
        keys = sorted({(user, key) for (_, user, key) in values})
        for user, key in keys:
            run.compare_key(user, key, key_domain[key])
        run.unclaimed_errors()
        return DiffResult(
            left=self.left,
            right=self.right,
            window=self.window,
            comparisons=tuple(run.comparisons),
            latencies=tuple(run.latencies),
            censored=dict(run.censored),
            unaligned=dict(run.unaligned),
        )


class _Run:
    """The working state of one `Comparator.compare` call."""

    def __init__(
        self,
        comparator: Comparator,
        end: float,
        values: dict[tuple[str, str, str], list[Observation]],
        errors: dict[tuple[str, str, str], list[Observation]],
        reach: dict[tuple[str, str], _Reach],
        domain_seen: set[tuple[str, str, str]],
        write_times: dict[tuple[str, str], list[float]],
    ) -> None:
        self.c = comparator
        self.w = comparator.window
        self.end = end
        self.values = values
        self.errors = errors
        self.reach = reach
        self.domain_seen = domain_seen
        self.write_times = write_times
        self.comparisons: list[Comparison] = []
        self.latencies: list[LatencySample] = []
        self.censored: dict[str, int] = defaultdict(int)
        self.unaligned: dict[str, int] = defaultdict(int)
        self.claimed: set[int] = set()

    def add(
        self, user: str, domain: str, key: str, cls: Classification, at: float, **kw: Any
    ) -> None:
        self.comparisons.append(Comparison(user, domain, key, cls, at, **kw))

    def _errors_near(
        self, path: str, user: str, domain: str, key: str, t: float
    ) -> list[Observation]:
        return [
            e
            for e in self.errors.get((path, user, domain), ())
            if e.key in (key, wildcard_key(domain)) and t - self.w <= e.observed_at <= t + self.w
        ]

    def _reach_time(self, path: str, user: str, version: Any) -> float | None:
        reach = self.reach.get((path, user))
        return reach.time_of(version) if reach else None

    def _deadline(self, path: str, user: str, t: float) -> float:
        """By when `path` must show what another path showed at `t`: W after
        `t`, or W after `path` first showed the user anything if that is later."""
        reach = self.reach.get((path, user))
        start = reach.start if reach else -math.inf
        return max(t, start) + self.w

    def _missing_push(
        self, user: str, domain: str, key: str, t: float, deadline: float, detail: str, **kw: Any
    ) -> None:
        if deadline > self.end:
            self.censored[domain] += 1
        else:
            self.add(user, domain, key, Classification.MISSING_PUSH, t, **kw, detail=detail)

    def compare_key(self, user: str, key: str, domain: str) -> None:
        left, right = self.c.left, self.c.right
        left_sampled, right_sampled = left in SAMPLED_PATHS, right in SAMPLED_PATHS
        entries = _cut(self.values.get((left, user, key), []), by_version=True)
        states = _cut(self.values.get((right, user, key), []), by_version=right_sampled)

        if entries and (right, user, domain) not in self.domain_seen:
            self.add(
                user,
                domain,
                key,
                Classification.NODATA,
                entries[0].first_seen,
                detail=f"{right} has no observation of this user in {domain}",
            )
        elif entries:
            previous: Any = _FIRST
            before: Any = _FIRST  # the reference's value before its current one
            for entry in entries:
                changed = previous is not _FIRST and entry.value != previous
                if changed:
                    before = previous
                self._compare_entry(
                    user,
                    domain,
                    key,
                    entry,
                    states,
                    left_sampled,
                    right_sampled,
                    changed=changed,
                    previous=before,
                )
                previous = entry.value

        if states and (left, user, domain) not in self.domain_seen:
            self.add(
                user,
                domain,
                key,
                Classification.NODATA,
                states[0].first_seen,
                detail=f"{left} has no observation of this user in {domain}",
            )
        elif states:
            for state in states:
                self._check_reference_reached(user, domain, key, state, entries)

    def _compare_entry(
        self,
        user: str,
        domain: str,
        key: str,
        entry: _Entry,
        states: list[_Entry],
        left_sampled: bool,
        right_sampled: bool,
        *,
        changed: bool,
        previous: Any = _FIRST,
    ) -> None:
        t, x, v = entry.first_seen, entry.value, entry.version
        w = self.w
        kw: dict[str, Any] = {"version": v, "left_value": x}
        tainted = self._errors_near(self.c.right, user, domain, key, t)
        if tainted:
            self.claimed.update(id(e) for e in tainted)
            self.add(
                user,
                domain,
                key,
                Classification.ERROR,
                t,
                **kw,
                detail=f"{self.c.right}: {tainted[0].error}",
            )
            return
        deadline = self._deadline(self.c.right, user, t)
        censorable = t + w > self.end

        versioned = (
            v is not None
            and all(s.version is None or _comparable(s.version, v) for s in states)
            and any(s.version is not None for s in states)
        )
        if v is not None and (versioned or not states):
            reached = self._reach_time(self.c.right, user, v)
            if reached is None or reached > deadline:
                detail = f"{self.c.right} did not reach version {v!r} within W"
                return self._missing_push(user, domain, key, t, deadline, detail, **kw)
        at_t = None
        if versioned:
            meeting = [s for s in states if _spans_meet(entry, left_sampled, s, right_sampled)]
            if right_sampled and not meeting:
                self.unaligned[domain] += 1
                return
            match = next((s for s in meeting if s.value == x), None)
            shown = meeting[-1].value if meeting else None
        else:
            if not any(s.first_seen <= deadline for s in states):
                detail = f"{self.c.right} showed nothing for this key within W"
                return self._missing_push(user, domain, key, t, deadline, detail, **kw)
            at_t = next((s for s in states if s.first_seen <= t < s.until), None)
            match = at_t if at_t is not None and at_t.value == x else None
            shown = at_t.value if at_t is not None else None

        if match is not None:
            self.add(user, domain, key, Classification.MATCH, t, **kw, right_value=x)
            if changed:
                self._latency(user, domain, key, t, match.first_seen)
            return
        late = next((s for s in states if s.value == x and _alive_in(s, t - w, t + w)), None)
        if late is not None:
            self.add(
                user,
                domain,
                key,
                Classification.CONVERGED_LATE,
                t,
                **kw,
                right_value=shown,
                detail=f"{self.c.right} showed it at {late.first_seen:.3f}",
            )
            if changed:
                self._latency(user, domain, key, t, late.first_seen)
            return
        if censorable:
            self.censored[domain] += 1
            return
        if not versioned and at_t is None and states and t < states[0].first_seen:
            # The candidate showed nothing for this key yet (it started later):
            # there is nothing to compare at `t`.
            self.unaligned[domain] += 1
            return
        if previous is not _FIRST and shown == previous and (versioned or at_t is not None):
            self.add(
                user,
                domain,
                key,
                Classification.MISSING_PUSH,
                t,
                **kw,
                right_value=shown,
                detail=f"{self.c.right} still showed the previous value {shown!r}: "
                "the change never reached it",
            )
            return
        self.add(
            user,
            domain,
            key,
            Classification.DIVERGED,
            t,
            **kw,
            right_value=shown,
            detail=f"{self.c.right} showed {shown!r} at the matching version",
        )

    def _check_reference_reached(
        self, user: str, domain: str, key: str, state: _Entry, entries: list[_Entry]
    ) -> None:
        t, u = state.first_seen, state.version
        deadline = self._deadline(self.c.left, user, t)
        if u is not None:
            reached = self._reach_time(self.c.left, user, u)
            ok = reached is not None and reached <= deadline
        else:
            ok = any(_alive_in(e, t - self.w, deadline) for e in entries)
        # A sampled reference may skip versions yet show the value itself.
        ok = ok or any(
            e.value == state.value and _alive_in(e, t - self.w, deadline) for e in entries
        )
        if ok:
            return
        if deadline > self.end:
            self.censored[domain] += 1
            return
        self.add(
            user,
            domain,
            key,
            Classification.MISSING_POLL,
            t,
            version=u,
            right_value=state.value,
            detail=f"{self.c.left} did not reach version {u!r} within W",
        )

    def _latency(self, user: str, domain: str, key: str, t_left: float, t_right: float) -> None:
        first = min(t_left, t_right)
        times = self.write_times.get((user, domain), [])
        i = bisect.bisect_right(times, first)
        from_write = i > 0
        origin = times[i - 1] if from_write else first
        for path, at in ((self.c.left, t_left), (self.c.right, t_right)):
            self.latencies.append(LatencySample(user, domain, key, path, at - origin, from_write))

    def unclaimed_errors(self) -> None:
        for (path, user, domain), rows in sorted(self.errors.items()):
            for err in rows:
                if path == self.c.right and id(err) in self.claimed:
                    continue
                self.add(
                    user,
                    domain,
                    err.key,
                    Classification.ERROR,
                    err.observed_at,
                    version=err.version,
                    detail=f"{path}: {err.error}",
                )
