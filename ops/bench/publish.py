"""`cutover bench publish`: publish API throughput beside the GraphQL mutation path.

Starts one `cutover serve` on 127.0.0.1 (a temporary SQLite store, the
example registry, a generated API key) and, in one run, measures:

- publish API, single event per request: events/s accepted (202);
- publish API, batches of 100: events/s accepted;
- delivered: events/s received by WebSocket clients connected as the recipients
  (measured for both publish phases);
- the GraphQL mutation path (`createNotification`, which also appends to the
  recipient's stream): mutations/s.

Each phase runs for a quarter of `--duration` with `--clients` concurrent
HTTP clients; recipients are `min(--users, 50)` users. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import sys
import tempfile
import time
from pathlib import Path

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from contracts import split_frame
from gateway.auth import mint_token
from gateway.client import GraphQL, connect_session, websocket_url
from ops.bench._common import answered, publish_events, start_cutover

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "examples" / "registry"
BATCH = 100
MAX_RECIPIENTS = 50
SINGLE_TYPE = "feed.like.created"
BATCH_TYPE = "goal.activity.created"


@attrs.define
class Phase:
    """One measured workload."""

    name: str
    unit: str
    count: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@attrs.define
class Deliveries:
    """What the recipients' WebSocket clients received, by event type."""

    first: dict[str, float] = attrs.Factory(dict)
    last: dict[str, float] = attrs.Factory(dict)
    count: dict[str, int] = attrs.Factory(dict)
    connected: int = 0
    failure: str = ""
    changed: trio.Event = attrs.Factory(trio.Event)

    def record(self, event_type: str) -> None:
        now = time.perf_counter()
        self.first.setdefault(event_type, now)
        self.last[event_type] = now
        self.count[event_type] = self.count.get(event_type, 0) + 1
        self.poke()

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def _like(n: int) -> dict:
    return {"postId": "p1", "likerId": f"u{n}", "likeCount": n, "createdAt": "2026-02-17T10:00:00Z"}


def _activity(n: int) -> dict:
    return {
        "goalId": "g1",
        "activity": {"id": f"a{n}", "kind": "comment", "actorId": "planner",
                     "createdAt": "2026-02-17T10:00:00Z"},
    }  # fmt: skip


async def _drive(seconds: float, clients: int, step) -> tuple[int, int, float]:
    """Run `step(client, n) -> accepted count` from `clients` loops for `seconds`."""
    accepted = errors = 0
    counter = itertools.count()
    started = time.perf_counter()

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal accepted, errors
        while time.perf_counter() - started < seconds:
            try:
                # Await first, then add: `accepted += await ...` reads `accepted`
                # before the await and loses the other loops' counts meanwhile.
                got = await step(client, next(counter))
            except (httpx.HTTPError, ValueError):
                errors += 1
            else:
                accepted += got

    async with httpx.AsyncClient(timeout=30) as shared, trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(loop, shared)
    return accepted, errors, time.perf_counter() - started


async def _receive(ws_url: str, token: str, deliveries: Deliveries, task_status) -> None:
    started = False
    try:
        async with connect_session(ws_url, token=token, message_queue_size=1024) as session:
            deliveries.connected += 1
            task_status.started()
            started = True
            try:
                # Frames straight from the socket, not `Session.next()`: the session
                # would keep every one of the run's envelopes in `seen`.
                while True:
                    for envelope in split_frame(await session.ws.get_message()):
                        deliveries.record(envelope.get("type", ""))
            finally:
                deliveries.connected -= 1
                deliveries.poke()
    except (OSError, HandshakeError, ConnectionClosed) as exc:
        deliveries.failure = deliveries.failure or repr(exc)
        if not started:
            task_status.started()


