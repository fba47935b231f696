"""The Trio publisher: the one hand-written publisher.

`gateway/_publish_sync.py` is generated from this file by `python -m
ops.unasync` (as httpcore generates its sync code from its async code); edit
this file, then run the generator; a test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
import trio

from gateway._publish_common import (
    PATH,
    Event,
    PublishError,
    PublishResult,
    _headers,
    _outcome,
    _retry_after,
    _retryable,
    _with_keys,
    default_backoff,
    event,
)

__all__ = ["TrioPublisher"]


class TrioPublisher:
    """The same publisher for Trio programs: `await pub.publish(...)`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: Callable[[int], float] = default_backoff,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/") + PATH
        self.retries = retries
        self.backoff = backoff
        self._headers = _headers(token, api_key)
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def publish(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        users: Iterable[str] | None = None,
        topic: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish one event; its result (each recipient's `seq`)."""
        body = event(type, payload, users=users, topic=topic, idempotency_key=idempotency_key)
        return (await self._send(body))[0]

    async def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        """Publish up to 1,000 events (see `event()`) all-or-nothing; their results in order."""
        return await self._send({"events": _with_keys(events)})

    async def _send(self, body: dict[str, Any]) -> list[PublishResult]:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._client.post(self.url, json=body, headers=self._headers)
            except httpx.TransportError as exc:
                if attempt > self.retries:
                    raise PublishError(0, "UNREACHABLE", repr(exc)) from exc
                await trio.sleep(self.backoff(attempt))
                continue
            if _retryable(response) and attempt <= self.retries:
                await trio.sleep(_retry_after(response) or self.backoff(attempt))
                continue
            return _outcome(response)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> TrioPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
