"""A registry that follows its directories: reloaded when a file changes.

The watcher polls the declaration files (their names, sizes and mtimes) every
`interval_s`. On a change it loads the registry again; if the new files are
invalid it logs the file and the reason and keeps serving the last good
registry, so a typo in one file never takes the gateway's contract away.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from gateway.registry._errors import DeclarationInvalid
from gateway.registry._registry import TOPICS_SUBDIR, Registry, contract_builtins, load_registry

__all__ = ["RegistryWatcher"]

log = logging.getLogger(__name__)

# Reading declaration files is blocking file I/O: at most one load at a time.
REGISTRY_FILES = trio.CapacityLimiter(1)

# (path, size, mtime_ns) of every declaration file, or a directory's absence.
Fingerprint = tuple[tuple[str, int, int], ...]

# How a blocking call is run: in a worker thread by default.
BlockingRunner = Callable[..., Awaitable[Any]]


def _fingerprint(dirs: Sequence[Path]) -> Fingerprint:
    entries: list[tuple[str, int, int]] = []
    for directory in dirs:
        for folder in (directory, directory / TOPICS_SUBDIR):
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                entries.append((str(folder), -1, -1))
                continue
            for name in names:
                if not name.endswith(".json"):
                    continue
                path = folder / name
                try:
                    stat = path.stat()
                except OSError:
                    continue
                entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class RegistryWatcher:
    """Holds the current registry of `dirs` and reloads it when the files change.

    Start it with `await nursery.start(watcher.run)`: it loads once (an
    invalid registry at start raises `DeclarationInvalid`), reports ready, and
    then polls. `current` is the last good registry; `generation` counts
    successful loads and `attempts` every load tried; `last_error` is the
    reason the latest attempt failed, or None.

    `run_blocking(fn, *args)` runs the blocking scans and loads; the default
    is `trio.to_thread.run_sync` under the `REGISTRY_FILES` limiter.
    """

    def __init__(
        self,
        dirs: Sequence[Path],
        interval_s: float = 2.0,
        builtins: Sequence[dict[str, Any]] | None = None,
        *,
        run_blocking: BlockingRunner | None = None,
    ) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.interval_s = interval_s
        self._builtins = builtins
        self._run_blocking = run_blocking or functools.partial(
            trio.to_thread.run_sync, limiter=REGISTRY_FILES
        )
        self._current: Registry | None = None
        self._fingerprint: Fingerprint | None = None
        self.generation = 0
        self.attempts = 0
        self.last_error: str | None = None
        self._attempted = trio.Event()

    @property
    def current(self) -> Registry:
        if self._current is None:
            raise RuntimeError("the registry is not loaded yet: start RegistryWatcher.run first")
        return self._current

    async def wait_attempt(self, after: int) -> None:
        """Return once more than `after` load attempts have completed."""
        while self.attempts <= after:
            await self._attempted.wait()

    def _scan_and_load(self, builtins: Sequence[dict[str, Any]]) -> tuple[Fingerprint, Registry]:
        fingerprint = _fingerprint(self.dirs)
        return fingerprint, load_registry(self.dirs, builtins)

    async def _attempt(self, builtins: Sequence[dict[str, Any]], *, first: bool) -> None:
        try:
            fingerprint, registry = await self._run_blocking(self._scan_and_load, builtins)
        except DeclarationInvalid as exc:
            self.last_error = exc.message
            if first:
                raise
            log.error(
                "registry reload refused, keeping the last good registry: %s: %s",
                exc.source,
                exc.reason,
            )
        else:
            self._current = registry
            self._fingerprint = fingerprint
            self.generation += 1
            self.last_error = None
            if not first:
                log.info("registry reloaded: %d event types", len(registry))
        finally:
            self.attempts += 1
            self._attempted.set()
            self._attempted = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[Registry] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load, report ready with the registry, then reload on every change."""
        builtins = self._builtins
        if builtins is None:
            builtins = await self._run_blocking(contract_builtins)
        await self._attempt(builtins, first=True)
        task_status.started(self.current)
        while True:
            await trio.sleep(self.interval_s)
            fingerprint = await self._run_blocking(_fingerprint, self.dirs)
            if fingerprint == self._fingerprint:
                continue
            # Remember what was tried, so an invalid state is reported once.
            self._fingerprint = fingerprint
            await self._attempt(builtins, first=False)
