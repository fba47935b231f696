"""`cutover bench ws`: memory per idle WebSocket connection and targeted
publish-to-receive latency, Cutover beside a bare trio-websocket server.

In one run, for each server (the bare one in `ops/bench/raw_ws_server.py`,
then `cutover serve` over a temporary SQLite store), with the same client:

1. connect `--connections` WebSocket clients (one user each), held by two
   client processes so the clients' CPU is not in the measuring process;
   resident memory per idle connection = (server RSS after connecting minus
   RSS before) / connections;
2. publish targeted events at `--rate` events/s for `--duration` seconds, each
   to one random connected user, and record publish-to-receive latency at the
   clients: receive wall time minus the wall time stamped at publish.

`--compression` chooses Cutover's phases: `off` (the default) starts it as
is, with the same trio-websocket clients as the bare server; `on` starts it
with `--ws-compression on` and clients of the `websockets` library (its
asyncio client, in the client processes) that offer permessage-deflate, and
counts the connections on which the extension was negotiated; `both` runs the
two phases one after the other, each over a fresh store. trio-websocket never
offers the extension, so the bare server is always measured without it.

Publishing differs by necessity: the bare server generates and stamps the
events itself; on Cutover a publisher task in this process sends admin
`createNotification` GraphQL mutations (`--clients` concurrent HTTP clients,
paced to the rate) whose text carries the stamp, so Cutover's latency
includes the HTTP request, the GraphQL execution and the store commit. The
server is pinned to CPU 0 and the clients and publisher to CPU 1 when the
machine has two.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import multiprocessing
import random
import secrets
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gateway.auth import mint_token
from ops.bench._common import (
    ServerProcess,
    Table,
    conditions,
    percentile,
    pin,
    pinned_self,
    raise_nofile,
    sample,
    send_line,
    start_cutover,
    start_raw,
    user_ids,
)

__all__ = [
    "client_process",
    "deflate_client_process",
    "gather",
    "main",
    "start_clients",
    "targets_for",
]

WORKERS = 2
IDLE_WINDOW_S = 3.0
DRAIN_S = 15.0
PING_EVERY_S = 30.0
CONNECT_CONCURRENCY = 64
MUTATION = (
    'mutation($u: ID!, $t: String!) { createNotification(userId: $u, kind: "bench", '
    "text: $t) { id } }"
)


# -- client processes --------------------------------------------------------


@attrs.define
class ClientTally:
    """What one client process saw; bytes include WebSocket frame headers."""

    connected: int = 0
    failed: int = 0  # never connected (no welcome)
    lost: int = 0  # closed after the welcome
    failure: str = ""
    latencies: list[float] = attrs.Factory(list)
    frames: int = 0
    bytes: int = 0
    sent_frames: int = 0
    sent_bytes: int = 0
    #: Connections on which permessage-deflate was negotiated, and the
    #: server's first `Sec-WebSocket-Extensions` answer.
    compressed: int = 0
    extension: str = ""

    def closed(self, exc: BaseException, connected: bool) -> None:
        if connected:
            self.lost += 1
        else:
            self.failed += 1
        self.failure = self.failure or repr(exc)

    def counts(self) -> tuple[int, int, int, int, int]:
        """(frames received, bytes received, frames sent, bytes sent, stamped events)."""
        return self.frames, self.bytes, self.sent_frames, self.sent_bytes, len(self.latencies)


def frame_header_bytes(size: int, masked: bool) -> int:
    """RFC 6455 frame header size for a payload of `size` bytes."""
    base = 2 if size < 126 else 4 if size < 65536 else 10
    return base + (4 if masked else 0)


def _stamp(envelope: dict) -> float | None:
    """The publish wall time an event carries, if it is a benchmark event."""
    payload = envelope.get("payload") or {}
    if envelope.get("type") == "bench.event":
        return payload.get("t")
    if envelope.get("type") == "notification.new":
        text = (payload.get("notification") or {}).get("text", "")
        if text.startswith("t="):
            return float(text[2:])
    return None


async def _pinger(ws, tally: ClientTally, offset: float, every: float) -> None:
    """Send the protocol's `ping` every `every` seconds, first after `offset`."""
    await trio.sleep(offset)
    for n in itertools.count():
        message = json.dumps({"v": 1, "id": f"p-{n}", "action": "ping", "payload": {}})
        size = len(message.encode())
        try:
            await ws.send_message(message)
        except ConnectionClosed:
            return
        tally.sent_frames += 1
        tally.sent_bytes += size + frame_header_bytes(size, masked=True)
        await trio.sleep(every)


