"""One small client of both paths, for Trio programs: the parity harness, the
benchmarks, the operator CLI and the tests share it.

    async with httpx.AsyncClient() as http:
        polling = GraphQL(http, "http://127.0.0.1:8080", token)
        data = await polling.query("{ unreadNotificationCount }")
        ticket = await polling.ticket()
    async with connect_session("ws://127.0.0.1:8080/ws", ticket=ticket) as session:
        welcome = await session.next_of("session.welcome")
        pong = await session.call("ping")

`GraphQL` speaks for one user (or, with `token=`, for another on one request)
to one node, or to several nodes in turn. Every way a request can fail (no
answer, an error status, a body that is not JSON, GraphQL `errors`) raises
one `GraphQLFailed` (`post` alone gives the raw answer, for tests of errors).

`Session` splits frames into envelopes, keeps them in order, and matches
replies to actions by id without losing the envelopes in between; `Caller`
lets several tasks call actions over one session at once. A session that
cannot open, or ends without being asked to, raises one of `SESSION_ERRORS`.
The methods wait as long as it takes: bound them with `trio.fail_after`.
(Backends publishing events use `gateway.publish` instead; browsers use the
SDK in `clients/js`.)
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from contracts import ProtocolError, encode_action, split_frame

__all__ = [
    "SESSION_ERRORS",
    "Answer",
    "Caller",
    "GraphQL",
    "GraphQLFailed",
    "MetricSample",
    "Session",
    "connect_session",
    "metric_total",
    "scrape_metrics",
    "websocket_url",
]

_ids = itertools.count(1)

# A session refused at the handshake, closed, cut by the network, or sent a
# frame that is not the protocol: what a client survives by reconnecting.
SESSION_ERRORS: tuple[type[Exception], ...] = (
    ConnectionClosed,
    HandshakeError,
    OSError,
    ProtocolError,
)


def websocket_url(base_url: str) -> str:
    """The WebSocket endpoint (`ws://host/ws`, `wss://` under TLS) of a node's
    base URL (`http://host`, `https://host`)."""
    url = base_url.rstrip("/")
    for plain, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(plain):
            url = ws + url[len(plain) :]
            break
    return url + "/ws"


def _new_id() -> str:
    return f"c-{next(_ids)}"


class GraphQLFailed(Exception):
    """A GraphQL request that failed: `status` 0 when no answer came (then `body`
    says why), else the HTTP status and the body (JSON, or text when not JSON)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.status == 0:
            return str(self.body)
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        return f"HTTP {self.status}: {errors or self.body}"


def _body(response: httpx.Response) -> Any:
    """The JSON body of a response, or what it holds instead."""
    try:
        return response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]}"


@attrs.frozen(eq=False)
class Answer:
    """A GraphQL request that succeeded: its `data` and the HTTP response."""

    data: dict[str, Any]
    response: httpx.Response

    @property
    def size(self) -> int:
        """The response body's size in bytes."""
        return len(self.response.content)


