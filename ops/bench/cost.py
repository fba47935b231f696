"""`cutover bench cost`: the cost of keeping `--users` users fresh, polling at
30 s and at 5 s versus push, in server CPU seconds and bytes per minute.

Seeds the users (a few conversations and notifications each) into a
temporary SQLite store and starts one `cutover serve`. In every mode the same
changes happen: one new notification per user per minute (admin
`createNotification` mutations, paced, to the users in turn). Each mode is
measured over a `--duration` window and extrapolated to a minute (x 60 /
duration):

- changes only: nobody reads; the cost of the writes themselves;
- poll every 30 s / every 5 s: each user posts the standard polling query at
  the interval, the users' polls spread evenly over the interval, over
  `--clients` keep-alive HTTP connections;
- push: each user holds one WebSocket connection (two client processes) and
  receives the changes as they commit; clients send the protocol's `ping`
  every 30 s, spread evenly. Connecting happens before the window.

Server CPU = the server process's CPU time (psutil) over the window. Bytes =
what crosses the wire to keep users fresh, counted at the clients: HTTP
request and response lines, headers and bodies for polls; WebSocket frames
with their headers, both ways, for push. The mutations that make the changes
are the same in every mode and are not counted in bytes. TCP/IP overhead is
not counted.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import secrets
import tempfile
import time
from pathlib import Path

import attrs
import httpx
import trio

from gateway.auth import mint_token
from gateway.client import GraphQL
from ops.bench import ws
from ops.bench._common import (
    POLL_QUERY,
    ServerProcess,
    Table,
    WireBytes,
    answered,
    conditions,
    raise_nofile,
    sample,
    seed_users,
    start_cutover,
)
from ops.bench.polling import poll_once, pollers

__all__ = ["main"]

CHANGES_PER_USER_PER_MINUTE = 1.0
PING_EVERY_S = 30.0
MUTATION = (
    'mutation($u: ID!, $t: String!) { createNotification(userId: $u, kind: "bench", '
    "text: $t) { id } }"
)


@attrs.define
class Mode:
    """One way of keeping users fresh, measured over a window."""

    name: str
    seconds: float = 0.0
    cpu_s: float = 0.0
    bytes: int = 0
    reads: int = 0
    read_errors: int = 0
    changes: int = 0
    scheduled_reads: int = 0
    scheduled_changes: int = 0

    def per_minute(self, value: float) -> float:
        return value * 60 / self.seconds if self.seconds else float("nan")


async def _paced(total: int, rate: float, workers: int, step) -> None:
    """Call `step(n)` for n in range(total), the n-th at start + n / rate."""
    slots = itertools.count()
    started = trio.current_time()

    async def worker() -> None:
        for n in slots:
            if n >= total:
                return
            await trio.sleep_until(started + n / rate)
            await step(n)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)


async def _window(
    url: str,
    secret: str,
    users: list[str],
    seconds: float,
    mode: Mode,
    poll_every: float | None,
    clients: int,
) -> None:
    """Make the changes for `seconds` and, if `poll_every`, poll alongside."""
    change_rate = len(users) * CHANGES_PER_USER_PER_MINUTE / 60

    async def change(n: int) -> None:
        variables = {"u": users[n % len(users)], "t": f"change {n}"}
        try:
            if await answered(admin, MUTATION, variables):
                mode.changes += 1
        except (httpx.HTTPError, ValueError):
            pass

    async def poll(n: int) -> None:
        try:
            ok = await poll_once(readers[n % len(readers)])
        except (httpx.HTTPError, ValueError):
            ok = False
        if ok:
            mode.reads += 1
        else:
            mode.read_errors += 1

    # The polls' bytes on the wire, counted as each answer arrives (not the warm-up's).
    wire = WireBytes(counting=False)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with (
        httpx.AsyncClient(timeout=30) as writer,
        httpx.AsyncClient(timeout=30, limits=limits, event_hooks={"response": [wire]}) as reader,
    ):
        admin_token = mint_token(secret, "bench-admin", admin=True)
        admin = GraphQL(writer, url, admin_token)
        readers = pollers(reader, url, [mint_token(secret, u, ttl_s=3600) for u in users])
        await GraphQL(reader, url, admin_token).post(POLL_QUERY)
        wire.counting = True
        async with trio.open_nursery() as nursery:
            mode.scheduled_changes = int(change_rate * seconds)
            nursery.start_soon(_paced, mode.scheduled_changes, change_rate, 4, change)
            if poll_every is not None:
                poll_rate = len(users) / poll_every
                mode.scheduled_reads = int(poll_rate * seconds)
                nursery.start_soon(_paced, mode.scheduled_reads, poll_rate, clients, poll)
            await trio.sleep(seconds)
    mode.bytes += wire.total


def _measure(
    server: ServerProcess, secret: str, users: list[str], mode: Mode, args, poll_every=None
) -> Mode:
    process = server.psutil()
    before = sample(process)
    trio.run(_window, server.url, secret, users, args.duration, mode, poll_every, args.clients)
    after = sample(process)
    mode.seconds = after.at - before.at
    mode.cpu_s = after.cpu_s - before.cpu_s
    return mode


def _measure_push(server: ServerProcess, secret: str, users: list[str], args) -> Mode:
    mode = Mode("push (WebSocket)")
    clients = ws.start_clients(ws.targets_for(server, users, secret), False, PING_EVERY_S)
    try:
        replies = ws.gather(clients, "connected", 60 + len(users) / 50)
        connected = sum(r[1] for r in replies)
        time.sleep(1.0)
        for _, pipe in clients:
            pipe.send("mark")
        marks = [r[1] for r in ws.gather(clients, "mark", 30)]
        _measure(server, secret, users, mode, args)
        time.sleep(0.5)  # the last changes' deliveries
        for _, pipe in clients:
            pipe.send("mark")
        ends = [r[1] for r in ws.gather(clients, "mark", 30)]
        for start, end in zip(marks, ends, strict=True):
            frames, received, _sent_frames, sent, _stamped = (
                b - a for a, b in zip(start, end, strict=True)
            )
            mode.reads += frames
            mode.bytes += received + sent
        mode.read_errors = len(users) - connected
    finally:
        for _, pipe in clients:
            pipe.send("stop")
        ws.gather(clients, "tally", 60)
        for process, _ in clients:
            process.join(10)
    return mode


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table; 0 on success."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    count = max(2, args.users)
    nofile = count + 1024
    raise_nofile(nofile)
    secret = secrets.token_hex(32)
    state = conditions()
    with tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp:
        users = seed_users(Path(tmp) / "bench.db", count)
        with start_cutover(Path(tmp), secret, nofile=nofile) as server:
            modes = [
                _measure(server, secret, users, Mode("changes only (no readers)"), args),
                _measure(server, secret, users, Mode("poll every 30 s"), args, 30.0),
                _measure(server, secret, users, Mode("poll every 5 s"), args, 5.0),
                _measure_push(server, secret, users, args),
            ]
    baseline = modes[0]
    table = Table(
        f"cost benchmark: keeping {count} users fresh, "
        f"{CHANGES_PER_USER_PER_MINUTE:g} change per user per minute; "
        f"{args.duration:g} s windows extrapolated to a minute (x {60 / args.duration:g})",
        [
            "mode",
            "server CPU s/min",
            "CPU s/min above changes",
            "MB/min",
            "reads/min",
            "errors",
            "changes/min",
        ],
    )
    for mode in modes:
        table.add(
            mode.name,
            mode.per_minute(mode.cpu_s),
            mode.per_minute(mode.cpu_s) - baseline.per_minute(baseline.cpu_s),
            mode.per_minute(mode.bytes) / 1e6,
            mode.per_minute(mode.reads),
            mode.read_errors,
            mode.per_minute(mode.changes),
        )
    for mode in modes:
        short = [
            f"{done:,} of {planned:,} {what}"
            for what, done, planned in (
                ("polls", mode.reads, mode.scheduled_reads),
                ("changes", mode.changes, mode.scheduled_changes),
            )
            if planned and done < 0.9 * planned
        ]
        if short:
            table.notes.append(
                f"{mode.name}: the server fell behind the schedule "
                f"({', '.join(short)} in the window); its figures are a lower bound"
            )
    table.notes.append(
        "reads = answered polls, or WebSocket frames received (events and ping replies)"
    )
    table.notes.append(
        "bytes counted at the clients: HTTP lines, headers and bodies; WebSocket frames "
        "with headers both ways; no TCP/IP overhead, no mutation traffic"
    )
    table.notes.append(state)
    table.print()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    raise SystemExit(main(parser.parse_args()))
