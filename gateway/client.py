"""One small client of both paths, for Trio programs: the parity harness, the
benchmarks, the operator CLI and the tests share it.

    async with httpx.AsyncClient() as http:
        polling = GraphQL(http, "http://127.0.0.1:8080", token)
        data = await polling.query("{ unreadNotificationCount }")
        ticket = await polling.ticket()
    async with connect_session("ws://127.0.0.1:8080/ws", ticket=ticket) as session:
        welcome = await session.next_of("session.welcome")
        pong = await session.call("ping")

`Session` splits frames into envelopes, keeps them in order, and matches
replies to actions by id without losing the envelopes in between. Its
methods wait as long as it takes: bound them with `trio.fail_after`. (Backends
publishing events use `gateway.publish` instead; browsers use the SDK in
`clients/js`.)
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from contracts import encode_action, split_frame

__all__ = ["GraphQL", "GraphQLFailed", "Session", "connect_session"]

_ids = itertools.count(1)


class GraphQLFailed(Exception):
    """A GraphQL request answered with errors (or a non-200 status)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class GraphQL:
    """`POST /graphql` (and tickets) for one user over a shared `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str | None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def post(self, query: str, variables: dict | None = None) -> tuple[int, Any]:
        """The raw answer: (HTTP status, JSON body)."""
        response = await self.http.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=self.headers,
        )
        return response.status_code, response.json()

    async def query(self, query: str, variables: dict | None = None) -> dict[str, Any]:
        """`data` of a request that succeeded; `GraphQLFailed` otherwise."""
        status, body = await self.post(query, variables)
        if status != 200 or not isinstance(body, dict) or body.get("errors"):
            raise GraphQLFailed(status, body)
        return body["data"]

    async def ticket(self) -> str:
        """A single-use WebSocket ticket for this user."""
        response = await self.http.post(f"{self.base_url}/realtime/tickets", headers=self.headers)
        if response.status_code != 201:
            raise GraphQLFailed(response.status_code, response.json())
        return response.json()["ticket"]


class Session:
    """One WebSocket session: envelopes in order, replies matched to actions."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.pending: deque[dict] = deque()
        self.frames = 0
        self.seen: list[dict] = []

    async def next(self) -> dict:
        """The next envelope (frames hold one or more, separated by newlines)."""
        while not self.pending:
            message = await self.ws.get_message()
            self.frames += 1
            text = message if isinstance(message, str) else message.decode()
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
        action_id = f"c-{next(_ids)}" if id == "auto" else id
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
            for _ in skipped:
                self.seen.pop()

    async def closed(self) -> int | None:
        """Read until the server closes; the close code."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code if closed.reason is not None else None


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
    session_class: type[Session] = Session,
) -> AsyncIterator[Session]:
    """A session on `url` (`ws://host/ws`) with a Bearer token or a ticket; with
    `resume=(epoch, last_seq)` the handshake resumes the stream."""
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
        yield session_class(ws)


# -- a node's metrics (the operator CLI, the benchmarks) ----------------------

__all__ += ["MetricSample", "metric_total", "scrape_metrics"]

#: One sample of `GET /metrics`: (name, labels, value); a counter's samples are
#: named with `_total` (and `_created`, the time it was made).
MetricSample = tuple[str, dict[str, str], float]


async def scrape_metrics(http: httpx.AsyncClient, base_url: str) -> list[MetricSample]:
    """Every sample a node serves at `GET /metrics` (Prometheus text format,
    parsed by `prometheus_client`); `httpx.HTTPStatusError` unless 200."""
    from prometheus_client.parser import text_string_to_metric_families

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