class GraphQL:
    """`POST /graphql` (and tickets) over a shared `httpx.AsyncClient`: for the
    user of `token` (another with `token=` on a request), on the node at
    `base_url`, or on several nodes (a sequence of URLs) taking turns."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str | Sequence[str], token: str | None = None
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("no base URL")
        self.http = http
        self.base_urls = [url.rstrip("/") for url in urls]
        self.token = token
        self._turns = itertools.cycle(self.base_urls)

    def _target(self, path: str, token: str | None) -> tuple[str, dict[str, str]]:
        """The next node's URL of `path`, and the headers for `token` (or our own)."""
        bearer = self.token if token is None else token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return next(self._turns) + path, headers

    async def _post(
        self, query: str, variables: Mapping[str, Any] | None, token: str | None
    ) -> httpx.Response:
        url, headers = self._target("/graphql", token)
        return await self.http.post(
            url, json={"query": query, "variables": dict(variables or {})}, headers=headers
        )

    async def post(
        self, query: str, variables: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """The raw answer: (HTTP status, JSON body); transport errors are httpx's."""
        response = await self._post(query, variables, token)
        return response.status_code, response.json()

    async def request(
        self, query: str, variables: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> Answer:
        """The answer of a request that succeeded; `GraphQLFailed` otherwise."""
        try:
            response = await self._post(query, variables, token)
        except httpx.HTTPError as exc:
            raise GraphQLFailed(0, f"{type(exc).__name__}: {exc}") from exc
        body = _body(response)
        if (
            response.status_code != 200
            or not isinstance(body, dict)
            or body.get("errors")
            or not isinstance(body.get("data"), dict)
        ):
            raise GraphQLFailed(response.status_code, body)
        return Answer(body["data"], response)

    async def query(
        self, query: str, variables: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """`data` of a request that succeeded; `GraphQLFailed` otherwise."""
        return (await self.request(query, variables, token=token)).data

    async def ticket(self, *, token: str | None = None) -> str:
        """A single-use WebSocket ticket for this user (or the user of `token`)."""
        url, headers = self._target("/realtime/tickets", token)
        try:
            response = await self.http.post(url, headers=headers)
        except httpx.HTTPError as exc:
            raise GraphQLFailed(0, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 201:
            raise GraphQLFailed(response.status_code, _body(response))
        return response.json()["ticket"]


class Session:
    """One WebSocket session: envelopes in order, replies matched to actions.

    `seen` holds the envelopes handed out so far (the last `history` of them,
    when given: a long-lived session keeps few or none)."""

    def __init__(self, ws: WebSocketConnection, *, history: int | None = None) -> None:
        self.ws = ws
        self.pending: deque[dict] = deque()
        self.frames = 0
        self.received_bytes = 0  # of the frames' text, UTF-8
        self.seen: deque[dict] = deque(maxlen=history)

    async def next(self) -> dict:
        """The next envelope (frames hold one or more, separated by newlines)."""
        while not self.pending:
            message = await self.ws.get_message()
            text = message if isinstance(message, str) else message.decode()
            self.frames += 1
            self.received_bytes += len(text.encode())
            self.pending.extend(split_frame(text))
        envelope = self.pending.popleft()
        self.seen.append(envelope)
        return envelope

    async def next_of(self, *types: str) -> dict:
        """The next envelope of one of `types`, skipping others."""
        while True:
            envelope = await self.next()
            if envelope["type"] in types:
                return envelope

    async def send(
        self, action: str, payload: dict | None = None, *, id: str | None = "auto", v: int = 1
    ) -> str | None:
        """Send one action; its id (a fresh one unless given, None for none)."""
        action_id = _new_id() if id == "auto" else id
        await self.ws.send_message(encode_action(action, payload, id=action_id, v=v))
        return action_id

    async def send_raw(self, text: str) -> None:
        await self.ws.send_message(text)

    async def call(self, action: str, payload: dict | None = None) -> dict:
        """Send an action and return its reply, keeping other envelopes queued in order."""
        action_id = await self.send(action, payload)
        assert action_id is not None
        return await self.reply_to(action_id)

    async def reply_to(self, action_id: str) -> dict:
        """The reply to `action_id`; the envelopes before it stay queued (even on cancel)."""
        skipped: list[dict] = []
        try:
            while True:
                envelope = await self.next()
                if envelope.get("replyTo") == action_id:
                    return envelope
                skipped.append(envelope)
        finally:
            self.pending.extendleft(reversed(skipped))
            for _ in range(min(len(skipped), len(self.seen))):
                self.seen.pop()

    async def keep_alive(self, welcome: Mapping[str, Any]) -> None:
        """Ping at half the heartbeat interval the welcome's payload announces (at
        most once a second), until cancelled; the pongs are read as envelopes."""
        interval = max(1.0, float(welcome.get("heartbeatIntervalMs", 30_000)) / 2000)
        while True:
            await trio.sleep(interval)
            await self.send("ping")

    async def closed(self) -> int | None:
        """Read until the server closes; the close code."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code if closed.reason is not None else None


class Caller:
    """Actions called from several tasks at once over one session: `run`, in a task
    of its own, reads the session and hands each reply to its caller (the other
    envelopes are dropped)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._waiting: dict[str, trio.MemorySendChannel[dict]] = {}

    async def run(self) -> None:
        """Read the session until it ends (raising one of `SESSION_ERRORS`)."""
        while True:
            envelope = await self.session.next()
            reply_to = envelope.get("replyTo")
            waiting = self._waiting.pop(reply_to, None) if isinstance(reply_to, str) else None
            if waiting is not None:
                waiting.send_nowait(envelope)

    async def call(self, action: str, payload: dict | None = None) -> dict:
        """Send an action and return its reply (waiting as long as it takes)."""
        action_id = _new_id()
        send, receive = trio.open_memory_channel[dict](1)
        self._waiting[action_id] = send
        try:
            await self.session.send(action, payload, id=action_id)
            return await receive.receive()
        finally:
            self._waiting.pop(action_id, None)


@asynccontextmanager
async def connect_session(
    url: str,
    *,
    token: str | None = None,
    ticket: str | None = None,
    resume: tuple[str, int] | None = None,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    message_queue_size: int = 64,
    history: int | None = None,
    session_class: type[Session] = Session,
) -> AsyncIterator[Session]:
    """A session on `url` (`ws://host/ws`) with a Bearer token or a ticket; with
    `resume=(epoch, last_seq)` the handshake resumes the stream; `history` bounds
    the session's `seen`."""
    extra = list(headers or [])
    if token is not None:
        extra.append(("Authorization", f"Bearer {token}"))
    params: dict[str, Any] = {}
    if ticket is not None:
        params["ticket"] = ticket
    if resume is not None:
        params["epoch"], params["lastSeq"] = resume
    parts = [part for part in (urlencode(params), query) if part]
    target = url + ("?" + "&".join(parts) if parts else "")
    async with open_websocket_url(
        target,
        extra_headers=[(k.encode(), v.encode()) for k, v in extra],
        message_queue_size=message_queue_size,
    ) as ws:
        yield session_class(ws, history=history)


# -- a node's metrics (the operator CLI, the benchmarks) ----------------------

#: One sample of `GET /metrics`: (name, labels, value); a counter's samples are
#: named with `_total` (and `_created`, the time it was made).
MetricSample = tuple[str, dict[str, str], float]


async def scrape_metrics(http: httpx.AsyncClient, base_url: str) -> list[MetricSample]:
    """Every sample a node serves at `GET /metrics` (Prometheus text format,
    parsed by `prometheus_client`); `httpx.HTTPStatusError` unless 200."""
    response = await http.get(f"{base_url.rstrip('/')}/metrics")
    response.raise_for_status()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def metric_total(samples: list[MetricSample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when none):
    `metric_total(samples, "cutover_parity_audit_samples_total", outcome="audited")`."""
    wanted = labels.items()
    return sum(value for n, have, value in samples if n == name and wanted <= have.items())
