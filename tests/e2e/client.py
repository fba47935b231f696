"""Clients of both paths for end-to-end tests: GraphQL over httpx, WebSocket over trio-websocket."""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from contracts import encode_action, split_frame

_ids = itertools.count(1)


async def gql(
    url: str,
    token: str | None,
    query: str,
    variables: dict | None = None,
    *,
    expect_errors: bool = False,
) -> dict[str, Any]:
    """POST /graphql; returns `data` (or the whole body when `expect_errors`)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
    body = response.json()
    if expect_errors:
        body["status"] = response.status_code
        return body
    assert response.status_code == 200, body
    assert "errors" not in body, body["errors"]
    return body["data"]


class WsClient:
    """A WebSocket client that splits frames into envelopes and matches replies."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.pending: deque[dict] = deque()
        self.frames = 0
        self.seen: list[dict] = []

    async def next(self, timeout: float = 10.0) -> dict:
        with trio.fail_after(timeout):
            while not self.pending:
                message = await self.ws.get_message()
                self.frames += 1
                self.pending.extend(split_frame(message))
        envelope = self.pending.popleft()
        self.seen.append(envelope)
        return envelope

    async def next_of(self, *types: str, timeout: float = 10.0) -> dict:
        """The next envelope of one of `types`, skipping others."""
        with trio.fail_after(timeout):
            while True:
                envelope = await self.next(timeout)
                if envelope["type"] in types:
                    return envelope

    async def send(
        self, action: str, payload: dict | None = None, *, id: str | None = "auto", v: int = 1
    ) -> str | None:
        action_id = f"c-{next(_ids)}" if id == "auto" else id
        await self.ws.send_message(encode_action(action, payload, id=action_id, v=v))
        return action_id

    async def send_raw(self, text: str) -> None:
        await self.ws.send_message(text)

    async def call(self, action: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
        """Send an action and return its reply, keeping other envelopes queued in order."""
        action_id = await self.send(action, payload)
        return await self.reply_to(action_id, timeout)

    async def reply_to(self, action_id: str, timeout: float = 10.0) -> dict:
        skipped = []
        try:
            with trio.fail_after(timeout):
                while True:
                    envelope = await self.next(timeout)
                    if envelope.get("replyTo") == action_id:
                        return envelope
                    skipped.append(envelope)
        finally:
            self.pending.extendleft(reversed(skipped))
            for _ in skipped:
                self.seen.pop()

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; returns the close code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code


def ws_connect(
    server,
    user: str | None = None,
    *,
    token: str | None = None,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    message_queue_size: int = 64,
):
    """An async context manager yielding a `WsClient` for `user` (Bearer header)."""
    extra = list(headers or [])
    if user is not None:
        extra.append(("Authorization", f"Bearer {token or server.token(user)}"))
    url = server.ws_url + (f"?{query}" if query else "")

    class _Ctx:
        async def __aenter__(self) -> WsClient:
            self._cm = open_websocket_url(
                url, extra_headers=extra, message_queue_size=message_queue_size
            )
            ws = await self._cm.__aenter__()
            return WsClient(ws)

        async def __aexit__(self, *exc) -> bool | None:
            return await self._cm.__aexit__(*exc)

    return _Ctx()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
