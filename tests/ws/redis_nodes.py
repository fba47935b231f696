"""Nodes of one cluster in one process: a hub and a Redis backplane each, over a
shared store and domain (the fakes of `conftest`), with real `Connection`s on
memory transports. And a redis-server of the test's own, for killing it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import coredis
import trio

from gateway.auth import Principal
from gateway.domain.viewer import Viewer
from gateway.events import Cursor
from gateway.ws.connection import Connection, WsSettings
from gateway.ws.hub import Hub
from gateway.ws.redis_backplane import RedisBackplane
from gateway.ws.transport import MemoryClient, MemoryTransport

from .conftest import FakeAuth, FakeDomain, FakeRollout, FakeStore, inline_runner

SHARED_REDIS = os.environ.get("CUTOVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class SharedStore(FakeStore):
    """The fake store with the batched head read the hub's tail uses."""

    def stream_heads(self, user_ids):
        return {u: Cursor(self.epoch, len(self.streams.get(u, ()))) for u in user_ids}


class Node:
    """One node: its hub, its backplane, its connections."""

    def __init__(
        self, cluster: Cluster, name: str, *, tail_interval_s: float = 0.3, **backplane: Any
    ) -> None:
        self.cluster = cluster
        self.name = name
        options = {"lease_ttl_s": 2.0, "reconnect_s": (0.02, 0.2), **backplane}
        self.backplane = RedisBackplane(cluster.url, node_id=name, prefix=cluster.prefix, **options)
        self.hub = Hub(
            domain=cluster.domain,
            backplane=self.backplane,
            presence_runner=inline_runner,
            rollout=cluster.rollout,
            store=cluster.store,
            tail_interval_s=tail_interval_s,
        )
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.connections: list[tuple[Connection, MemoryClient]] = []

    async def _run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                await self.hub.run(task_status=task_status)
        finally:
            self.stopped.set()

    async def connect(self, user_id: str) -> MemoryClient:
        transport = MemoryTransport(client_buffer=256)
        conn = Connection(
            transport,
            Principal(user_id, expires_at=time.time() + 3600),
            hub=self.hub,
            store=self.cluster.store,
            domain=self.cluster.domain,
            authenticator=FakeAuth(),
            rollout=self.cluster.rollout,
            settings=WsSettings(),
            runner=inline_runner,
            viewer_factory=lambda p: Viewer(p.user_id),
            node_id=self.name,
        )
        self.cluster.nursery.start_soon(conn.serve)
        self.connections.append((conn, transport.client))
        envelope = await transport.client.receive()
        assert envelope["type"] == "session.welcome"
        await self.backplane.settled()
        return transport.client

    async def disconnect(self, client: MemoryClient) -> None:
        for conn, other in self.connections:
            if other is client:
                client.close()
                await conn.closed.wait()
        self.connections = [(c, o) for c, o in self.connections if o is not client]

    async def stop(self) -> None:
        """A graceful stop: connections end, then the node leaves the cluster."""
        for conn, client in self.connections:
            client.close()
            await conn.closed.wait()
        self.connections.clear()
        self.scope.cancel()
        await self.stopped.wait()


class Cluster:
    """Nodes sharing a store, a domain and a Redis prefix (unique per test)."""

    def __init__(self, nursery: trio.Nursery, url: str) -> None:
        self.nursery = nursery
        self.url = url
        self.prefix = f"cutover-test-{uuid.uuid4().hex[:10]}:"
        self.store = SharedStore()
        self.domain = FakeDomain(self.store)
        self.rollout = FakeRollout()
        self.nodes: list[Node] = []

    async def node(self, name: str, **options: Any) -> Node:
        node = Node(self, name, **options)
        self.nodes.append(node)
        await self.nursery.start(node._run)
        return node

    def channel(self, kind: str, key: str = "") -> str:
        return f"{self.prefix}{kind}:{key}" if key else f"{self.prefix}{kind}"

    async def redis_keys(self, redis: coredis.Redis[str]) -> set[str]:
        return {key async for key in redis.scan_iter(match=f"{self.prefix}*")}


class RedisServer:
    """A redis-server of the test's own on a free port: kill it, start it again."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
