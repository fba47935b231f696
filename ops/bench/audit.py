"""`cutover bench audit`: what the shadow audit costs the polling path.

Seeds `--users` users (conversations with a message, a few notifications)
into a temporary SQLite store, then serves it in phases that alternate
between no audit (`[parity] audit_sample = 0`) and an audit of `--sample` of
the polls (0.1 by default), `--rounds` times each, a fresh `cutover serve`
per phase pinned to CPU 0. From this process, pinned to CPU 1, `--clients`
keep-alive httpx clients post the standard poll for random seeded users at a
steady `--polls-per-second` in total (below the node's capacity, so latency
is service time, not queueing), for `--duration` seconds after a warm-up.

Per phase: polls answered, p50 and p99 latency as the client saw it, and the
server's CPU per poll (its CPU time over the window, every thread included,
so the audit's own work is in it, divided by the polls answered), with the
audit's counters from /metrics (polls audited, samples skipped). The
summary compares the medians of the phases of each kind.
"""

from __future__ import annotations

import argparse
import logging
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import attrs
import httpx
import trio

from gateway.auth import mint_token
from gateway.client import GraphQL, metric_total, scrape_metrics
from ops.bench._common import (
    POLL_QUERY,
    Table,
    conditions,
    percentile,
    pin,
    pinned_self,
    sample,
    seed_users,
    start_cutover,
)
from ops.bench.polling import poll_once, pollers

__all__ = ["main"]

WARM_UP_S = 2.0


@attrs.define
class Phase:
    label: str
    rate: float
    ok: int = 0
    errors: int = 0
    latencies: list[float] = attrs.Factory(list)
    cpu_s: float = 0.0
    window_s: float = 0.0
    audited: float = 0.0
    skipped: float = 0.0

    @property
    def cpu_ms_per_poll(self) -> float:
        return self.cpu_s / self.ok * 1000 if self.ok else float("nan")

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


def _flags(path: Path, rate: float) -> Path:
    path.write_text(f"[parity]\naudit_sample = {rate}\n")
    return path


AUDIT_SAMPLES = "cutover_parity_audit_samples_total"


async def _load(url: str, tokens: list[str], phase: Phase, clients: int, seconds: float, server):
    """Post polls at `rate` per second in total; measure after the warm-up."""
    measuring = False
    interval = clients / phase.rate

    async def client_loop(users: list[GraphQL], offset: float) -> None:
        await trio.sleep(offset)
        next_at = trio.current_time()
        while True:
            started = time.perf_counter()
            try:
                ok = await poll_once(random.choice(users))
            except (httpx.HTTPError, ValueError):
                ok = False
            if measuring:
                if ok:
                    phase.ok += 1
                    phase.latencies.append(time.perf_counter() - started)
                else:
                    phase.errors += 1
            next_at += interval
            await trio.sleep_until(max(next_at, trio.current_time()))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        users = pollers(client, url, tokens)
        async with trio.open_nursery() as nursery:
            for i in range(clients):
                nursery.start_soon(client_loop, users, i * interval / clients)
            await trio.sleep(WARM_UP_S)
            before_metrics = await scrape_metrics(client, url)
            measuring = True
            before = sample(server)
            await trio.sleep(seconds)
            after = sample(server)
            measuring = False
            nursery.cancel_scope.cancel()
        after_metrics = await scrape_metrics(client, url)
    phase.cpu_s = after.cpu_s - before.cpu_s
    phase.window_s = after.at - before.at

    def counted(outcome: str) -> float:
        after_count = metric_total(after_metrics, AUDIT_SAMPLES, outcome=outcome)
        return after_count - metric_total(before_metrics, AUDIT_SAMPLES, outcome=outcome)

    phase.audited = counted("audited")
    phase.skipped = counted("queue_full")


def main(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    users_count = max(2, args.users)
    clients = max(1, args.clients)
    rate = float(getattr(args, "polls_per_second", 100.0))
    audit = float(getattr(args, "sample", 0.1))
    rounds = max(1, int(getattr(args, "rounds", 2)))
    secret = secrets.token_hex(32)
    state = conditions()
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="cutover-bench-audit-") as tmp:
        workdir = Path(tmp)
        users = seed_users(workdir / "bench.db", users_count)
        tokens = [mint_token(secret, u, ttl_s=3600) for u in users]
        with pinned_self(1) as pinned_load:
            for _ in range(rounds):
                for label, share in (("no audit", 0.0), (f"audit {audit:g}", audit)):
                    flags = _flags(workdir / "rollout.toml", share)
                    phase = Phase(label, rate)
                    with start_cutover(workdir, secret, ["--flags", str(flags)]) as server:
                        pinned = pinned_load and pin(server.pid, [0])
                        trio.run(
                            _load, server.url, tokens, phase, clients, args.duration,
                            server.psutil(),
                        )  # fmt: skip
                    phases.append(phase)
    table = Table(
        f"shadow audit cost: {users_count} seeded users, {rate:g} polls/s from {clients} "
        f"keep-alive clients, {args.duration:g} s per phase, {rounds} round(s), 127.0.0.1",
        [
            "phase",
            "polls",
            "errors",
            "p50 ms",
            "p99 ms",
            "server CPU ms/poll",
            "audited",
            "skipped",
        ],
    )
    for phase in phases:
        table.add(
            phase.label,
            phase.ok,
            phase.errors,
            phase.p50_ms,
            phase.p99_ms,
            phase.cpu_ms_per_poll,
            int(phase.audited),
            int(phase.skipped),
        )
    base = [p for p in phases if p.label == "no audit"]
    audited = [p for p in phases if p.label != "no audit"]

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    cpu_base = median([p.cpu_ms_per_poll for p in base])
    cpu_audit = median([p.cpu_ms_per_poll for p in audited])
    p99_base = median([p.p99_ms for p in base])
    p99_audit = median([p.p99_ms for p in audited])
    table.notes.append(
        f"medians: p99 {p99_base:.2f} ms without the audit, {p99_audit:.2f} ms with it; "
        f"server CPU per poll {cpu_base:.3f} ms without, {cpu_audit:.3f} ms with "
        f"({(cpu_audit / cpu_base - 1) * 100:+.1f}%)"
    )
    table.notes.append(f"query: {POLL_QUERY}")
    table.notes.append(
        "server pinned to CPU 0, load generator to CPU 1"
        if pinned
        else "not pinned: fewer than two CPUs available"
    )
    table.notes.append(state)
    table.print()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--polls-per-second", type=float, default=100.0)
    parser.add_argument("--sample", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2)
    raise SystemExit(main(parser.parse_args()))