async def _receive(ws, tally: ClientTally) -> None:
    """Count frames and record the latency of stamped events until the close."""
    while True:
        try:
            frame = await ws.get_message()
        except ConnectionClosed as exc:
            tally.closed(exc, connected=True)
            return
        received = time.time()
        size = len(frame.encode())
        tally.frames += 1
        tally.bytes += size + frame_header_bytes(size, masked=False)
        for line in frame.split("\n"):
            if line:
                stamp = _stamp(json.loads(line))
                if stamp is not None:
                    tally.latencies.append(received - stamp)


async def _client(url: str, headers: list, tally: ClientTally, limiter, ping, task_status) -> None:
    started = False
    try:
        async with limiter:
            ws_cm = open_websocket_url(url, extra_headers=headers, message_queue_size=64)
            ws = await ws_cm.__aenter__()
        try:
            await ws.get_message()  # session.welcome
            tally.connected += 1
            task_status.started()
            started = True
            if ping is None:
                await _receive(ws, tally)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pinger, ws, tally, *ping)
                    try:
                        await _receive(ws, tally)
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            await ws_cm.__aexit__(None, None, None)
    except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
        tally.closed(exc, connected=started)
        if not started:
            task_status.started()


async def _client_main(
    pipe: Connection, targets: list[tuple[str, list]], ping_every: float | None
) -> None:
    tally = ClientTally()
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)
    pipe_limiter = trio.CapacityLimiter(1)
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as connecting:
            for n, (url, headers) in enumerate(targets):
                ping = None if ping_every is None else (n * ping_every / len(targets), ping_every)
                connecting.start_soon(
                    lambda u=url, h=headers, p=ping: nursery.start(_client, u, h, tally, limiter, p)
                )
        pipe.send(_connected_reply(tally))
        while (await trio.to_thread.run_sync(pipe.recv, limiter=pipe_limiter)) == "mark":
            pipe.send(("mark", tally.counts(), tally.lost))
        nursery.cancel_scope.cancel()  # told "stop"
    pipe.send(("tally", attrs.asdict(tally)))


def _connected_reply(tally: ClientTally) -> tuple:
    return (
        "connected",
        tally.connected,
        tally.failed,
        tally.failure,
        tally.compressed,
        tally.extension,
    )


def client_process(
    pipe: Connection,
    targets: list[tuple[str, list]],
    cpu: int | None,
    ping_every: float | None = None,
) -> None:
    """Entry point of one client process: hold `targets` connections until told
    "stop"; answer "mark" with the counts so far and how many connections were
    closed after their welcome; ping every `ping_every` s if set."""
    raise_nofile(len(targets) + 256)
    if cpu is not None:
        pin(0, [cpu])
    trio.run(_client_main, pipe, targets, ping_every)


# -- client processes offering permessage-deflate (websockets, asyncio) ------


def _count_received(tally: ClientTally, frame: str | bytes) -> None:
    received = time.time()
    text = frame if isinstance(frame, str) else frame.decode()
    size = len(text.encode())
    tally.frames += 1
    # Inflated size: with permessage-deflate the bytes on the wire are fewer.
    tally.bytes += size + frame_header_bytes(size, masked=False)
    for line in text.split("\n"):
        if line:
            stamp = _stamp(json.loads(line))
            if stamp is not None:
                tally.latencies.append(received - stamp)


