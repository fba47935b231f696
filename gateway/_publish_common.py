"""What both publishers share: events, results, errors and retry timing.

`gateway.publish` is the public module; `_publish_trio.TrioPublisher` is the
one hand-written publisher and `_publish_sync.Publisher` is generated from it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import httpx

__all__ = [
    "Event",
    "PublishError",
    "PublishResult",
    "default_backoff",
    "event",
    "new_key",
]

PATH = "/realtime/events"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0

Event = dict[str, Any]


class PublishError(Exception):
    """The gateway refused a publish (or could not be reached after every retry).

    `status` is the HTTP status (0 when no answer came), `code` the error
    code of the answer (`PAYLOAD_INVALID`, `UNAUTHORIZED`, ...), `path` the
    failing field such as `events[3].payload.goalId`.
    """

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (at {path})" if path else ""))
        self.status = status
        self.code = code
        self.message = message
        self.path = path


@attrs.frozen
class PublishResult:
    """What the gateway accepted for one event: each recipient's `seq`, or the topic."""

    type: str
    recipients: dict[str, int]
    topic: str | None
    idempotency_key: str | None
    replayed: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PublishResult:
        return cls(
            type=data["type"],
            recipients=dict(data.get("recipients") or {}),
            topic=data.get("topic"),
            idempotency_key=data.get("idempotencyKey"),
            replayed=bool(data.get("replayed", False)),
        )


def event(
    type: str,
    payload: Mapping[str, Any],
    *,
    users: Iterable[str] | None = None,
    topic: str | None = None,
    idempotency_key: str | None = None,
) -> Event:
    """One event as the API takes it; exactly one of `users` and `topic`."""
    if (users is None) == (topic is None):
        raise ValueError("give exactly one of users=[...] or topic='prefix:id'")
    to: dict[str, Any] = {"users": list(users)} if users is not None else {"topic": topic}
    return {
        "type": type,
        "payload": dict(payload),
        "to": to,
        "idempotencyKey": idempotency_key or new_key(),
    }


def new_key() -> str:
    return f"pub_{uuid.uuid4().hex}"


def _with_keys(events: Sequence[Event]) -> list[Event]:
    return [e if e.get("idempotencyKey") else {**e, "idempotencyKey": new_key()} for e in events]


def _headers(token: str | None, api_key: str | None) -> dict[str, str]:
    if (token is None) == (api_key is None):
        raise ValueError("give exactly one of token= (a JWT with the publish scope) or api_key=")
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    return {"X-Api-Key": api_key or ""}


def default_backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (1, 2, ...): exponential with jitter, at most 5 s."""
    return min(5.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        try:
            ms = response.json().get("error", {}).get("retryAfterMs")
        except (ValueError, AttributeError):
            return None
        return min(MAX_RETRY_AFTER_S, ms / 1000) if isinstance(ms, int | float) else None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        return None


def _outcome(response: httpx.Response) -> list[PublishResult]:
    """The results of a 202, or the PublishError of any other answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 202 and isinstance(body, dict):
        return [PublishResult.from_json(r) for r in body["results"]]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        raise PublishError(
            response.status_code,
            str(error.get("code", "")),
            str(error.get("message", "")),
            error.get("path"),
        )
    raise PublishError(response.status_code, "HTTP_ERROR", response.text[:200])


def _retryable(response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUSES
