"""`cutover bench polling`: GraphQL polling requests/s and server CPU per
request, with the server on one core.

Seeds `--users` users (each in a few conversations with a message, holding a
few notifications) straight into a temporary SQLite store, starts `cutover
serve` pinned to CPU 0, and from this process, pinned to CPU 1, runs
`--clients` concurrent keep-alive httpx clients under Trio (`gateway.client`),
each posting the standard polling query for a random seeded user as fast as
answers come, for `--duration` seconds after a one-second warm-up.

CPU per request = the server process's CPU time (user + system, psutil) over
the window / requests answered. Both processes' CPU use over the window is
printed: a server near 100% of its core means the figure is the server's
limit; a load generator near 100% means the generator limited it.
"""

from __future__ import annotations

import argparse
import logging
import random
import secrets
import tempfile
import time
from pathlib import Path

import attrs
import httpx
import psutil
import trio

from gateway.auth import mint_token
from gateway.client import GraphQL
from ops.bench._common import (
    POLL_QUERY,
    Table,
    WireBytes,
    answered,
    conditions,
    percentile,
    pin,
    pinned_self,
    sample,
    seed_users,
    start_cutover,
)

__all__ = ["main", "poll_once", "pollers"]

WARM_UP_S = 1.0


@attrs.define
class Load:
    """Requests answered over a window, with their latencies; the response
    bodies' bytes are counted by `wire`."""

    ok: int = 0
    errors: int = 0
    latencies: list[float] = attrs.Factory(list)
    wire: WireBytes = attrs.Factory(lambda: WireBytes(counting=False))
    measuring: bool = False

    def measure(self, on: bool) -> None:
        self.measuring = self.wire.counting = on

    def record(self, ok: bool, latency: float) -> None:
        if not self.measuring:
            return
        if ok:
            self.ok += 1
            self.latencies.append(latency)
        else:
            self.errors += 1


def pollers(http: httpx.AsyncClient, url: str, tokens: list[str]) -> list[GraphQL]:
    """One `gateway.client.GraphQL` per user token, all over `http`."""
    return [GraphQL(http, url, token) for token in tokens]


async def poll_once(polling: GraphQL) -> bool:
    """One polling request; answered without errors?"""
    return await answered(polling, POLL_QUERY)


async def _drive(url: str, tokens: list[str], clients: int, seconds: float, server, load: Load):
    me = psutil.Process()
    stop_at = trio.current_time() + WARM_UP_S + seconds

    async def loop(users: list[GraphQL]) -> None:
        while trio.current_time() < stop_at:
            started = time.perf_counter()
            try:
                ok = await poll_once(random.choice(users))
            except (httpx.HTTPError, ValueError):
                ok = False
            load.record(ok, time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with (
        httpx.AsyncClient(
            timeout=30, limits=limits, event_hooks={"response": [load.wire]}
        ) as client,
        trio.open_nursery() as nursery,
    ):
        users = pollers(client, url, tokens)
        for _ in range(clients):
            nursery.start_soon(loop, users)
        await trio.sleep(WARM_UP_S)
        load.measure(True)
        before = (sample(server), sample(me))
        await trio.sleep_until(stop_at)
        after = (sample(server), sample(me))
        load.measure(False)
    return before, after


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table; 0 on success."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    users_count = max(2, args.users)
    clients = max(1, args.clients)
    secret = secrets.token_hex(32)
    state = conditions()
    with tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp:
        seeding = time.perf_counter()
        users = seed_users(Path(tmp) / "bench.db", users_count)
        seeded_s = time.perf_counter() - seeding
        tokens = [mint_token(secret, u, ttl_s=3600) for u in users]
        with start_cutover(Path(tmp), secret) as server, pinned_self(1) as pinned:
            pinned = pinned and pin(server.pid, [0])
            load = Load()
            before, after = trio.run(
                _drive, server.url, tokens, clients, args.duration, server.psutil(), load
            )
    window = after[0].at - before[0].at
    server_cpu = after[0].cpu_s - before[0].cpu_s
    client_cpu = after[1].cpu_s - before[1].cpu_s
    table = Table(
        f"polling benchmark: {users_count} seeded users, {clients} keep-alive clients, "
        f"{args.duration:g} s, 127.0.0.1",
        ["metric", "value"],
    )
    table.add("requests answered", load.ok)
    table.add("errors", load.errors)
    table.add("requests/s", load.ok / window if window else float("nan"))
    table.add("server CPU per request (ms)", server_cpu / load.ok * 1000 if load.ok else 0.0)
    table.add("server CPU busy (% of one core)", server_cpu / window * 100)
    table.add("load generator CPU busy (% of one core)", client_cpu / window * 100)
    table.add("p50 latency (ms)", percentile(load.latencies, 50) * 1000)
    table.add("p99 latency (ms)", percentile(load.latencies, 99) * 1000)
    bodies = load.wire.bodies / load.wire.exchanges if load.wire.exchanges else 0.0
    table.add("response body (bytes/request)", bodies)
    table.notes.append(f"query: {POLL_QUERY}")
    table.notes.append(
        "server pinned to CPU 0, load generator to CPU 1"
        if pinned
        else "not pinned: fewer than two CPUs available"
    )
    table.notes.append(f"seeding {users_count} users took {seeded_s:.1f} s (not measured)")
    table.notes.append(state)
    table.print()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    raise SystemExit(main(parser.parse_args()))
