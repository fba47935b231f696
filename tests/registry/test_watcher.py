"""The registry watcher: reload on change, keep the last good registry."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio

from gateway.registry import DeclarationInvalid, RegistryWatcher
from tests.registry.conftest import BUILTINS, event_decl, write_json


async def run_inline(fn, *args):
    """Run the watcher's file scans in the test's thread.

    Under `autojump_clock` a worker thread counts as idle time, so the clock
    would jump to the test's `fail_after` deadline while a scan runs; the
    thread path itself is covered by `test_removed_file_is_noticed`.
    """
    return fn(*args)


def touch_later(path: Path) -> None:
    """Move a file's mtime forward, so a rewrite within one clock tick is seen."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def test_reloads_on_change_and_keeps_last_good(
    registry_dir: Path, autojump_clock, caplog: pytest.LogCaptureFixture
):
    decl_path = write_json(registry_dir / "goal.activity.created.json", event_decl())
    watcher = RegistryWatcher(
        [registry_dir], interval_s=2.0, builtins=BUILTINS, run_blocking=run_inline
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            registry = await nursery.start(watcher.run)
            assert registry is watcher.current
            assert "goal.activity.created" in watcher.current
            assert watcher.generation == 1

            # A new file: picked up on the next poll.
            attempts = watcher.attempts
            write_json(registry_dir / "feed.like.created.json", event_decl("feed.like.created"))
            await watcher.wait_attempt(attempts)
            assert "feed.like.created" in watcher.current
            assert watcher.generation == 2
            good = watcher.current

            # An invalid edit: refused, logged with the file, last good kept.
            attempts = watcher.attempts
            with caplog.at_level(logging.ERROR, logger="gateway.registry.watcher"):
                write_json(decl_path, event_decl(recipients="topic"))
                touch_later(decl_path)
                await watcher.wait_attempt(attempts)
            assert watcher.current is good
            assert watcher.generation == 2
            assert str(decl_path) in watcher.last_error
            assert any(str(decl_path) in r.getMessage() for r in caplog.records)

            # Nothing changes: no new attempt while polls go by.
            attempts = watcher.attempts
            await trio.sleep(watcher.interval_s * 5)
            assert watcher.attempts == attempts

            # Fixed: loaded again.
            write_json(decl_path, event_decl(description="fixed"))
            touch_later(decl_path)
            touch_later(decl_path)
            await watcher.wait_attempt(attempts)
            assert watcher.last_error is None
            assert watcher.current.get("goal.activity.created").description == "fixed"
            assert watcher.generation == 3
            nursery.cancel_scope.cancel()


async def test_invalid_registry_at_start_raises(registry_dir: Path, autojump_clock):
    write_json(registry_dir / "bad.json", "[")
    watcher = RegistryWatcher([registry_dir], builtins=[], run_blocking=run_inline)
    with trio.fail_after(10), pytest.RaisesGroup(DeclarationInvalid) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
    assert info.value.exceptions[0].source == str(registry_dir / "bad.json")
    with pytest.raises(RuntimeError):
        _ = watcher.current


async def test_removed_file_is_noticed(registry_dir: Path):
    """Real clock, short interval: the thread-backed polling end to end."""
    write_json(registry_dir / "goal.activity.created.json", event_decl())
    extra = write_json(registry_dir / "feed.like.created.json", event_decl("feed.like.created"))
    watcher = RegistryWatcher([registry_dir], interval_s=0.02, builtins=[])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            assert len(watcher.current) == 2
            attempts = watcher.attempts
            extra.unlink()
            await watcher.wait_attempt(attempts)
            assert len(watcher.current) == 1
            nursery.cancel_scope.cancel()
