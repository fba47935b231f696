"""`cutover parity run`: observe both paths for N users, compare, write reports.

A run, in order:

1. mint (or read) the users' tokens and ask the server, per user, for its
   rollout stages and poll intervals (`realtimeConfig`);
2. with `--drive`, set up the scenario (conversations, hosted events) before
   observing, so both paths see the same objects from the start;
3. per user, start a poller and a push observer (`--calibrate`: two pollers,
   `poll` and `poll_b` in the same phase, the A/A run that measures the
   harness's own noise);
4. observe (and drive) for `duration` seconds, then settle with no driving
   for more than W, so the last changes are seen by both paths; with
   `until_decided`, `duration` is a minimum: the run goes on, comparing what
   it holds every few seconds, until every domain has a verdict the
   comparisons support (PASS or FAIL at the threshold) or `max_duration`
   passes (the verdict is then INCONCLUSIVE, with the count it reached and
   the count the threshold needs). A busy machine makes a run longer, not
   weaker;
5. compare with `parity.differ.Comparator`, check the invariants of each
   path, and build one report per domain (`parity.report.build_report`).

Against several nodes (`url` a comma list) each user's poller, push
observer and driver socket use different nodes (round robin), so every
comparison crosses nodes.

A parity run takes its noise floor from calibration reports: those in
`RunConfig.calibration_dir`, or else in `<out>/calibration/` when present
(run the A/A run with `--out <out>/calibration` first). The gate reads only
`<out>/<domain>.json`, so the calibration reports never stand in for a
parity report.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import attrs
import httpx
import trio

from gateway.auth import mint_token
from gateway.client import GraphQL, GraphQLFailed, websocket_url
from gateway.events import utcnow
from gateway.rollout import Stage
from parity.differ import Comparator, DiffResult
from parity.driver import Driver, DriverStats, Scenario, setup
from parity.invariants import (
    Violation,
    check_badge_sum,
    check_counts_fall_only_on_read,
    check_domain_invariants,
    check_seq_continuity,
)
from parity.model import DOMAINS, UNVERSIONED, Observation
from parity.observers import Poller, PushObserver, Recorder
from parity.report import (
    DomainReport,
    ReportError,
    build_report,
    format_table,
    noise_floor,
    read_report,
    write_reports,
)
from parity.state import UserSetup
from parity.stats import DEFAULT_MIN_SAMPLES, DEFAULT_THRESHOLD, Outcome, decide, needed_samples

__all__ = ["RunConfig", "RunError", "default_window", "run_from_args", "run_parity"]

log = logging.getLogger("cutover.parity")

COMPARE_LIMITER = trio.CapacityLimiter(1)
TOKEN_TTL_S = 3600.0


class RunError(Exception):
    """A run that could not be made (bad arguments, unreachable server)."""


def default_window(poll_interval: float) -> float:
    """W: two poll intervals plus half a second for round trips and scheduling."""
    return max(1.0, 2 * poll_interval + 0.5)


@attrs.frozen
class RunConfig:
    """Everything one parity run needs."""

    url: str
    users: int = 10
    duration: float = 60.0
    domains: tuple[str, ...] = DOMAINS
    secret: str | None = None
    token_file: Path | None = None
    drive: bool = False
    calibrate: bool = False
    seed: int = 1
    window: float | None = None
    poll_interval: float | None = None
    flags: Path | None = None
    calibration_dir: Path | None = None
    progress: bool = True
    rate: float | None = None  # driver mutations per second; default 2.5 per user
    until_decided: bool = False  # `duration` is then a minimum
    max_duration: float = 900.0  # the time cap of an `until_decided` run
    threshold: float = DEFAULT_THRESHOLD
    min_samples: int = DEFAULT_MIN_SAMPLES

    @property
    def urls(self) -> list[str]:
        """The nodes' base URLs (`url` may be a comma list)."""
        return [u.strip().rstrip("/") for u in self.url.split(",") if u.strip()]

    @property
    def ws_urls(self) -> list[str]:
        return [websocket_url(u) for u in self.urls]