async def _deflate_pinger(ws, tally: ClientTally, offset: float, every: float) -> None:
    from websockets.exceptions import ConnectionClosed as WsClosed

    await asyncio.sleep(offset)
    for n in itertools.count():
        message = json.dumps({"v": 1, "id": f"p-{n}", "action": "ping", "payload": {}})
        size = len(message.encode())
        try:
            await ws.send(message)
        except WsClosed:
            return
        tally.sent_frames += 1
        tally.sent_bytes += size + frame_header_bytes(size, masked=True)
        await asyncio.sleep(every)


async def _deflate_client(
    url: str,
    headers: list,
    tally: ClientTally,
    limiter: asyncio.Semaphore,
    ping: tuple[float, float] | None,
    ready: asyncio.Future,
) -> None:
    """One `websockets` connection offering permessage-deflate (the library's
    default offer: `permessage-deflate; client_max_window_bits`)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed as WsClosed
    from websockets.exceptions import InvalidHandshake

    ws = None
    pinger = None
    try:
        async with limiter:
            ws = await connect(
                url,
                additional_headers=headers,
                compression="deflate",
                ping_interval=None,  # the protocol's own ping, as the other clients
                max_queue=64,
                open_timeout=60,
                close_timeout=2,
            )
        await ws.recv()  # session.welcome
        tally.connected += 1
        if any(ext.name == "permessage-deflate" for ext in ws.protocol.extensions):
            tally.compressed += 1
            if not tally.extension:
                assert ws.response is not None
                tally.extension = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        ready.set_result(None)
        if ping is not None:
            pinger = asyncio.create_task(_deflate_pinger(ws, tally, *ping))
        while True:
            _count_received(tally, await ws.recv())
    except (OSError, InvalidHandshake, WsClosed, TimeoutError) as exc:
        tally.closed(exc, connected=ready.done())
    finally:
        if not ready.done():
            ready.set_result(None)
        if pinger is not None:
            pinger.cancel()
        if ws is not None:
            ws.transport.abort()  # told "stop", or closed: no closing handshake


async def _deflate_main(
    pipe: Connection, targets: list[tuple[str, list]], ping_every: float | None
) -> None:
    tally = ClientTally()
    limiter = asyncio.Semaphore(CONNECT_CONCURRENCY)
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in targets]
    tasks = []
    for n, ((url, headers), ready) in enumerate(zip(targets, readies, strict=True)):
        ping = None if ping_every is None else (n * ping_every / len(targets), ping_every)
        tasks.append(
            asyncio.create_task(_deflate_client(url, headers, tally, limiter, ping, ready))
        )
    await asyncio.gather(*readies)
    pipe.send(_connected_reply(tally))
    while (await loop.run_in_executor(None, pipe.recv)) == "mark":
        pipe.send(("mark", tally.counts(), tally.lost))
    for task in tasks:  # told "stop"
        task.cancel()
    await asyncio.wait(tasks, timeout=10)
    pipe.send(("tally", attrs.asdict(tally)))


def deflate_client_process(
    pipe: Connection,
    targets: list[tuple[str, list]],
    cpu: int | None,
    ping_every: float | None = None,
) -> None:
    """Like `client_process`, with `websockets` clients that offer permessage-deflate."""
    raise_nofile(len(targets) + 256)
    if cpu is not None:
        pin(0, [cpu])
    asyncio.run(_deflate_main(pipe, targets, ping_every))


# -- the run -----------------------------------------------------------------


@attrs.define
class Result:
    """One server's figures."""

    #: Connections open when the memory was sampled (opened minus lost by then).
    connections: int = 0
    opened: int = 0
    failed: int = 0
    rss_before: int = 0
    rss_after: int = 0
    published: int = 0
    publish_seconds: float = 0.0
    publish_errors: int = 0
    received: int = 0
    latencies: list[float] = attrs.Factory(list)
    cpu_s: float = 0.0
    connect_seconds: float = 0.0
    idle_cpu: float = 0.0
    loss_reason: str = ""
    #: Connections closed after they were connected: by the end of the idle
    #: window (the memory and idle CPU figures are then not of `connections`),
    #: and by the end of the run.
    lost_idle: int = 0
    lost: int = 0
    compressed: int = 0
    extension: str = ""

    @property
    def per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections if self.connections else 0.0

    @property
    def rate(self) -> float:
        return self.published / self.publish_seconds if self.publish_seconds else 0.0


