"""A node's store writer: one thread hand-off for a group of store jobs.

`run_store` hands each call to a worker thread and back, which is a good part
of a cheap write's cost (the publish API's commit). A `StoreWriter` takes
jobs from callers, and each time it wakes runs every job queued meanwhile
(up to `max_group`) one after the other in one `trio.to_thread.run_sync`
call, then hands each its own result or exception. Each job is its own
call, so each runs in its own transaction as before: writes of one store are
serialized by the store anyway (SQLite's write lock, PostgreSQL's write turn).

Its task is owned by the runtime's nursery (`run`); the queue is bounded
(`max_queued` callers wait for room). A caller cancelled before its job has
started leaves nothing behind (the job is skipped); once the job has started
the caller waits for it, as with `trio.to_thread.run_sync`, and gets its
result (the cancellation is delivered at its next checkpoint). When the
writer stops, jobs not started are refused with `StoreUnavailable`, and later
calls are refused at once.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import outcome
import trio

from gateway.errors import StoreUnavailable

__all__ = ["StoreWriter"]

T = TypeVar("T")

DEFAULT_MAX_QUEUED = 256
DEFAULT_MAX_GROUP = 64


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    WITHDRAWN = "withdrawn"  # its caller was cancelled before it started
    REFUSED = "refused"  # the writer stopped before it started


class _Job:
    __slots__ = ("call", "result", "state", "task")

    def __init__(self, call: Callable[[], Any], task: trio.lowlevel.Task) -> None:
        self.call = call
        self.task = task
        self.state = _State.QUEUED
        self.result: outcome.Outcome[Any] | None = None


class StoreWriter:
    """Runs blocking store jobs in groups, one thread hand-off per group."""

    def __init__(
        self, *, max_queued: int = DEFAULT_MAX_QUEUED, max_group: int = DEFAULT_MAX_GROUP
    ) -> None:
        if max_queued < 1 or max_group < 1:
            raise ValueError("max_queued and max_group must be at least 1")
        self.max_group = max_group
        self._slots = trio.Semaphore(max_queued)
        self._queue: deque[_Job] = deque()
        self._waiting = trio.lowlevel.ParkingLot()
        self._lock = threading.Lock()  # a job's state, between callers and the worker thread
        self._limiter = trio.CapacityLimiter(1)
        self._running = False
        self._closed = False
        self.groups = 0  # groups run (a figure for tests and benchmarks)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take and run jobs until cancelled; then refuse those not started."""
        if self._running or self._closed:
            raise RuntimeError("a store writer runs once")
        self._running = True
        group: list[_Job] = []
        try:
            task_status.started()
            while True:
                while not self._queue:
                    await self._waiting.park()
                group = [
                    self._queue.popleft() for _ in range(min(self.max_group, len(self._queue)))
                ]
                await trio.to_thread.run_sync(self._run_group, group, limiter=self._limiter)
                self.groups += 1
                self._deliver(group)
                group = []
        finally:
            self._closed = True
            self._deliver(group)  # a group whose thread ran before a cancellation came through
            for job in [*group, *self._queue]:
                with self._lock:
                    refuse = job.state is _State.QUEUED
                    if refuse:
                        job.state = _State.REFUSED
                if refuse:
                    refusal = StoreUnavailable("the store writer has stopped")
                    trio.lowlevel.reschedule(job.task, outcome.Error(refusal))
            self._queue.clear()

    @property
    def queued(self) -> int:
        """Jobs waiting for the writer (withdrawn ones included until it passes them)."""
        return len(self._queue)

    @staticmethod
    def _deliver(group: list[_Job]) -> None:
        for job in group:
            if job.state is _State.DONE and job.result is not None:
                result, job.result = job.result, None
                trio.lowlevel.reschedule(job.task, result)

    def _run_group(self, group: list[_Job]) -> None:
        """In the worker thread: each job not withdrawn, in order."""
        for job in group:
            with self._lock:
                if job.state is not _State.QUEUED:
                    continue
                job.state = _State.RUNNING
            job.result = outcome.capture(job.call)
            job.state = _State.DONE

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` run by the writer; its result, or its exception raised here."""
        await self._slots.acquire()
        try:
            if self._closed or not self._running:
                raise StoreUnavailable("the store writer is not running")
            job = _Job(partial(fn, *args), trio.lowlevel.current_task())
            self._queue.append(job)
            self._waiting.unpark_all()

            def abort(_: Any) -> trio.lowlevel.Abort:
                with self._lock:
                    if job.state is _State.QUEUED:
                        job.state = _State.WITHDRAWN
                        return trio.lowlevel.Abort.SUCCEEDED
                return trio.lowlevel.Abort.FAILED  # started: wait for it

            result: T = await trio.lowlevel.wait_task_rescheduled(abort)
            return result
        finally:
            self._slots.release()
