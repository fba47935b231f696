"""A real cluster for chaos tests: N `cutover serve` processes on a PostgreSQL
database of their own, a redis-server of the test's own (so it can be stopped),
nginx in front (ops/nginx/cutover.conf), and a TCP proxy between the nodes and
PostgreSQL (so the database can become unreachable without stopping it).

Clients are trio-websocket connections through nginx that resume from their
last `seq` whenever they lose their socket, and count every gap and duplicate.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import attrs
import httpx
import psycopg
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gateway.client import websocket_url
from tests.browser.proxy import PushProxy as TcpForwarder
from tests.browser.proxy import free_port
from tests.e2e.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "examples" / "registry"
NGINX_SITE = ROOT / "ops" / "nginx" / "cutover.conf"
API_KEY = "chaos-publish-key"
PING_EVERY_S = 10.0
PG_URL = os.environ.get("CUTOVER_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test")


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class RedisServer:
    """A redis-server of the test's own on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Nginx:
    """nginx in the foreground with the shipped site configuration."""

    def __init__(self, workdir: Path, node_ports: list[int]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.node_ports = node_ports
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        site = NGINX_SITE.read_text()
        lines = []
        for line in site.splitlines():  # the shipped upstreams, with this cluster's ports
            if line.strip().startswith("server 127.0.0.1:808"):
                options = line.strip().split(" ", 2)[2]
                if "8081" in line:
                    lines += [f"    server 127.0.0.1:{p} {options}" for p in self.node_ports]
                continue
            lines.append(line)
        site = "\n".join(lines)
        assert site.count("server 127.0.0.1:") == 2 * len(self.node_ports)
        site = site.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        (self.workdir / "cutover.conf").write_text(site)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / name).mkdir(exist_ok=True)
        main = self.workdir / "nginx.conf"
        w = self.workdir
        main.write_text(
            f"""user root;
daemon off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    include {w}/cutover.conf;
}}
"""
        )
        return main

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen(
            [binary, "-c", str(self._config()), "-p", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def create_database() -> str:
    name = f"cutover_chaos_{secrets.token_hex(4)}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@attrs.define
class Cluster:
    """N nodes behind nginx on PostgreSQL (through `pg_proxy`) and Redis."""

    workdir: Path
    size: int = 3
    extra_args: list[str] = attrs.Factory(list)
    database: str = ""
    redis: RedisServer | None = None
    pg_proxy: TcpForwarder | None = None
    nginx: Nginx | None = None
    ports: list[int] = attrs.Factory(list)
    nodes: list[ServerProcess] = attrs.Factory(list)

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    @property
    def ws_url(self) -> str:
        return websocket_url(self.url)

    def token(self, user: str, **kwargs) -> str:
        return self.nodes[0].token(user, **kwargs)

    def start(self) -> Cluster:
        self.database = create_database()
        self.redis = RedisServer(self.workdir).start()
        # between the nodes and PostgreSQL, so the database can become unreachable
        self.pg_proxy = TcpForwarder(5432).start()
        self.ports = [free_port() for _ in range(self.size)]
        for index in range(self.size):
            self.nodes.append(self._node(index))
        for node in self.nodes:
            node.start(timeout=60)
        self.nginx = Nginx(self.workdir, self.ports).start()
        return self

    def readiness(self) -> list[int]:
        """Each node's `/readyz` status (0: no answer)."""
        statuses = []
        for port in self.ports:
            try:
                statuses.append(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=6).status_code)
            except httpx.HTTPError:
                statuses.append(0)
        return statuses

    def _node(self, index: int) -> ServerProcess:
        assert self.redis is not None and self.pg_proxy is not None
        store = f"postgresql://postgres@127.0.0.1:{self.pg_proxy.port}/{self.database}"
        workdir = self.workdir / f"node{index}"
        workdir.mkdir(exist_ok=True)
        args = [
            "--bind", f"127.0.0.1:{self.ports[index]}", "--store", store,
            "--redis-url", self.redis.url, "--node-id", f"chaos-{index}",
            "--registry", str(REGISTRY), "--publish-api-keys", API_KEY,
            *self.extra_args,
        ]  # fmt: skip
        return ServerProcess(workdir, args)

    def restart(self, index: int) -> ServerProcess:
        node = self._node(index)
        node.start(timeout=60)
        self.nodes[index] = node
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.nginx is not None:
            self.nginx.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg_proxy is not None:
            self.pg_proxy.stop()
        if self.database:
            drop_database(self.database)


# -- clients -------------------------------------------------------------------


@attrs.define
class Tally:
    """What one client saw of its user's stream."""

    user: str
    last_seq: int = 0
    epoch: str = ""
    received: int = 0
    duplicates: int = 0
    gaps: int = 0
    reconnects: int = 0
    silent_drops: int = 0
    refusals: Counter[str] = attrs.Factory(Counter)
    node_ids: list[str] = attrs.Factory(list)
    reconnect_delays_ms: list[int] = attrs.Factory(list)
    resumed_at: float | None = None
    lost_at: float | None = None


class ResumingClient:
    """One user's socket through the balancer: welcome, resume from the last seq,
    and on any loss reconnect (honouring `system.reconnect`'s delay, scaled by
    `delay_scale`) and resume again."""

    def __init__(self, cluster: Cluster, user: str, *, delay_scale: float = 1.0) -> None:
        self.cluster = cluster
        self.tally = Tally(user)
        self.delay_scale = delay_scale
        self.token = cluster.token(user)
        self.connected = trio.Event()

    async def run(self) -> None:
        backoff = 0.05
        while True:
            delay_ms: int | None = None
            try:
                delay_ms = await self._session()
                backoff = 0.05
            except HandshakeError as exc:
                self.tally.refusals[str(getattr(exc, "status_code", type(exc).__name__))] += 1
            except (OSError, ConnectionClosed, trio.BrokenResourceError):
                pass
            self.tally.lost_at = self.tally.lost_at or time.monotonic()
            if delay_ms is not None:
                self.tally.reconnect_delays_ms.append(delay_ms)
                await trio.sleep(delay_ms / 1000 * self.delay_scale)
            else:
                await trio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, 1.0)
            self.tally.reconnects += 1

    async def _session(self) -> int | None:
        headers = [("Authorization", f"Bearer {self.token}")]
        url = self.cluster.ws_url
        if self.tally.epoch:  # resume in the handshake: the replay comes before live events
            url += f"?epoch={self.tally.epoch}&lastSeq={self.tally.last_seq}"
        async with open_websocket_url(url, extra_headers=headers, message_queue_size=1024) as ws:
            while True:
                # Ping like a real client when the stream is quiet; a socket that
                # answers nothing for two pings is dropped and resumed.
                frame = None
                for _ in range(3):
                    with trio.move_on_after(PING_EVERY_S):
                        frame = await ws.get_message()
                    if frame is not None:
                        break
                    await ws.send_message(json.dumps({"v": 1, "action": "ping", "payload": {}}))
                if frame is None:
                    self.tally.silent_drops += 1
                    return None
                for line in frame.split("\n"):
                    envelope = json.loads(line)
                    kind = envelope["type"]
                    if kind == "session.welcome":
                        self.tally.node_ids.append(envelope["payload"]["nodeId"])
                        if not self.tally.epoch:
                            self.tally.epoch = envelope["payload"]["epoch"]
                            self.tally.last_seq = envelope["payload"]["seq"]
                            self._resumed()
                    elif kind == "session.resumed":
                        self._resumed()
                    elif kind == "session.reset":
                        raise AssertionError(f"{self.tally.user}: unexpected reset {envelope}")
                    elif kind == "system.reconnect":
                        return int(envelope["payload"]["retryAfterMs"])
                    if envelope.get("seq") is not None:
                        self._count(envelope["seq"])

    def _resumed(self) -> None:
        self.tally.resumed_at = time.monotonic()
        self.tally.lost_at = None
        self.connected.set()

    def _count(self, seq: int) -> None:
        if seq <= self.tally.last_seq:
            self.tally.duplicates += 1
            return
        if seq != self.tally.last_seq + 1:
            self.tally.gaps += 1
        self.tally.last_seq = seq
        self.tally.received += 1


