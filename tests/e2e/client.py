"""The end-to-end tests' view of `gateway.client`: a node (or a cluster) in, a
session or GraphQL data out."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from gateway.client import GraphQL, GraphQLFailed, Session, connect_session

__all__ = ["WsClient", "dumps", "gql", "ws_connect"]


async def gql(
    url: str,
    token: str | None,
    query: str,
    variables: dict | None = None,
    *,
    expect_errors: bool = False,
) -> dict[str, Any]:
    """POST /graphql; returns `data` (or the whole body with its status when `expect_errors`)."""
    async with httpx.AsyncClient(timeout=30) as http:
        polling = GraphQL(http, url, token)
        if expect_errors:
            status, body = await polling.post(query, variables)
            body["status"] = status
            return body
        try:
            return await polling.query(query, variables)
        except GraphQLFailed as failed:
            raise AssertionError(failed.body) from None


class WsClient(Session):
    """A session whose reads give up after `timeout` seconds (10 by default)."""

    async def next(self, timeout: float = 10.0) -> dict:
        with trio.fail_after(timeout):
            return await super().next()

    async def next_of(self, *types: str, timeout: float = 10.0) -> dict:
        with trio.fail_after(timeout):
            return await super().next_of(*types)

    async def call(self, action: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
        with trio.fail_after(timeout):
            return await super().call(action, payload)

    async def reply_to(self, action_id: str, timeout: float = 10.0) -> dict:
        with trio.fail_after(timeout):
            return await super().reply_to(action_id)

    async def closed(self, timeout: float = 10.0) -> int | None:
        with trio.fail_after(timeout):
            return await super().closed()


def ws_connect(
    server,
    user: str | None = None,
    *,
    token: str | None = None,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    message_queue_size: int = 64,
):
    """A session for `user` (Bearer header) on `server`, as an async context manager."""
    return connect_session(
        server.ws_url,
        token=(token or server.token(user)) if user is not None else None,
        query=query,
        headers=headers,
        message_queue_size=message_queue_size,
        session_class=WsClient,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
