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
   clients: receive wall time minus the wall time stamped at publish;
3. on Cutover, the same through the publish API (one event per request, paced
   to `--rate`), then the publish API in batches of 100 as fast as
   `--clients` HTTP clients send them; the floors generate events at the same
   rate, then at 15,000 events/s (the design's bar for batches);
4. broadcast: `--broadcasts` `system.notice` envelopes to every connection, one
   a second (Cutover: admin `broadcastNotice` mutations), and the time from
   each notice's stamp to its last receipt;
5. on Cutover, the standard polling query for seeded users (`--clients` HTTP
   clients for `--duration` seconds): server CPU per poll.

Three servers in one run: Cutover, the bare trio-websocket server (the floor
of this stack) and the asyncio `websockets` server
(`ops/bench/peer_ws_server.py`, the Python peer), with the same clients.

`--compression` chooses Cutover's phases: `off` (the default) starts it as
is, with the same trio-websocket clients as the bare server; `on` starts it
with `--ws-compression on` and clients of the `websockets` library (its
asyncio client, in the client processes) that offer permessage-deflate, and
counts the connections on which the extension was negotiated; `both` runs the
two phases one after the other, each over a fresh store. trio-websocket never
offers the extension, so the bare server is always measured without it.

Publishing differs by necessity: the bare servers generate and stamp the
events themselves; on Cutover a publisher task in this process sends admin
`createNotification` GraphQL mutations, or publish API requests
(`--clients` concurrent HTTP clients, paced to the rate) whose payload carries
the stamp, so Cutover's latency includes the HTTP request, the GraphQL
execution or the publish API's checks, and the store commit. The
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
import os
import random
import secrets
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from multiprocessing.connection import Connection
from pathlib import Path

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from contracts import encode_action
from gateway.auth import mint_token
from gateway.client import GraphQL, Session, connect_session
from ops.bench._common import (
    ServerProcess,
    Table,
    answered,
    conditions,
    percentile,
    pin,
    pinned_self,
    publish_events,
    raise_nofile,
    sample,
    seed_users,
    send_line,
    start_cutover,
    start_peer,
    start_raw,
    user_ids,
)
from ops.bench.polling import poll_once, pollers

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
NOTICE = "mutation($t: String!) { broadcastNotice(text: $t) }"
ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "examples" / "registry"
REDIS_URL = os.environ.get("CUTOVER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 100
#: The floors' generated rate in the batch phase: the design's bar for batches.
BATCH_FLOOR_RATE = 15_000.0
BROADCAST_EVERY_S = 1.0
#: Users seeded (conversations, notifications) for the poll phase.
POLL_USERS = 200
#: Phases of targeted events, by the envelope type that carries their stamp.
STAMPED = {
    "notification.new": ("graphql", "notification", "text"),
    "feed.like.created": ("publish", None, "postId"),
    "goal.activity.created": ("batch", None, "goalId"),
    "system.notice": ("broadcast", None, "text"),
}


# -- client processes --------------------------------------------------------
#
# Each connection is a `gateway.client` session (`connect_session`: the
# handshake, the Bearer token), read frame by frame from its socket rather than
# envelope by envelope with `Session.next()`: the benchmark counts frames and
# their bytes as they arrive, and a session would keep every envelope of the
# run in `seen`, in processes holding thousands of connections.
#
# A target is (URL, token): the token of a Cutover user, or None for the bare
# servers, which name the user in the URL (`?user=`).

Target = tuple[str, str | None]


@attrs.define
class ClientTally:
    """What one client process saw; bytes include WebSocket frame headers."""

    connected: int = 0
    failed: int = 0  # never connected (no welcome)
    lost: int = 0  # closed after the welcome
    failure: str = ""
    #: Publish-to-receive latencies by phase ("targeted" on the floors and
    #: "graphql" on Cutover, "publish", "batch"); broadcast notices are in
    #: `notices`: stamp -> [receipts, latest latency].
    latencies: dict[str, list[float]] = attrs.Factory(dict)
    notices: dict[str, list[float]] = attrs.Factory(dict)
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
        stamped = sum(map(len, self.latencies.values()))
        return self.frames, self.bytes, self.sent_frames, self.sent_bytes, stamped

    def by_phase(self) -> dict[str, int]:
        """Stamped events received so far, by phase (broadcast: receipts)."""
        counts = {phase: len(values) for phase, values in self.latencies.items()}
        counts["broadcast"] = sum(int(n) for n, _ in self.notices.values())
        return counts

    def record(self, text: str, received: float) -> None:
        for line in text.split("\n"):
            if line:
                stamped = _stamp(json.loads(line))
                if stamped is None:
                    continue
                phase, stamp = stamped
                if phase == "broadcast":
                    seen = self.notices.setdefault(f"{stamp:.6f}", [0, 0.0])
                    seen[0] += 1
                    seen[1] = max(seen[1], received - stamp)
                else:
                    self.latencies.setdefault(phase, []).append(received - stamp)


def frame_header_bytes(size: int, masked: bool) -> int:
    """RFC 6455 frame header size for a payload of `size` bytes."""
    base = 2 if size < 126 else 4 if size < 65536 else 10
    return base + (4 if masked else 0)


def _stamp(envelope: dict) -> tuple[str, float] | None:
    """(phase, publish wall time) of a benchmark event; None for any other frame."""
    payload = envelope.get("payload") or {}
    kind = envelope.get("type")
    if kind == "bench.event":
        return payload.get("phase", "targeted"), payload["t"]
    if kind in STAMPED:
        phase, inner, field = STAMPED[kind]
        holder = payload.get(inner) or {} if inner else payload
        text = holder.get(field, "")
        if isinstance(text, str) and text.startswith("t="):
            return phase, float(text[2:])
    return None


def _ping(n: int) -> str:
    """The protocol's `ping` action, the n-th of a connection."""
    return encode_action("ping", {}, id=f"p-{n}")


async def _pinger(session: Session, tally: ClientTally, offset: float, every: float) -> None:
    """Send the protocol's `ping` every `every` seconds, first after `offset`."""
    await trio.sleep(offset)
    for n in itertools.count():
        message = _ping(n)
        size = len(message.encode())
        try:
            await session.send_raw(message)
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
        tally.record(frame, received)


async def _client(
    url: str, token: str | None, tally: ClientTally, limiter, ping, task_status
) -> None:
    started = False
    try:
        async with AsyncExitStack() as stack:
            async with limiter:  # bounds the handshakes only, not the connections
                session = await stack.enter_async_context(connect_session(url, token=token))
            await session.ws.get_message()  # session.welcome
            tally.connected += 1
            task_status.started()
            started = True
            if ping is None:
                await _receive(session.ws, tally)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pinger, session, tally, *ping)
                    try:
                        await _receive(session.ws, tally)
                    finally:
                        nursery.cancel_scope.cancel()
    except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
        tally.closed(exc, connected=started)
        if not started:
            task_status.started()


async def _client_main(pipe: Connection, targets: list[Target], ping_every: float | None) -> None:
    tally = ClientTally()
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)
    pipe_limiter = trio.CapacityLimiter(1)
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as connecting:
            for n, (url, token) in enumerate(targets):
                ping = None if ping_every is None else (n * ping_every / len(targets), ping_every)
                connecting.start_soon(
                    lambda u=url, t=token, p=ping: nursery.start(_client, u, t, tally, limiter, p)
                )
        pipe.send(_connected_reply(tally))
        while (await trio.to_thread.run_sync(pipe.recv, limiter=pipe_limiter)) == "mark":
            pipe.send(("mark", tally.counts(), tally.lost, tally.by_phase()))
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
    targets: list[Target],
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
#
# `gateway.client` is on trio-websocket, which never offers permessage-deflate;
# these clients are the `websockets` library's, on asyncio, for that phase only.


