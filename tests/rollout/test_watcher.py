"""The watcher: reloads an edited rollout file, and keeps the last good one on a bad edit.

The watcher reads the file in a worker thread. The mock clock therefore jumps
only after the run loop has been idle for a moment of real time (so not while
a read is in flight), and tests wait in short steps, so that a jump during a
slow read moves the clock by one step at most, never to the `fail_after` guard.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.lowlevel

from gateway.rollout import RolloutConfig, RolloutError, RolloutWatcher, Stage

SHADOW = '[domains.chat]\nstage = "SHADOW"\n'
LIVE = '[domains.chat]\nstage = "LIVE"\npercent = 100\n'
BROKEN = '[domains.chat]\nstage = "LIVE"\npercent = 250\n'
COMPLETE = '[domains.chat]\nstage = "COMPLETE"\n'


STEP_S = 0.25


@pytest.fixture
def clock(autojump_clock):
    autojump_clock.autojump_threshold = 0.02
    return autojump_clock


async def wait_for(predicate) -> None:
    while not predicate():
        await trio.sleep(STEP_S)


async def pass_time(seconds: float) -> None:
    end = trio.current_time() + seconds
    await wait_for(lambda: trio.current_time() >= end)


@pytest.fixture
def flags(tmp_path):
    path = tmp_path / "flags.toml"
    path.write_text(SHADOW)
    return path


async def test_watcher_reloads_a_changed_file(flags, clock):
    changes: list[RolloutConfig] = []
    watcher = RolloutWatcher(flags, interval_s=2.0, on_change=changes.append)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            started = await nursery.start(watcher.run)
            assert started is watcher
            assert watcher.current.domains["chat"].stage is Stage.SHADOW
            assert watcher.current.path == str(flags)

            before = trio.current_time()
            flags.write_text(LIVE)
            await wait_for(lambda: changes)
            (changed,) = changes
            assert changed is watcher.current
            assert changed.domains["chat"].stage is Stage.LIVE
            assert watcher.current.stage_for("anyone", "chat") is Stage.LIVE
            assert trio.current_time() - before <= 2.0 + 4 * STEP_S
            nursery.cancel_scope.cancel()


async def test_an_invalid_edit_keeps_the_last_good_config(flags, clock, caplog):
    caplog.set_level(logging.ERROR, logger="cutover.rollout")
    changes: list[RolloutConfig] = []
    watcher = RolloutWatcher(flags, interval_s=2.0, on_change=changes.append)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            good = watcher.current

            flags.write_text(BROKEN)
            await wait_for(lambda: watcher.last_error is not None)
            await pass_time(10)  # five more checks
            assert watcher.current is good
            assert changes == []
            assert isinstance(watcher.last_error, RolloutError)
            assert watcher.last_error.line == 3
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1  # logged once, not at every check
            assert f"{flags}:3:" in errors[0]
            assert "within 0..100" in errors[0]

            flags.write_text(COMPLETE)
            await wait_for(lambda: changes)
            assert watcher.current.domains["chat"].stage is Stage.COMPLETE
            assert watcher.last_error is None
            assert [c.domains["chat"].stage for c in changes] == [Stage.COMPLETE]
            nursery.cancel_scope.cancel()


async def test_a_deleted_file_keeps_the_last_good_config(flags, clock):
    watcher = RolloutWatcher(flags, interval_s=2.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            good = watcher.current
            flags.unlink()
            await wait_for(lambda: watcher.last_error is not None)
            assert watcher.current is good
            assert "cannot read" in str(watcher.last_error)
            flags.write_text(SHADOW)  # restored unchanged: nothing to reload
            await wait_for(lambda: watcher.last_error is None)
            assert watcher.current is good
            nursery.cancel_scope.cancel()


async def test_rewriting_the_same_content_is_not_a_change(flags, clock):
    changes: list[RolloutConfig] = []
    watcher = RolloutWatcher(flags, interval_s=2.0, on_change=changes.append)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            flags.write_text(SHADOW)
            await pass_time(5)
            assert changes == []
            nursery.cancel_scope.cancel()


async def test_async_on_change_is_awaited(flags, clock):
    seen = trio.Event()

    async def on_change(config: RolloutConfig) -> None:
        await trio.lowlevel.checkpoint()
        seen.set()

    watcher = RolloutWatcher(flags, interval_s=2.0, on_change=on_change)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            flags.write_text(LIVE)
            await wait_for(seen.is_set)
            nursery.cancel_scope.cancel()


async def test_an_invalid_file_at_start_fails_before_started(flags):
    flags.write_text(BROKEN)
    watcher = RolloutWatcher(flags)
    with (
        trio.fail_after(10),
        pytest.RaisesGroup(RolloutError, allow_unwrapped=True, flatten_subgroups=True),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)


async def test_without_a_file_it_serves_the_defaults(clock):
    watcher = RolloutWatcher(None)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            assert watcher.current == RolloutConfig.default()
            assert await watcher.check() is False
            await trio.sleep(30)  # no file, no reads: the clock may jump at once
            assert watcher.current == RolloutConfig.default()
            nursery.cancel_scope.cancel()