def targets_for(
    server: ServerProcess, users: list[str], secret: str | None
) -> list[tuple[str, list]]:
    if secret is None:  # the bare server names the user in the path
        return [(f"{server.ws_url}?user={u}", []) for u in users]
    return [
        (server.ws_url, [("Authorization", f"Bearer {mint_token(secret, u, ttl_s=3600)}")])
        for u in users
    ]


def start_clients(
    targets, two_cpus: bool, ping_every: float | None = None, deflate: bool = False
) -> list[tuple[multiprocessing.Process, Connection]]:
    """Start the client processes holding `targets` (URL, headers) connections:
    trio-websocket clients, or `websockets` clients offering permessage-deflate."""
    context = multiprocessing.get_context("spawn")
    clients = []
    for k in range(WORKERS):
        parent, child = context.Pipe()
        process = context.Process(
            target=deflate_client_process if deflate else client_process,
            args=(child, targets[k::WORKERS], 1 if two_cpus else None, ping_every),
            daemon=True,
        )
        process.start()
        clients.append((process, parent))
    return clients


def gather(clients, kind: str, timeout: float) -> list[tuple]:
    replies = []
    for _process, pipe in clients:
        if not pipe.poll(timeout):
            raise RuntimeError(f"a client process sent no {kind!r} in {timeout:.0f} s")
        replies.append(pipe.recv())
    return replies


async def _publish_cutover(
    url: str, secret: str, users: list[str], rate: float, seconds: float, clients: int
) -> tuple[int, int, float]:
    """Send paced `createNotification` mutations; return (ok, errors, seconds)."""
    admin = mint_token(secret, "bench-admin", admin=True, ttl_s=3600)
    headers = {"Authorization": f"Bearer {admin}"}
    total = int(rate * seconds)
    slots = itertools.count()
    ok = errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal ok, errors
        for n in slots:
            if n >= total:
                return
            await trio.sleep_until(started + n / rate)
            variables = {"u": random.choice(users), "t": f"t={time.time():.6f}"}
            try:
                response = await client.post(
                    f"{url}/graphql", json={"query": MUTATION, "variables": variables}
                )
                body = response.json()
                if response.status_code == 200 and not body.get("errors"):
                    ok += 1
                else:
                    errors += 1
            except (httpx.HTTPError, ValueError):
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as client:
        # Warm up (query parsing, connections); unstamped texts are not measured.
        for n in range(min(20, len(users))):
            await client.post(
                f"{url}/graphql",
                json={"query": MUTATION, "variables": {"u": users[n], "t": "warm-up"}},
            )
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(worker, client)
    return ok, errors, trio.current_time() - started


