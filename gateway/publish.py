"""Publishing from a backend: a small client of `POST /realtime/events`.

    from gateway.publish import Publisher

    with Publisher("https://realtime.example.com", api_key=KEY) as pub:
        pub.publish("sms.message.received", payload, users=["bob"])

`Publisher` is synchronous (httpx.Client); `TrioPublisher` has the same
methods as coroutines (httpx.AsyncClient on Trio). Every event gets an
idempotency key (a random one unless you pass yours), so a retry after a
connection error, a 502/503/504 or a 429 can never deliver an event twice:
the gateway answers a repeated key with the original result.

One source for both: `TrioPublisher` is written by hand
(`gateway/_publish_trio.py`) and `Publisher` is generated from it
(`gateway/_publish_sync.py`, by `python -m ops.unasync`).
"""

from gateway._publish_common import (
    Event,
    PublishError,
    PublishResult,
    default_backoff,
    event,
    new_key,
)
from gateway._publish_sync import Publisher
from gateway._publish_trio import TrioPublisher

__all__ = [
    "Event",
    "PublishError",
    "PublishResult",
    "Publisher",
    "TrioPublisher",
    "default_backoff",
    "event",
    "new_key",
]
