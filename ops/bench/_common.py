"""Shared pieces of the benchmarks: server processes, seeding, CPU pinning,
process measurements, percentiles, plain tables, and the few requests the
load generators send (GraphQL through `gateway.client`, the publish API).

Everything here runs in the load-generating process; the measured servers
are separate processes on 127.0.0.1, observed from outside with psutil.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import httpx
import psutil

from gateway.client import GraphQL, GraphQLFailed, websocket_url
from gateway.domain import ADMIN_SCOPE, Domain, Viewer
from gateway.store import open_store

__all__ = [
    "POLL_QUERY",
    "ROOT",
    "ProcessSample",
    "ServerProcess",
    "Table",
    "WireBytes",
    "answered",
    "conditions",
    "http_request_bytes",
    "http_response_bytes",
    "percentile",
    "pin",
    "pinned_self",
    "publish_events",
    "raise_nofile",
    "sample",
    "seed_users",
    "start_cutover",
    "start_peer",
    "start_raw",
    "user_ids",
]

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"serving on (http://127\.0\.0\.1:[0-9]+)")
RAW_LISTENING = re.compile(r"raw listening on ([0-9]+)")
PEER_LISTENING = re.compile(r"peer listening on ([0-9]+)")
POLL_QUERY = "{ unreadNotificationCount conversations { id unreadCount lastMessage { id body } } }"
#: Conversations each seeded user opens with its next neighbours (so each
#: user is in about twice as many), and notifications each user holds.
SEED_CONVERSATIONS = 2
SEED_NOTIFICATIONS = 3


def user_ids(count: int) -> list[str]:
    return [f"bench-{i}" for i in range(count)]


def seed_users(store_path: Path, count: int) -> list[str]:
    """Create `count` users, each in a few conversations with a message and
    holding a few notifications, directly in the store before the server starts."""
    store = open_store(f"sqlite:///{store_path}")
    domain = Domain(store)
    admin = Viewer("bench-admin", frozenset({ADMIN_SCOPE}))
    users = user_ids(count)
    try:
        for i, user in enumerate(users):
            viewer = Viewer(user)
            for k in range(1, SEED_CONVERSATIONS + 1):
                if count > 1:
                    other = users[(i + k) % count]
                    if other != user:
                        conversation = domain.create_conversation(viewer, [other]).value
                        domain.send_chat_message(viewer, conversation["id"], f"hello {k}")
            for k in range(SEED_NOTIFICATIONS):
                domain.create_notification(admin, user, "bench", f"seeded {k}")
    finally:
        store.close()
    return users


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted`; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def set_nofile(pid: int, wanted: int) -> None:
    """Raise another process's open-file limit (it is our child, same user)."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (target, hard))


def pin(pid: int, cpus: Iterable[int]) -> bool:
    """Pin a process to `cpus` when the machine has them; False when it cannot."""
    wanted = set(cpus)
    try:
        if not wanted <= set(range(os.cpu_count() or 1)):
            return False
        os.sched_setaffinity(pid, wanted)
    except (AttributeError, OSError):
        return False
    return True


@contextmanager
def pinned_self(cpu: int) -> Iterator[bool]:
    """Pin this process to `cpu` for the block (True if it could), then restore."""
    try:
        previous = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        yield False
        return
    done = pin(0, [cpu])
    try:
        yield done
    finally:
        if done:
            os.sched_setaffinity(0, previous)


@attrs.define
class ProcessSample:
    """CPU seconds (user + system) and resident memory of one process at a moment."""

    cpu_s: float
    rss: int
    at: float


def sample(process: psutil.Process) -> ProcessSample:
    """CPU time and RSS of a server: the process and its children (the workers of
    `cutover serve --workers N`; a worker that exits meanwhile is left out)."""
    cpu, rss = 0.0, 0
    for member in (process, *process.children(recursive=True)):
        try:
            times = member.cpu_times()
            cpu += times.user + times.system
            rss += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return ProcessSample(cpu, rss, time.perf_counter())


@attrs.define
class ServerProcess:
    """A measured server running as a child process; `url` once started."""

    popen: subprocess.Popen
    url: str
    log: list[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def ws_url(self) -> str:
        return websocket_url(self.url)

    def psutil(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn(
    command: list[str], pattern: re.Pattern[str], workdir: Path, nofile: int, stdin: bool = False
) -> ServerProcess:
    popen = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=workdir,
    )
    set_nofile(popen.pid, nofile)
    found: list[str] = []
    log: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            if len(log) < 2000:
                log.append(line)
            match = pattern.search(line)
            if match and not ready.is_set():
                found.append(match.group(1))
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.1):
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            popen.wait(5)
            raise RuntimeError(f"{command[2:4]} did not start:\n" + "".join(log[-40:]))
    return ServerProcess(popen, found[0], log)