def _wait_published(server: ServerProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log:
            if line.startswith("published "):
                return int(line.split()[1])
        time.sleep(0.05)
    raise RuntimeError("the bare server did not finish publishing:\n" + "".join(server.log[-30:]))


def stamped_so_far(clients) -> int:
    """Stamped events the client processes have received so far."""
    for _, pipe in clients:
        pipe.send("mark")
    return sum(reply[1][4] for reply in gather(clients, "mark", 30))


def lost_so_far(clients) -> int:
    """Connections the client processes have seen closed after their welcome."""
    for _, pipe in clients:
        pipe.send("mark")
    return sum(reply[2] for reply in gather(clients, "mark", 30))


def _drain(clients, published: int) -> None:
    """Wait (bounded) for the published events to reach the clients."""
    deadline = time.monotonic() + DRAIN_S
    while stamped_so_far(clients) < published and time.monotonic() < deadline:
        time.sleep(0.2)


def _measure(
    server: ServerProcess,
    users: list[str],
    secret: str | None,
    args,
    two_cpus: bool,
    deflate: bool = False,
) -> Result:
    result = Result()
    process = server.psutil()
    if two_cpus:
        pin(server.pid, [0])
    targets = targets_for(server, users, secret)
    # Warm up the accept path with a few connections, then take the baseline.
    warm = start_clients(targets[:WORKERS], two_cpus, deflate=deflate)
    gather(warm, "connected", 60)
    for _, pipe in warm:
        pipe.send("stop")
    gather(warm, "tally", 30)
    time.sleep(1.0)
    result.rss_before = sample(process).rss

    connecting = time.perf_counter()
    clients = start_clients(targets, two_cpus, PING_EVERY_S, deflate=deflate)
    replies = gather(clients, "connected", 60 + len(users) / 50)
    result.opened = sum(r[1] for r in replies)
    result.failed = sum(r[2] for r in replies)
    result.connect_seconds = time.perf_counter() - connecting
    result.compressed = sum(r[4] for r in replies)
    result.extension = next((r[5] for r in replies if r[5]), "")
    failures = [r[3] for r in replies if r[3]]
    if failures:
        print(f"note: first connection failed or closed: {failures[0]}", file=sys.stderr)
    time.sleep(1.0)
    result.rss_after = sample(process).rss
    result.connections = result.opened - lost_so_far(clients)
    idle = sample(process)
    time.sleep(IDLE_WINDOW_S)
    result.idle_cpu = (sample(process).cpu_s - idle.cpu_s) / IDLE_WINDOW_S
    result.lost_idle = lost_so_far(clients)

    cpu_before = sample(process).cpu_s
    if secret is None:
        send_line(server, f"publish {args.rate} {args.duration}")
        result.published = _wait_published(server, args.duration * 3 + 30)
        result.publish_seconds = args.duration
    else:
        ok, errors, took = trio.run(
            _publish_cutover, server.url, secret, users, args.rate, args.duration, args.clients
        )
        result.published, result.publish_errors, result.publish_seconds = ok, errors, took
    result.cpu_s = sample(process).cpu_s - cpu_before
    _drain(clients, result.published)
    for _, pipe in clients:
        pipe.send("stop")
    for reply in gather(clients, "tally", 60):
        tally = reply[1]
        result.latencies.extend(tally["latencies"])
        result.lost += tally["lost"]
        result.loss_reason = result.loss_reason or tally["failure"]
    result.received = len(result.latencies)
    for process_, _ in clients:
        process_.join(10)
    return result


#: Cutover's phases by `--compression`: (column name, deflate).
PHASES = {
    "off": [("cutover", False)],
    "on": [("cutover deflate", True)],
    "both": [("cutover", False), ("cutover deflate", True)],
}


def _print(raw: Result, cuts: list[tuple[str, Result]], args, state: str) -> None:
    """One column per Cutover phase, the bare server, then each phase's ratio to it."""
    ratios = ["ratio" if name == "cutover" else f"ratio {name.split()[-1]}" for name, _ in cuts]
    compression = getattr(args, "compression", "off")
    table = Table(
        f"ws benchmark: {args.connections} connections, {args.rate:g} events/s targeted "
        f"for {args.duration:g} s, 127.0.0.1, compression {compression}",
        ["metric", *(name for name, _ in cuts), "raw trio-websocket", *ratios],
    )

    def row(name: str, figure) -> None:
        r = figure(raw)
        values = [figure(cut) for _, cut in cuts]
        table.add(name, *values, r, *(v / r if r else float("nan") for v in values))

    def stamped(q: float):
        return lambda res: percentile(res.latencies, q) * 1000

    row("connections held", lambda res: res.connections)
    row("connections opened", lambda res: res.opened)
    row("compression negotiated (connections)", lambda res: res.compressed)
    row("time to connect all (s)", lambda res: res.connect_seconds)
    row("server CPU with idle connections (%)", lambda res: res.idle_cpu * 100)
    row("RSS per idle connection (KiB)", lambda res: res.per_connection / 1024)
    row("server RSS with connections (MiB)", lambda res: res.rss_after / 2**20)
    row("connections lost by the end of the idle window", lambda res: res.lost_idle)
    row("connections lost by the end of the run", lambda res: res.lost)
    row("events published", lambda res: res.published)
    row("achieved publish rate (events/s)", lambda res: res.rate)
    row("events received", lambda res: res.received)
    for q in (50, 95, 99):
        row(f"p{q} publish-to-receive (ms)", stamped(q))
    row("max publish-to-receive (ms)", lambda res: max(res.latencies, default=0) * 1000)
    row(
        "server CPU per event (ms)",
        lambda res: res.cpu_s / res.published * 1000 if res.published else float("nan"),
    )
    table.notes.append(
        "cutover events are admin createNotification mutations over HTTP (the store "
        "commit is in the path); the bare server generates and stamps its own events"
    )
    table.notes.append(
        f"clients ping every {PING_EVERY_S:g} s as the protocol asks, spread evenly; "
        "connections are opened from two client processes; connections held and RSS "
        "are sampled 1 s after the last one connected; idle CPU is measured "
        f"over {IDLE_WINDOW_S:g} s before publishing; CPU per event is over the "
        "publishing window (idle work included)"
    )
    for name, cut in cuts:
        if name != "cutover":
            table.notes.append(
                f"{name}: cutover serve --ws-compression on, websockets {_websockets_version()} "
                "clients offering permessage-deflate (asyncio); the server answered "
                f"{cut.extension or 'no extension'!r}; the other columns use trio-websocket "
                "clients, which offer no extension"
            )
    for name, res in [*cuts, ("raw trio-websocket", raw)]:
        if res.failed or res.lost or res.publish_errors:
            table.notes.append(
                f"{name}: {res.failed} connections failed to connect, {res.lost} were closed "
                f"after connecting (first: {res.loss_reason[:120]}); "
                f"{res.publish_errors} publish errors"
            )
        if res.lost_idle:
            table.notes.append(
                f"{name}: {res.lost_idle} connections were closed before the idle window "
                "ended; memory per connection is over those held when it was sampled, "
                "and its idle CPU is not of idle connections"
            )
    table.notes.append(state)
    table.print()


def _websockets_version() -> str:
    try:
        from importlib.metadata import version

        return version("websockets")
    except Exception:
        return "?"


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table; 0 on success."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    connections = max(1, args.connections)
    phases = PHASES[getattr(args, "compression", "off")]
    nofile = connections + 1024
    raise_nofile(nofile)
    state = conditions()
    users = user_ids(connections)
    secret = secrets.token_hex(32)
    cuts: list[tuple[str, Result]] = []
    # This process publishes on CPU 1 with the clients; the server runs on CPU 0.
    with (
        pinned_self(1) as two_cpus,
        tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp,
    ):
        with start_raw(Path(tmp), nofile) as raw_server:
            raw = _measure(raw_server, users, None, args, two_cpus)
        for name, deflate in phases:
            workdir = Path(tmp) / name.replace(" ", "-")
            workdir.mkdir()
            extra = ["--ws-compression", "on" if deflate else "off"]
            with start_cutover(workdir, secret, extra, nofile=nofile) as server:
                cuts.append((name, _measure(server, users, secret, args, two_cpus, deflate)))
    _print(raw, cuts, args, state)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--compression", choices=sorted(PHASES), default="off")
    raise SystemExit(main(parser.parse_args()))