class Publisher:
    """Steady durable traffic through the balancer: one event per request to a
    random user, at `rate` per second; remembers each user's head seq."""

    def __init__(self, cluster: Cluster, users: list[str], rate: float) -> None:
        self.cluster = cluster
        self.users = users
        self.rate = rate
        self.heads: dict[str, int] = {}
        self.accepted = 0
        self.refused: Counter[int] = Counter()
        self._ids = itertools.count()

    async def run(self, stop: trio.Event) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            interval = 1 / self.rate
            next_at = trio.current_time()
            while not stop.is_set():
                user = random.choice(self.users)
                await self.publish_one(http, user)
                next_at += interval
                await trio.sleep(max(0.0, next_at - trio.current_time()))

    async def publish_one(self, http: httpx.AsyncClient, user: str) -> int | None:
        n = next(self._ids)
        body = {
            "type": "sms.message.received",
            "payload": {"messageId": f"c{n}", "from": "+15550001111", "body": f"event {n}",
                        "receivedAt": "2026-12-01T00:00:00Z"},
            "to": {"users": [user]},
            "idempotencyKey": f"chaos-{n}",
        }  # fmt: skip
        for _attempt in range(20):  # retries are safe: the idempotency key dedupes
            try:
                response = await http.post(
                    f"{self.cluster.url}/realtime/events", json=body,
                    headers={"X-Api-Key": API_KEY},
                )  # fmt: skip
            except httpx.TransportError:
                await trio.sleep(0.1)
                continue
            if response.status_code == 202:
                seq = response.json()["results"][0]["recipients"][user]
                self.heads[user] = max(self.heads.get(user, 0), seq)
                self.accepted += 1
                return seq
            self.refused[response.status_code] += 1
            await trio.sleep(0.1)
        return None
