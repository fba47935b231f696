"""Chaos: a three-node cluster (PostgreSQL, Redis, nginx) under steady durable
traffic loses a node, its Redis, its database, and is restarted node by node.
Each test prints its figures and asserts the guarantees: no seq lost, none
delivered twice, every client back."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter

import httpx
import pytest
import trio

from tests.chaos.cluster import Cluster, Publisher, ResumingClient

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, size=3, extra_args=["--grace-s", "5"]).start()
    yield cluster
    cluster.stop()


async def _connect_all(clients: list[ResumingClient], nursery: trio.Nursery) -> float:
    started = time.monotonic()
    for client in clients:
        nursery.start_soon(client.run)
    with trio.fail_after(120):
        for client in clients:
            await client.connected.wait()
    return time.monotonic() - started


async def _caught_up(clients: list[ResumingClient], publisher: Publisher, timeout: float) -> None:
    def behind() -> list[ResumingClient]:
        return [c for c in clients if c.tally.last_seq < publisher.heads.get(c.tally.user, 0)]

    with trio.move_on_after(timeout):
        while behind():
            await trio.sleep(0.1)
    late = behind()
    assert not late, [(c.tally, publisher.heads.get(c.tally.user)) for c in late[:3]]


def _assert_exact(clients: list[ResumingClient], publisher: Publisher) -> tuple[int, int]:
    gaps = sum(c.tally.gaps for c in clients)
    duplicates = sum(c.tally.duplicates for c in clients)
    received = sum(c.tally.received for c in clients)
    assert gaps == 0, [c.tally for c in clients if c.tally.gaps][:3]
    assert duplicates == 0, [c.tally for c in clients if c.tally.duplicates][:3]
    assert received == publisher.accepted
    for client in clients:
        assert client.tally.last_seq == publisher.heads.get(client.tally.user, 0)
    return received, gaps + duplicates


async def test_kill_9_one_node_every_client_resumes_on_another(cluster):
    users = [f"k9-{i}" for i in range(510)]
    clients = [ResumingClient(cluster, user) for user in users]
    publisher = Publisher(cluster, users, rate=60)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        connect_s = await _connect_all(clients, nursery)
        nursery.start_soon(publisher.run, stop)
        await trio.sleep(2)
        victim = "chaos-1"
        orphans = [c for c in clients if c.tally.node_ids[-1] == victim]
        killed_at = time.monotonic()
        cluster.nodes[1].process.kill()
        with trio.fail_after(90):
            while any(c.tally.resumed_at is None or c.tally.resumed_at < killed_at for c in orphans):
                await trio.sleep(0.05)
        last_resumed = max(c.tally.resumed_at for c in orphans) - killed_at
        await trio.sleep(2)
        stop.set()
        await _caught_up(clients, publisher, timeout=30)
        nursery.cancel_scope.cancel()
    received, _ = _assert_exact(clients, publisher)
    moved = Counter(c.tally.node_ids[-1] for c in orphans)
    print(
        f"\nkill -9 of 1 of 3 nodes: {len(clients)} clients connected in {connect_s:.1f} s; "
        f"{len(orphans)} on the killed node, every one resumed elsewhere within "
        f"{last_resumed:.2f} s ({dict(moved)}); {received} events received of "
        f"{publisher.accepted} accepted, 0 lost, 0 duplicated"
    )
    assert orphans and victim not in moved


async def test_redis_stopped_for_10_s_then_delivery_resumes_on_its_own(cluster):
    users = [f"rd-{i}" for i in range(120)]
    clients = [ResumingClient(cluster, user) for user in users]
    publisher = Publisher(cluster, users, rate=40)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await _connect_all(clients, nursery)
        nursery.start_soon(publisher.run, stop)
        await trio.sleep(2)
        assert cluster.redis is not None
        cluster.redis.stop()
        await trio.sleep(1)
        not_ready = cluster.readiness()
        await trio.sleep(9)
        cluster.redis.start()
        restarted = time.monotonic()
        with trio.fail_after(60):
            while cluster.readiness() != [200] * cluster.size:
                await trio.sleep(0.1)
        ready_s = time.monotonic() - restarted
        heads = dict(publisher.heads)
        await _caught_up(clients, _Frozen(heads), timeout=30)
        caught_up_s = time.monotonic() - restarted
        await trio.sleep(2)
        stop.set()
        await _caught_up(clients, publisher, timeout=30)
        nursery.cancel_scope.cancel()
    received, _ = _assert_exact(clients, publisher)
    print(
        f"\nRedis down 10 s under traffic: /readyz during the outage {not_ready}; every node "
        f"ready {ready_s:.2f} s after Redis came back, every client caught up after "
        f"{caught_up_s:.2f} s; {received} events received of {publisher.accepted}, 0 lost"
    )
    assert 503 in not_ready


def _nginx_errors(cluster: Cluster) -> list[tuple[str, int]]:
    """What nginx complained about, by kind (for a failing test's report)."""
    lines = (cluster.workdir / "error.log").read_text().splitlines()
    kinds = Counter(re.sub(r"[0-9]+", "N", line.split("] ", 1)[-1].split(",")[0]) for line in lines)
    return kinds.most_common(8)


class _Frozen:
    def __init__(self, heads: dict[str, int]) -> None:
        self.heads = heads


async def test_postgresql_unreachable_for_5_s_fails_clearly_and_recovers(cluster):
    users = [f"pg-{i}" for i in range(40)]
    clients = [ResumingClient(cluster, user) for user in users]
    publisher = Publisher(cluster, users, rate=20)
    async with trio.open_nursery() as nursery:
        await _connect_all(clients, nursery)
        async with httpx.AsyncClient(timeout=10) as http:
            for user in users[:5]:
                await publisher.publish_one(http, user)
            assert cluster.pg_proxy is not None
            cluster.pg_proxy.stop()
            cut_at = time.monotonic()
            statuses: Counter[int] = Counter()
            bodies = []
            admin = cluster.token("pg-admin", admin=True)
            while time.monotonic() - cut_at < 5:
                response = await http.post(
                    f"{cluster.url}/realtime/events",
                    json={"type": "sms.message.received", "to": {"users": [users[0]]},
                          "payload": {"messageId": "down", "from": "+15550001111",
                                      "body": "x", "receivedAt": "2026-12-01T00:00:00Z"}},
                    headers={"X-Api-Key": "chaos-publish-key"},
                )  # fmt: skip
                statuses[response.status_code] += 1
                mutation = await http.post(
                    f"{cluster.url}/graphql",
                    json={"query": 'mutation { createNotification(userId: "pg-1", kind: "x", '
                          'text: "down") { id } }'},
                    headers={"Authorization": f"Bearer {admin}"},
                )  # fmt: skip
                statuses[mutation.status_code] += 1
                bodies.append(mutation.json())
                await trio.sleep(0.2)
            not_ready = cluster.readiness()
            cluster.pg_proxy.start()
            restored = time.monotonic()
            with trio.fail_after(60):
                while cluster.readiness() != [200] * cluster.size:
                    await trio.sleep(0.1)
            ready_s = time.monotonic() - restored
            seq = await publisher.publish_one(http, users[0])
        await _caught_up(clients, publisher, timeout=30)
        nursery.cancel_scope.cancel()
    print(
        f"\nPostgreSQL unreachable 5 s: answers during the outage {dict(statuses)}, /readyz "
        f"{not_ready}; ready again {ready_s:.2f} s after it came back; the next publish got "
        f"seq {seq} (contiguous)"
    )
    assert set(statuses) <= {503}, (statuses, bodies[:2])
    assert not_ready == [503] * cluster.size
    # no partial write: the refused publishes took no seq
    assert seq == publisher.heads[users[0]] and seq == 1 + sum(1 for u in users[:5] if u == users[0])
    _assert_exact(clients, publisher)


async def test_rolling_restart_no_gap_and_reconnects_spread_over_the_jitter_window(cluster):
    users = [f"rr-{i}" for i in range(150)]
    # delays from system.reconnect (1 to 30 s) are honoured at a tenth of their length
    clients = [ResumingClient(cluster, user, delay_scale=0.1) for user in users]
    publisher = Publisher(cluster, users, rate=30)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await _connect_all(clients, nursery)
        nursery.start_soon(publisher.run, stop)
        for index in range(cluster.size):
            await trio.sleep(1)
            node = cluster.nodes[index]
            node.signal()
            code = await trio.to_thread.run_sync(node.wait, 30)
            assert code == 0, "".join(node.log[-30:])
            await trio.to_thread.run_sync(cluster.restart, index)
        await trio.sleep(4)
        stop.set()
        try:
            await _caught_up(clients, publisher, timeout=60)
        except AssertionError:
            print("nginx errors:", _nginx_errors(cluster))
            raise
        nursery.cancel_scope.cancel()
    received, _ = _assert_exact(clients, publisher)
    delays = [d for c in clients for d in c.tally.reconnect_delays_ms]
    silent = sum(c.tally.silent_drops for c in clients)
    buckets = Counter(min(d // 5000, 5) for d in delays)
    histogram = "  ".join(
        f"{b * 5}-{b * 5 + 5}s: {buckets.get(b, 0)}" for b in range(6)
    )
    print(
        f"\nrolling restart of 3 nodes: {len(delays)} system.reconnect delays, median "
        f"{statistics.median(delays) / 1000:.1f} s; histogram {histogram}; {received} events "
        f"received of {publisher.accepted}, 0 lost, 0 duplicated; {silent} sockets went silent"
    )
    assert silent == 0
    assert len(delays) >= len(users)
    assert len({d // 5000 for d in delays}) >= 4  # spread over the window, not bunched