def start_cutover(
    workdir: Path, secret: str, extra: Sequence[str] = (), nofile: int = 4096
) -> ServerProcess:
    """`cutover serve` on a free port over `workdir/bench.db`."""
    command = [
        sys.executable, "-m", "gateway.cli", "serve",
        "--bind", "127.0.0.1:0",
        "--store", f"sqlite:///{workdir / 'bench.db'}",
        "--jwt-secret", secret,
        "--max-connections-per-user", "1000",
        *extra,
    ]  # fmt: skip
    return _spawn(command, LISTENING, workdir, nofile)


def start_raw(workdir: Path, nofile: int = 4096) -> ServerProcess:
    """The bare trio-websocket server (`ops/bench/raw_ws_server.py`); `url` is
    its ws:// base, and it takes `publish RATE SECONDS` lines on stdin."""
    command = [sys.executable, "-m", "ops.bench.raw_ws_server"]
    server = _spawn(command, RAW_LISTENING, workdir, nofile, stdin=True)
    server.url = f"http://127.0.0.1:{server.url}"
    return server


def start_peer(workdir: Path, nofile: int = 4096) -> ServerProcess:
    """The asyncio `websockets` server (`ops/bench/peer_ws_server.py`), with the
    bare server's stdin commands; `url` is its ws:// base."""
    command = [sys.executable, "-m", "ops.bench.peer_ws_server"]
    server = _spawn(command, PEER_LISTENING, workdir, nofile, stdin=True)
    server.url = f"http://127.0.0.1:{server.url}"
    return server


def send_line(server: ServerProcess, line: str) -> None:
    assert server.popen.stdin is not None
    server.popen.stdin.write(line + "\n")
    server.popen.stdin.flush()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@attrs.define
class Table:
    """A plain text table printed to stdout."""

    title: str
    header: list[str]
    rows: list[list[str]] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    def add(self, *cells: object) -> None:
        self.rows.append([_cell(c) for c in cells])

    def render(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))
        ]
        lines = [self.title]
        for n, row in enumerate([self.header, *self.rows]):
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def print(self) -> None:
        print(self.render(), flush=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def conditions() -> str:
    """The machine's state when a benchmark starts, for the table's notes."""
    one, five, _ = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min) at start; "
        f"Python {sys.version.split()[0]}"
    )


def http_request_bytes(request) -> int:
    """Bytes of an HTTP/1.1 request on the wire (request line, headers, body)."""
    line = len(request.method) + len(request.url.raw_path) + len(b"  HTTP/1.1\r\n")
    headers = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
    return line + headers + 2 + len(request.content)


def http_response_bytes(response) -> int:
    """Bytes of an HTTP/1.1 response on the wire (status line, headers, body)."""
    line = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    headers = sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
    return line + headers + 2 + len(response.content)


# -- the requests the load generators send -----------------------------------


async def answered(polling: GraphQL, query: str, variables: dict | None = None) -> bool:
    """Post one GraphQL request (`gateway.client`); whether it was answered without
    errors. Transport errors and bodies that are not JSON propagate
    (`httpx.HTTPError`, `ValueError`): the load loops count them."""
    try:
        await polling.query(query, variables)
    except GraphQLFailed:
        return False
    return True


async def publish_events(http: httpx.AsyncClient, url: str, api_key: str, body: dict) -> bool:
    """Post `body` (one event, or `{"events": [...]}`) to the publish API; accepted (202)?

    Not `gateway.publish.TrioPublisher`: it gives every event an idempotency key
    and retries, so the server would also record each key and a refusal would
    be hidden, a different workload from the one docs/performance.md measures
    (events without keys, as many backends send them)."""
    response = await http.post(f"{url}/realtime/events", json=body, headers={"X-Api-Key": api_key})
    return response.status_code == 202


@attrs.define
class WireBytes:
    """An httpx response hook counting what crosses the wire per exchange (HTTP/1.1
    request and response lines, headers and bodies) and the response bodies alone:
    `httpx.AsyncClient(event_hooks={"response": [wire]})`; `counting` turns it on."""

    counting: bool = True
    exchanges: int = 0
    total: int = 0
    bodies: int = 0

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if self.counting:
            self.exchanges += 1
            self.total += http_request_bytes(response.request) + http_response_bytes(response)
            self.bodies += len(response.content)