async def _run(url: str, secret: str, api_key: str, args: argparse.Namespace) -> list[Phase]:
    seconds = max(1.0, args.duration / 4)
    clients = max(1, args.clients)
    users = [f"bench-{i}" for i in range(max(1, min(args.users, MAX_RECIPIENTS)))]
    ws_url = websocket_url(url)
    deliveries = Deliveries()

    async def single(client: httpx.AsyncClient, n: int) -> int:
        body = {"type": SINGLE_TYPE, "payload": _like(n), "to": {"users": [users[n % len(users)]]}}
        return 1 if await publish_events(client, url, api_key, body) else 0

    async def batch(client: httpx.AsyncClient, n: int) -> int:
        events = [
            {"type": BATCH_TYPE, "payload": _activity(i), "to": {"users": [users[i % len(users)]]}}
            for i in range(n * BATCH, (n + 1) * BATCH)
        ]
        return BATCH if await publish_events(client, url, api_key, {"events": events}) else 0

    admin = mint_token(secret, "bench-admin", admin=True)
    mutation = (
        'mutation($u: ID!, $t: String!) { createNotification(userId: $u, kind: "bench", '
        "text: $t) { id } }"
    )

    async def graphql(client: httpx.AsyncClient, n: int) -> int:
        variables = {"u": users[n % len(users)], "t": f"n{n}"}
        return 1 if await answered(GraphQL(client, url, admin), mutation, variables) else 0

    phases: list[Phase] = []
    async with trio.open_nursery() as nursery:
        for user in users:
            await nursery.start(_receive, ws_url, mint_token(secret, user), deliveries)
        for name, unit, step in (
            ("publish API, single", "events/s accepted", single),
            (f"publish API, batch of {BATCH}", "events/s accepted", batch),
            ("GraphQL createNotification", "mutations/s", graphql),
        ):
            accepted, errors, took = await _drive(seconds, clients, step)
            phases.append(Phase(name, unit, accepted, errors, took))
        receivers = deliveries.connected
        with trio.move_on_after(min(10.0, seconds)):  # let deliveries drain
            while deliveries.connected and any(
                deliveries.count.get(t, 0) < p.count
                for t, p in ((SINGLE_TYPE, phases[0]), (BATCH_TYPE, phases[1]))
            ):
                await deliveries.changed.wait()
        nursery.cancel_scope.cancel()
    for event_type, label in ((SINGLE_TYPE, "single"), (BATCH_TYPE, f"batch of {BATCH}")):
        count = deliveries.count.get(event_type, 0)
        took = deliveries.last.get(event_type, 0.0) - deliveries.first.get(event_type, 0.0)
        phases.append(
            Phase(
                f"delivered over WebSocket ({label}, {receivers} clients)",
                "events/s received",
                count,
                0,
                took,
            )
        )
    if deliveries.failure:
        print(f"note: a WebSocket client failed: {deliveries.failure}", file=sys.stderr)
    return phases


def _print(phases: list[Phase], args: argparse.Namespace) -> None:
    width = max(len(p.name) for p in phases)
    print(f"publish benchmark: {args.clients} HTTP clients, {args.duration:g} s, 127.0.0.1")
    print(f"{'workload':<{width}}  {'rate':>10}  {'unit':<18}  {'count':>8}  {'errors':>6}")
    for phase in phases:
        print(
            f"{phase.name:<{width}}  {phase.rate:>10.1f}  {phase.unit:<18}  "
            f"{phase.count:>8}  {phase.errors:>6}"
        )


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table; 0 on success."""
    secret = secrets.token_hex(32)
    api_key = f"pk_bench_{secrets.token_hex(16)}"
    with tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp:
        extra = ["--registry", str(REGISTRY), "--publish-api-keys", api_key]
        with start_cutover(Path(tmp), secret, extra) as server:

            async def bounded() -> list[Phase]:
                with trio.fail_after(args.duration * 2 + 60):
                    return await _run(server.url, secret, api_key, args)

            phases = trio.run(bounded)
    _print(phases, args)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=50)
    raise SystemExit(main(parser.parse_args()))
