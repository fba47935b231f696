"""`StoreWriter`: groups of store jobs, one thread hand-off each."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.lowlevel
import trio.testing

from gateway.errors import StoreUnavailable
from gateway.store.writer import StoreWriter


class Results(list):
    """What callers got, and a way to wait until `n` of them have."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def append(self, value: object) -> None:
        super().append(value)
        self._changed.set()

    async def wait_for(self, n: int) -> None:
        while len(self) < n:
            self._changed = trio.Event()
            await self._changed.wait()


class Gate:
    """A job that blocks its worker thread until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, value: object = "gate") -> object:
        self.entered.set()
        assert self.opened.wait(10)
        return value


async def _blocked(writer: StoreWriter, nursery: trio.Nursery, gate: Gate, got: list) -> None:
    """Start a gated job and wait until the worker thread is inside it."""

    async def first() -> None:
        got.append(await writer.call(gate))

    nursery.start_soon(first)
    await trio.to_thread.run_sync(gate.entered.wait)


async def test_jobs_queued_meanwhile_run_as_one_group_each_with_its_own_result():
    writer = StoreWriter()
    got = Results()
    gate = Gate()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await _blocked(writer, nursery, gate, got)

        async def caller(n: int) -> None:
            got.append(await writer.call(lambda a, b: (threading.get_ident(), a * b), n, 10))

        for n in range(9):
            nursery.start_soon(caller, n)
        await trio.testing.wait_all_tasks_blocked()
        assert writer.queued == 9
        gate.opened.set()
        await got.wait_for(10)
        nursery.cancel_scope.cancel()
    assert got[0] == "gate"
    assert sorted(product for _, product in got[1:]) == [n * 10 for n in range(9)]
    assert len({ident for ident, _ in got[1:]}) == 1  # one worker thread ran the group
    assert threading.get_ident() not in {ident for ident, _ in got[1:]}
    assert writer.groups == 2


async def test_an_exception_reaches_its_caller_only():
    writer = StoreWriter()
    gate = Gate()
    got: list = []
    outcomes: dict[str, object] = {}
    done = Results()

    def boom() -> None:
        raise ValueError("boom")

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await _blocked(writer, nursery, gate, got)

        async def failing() -> None:
            with pytest.raises(ValueError, match="boom"):
                await writer.call(boom)
            outcomes["failing"] = "raised"
            done.append("failing")

        async def fine() -> None:
            outcomes["fine"] = await writer.call(lambda: 42)
            done.append("fine")

        nursery.start_soon(failing)
        nursery.start_soon(fine)
        await trio.testing.wait_all_tasks_blocked()
        gate.opened.set()
        await done.wait_for(2)
        nursery.cancel_scope.cancel()
    assert outcomes == {"failing": "raised", "fine": 42}


async def test_a_caller_cancelled_before_its_job_started_leaves_nothing_behind():
    writer = StoreWriter()
    gate = Gate()
    got: list = []
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await _blocked(writer, nursery, gate, got)
        with trio.CancelScope() as scope:

            async def cancel_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            nursery.start_soon(cancel_soon)
            await writer.call(ran.append, "withdrawn")
        assert scope.cancelled_caught
        gate.opened.set()
        after = await writer.call(lambda: "after")
        nursery.cancel_scope.cancel()
    assert ran == []
    assert after == "after"
    assert got == ["gate"]


async def test_a_caller_cancelled_while_its_job_runs_gets_its_result_then_the_cancellation():
    writer = StoreWriter()
    gate = Gate()
    got: list = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.CancelScope() as scope:

            async def cancel_when_running() -> None:
                await trio.to_thread.run_sync(gate.entered.wait)
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                gate.opened.set()

            nursery.start_soon(cancel_when_running)
            got.append(await writer.call(gate, "committed"))
            await trio.lowlevel.checkpoint()
            got.append("not reached")
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
    assert got == ["committed"]


async def test_stopping_refuses_jobs_not_started_and_later_calls():
    writer = StoreWriter()
    gate = Gate()
    got: list = []
    refused: list[str] = []
    ran: list[int] = []
    async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await _blocked(writer, outer, gate, got)

        async def queued(n: int) -> None:
            try:
                await writer.call(ran.append, n)
            except StoreUnavailable as exc:
                refused.append(str(exc))

        for n in range(3):
            outer.start_soon(queued, n)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the writer stops: its running group finishes first

        async def open_gate() -> None:
            await trio.testing.wait_all_tasks_blocked()
            gate.opened.set()

        outer.start_soon(open_gate)
    assert got == ["gate"]
    assert ran == []
    assert refused == ["the store writer has stopped"] * 3
    with pytest.raises(StoreUnavailable):
        await writer.call(lambda: None)
    with pytest.raises(RuntimeError):
        await writer.run()


async def test_a_call_before_the_writer_runs_is_refused():
    with pytest.raises(StoreUnavailable):
        await StoreWriter().call(lambda: None)


async def test_the_queue_is_bounded():
    writer = StoreWriter(max_queued=2)
    gate = Gate()
    got = Results()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await _blocked(writer, nursery, gate, got)  # holds one of the two places

        async def caller(n: int) -> None:
            got.append(await writer.call(lambda: n))

        for n in range(3):
            nursery.start_soon(caller, n)
        await trio.testing.wait_all_tasks_blocked()
        assert writer.queued == 1  # the others wait for a place, not in the queue
        gate.opened.set()
        await got.wait_for(4)
        nursery.cancel_scope.cancel()
    assert sorted(got[1:]) == [0, 1, 2]


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        StoreWriter(max_queued=0)
    with pytest.raises(ValueError):
        StoreWriter(max_group=0)