def _count_received(tally: ClientTally, frame: str | bytes) -> None:
    received = time.time()
    text = frame if isinstance(frame, str) else frame.decode()
    size = len(text.encode())
    tally.frames += 1
    # Inflated size: with permessage-deflate the bytes on the wire are fewer.
    tally.bytes += size + frame_header_bytes(size, masked=False)
    tally.record(text, received)


async def _deflate_pinger(ws, tally: ClientTally, offset: float, every: float) -> None:
    from websockets.exceptions import ConnectionClosed as WsClosed

    await asyncio.sleep(offset)
    for n in itertools.count():
        message = _ping(n)
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
    token: str | None,
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
                additional_headers={"Authorization": f"Bearer {token}"} if token else {},
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


async def _deflate_main(pipe: Connection, targets: list[Target], ping_every: float | None) -> None:
    tally = ClientTally()
    limiter = asyncio.Semaphore(CONNECT_CONCURRENCY)
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in targets]
    tasks = []
    for n, ((url, token), ready) in enumerate(zip(targets, readies, strict=True)):
        ping = None if ping_every is None else (n * ping_every / len(targets), ping_every)
        tasks.append(asyncio.create_task(_deflate_client(url, token, tally, limiter, ping, ready)))
    await asyncio.gather(*readies)
    pipe.send(_connected_reply(tally))
    while (await loop.run_in_executor(None, pipe.recv)) == "mark":
        pipe.send(("mark", tally.counts(), tally.lost, tally.by_phase()))
    for task in tasks:  # told "stop"
        task.cancel()
    await asyncio.wait(tasks, timeout=10)
    pipe.send(("tally", attrs.asdict(tally)))


def deflate_client_process(
    pipe: Connection,
    targets: list[Target],
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
class Phase:
    """One measured workload on one server: events published and what it cost."""

    published: int = 0
    seconds: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0
    received: int = 0
    latencies: list[float] = attrs.Factory(list)
    #: Broadcast only: each notice's (receipts, time to its last receipt).
    notices: list[tuple[int, float]] = attrs.Factory(list)

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_event_ms(self) -> float:
        return self.cpu_s / self.published * 1000 if self.published else float("nan")


@attrs.define
class Result:
    """One server's figures."""

    #: Connections open when the memory was sampled (opened minus lost by then).
    connections: int = 0
    opened: int = 0
    failed: int = 0
    rss_before: int = 0
    rss_after: int = 0
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
    #: "targeted" (GraphQL mutations on Cutover), "publish", "batch",
    #: "broadcast", "poll" (Cutover only).
    phases: dict[str, Phase] = attrs.Factory(dict)

    @property
    def per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections if self.connections else 0.0

    def phase(self, name: str) -> Phase:
        return self.phases.get(name) or Phase()


def targets_for(server: ServerProcess, users: list[str], secret: str | None) -> list[Target]:
    if secret is None:  # the bare server names the user in the path
        return [(f"{server.ws_url}?user={u}", None) for u in users]
    return [(server.ws_url, mint_token(secret, u, ttl_s=3600)) for u in users]


def start_clients(
    targets, two_cpus: bool, ping_every: float | None = None, deflate: bool = False
) -> list[tuple[multiprocessing.Process, Connection]]:
    """Start the client processes holding `targets` (URL, token) connections:
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
    url: str,
    secret: str,
    api_key: str,
    users: list[str],
    source: str,
    rate: float,
    seconds: float,
    clients: int,
) -> tuple[int, int, float]:
    """Send `source` requests ("graphql": admin `createNotification` mutations,
    "publish": one publish API event each, both paced to `rate`; "batch":
    publish API batches of 100 as fast as answered, for `seconds`; "broadcast":
    one admin `broadcastNotice` a second, `rate` of them); (ok, errors, seconds)."""
    admin_token = mint_token(secret, "bench-admin", admin=True, ttl_s=3600)
    total = int(rate * seconds) if source in ("graphql", "publish") else 0
    slots = itertools.count()
    ok = errors = 0

    def stamp() -> str:
        return f"t={time.time():.6f}"

    async def send(client: httpx.AsyncClient, n: int) -> int:
        if source == "graphql":
            variables = {"u": random.choice(users), "t": stamp()}
            return 1 if await answered(admin, MUTATION, variables) else 0
        if source == "broadcast":
            return 1 if await answered(admin, NOTICE, {"t": stamp()}) else 0
        if source == "publish":
            body = _like_event(random.choice(users), stamp())
            return 1 if await publish_events(client, url, api_key, body) else 0
        at = stamp()
        events = [_activity_event(random.choice(users), at, n * BATCH + i) for i in range(BATCH)]
        return BATCH if await publish_events(client, url, api_key, {"events": events}) else 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal ok, errors
        for n in slots:
            if total:
                if n >= total:
                    return
                await trio.sleep_until(started + n / rate)
            elif trio.current_time() - started >= seconds:
                return
            try:
                got = await send(client, n)
            except (httpx.HTTPError, ValueError):
                errors += 1
                continue
            if got:
                ok += got
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        admin = GraphQL(client, url, admin_token)
        if source == "broadcast":
            started = trio.current_time()
            for n in range(int(rate)):
                await trio.sleep_until(started + n * BROADCAST_EVERY_S)
                try:
                    got = await send(client, n)
                except (httpx.HTTPError, ValueError):
                    got = 0
                ok, errors = ok + got, errors + (1 - got)
            return ok, errors, trio.current_time() - started
        # Warm up (query parsing, schemas, connections); unstamped events are not measured.
        for n in range(min(20, len(users))):
            if source == "graphql":
                await admin.post(MUTATION, {"u": users[n], "t": "warm-up"})
            else:
                await publish_events(client, url, api_key, _like_event(users[n], "warm-up"))
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(worker, client)
    return ok, errors, trio.current_time() - started


def _like_event(user: str, stamp: str) -> dict:
    payload = {"postId": stamp, "likerId": "bench", "likeCount": 1,
               "createdAt": "2026-02-17T10:00:00Z"}  # fmt: skip
    return {"type": "feed.like.created", "payload": payload, "to": {"users": [user]}}


def _activity_event(user: str, stamp: str, n: int) -> dict:
    activity = {"id": f"a{n}", "kind": "comment", "actorId": "bench",
                "createdAt": "2026-02-17T10:00:00Z"}  # fmt: skip
    payload = {"goalId": stamp, "activity": activity}
    return {"type": "goal.activity.created", "payload": payload, "to": {"users": [user]}}


async def _poll_cutover(
    url: str, secret: str, users: list[str], seconds: float, clients: int
) -> tuple[int, int, float]:
    """The standard polling query for random seeded users; (ok, errors, seconds)."""
    tokens = [mint_token(secret, u, ttl_s=3600) for u in users]
    ok = errors = 0

    async def loop(polling: list[GraphQL]) -> None:
        nonlocal ok, errors
        while trio.current_time() - started < seconds:
            try:
                good = await poll_once(random.choice(polling))
            except (httpx.HTTPError, ValueError):
                good = False
            ok, errors = ok + good, errors + (not good)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        polling = pollers(client, url, tokens)
        for user in polling[:10]:  # warm up
            await poll_once(user)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(loop, polling)
    return ok, errors, trio.current_time() - started


def _wait_logged(server: ServerProcess, word: str, timeout: float) -> int:
    """Wait for the bare server's `<word> N` line (each counted once); N."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n, line in enumerate(server.log):
            if line.startswith(f"{word} "):
                server.log[n] = f"(seen) {line}"
                return int(line.split()[1])
        time.sleep(0.05)
    raise RuntimeError(f"the bare server did not finish {word!r}:\n" + "".join(server.log[-30:]))


def _marks(clients) -> list[tuple]:
    for _, pipe in clients:
        pipe.send("mark")
    return gather(clients, "mark", 30)


def stamped_so_far(clients) -> int:
    """Stamped events the client processes have received so far."""
    return sum(reply[1][4] for reply in _marks(clients))


def lost_so_far(clients) -> int:
    """Connections the client processes have seen closed after their welcome."""
    return sum(reply[2] for reply in _marks(clients))


def received_in(clients, phase: str) -> int:
    """Stamped events of `phase` received so far (broadcast: receipts)."""
    return sum(reply[3].get(phase, 0) for reply in _marks(clients))


def _drain(clients, phase: str, expected: int) -> None:
    """Wait (bounded) for a phase's events to reach the clients."""
    deadline = time.monotonic() + DRAIN_S
    while received_in(clients, phase) < expected and time.monotonic() < deadline:
        time.sleep(0.2)


def _run_phase(server, process, clients, secret, api_key, users, source, args) -> Phase:
    """Publish one phase's events and measure the server's CPU meanwhile."""
    phase = Phase()
    connected = len(users)
    cpu_before = sample(process).cpu_s
    if secret is None:
        if source == "broadcast":
            send_line(server, f"broadcast {args.broadcasts} {BROADCAST_EVERY_S}")
            phase.published = _wait_logged(server, "broadcast", args.broadcasts * 3 + 30)
            phase.seconds = args.broadcasts * BROADCAST_EVERY_S
        else:
            rate = BATCH_FLOOR_RATE if source == "batch" else args.rate
            send_line(server, f"publish {rate} {args.duration} {source}")
            phase.published = _wait_logged(server, "published", args.duration * 3 + 30)
            phase.seconds = args.duration
    else:
        amount = args.broadcasts if source == "broadcast" else args.rate
        phase.published, phase.errors, phase.seconds = trio.run(
            _publish_cutover,
            server.url,
            secret,
            api_key,
            users,
            source,
            amount,
            args.duration,
            args.clients,
        )
    phase.cpu_s = sample(process).cpu_s - cpu_before
    expected = phase.published * (connected if source == "broadcast" else 1)
    _drain(clients, source, expected)
    return phase


def _measure(
    server: ServerProcess,
    users: list[str],
    secret: str | None,
    args,
    two_cpus: bool,
    deflate: bool = False,
    api_key: str = "",
    *,
    pin_server: bool = True,
) -> Result:
    result = Result()
    process = server.psutil()
    if two_cpus and pin_server:
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

    sources = ["graphql", "publish", "batch", "broadcast"] if secret else ["targeted", "batch"]
    if secret is None:
        sources.append("broadcast")
    for source in sources:
        if source == "broadcast" and not args.broadcasts:
            continue
        name = "targeted" if source == "graphql" else source
        result.phases[name] = _run_phase(
            server, process, clients, secret, api_key, users, source, args
        )
    if secret is not None and getattr(args, "poll", True):
        before = sample(process).cpu_s
        poll = Phase()
        poll.published, poll.errors, poll.seconds = trio.run(
            _poll_cutover, server.url, secret, users[:POLL_USERS], args.duration, args.clients
        )
        poll.cpu_s = sample(process).cpu_s - before
        result.phases["poll"] = poll
    for _, pipe in clients:
        pipe.send("stop")
    notices: dict[str, list[float]] = {}
    for reply in gather(clients, "tally", 60):
        tally = reply[1]
        for phase_name, values in tally["latencies"].items():
            name = "targeted" if phase_name == "graphql" else phase_name
            result.phases.setdefault(name, Phase()).latencies.extend(values)
        for stamp, (count, latest) in tally["notices"].items():
            seen = notices.setdefault(stamp, [0, 0.0])
            seen[0] += count
            seen[1] = max(seen[1], latest)
        result.lost += tally["lost"]
        result.loss_reason = result.loss_reason or tally["failure"]
    for phase in result.phases.values():
        phase.received = len(phase.latencies)
    if notices:
        broadcast = result.phases.setdefault("broadcast", Phase())
        broadcast.notices = [(int(n), latest) for n, latest in notices.values()]
        broadcast.received = sum(n for n, _ in broadcast.notices)
    for process_, _ in clients:
        process_.join(10)
    return result


#: Cutover's phases by `--compression`: (column name, deflate).
PHASES = {
    "off": [("cutover", False)],
    "on": [("cutover deflate", True)],
    "both": [("cutover", False), ("cutover deflate", True)],
}
FLOORS = ("raw trio-websocket", "websockets asyncio")


def _print(floors: list[Result], cuts: list[tuple[str, Result]], args, state: str) -> None:
    """One column per Cutover phase, the two floors, then each phase's ratio to the
    bare trio-websocket server."""

    ratios = ["ratio" if name == "cutover" else f"ratio {name.split()[-1]}" for name, _ in cuts]
    compression = getattr(args, "compression", "off")
    table = Table(
        f"ws benchmark: {args.connections} connections, {args.rate:g} events/s targeted "
        f"for {args.duration:g} s, 127.0.0.1, compression {compression}",
        ["metric", *(name for name, _ in cuts), *FLOORS[: len(floors)], *ratios],
    )

    def row(name: str, figure, floor_figure=None) -> None:
        floor_figure = floor_figure or figure
        r, *others = (floor_figure(f) for f in floors)
        values = [figure(cut) for _, cut in cuts]
        table.add(name, *values, r, *others, *(v / r if r else float("nan") for v in values))

    def of(phase: str, figure):
        return lambda res: figure(res.phase(phase))

    def q(value: float):
        return lambda p: percentile(p.latencies, value) * 1000

    def last_receipt(value: float):
        return lambda p: percentile([t for _, t in p.notices], value) * 1000

    def nan(_):
        return float("nan")

    row("connections held", lambda res: res.connections)
    row("connections opened", lambda res: res.opened)
    row("compression negotiated (connections)", lambda res: res.compressed)
    row("time to connect all (s)", lambda res: res.connect_seconds)
    row("server CPU with idle connections (%)", lambda res: res.idle_cpu * 100)
    row("RSS per idle connection (KiB)", lambda res: res.per_connection / 1024)
    row("server RSS with connections (MiB)", lambda res: res.rss_after / 2**20)
    row("connections lost by the end of the idle window", lambda res: res.lost_idle)
    row("connections lost by the end of the run", lambda res: res.lost)
    # Targeted events: GraphQL mutations on Cutover, generated events on the floors.
    row("events published", of("targeted", lambda p: p.published))
    row("achieved publish rate (events/s)", of("targeted", lambda p: p.rate))
    row("events received", of("targeted", lambda p: p.received))
    for value in (50, 95, 99):
        row(f"p{value} publish-to-receive (ms)", of("targeted", q(value)))
    row("max publish-to-receive (ms)", of("targeted", lambda p: max(p.latencies, default=0) * 1000))
    row("server CPU per event (ms)", of("targeted", lambda p: p.cpu_per_event_ms))
    # The publish API, one event per request (the floors: their targeted events).
    single = "publish API single"
    row(f"{single}: achieved rate (events/s)", of("publish", lambda p: p.rate),
        of("targeted", lambda p: p.rate))  # fmt: skip
    row(f"{single}: events received", of("publish", lambda p: p.received),
        of("targeted", lambda p: p.received))  # fmt: skip
    for value in (50, 99):
        row(f"{single}: p{value} publish-to-receive (ms)", of("publish", q(value)),
            of("targeted", q(value)))  # fmt: skip
    row(f"{single}: server CPU per event (ms)", of("publish", lambda p: p.cpu_per_event_ms),
        of("targeted", lambda p: p.cpu_per_event_ms))  # fmt: skip
    # Batches of 100 as fast as answered (the floors: generated at 15,000/s).
    batch = f"publish API batch of {BATCH}"
    row(f"{batch}: accepted (events/s)", of("batch", lambda p: p.rate))
    row(f"{batch}: events received", of("batch", lambda p: p.received))
    row(f"{batch}: events published", of("batch", lambda p: p.published))
    for value in (50, 99):
        row(f"{batch}: p{value} publish-to-receive (ms)", of("batch", q(value)))
    row(f"{batch}: server CPU per event (ms)", of("batch", lambda p: p.cpu_per_event_ms))
    # Broadcast: every connection, one notice a second.
    row("broadcast: notices sent", of("broadcast", lambda p: p.published))
    row("broadcast: receipts", of("broadcast", lambda p: p.received))
    row("broadcast: last receipt, median notice (ms)", of("broadcast", last_receipt(50)))
    row("broadcast: last receipt, worst notice (ms)", of("broadcast", last_receipt(100)))
    row("broadcast: server CPU per notice (ms)", of("broadcast", lambda p: p.cpu_per_event_ms))
    row("poll: requests/s", of("poll", lambda p: p.rate), nan)
    row("poll: server CPU per request (ms)", of("poll", lambda p: p.cpu_per_event_ms), nan)
    table.notes.append(
        "cutover's targeted events are admin createNotification mutations over HTTP, then "
        "publish API requests (feed.like.created, one event each), both paced to the rate; "
        f"batches of {BATCH} (goal.activity.created) go as fast as {args.clients} HTTP "
        "clients get answers; the store commit is in every path. The floors generate and "
        "stamp their own events (their publish API rows repeat their targeted events; "
        f"batches: generated at {BATCH_FLOOR_RATE:,.0f}/s); poll is Cutover's only"
    )
    table.notes.append(
        f"broadcast: system.notice to every connection, one a second (cutover: admin "
        "broadcastNotice mutations); last receipt is the time from a notice's stamp to "
        "its last receiving client (the two client processes share CPU 1); poll: the "
        f"standard polling query for {POLL_USERS} seeded users"
    )
    table.notes.append(
        f"clients ping every {PING_EVERY_S:g} s as the protocol asks, spread evenly; "
        "connections are opened from two client processes; connections held and RSS "
        "are sampled 1 s after the last one connected; idle CPU is measured "
        f"over {IDLE_WINDOW_S:g} s before publishing; CPU per event is over the "
        "publishing window (idle work included)"
    )
    for name, cut in cuts:
        if name.endswith(" nodes"):
            table.notes.append(
                f"{name}: cutover serve --workers {name.split()[1]} --redis-url (one port, the "
                "kernel spreads connections, the workers share the SQLite file and Redis); "
                "server CPU and RSS are over every worker and the supervisor; not pinned"
            )
        elif name != "cutover":
            table.notes.append(
                f"{name}: cutover serve --ws-compression on, websockets {_websockets_version()} "
                "clients offering permessage-deflate (asyncio); the server answered "
                f"{cut.extension or 'no extension'!r}; the other columns use trio-websocket "
                "clients, which offer no extension"
            )
    for name, res in [*cuts, *zip(FLOORS, floors, strict=False)]:
        errors = sum(p.errors for p in res.phases.values())
        if res.failed or res.lost or errors:
            table.notes.append(
                f"{name}: {res.failed} connections failed to connect, {res.lost} were closed "
                f"after connecting (first: {res.loss_reason[:120]}); {errors} publish errors"
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
    if not hasattr(args, "broadcasts"):
        args.broadcasts = 5
    connections = max(1, args.connections)
    phases = PHASES[getattr(args, "compression", "off")]
    nofile = connections + 1024
    raise_nofile(nofile)
    state = conditions()
    users = user_ids(connections)
    secret = secrets.token_hex(32)
    api_key = f"pk_bench_{secrets.token_hex(16)}"
    cuts: list[tuple[str, Result]] = []
    floors: list[Result] = []
    # This process publishes on CPU 1 with the clients; the server runs on CPU 0.
    with (
        pinned_self(1) as two_cpus,
        tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp,
    ):
        for start in (start_raw, start_peer):
            with start(Path(tmp), nofile) as floor:
                floors.append(_measure(floor, users, None, args, two_cpus))
        nodes = max(1, getattr(args, "nodes", 1))
        runs = [(name, deflate, 1) for name, deflate in phases]
        if nodes > 1:  # the same workload on N worker processes sharing Redis
            runs.append((f"cutover {nodes} nodes", False, nodes))
        for name, deflate, workers in runs:
            workdir = Path(tmp) / name.replace(" ", "-")
            workdir.mkdir()
            seed_users(workdir / "bench.db", min(POLL_USERS, connections))
            extra = [
                "--ws-compression", "on" if deflate else "off",
                "--registry", str(REGISTRY),
                "--publish-api-keys", api_key,
            ]  # fmt: skip
            if workers > 1:
                extra += [
                    "--workers", str(workers), "--redis-url", REDIS_URL,
                    "--redis-prefix", f"bench-{secrets.token_hex(4)}:",
                ]  # fmt: skip
            with start_cutover(workdir, secret, extra, nofile=nofile) as server:
                # N workers are spread over the cores by the kernel, not pinned
                result = _measure(
                    server, users, secret, args, two_cpus, deflate, api_key, pin_server=workers == 1
                )
                cuts.append((name, result))
    _print(floors, cuts, args, state)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--compression", choices=sorted(PHASES), default="off")
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=1)
    raise SystemExit(main(parser.parse_args()))