def _tokens(config: RunConfig) -> dict[str, str]:
    if config.token_file is not None:
        tokens = {}
        for number, line in enumerate(config.token_file.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise RunError(f"{config.token_file}:{number}: expected 'user token'")
            tokens[parts[0]] = parts[1]
        users = list(tokens)[: config.users]
        return {u: tokens[u] for u in users}
    if config.secret is None:
        raise RunError("give --secret or --token-file")
    users = [f"parity-{config.seed}-u{i}" for i in range(config.users)]
    ttl = config.duration + 600
    return {u: mint_token(config.secret, u, ttl_s=max(TOKEN_TTL_S, ttl)) for u in users}


async def _stages(gql: GraphQL, tokens: dict[str, str]) -> dict[str, dict[str, tuple[str, int]]]:
    """Per user, per domain: (stage, pollIntervalMs or 0)."""
    out = {}
    for user, token in tokens.items():
        data = await gql.query(
            "{ realtimeConfig { domains { domain stage pollIntervalMs } } }", token=token
        )
        out[user] = {
            d["domain"]: (d["stage"], int(d.get("pollIntervalMs") or 0))
            for d in data["realtimeConfig"]["domains"]
        }
    return out


def _observed_stage(stages: dict[str, dict[str, tuple[str, int]]], domain: str) -> str:
    """The lowest stage the server reported for the domain among the observed users."""
    seen = [Stage.parse(s[domain][0]) for s in stages.values() if domain in s]
    return min(seen, key=lambda s: s.rank).name if seen else Stage.OFF.name


def _interval(config: RunConfig, stages: dict[str, dict[str, tuple[str, int]]]) -> float:
    if config.poll_interval is not None:
        return config.poll_interval
    intervals = [
        ms / 1000
        for per_user in stages.values()
        for domain, (_stage, ms) in per_user.items()
        if domain in config.domains and ms > 0
    ]
    return min(intervals) if intervals else 30.0


def _config_hash(config: RunConfig) -> str:
    if config.flags is not None:
        return hashlib.sha256(Path(config.flags).read_bytes()).hexdigest()
    return "unknown"


def _calibration(config: RunConfig, domain: str) -> DomainReport | None:
    if config.calibration_dir is None:
        return None
    path = config.calibration_dir / f"{domain}.json"
    if not path.exists():
        return None
    try:
        report = read_report(path)
    except ReportError as exc:
        log.warning("ignoring calibration %s: %s", path, exc)
        return None
    return report if report.kind == "calibration" else None


def _violations(recorder: Recorder, users: Sequence[str], window: float) -> list[Violation]:
    out = list(recorder.violations)
    out += check_badge_sum(recorder.observations)
    out += check_counts_fall_only_on_read(recorder.observations, recorder.reads, window=window)
    out += check_domain_invariants(recorder.observations)
    for user in users:
        out += check_seq_continuity(recorder.received.get(user, []), user_id=user)
    return out


@attrs.define
class Progress:
    """What an `until_decided` run knows at its last check."""

    checks: int = 0
    counts: dict[str, int] = attrs.Factory(dict)  # domain -> comparisons (N)
    undecided: tuple[str, ...] = ()
    capped: bool = False
    elapsed: float = 0.0


def settled(observations: Sequence[Observation], since: float) -> list[Observation]:
    """The observations to compare: unversioned keys (presence) from `since` on, W after
    every observer was ready (the harness's own connections move them while it
    starts), each path's value in effect at `since` standing at `since`."""
    out: list[Observation] = []
    before: dict[tuple[str, str, str], Observation] = {}
    for obs in observations:
        if obs.domain not in UNVERSIONED or obs.observed_at >= since:
            out.append(obs)
            continue
        key = (obs.path, obs.user_id, obs.key)
        if key not in before or obs.observed_at >= before[key].observed_at:
            before[key] = obs
    out += [attrs.evolve(obs, observed_at=since) for obs in before.values()]
    return out


def _decided(
    config: RunConfig,
    recorder: Recorder,
    writes: Sequence,
    users: Sequence[str],
    *,
    right: str,
    window: float,
    start: float,
    end: float,
    noise: dict[str, float],
) -> tuple[dict[str, int], tuple[str, ...]]:
    """Compare what the run holds so far: each domain's N and the domains whose
    verdict is still INCONCLUSIVE (blocking: run it in a thread)."""
    diff = Comparator(window, left="poll", right=right).compare(
        settled(recorder.observations, start + window), end=end, writes=writes
    )
    violations = _violations(recorder, users, window)
    counts, undecided = {}, []
    for domain in config.domains:
        part = diff.for_domain(domain)
        broken = sum(1 for v in violations if v.domain in (domain, "stream"))
        decision = decide(
            part.divergent,
            part.n,
            noise=noise.get(domain, 0.0),
            threshold=config.threshold,
            min_samples=config.min_samples,
            invariant_violations=broken,
        )
        counts[domain] = part.n
        if decision.outcome is Outcome.INCONCLUSIVE:
            undecided.append(domain)
    return counts, tuple(undecided)


async def _observe(
    config: RunConfig,
    http: httpx.AsyncClient,
    tokens: dict[str, str],
    stages: dict[str, dict[str, tuple[str, int]]],
    recorder: Recorder,
    *,
    interval: float,
    window: float,
    progress: Progress,
) -> tuple[float, float, Driver | None]:
    """Run the observers (and the driver); returns the start and end instants."""
    users = list(tokens)
    gqls = [GraphQL(http, url) for url in config.urls]  # one per node
    nodes = len(gqls)
    admin = (
        mint_token(config.secret, f"parity-{config.seed}-admin", admin=True)
        if (config.secret)
        else None
    )
    everywhere = GraphQL(http, config.urls)  # every node in turn
    scenario = await setup(everywhere, tokens, users) if config.drive else Scenario([], {})
    setups = []
    for user in users:
        user_stages = {d: s for d, (s, _ms) in stages[user].items()}
        pushed = tuple(
            d for d in config.domains if Stage.parse(user_stages.get(d, "SHADOW")) >= Stage.SHADOW
        )
        setups.append(
            UserSetup(
                user,
                tokens[user],
                config.domains,
                pushed,
                scenario.events_of(user),
                scenario.orgs_of(user),
                scenario.neighbours_of(user),
            )
        )
    driver = None
    if config.drive:
        driver = Driver(
            everywhere,
            config.ws_urls,
            tokens,
            users,
            scenario,
            seed=config.seed,
            admin_token=admin,
            rate=config.rate or max(5.0, 2.5 * len(users)),
        )
    stagger = random.Random(config.seed)
    from tqdm import tqdm

    bar = tqdm(
        total=round(config.max_duration if config.until_decided else config.duration),
        unit="s",
        desc="parity run" + (" (A/A)" if config.calibrate else ""),
        disable=not config.progress,
        file=sys.stderr,
    )
    noise = {}
    if not config.calibrate:
        for domain in config.domains:
            calibration = _calibration(config, domain)
            if calibration is not None:
                noise[domain] = noise_floor(calibration)
    right = "poll_b" if config.calibrate else "push"
    async with trio.open_nursery() as nursery:
        pushes = []
        for i, watched in enumerate(setups):
            offset = stagger.random() * interval
            # Across nodes: the poller on one, the push observer on the next.
            poll_gql, push_gql = gqls[i % nodes], gqls[(i + 1) % nodes]
            nursery.start_soon(
                Poller(poll_gql, watched, recorder, interval=interval, offset=offset).run
            )
            if config.calibrate:
                # In phase with `poll`, so that both pollers read the same versions
                # as often as possible: only versions both read are compared.
                poll_b = Poller(
                    push_gql, watched, recorder, interval=interval, path="poll_b", offset=offset
                )
                nursery.start_soon(poll_b.run)
            else:
                ws_url = config.ws_urls[(i + 1) % nodes]
                push = PushObserver(push_gql, ws_url, watched, recorder, away=config.drive)
                pushes.append(push)
                nursery.start_soon(push.run)
        with trio.move_on_after(15):
            for push in pushes:
                await push.ready.wait()
        start = trio.current_time()

        async def tick() -> None:
            while True:
                await trio.sleep(1)
                bar.update(1)
                stats = driver.stats if driver else DriverStats()
                bar.set_postfix(
                    mutations=stats.done,
                    failed=stats.failed,
                    observations=len(recorder.observations),
                    refresh=False,
                )

        async def until_decided() -> None:
            """Return once every domain is decided, or at the time cap."""
            await trio.sleep(config.duration)
            cap = start + max(config.max_duration, config.duration)
            while True:
                held = Recorder(
                    observations=list(recorder.observations),
                    reads=[*recorder.reads, *(driver.reads if driver is not None else ())],
                    received={u: list(r) for u, r in recorder.received.items()},
                    violations=list(recorder.violations),
                )
                check = partial(
                    _decided,
                    config,
                    held,
                    list(driver.writes) if driver is not None else (),
                    users,
                    right=right,
                    window=window,
                    start=start,
                    end=trio.current_time(),
                    noise=noise,
                )
                counts, undecided = await trio.to_thread.run_sync(check, limiter=COMPARE_LIMITER)
                progress.checks += 1
                progress.counts, progress.undecided = counts, undecided
                progress.elapsed = trio.current_time() - start
                if not undecided:
                    return
                if trio.current_time() >= cap:
                    progress.capped = True
                    return
                wait = max(5.0, 0.25 * (trio.current_time() - start))
                await trio.sleep(min(wait, max(0.0, cap - trio.current_time())))

        async def driving() -> None:
            if driver is not None:
                await driver.drive()
            else:
                await trio.sleep_forever()

        nursery.start_soon(tick)
        if config.until_decided:
            async with trio.open_nursery() as inner:
                inner.start_soon(driving)
                await until_decided()
                inner.cancel_scope.cancel()
        else:
            with trio.move_on_after(config.duration):
                await driving()
        progress.elapsed = trio.current_time() - start
        await trio.sleep(window + interval + 0.5)  # settle: nothing driven, both paths catch up
        end = trio.current_time()
        nursery.cancel_scope.cancel()
    bar.close()
    if driver is not None:
        recorder.reads.extend(driver.reads)
    return start, end, driver


async def run_parity(config: RunConfig) -> list[DomainReport]:
    """Observe, compare and judge; one report per domain (not yet written)."""
    unknown = sorted(set(config.domains) - set(DOMAINS))
    if unknown:
        raise RunError(f"unknown domain(s) {', '.join(unknown)} (known: {', '.join(DOMAINS)})")
    tokens = _tokens(config)
    if not tokens:
        raise RunError("no users to observe")
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    recorder = Recorder()
    progress = Progress()
    started_at = utcnow()
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        if not config.urls:
            raise RunError("no --url given")
        try:
            stages = await _stages(GraphQL(client, config.urls[0]), tokens)
        except GraphQLFailed as exc:
            raise RunError(f"cannot read realtimeConfig from {config.urls[0]}: {exc}") from exc
        interval = _interval(config, stages)
        window = config.window if config.window is not None else default_window(interval)
        start, end, driver = await _observe(
            config,
            client,
            tokens,
            stages,
            recorder,
            interval=interval,
            window=window,
            progress=progress,
        )
    ended_at = utcnow()
    right = "poll_b" if config.calibrate else "push"
    writes = driver.writes if driver is not None else []

    def compare() -> tuple[DiffResult, list[Violation]]:
        diff = Comparator(window, left="poll", right=right).compare(
            settled(recorder.observations, start + window), end=end, writes=writes
        )
        return diff, _violations(recorder, list(tokens), window)

    diff, violations = await trio.to_thread.run_sync(compare, limiter=COMPARE_LIMITER)
    kind = "calibration" if config.calibrate else "parity"
    config_hash = _config_hash(config)
    reports = []
    needed = needed_samples(config.threshold)
    for domain in config.domains:
        mine = [v for v in violations if v.domain in (domain, "stream")]
        notes = []
        if config.until_decided:
            notes.append(
                f"ran {progress.elapsed:.0f} s until decided"
                if not progress.capped
                else f"time cap of {config.max_duration:g} s reached "
                f"after {progress.checks} check(s)"
            )
        reports.append(
            build_report(
                diff.for_domain(domain),
                kind=kind,
                stage=_observed_stage(stages, domain),
                config_hash=config_hash,
                started_at=started_at,
                ended_at=ended_at,
                window=window,
                paths=("poll", right),
                traffic={"poll": recorder.traffic("poll"), right: recorder.traffic(right)},
                violations=mine,
                calibration=None if config.calibrate else _calibration(config, domain),
                threshold=config.threshold,
                min_samples=config.min_samples,
                notes=tuple(notes),
                needed=needed,
            )
        )
    return reports


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The `RunConfig` of `cutover parity run ...`."""
    out = Path(args.out)
    calibration = getattr(args, "calibration", None)
    if calibration is None and not args.calibrate and (out / "calibration").is_dir():
        calibration = out / "calibration"
    domains = tuple(d.strip() for d in str(args.domains).split(",") if d.strip())
    return RunConfig(
        url=args.url,
        users=args.users,
        duration=args.duration,
        domains=domains,
        secret=args.secret,
        token_file=Path(args.token_file) if args.token_file else None,
        drive=args.drive,
        calibrate=args.calibrate,
        seed=args.seed,
        window=args.window,
        poll_interval=args.poll_interval,
        flags=Path(args.flags) if args.flags else None,
        calibration_dir=Path(calibration) if calibration else None,
        progress=not args.no_progress,
        rate=getattr(args, "rate", None),
        # An A/A run must decide: it always goes on until it has (or hits the cap).
        until_decided=bool(getattr(args, "until_decided", False) or args.calibrate),
        max_duration=float(getattr(args, "max_duration", None) or 900.0),
    )


def run_from_args(args: argparse.Namespace) -> int:
    """`cutover parity run`: write the reports, print the table; 0 once written
    (the gate judges them), 1 when the run could not be made."""
    try:
        config = config_from_args(args)
        reports = trio.run(run_parity, config)
    except (RunError, OSError) as exc:
        print(f"parity run: {exc}", file=sys.stderr)
        return 1
    now = utcnow()
    write_reports(reports, Path(args.out), now=now)
    sys.stdout.write(format_table(reports, now=now))
    for report in reports:
        print(f"{report.domain}: {report.outcome}: {'; '.join(report.reasons)}")
    return 0
