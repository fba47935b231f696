"""The synchronous publisher: GENERATED from `gateway/_publish_trio.py` by
`python -m ops.unasync`; do not edit (edit the Trio publisher, then run it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

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

__all__ = ["Publisher"]


class Publisher:
    """A synchronous publisher for one gateway (thread-safe like httpx.Client)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: Callable[[int], float] = default_backoff,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/") + PATH
        self.retries = retries
        self.backoff = backoff
        self._headers = _headers(token, api_key)
        self._client = client or httpx.Client(timeout=timeout)

    def publish(
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
        return self._send(body)[0]

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        """Publish up to 1,000 events (see `event()`) all-or-nothing; their results in order."""
        return self._send({"events": _with_keys(events)})

    def _send(self, body: dict[str, Any]) -> list[PublishResult]:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.post(self.url, json=body, headers=self._headers)
            except httpx.TransportError as exc:
                if attempt > self.retries:
                    raise PublishError(0, "UNREACHABLE", repr(exc)) from exc
                time.sleep(self.backoff(attempt))
                continue
            if _retryable(response) and attempt <= self.retries:
                time.sleep(_retry_after(response) or self.backoff(attempt))
                continue
            return _outcome(response)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
