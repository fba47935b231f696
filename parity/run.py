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
   for more than W, so the last changes are seen by both paths;
5. compare with `parity.differ.Comparator`, check the invariants of each
   path, and build one report per domain (`parity.report.build_report`).

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
from pathlib import Path

import attrs
import httpx
import trio

from gateway.auth import mint_token
from gateway.events import utcnow
from gateway.rollout import Stage
from parity.differ import Comparator, DiffResult
from parity.driver import Driver, DriverStats, Scenario, setup
from parity.invariants import (
    Violation,
    check_badge_sum,
    check_counts_fall_only_on_read,
    check_seq_continuity,
)
from parity.model import DOMAINS
from parity.observers import GraphQL, GraphQLError, Poller, PushObserver, Recorder, UserSetup
from parity.report import (
    DomainReport,
    ReportError,
    build_report,
    format_table,
    read_report,
    write_reports,
)

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

    @property
    def ws_url(self) -> str:
        base = self.url.rstrip("/")
        return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"


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
        data, _ = await gql.request(
            token, "{ realtimeConfig { domains { domain stage pollIntervalMs } } }"
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
    for user in users:
        out += check_seq_continuity(recorder.received.get(user, []), user_id=user)
    return out


async def _observe(
    config: RunConfig,
    gql: GraphQL,
    tokens: dict[str, str],
    stages: dict[str, dict[str, tuple[str, int]]],
    recorder: Recorder,
    *,
    interval: float,
    window: float,
) -> tuple[float, float, Driver | None]:
    """Run the observers (and the driver); returns the start and end instants."""
    users = list(tokens)
    admin = (
        mint_token(config.secret, f"parity-{config.seed}-admin", admin=True)
        if (config.secret)
        else None
    )
    scenario = await setup(gql, tokens, users) if config.drive else Scenario([], {})
    setups = []
    for user in users:
        user_stages = {d: s for d, (s, _ms) in stages[user].items()}
        pushed = tuple(
            d for d in config.domains if Stage.parse(user_stages.get(d, "SHADOW")) >= Stage.SHADOW
        )
        setups.append(
            UserSetup(user, tokens[user], config.domains, pushed, scenario.events_of(user))
        )
    driver = None
    if config.drive:
        driver = Driver(
            gql,
            config.ws_url,
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
        total=round(config.duration),
        unit="s",
        desc="parity run" + (" (A/A)" if config.calibrate else ""),
        disable=not config.progress,
        file=sys.stderr,
    )
    async with trio.open_nursery() as nursery:
        pushes = []
        for user in setups:
            offset = stagger.random() * interval
            nursery.start_soon(Poller(gql, user, recorder, interval=interval, offset=offset).run)
            if config.calibrate:
                # In phase with `poll`, so that both pollers read the same versions
                # as often as possible: only versions both read are compared.
                poll_b = Poller(
                    gql, user, recorder, interval=interval, path="poll_b", offset=offset
                )
                nursery.start_soon(poll_b.run)
            else:
                push = PushObserver(gql, config.ws_url, user, recorder)
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

        with trio.move_on_after(config.duration):
            nursery.start_soon(tick)
            if driver is not None:
                await driver.drive()
            else:
                await trio.sleep_forever()
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
    started_at = utcnow()
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        gql = GraphQL(client, config.url)
        try:
            stages = await _stages(gql, tokens)
        except GraphQLError as exc:
            raise RunError(f"cannot read realtimeConfig from {config.url}: {exc}") from exc
        interval = _interval(config, stages)
        window = config.window if config.window is not None else default_window(interval)
        _start, end, driver = await _observe(
            config, gql, tokens, stages, recorder, interval=interval, window=window
        )
    ended_at = utcnow()
    right = "poll_b" if config.calibrate else "push"
    writes = driver.writes if driver is not None else []

    def compare() -> tuple[DiffResult, list[Violation]]:
        diff = Comparator(window, left="poll", right=right).compare(
            recorder.observations, end=end, writes=writes
        )
        return diff, _violations(recorder, list(tokens), window)

    diff, violations = await trio.to_thread.run_sync(compare, limiter=COMPARE_LIMITER)
    kind = "calibration" if config.calibrate else "parity"
    config_hash = _config_hash(config)
    reports = []
    for domain in config.domains:
        mine = [v for v in violations if v.domain in (domain, "stream")]
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
