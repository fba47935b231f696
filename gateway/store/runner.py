"""Running blocking store and domain calls from Trio.

Each workload has a named `trio.CapacityLimiter`, created on first use, so
a burst of GraphQL requests cannot take every worker thread from the
WebSocket path's store calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

__all__ = ["LIMITS", "limiter_for", "run_store"]

T = TypeVar("T")

# Threads each workload may use at once; unnamed workloads get DEFAULT_LIMIT.
LIMITS: dict[str, int] = {"store": 8, "graphql": 4}
DEFAULT_LIMIT = 4

_limiters: dict[str, trio.CapacityLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(name: str) -> trio.CapacityLimiter:
    """The process-wide limiter of one workload."""
    with _limiters_lock:
        limiter = _limiters.get(name)
        if limiter is None:
            limiter = _limiters[name] = trio.CapacityLimiter(LIMITS.get(name, DEFAULT_LIMIT))
        return limiter


async def run_store(fn: Callable[..., T], *args: Any, limiter: str = "store", **kwargs: Any) -> T:
    """Run a blocking store or domain call in a worker thread of the named workload."""
    call = partial(fn, *args, **kwargs) if kwargs else partial(fn, *args)
    return await trio.to_thread.run_sync(call, limiter=limiter_for(limiter))
