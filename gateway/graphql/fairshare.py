"""A fair share of the GraphQL worker threads for each user.

GraphQL requests run in the `graphql` workload's worker threads (a
`CapacityLimiter` of 4, `gateway.store.runner`). Without more, one user with
four slow requests in flight holds every thread and everyone else waits. So
each user also takes one of their own `per_user` slots (2 by default) before
asking for a thread: a user's extra requests queue behind their own, and the
other threads stay free for other users. At most `max_waiting` requests of
one user wait for a slot; more are refused with `RATE_LIMITED`.

A user's slots exist only while that user has requests in flight, so the map
holds only active users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from gateway.errors import RateLimited

__all__ = ["FairShare"]


@attrs.define(eq=False)
class _UserSlots:
    semaphore: trio.Semaphore
    holders: int = 0  # requests running or waiting


class FairShare:
    """Per-user admission in front of a shared pool of worker threads."""

    def __init__(self, per_user: int = 2, max_waiting: int = 16) -> None:
        self.per_user = per_user
        self.max_waiting = max_waiting
        self._users: dict[str, _UserSlots] = {}

    def __len__(self) -> int:
        """Users with requests in flight."""
        return len(self._users)

    def in_flight(self, user: str) -> int:
        slots = self._users.get(user)
        return slots.holders if slots is not None else 0

    @asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[None]:
        """Hold one of `user`'s slots (waiting in order), or RateLimited when too many wait."""
        slots = self._users.get(user)
        if slots is None:
            slots = self._users[user] = _UserSlots(trio.Semaphore(self.per_user))
        if slots.holders >= self.per_user + self.max_waiting:
            raise RateLimited(
                f"too many GraphQL requests in flight for this user (at most {self.per_user} "
                f"run and {self.max_waiting} wait)",
                retry_after_ms=1000,
            )
        slots.holders += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.holders -= 1
            if slots.holders == 0:
                del self._users[user]
