"""Parity evidence from real traffic, per domain and hour, kept in the store.

The shadow audit (`gateway.audit`) and the browsers' beacons
(`gateway.beacons`) add counts here as they go: per hour, domain, source
(`audit`, `beacon`) and the users' stage, how many comparisons fell in each
class (MATCH, DIVERGED, MISSING_PUSH, ...), with a few redacted samples of
what differed. A task flushes what a node gathered to the store every few
seconds (`Store.add_evidence`, which sums counts from any number of nodes),
so every node, `cutover parity report --live` and the gate read the same
figures. What a flush fails to write is kept for the next one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from gateway.events import iso
from gateway.store import run_store

__all__ = ["SAMPLES_PER_FLUSH", "EvidenceBook", "hour_of"]

log = logging.getLogger("cutover.evidence")

SAMPLES_PER_FLUSH = 5  # per row and flush; the store keeps the newest 20 per row


def hour_of(epoch_s: float) -> str:
    """The contract time of the start of the hour holding `epoch_s`."""
    return iso(dt.datetime.fromtimestamp(int(epoch_s // 3600) * 3600, dt.UTC))


class EvidenceBook:
    """What this node gathered since its last flush (thread-safe)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def add(
        self,
        source: str,
        domain: str,
        stage: str,
        counts: Mapping[str, int],
        samples: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Count comparisons of one domain at one stage (and keep a few samples)."""
        if not counts:
            return
        now = self.clock()
        at = iso(dt.datetime.fromtimestamp(now, dt.UTC))
        key = (hour_of(now), domain, source, stage)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = {
                    "hour": key[0],
                    "domain": domain,
                    "source": source,
                    "stage": stage,
                    "counts": {},
                    "samples": [],
                    "first_at": at,
                    "last_at": at,
                }
            for name, value in counts.items():
                row["counts"][name] = row["counts"].get(name, 0) + int(value)
            room = SAMPLES_PER_FLUSH - len(row["samples"])
            if room > 0:
                row["samples"].extend(list(samples)[:room])
            row["last_at"] = at

    def take(self) -> list[dict[str, Any]]:
        """Everything gathered since the last take (and forget it)."""
        with self._lock:
            rows, self._rows = list(self._rows.values()), {}
        return rows

    def put_back(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rows a flush could not write, merged into what was gathered since."""
        with self._lock:
            for row in rows:
                key = (row["hour"], row["domain"], row["source"], row["stage"])
                mine = self._rows.get(key)
                if mine is None:
                    self._rows[key] = row
                    continue
                for name, value in row["counts"].items():
                    mine["counts"][name] = mine["counts"].get(name, 0) + value
                mine["samples"] = (row["samples"] + mine["samples"])[:SAMPLES_PER_FLUSH]
                mine["first_at"] = min(mine["first_at"], row["first_at"])
                mine["last_at"] = max(mine["last_at"], row["last_at"])

    async def flush(self, store: Any) -> int:
        """Write what was gathered to the store; rows are kept when it fails."""
        rows = self.take()
        if not rows:
            return 0
        try:
            await run_store(store.add_evidence, rows)
        except Exception as exc:
            log.warning("parity evidence kept for the next flush: %s", exc)
            self.put_back(rows)
            return 0
        return len(rows)

    async def run(
        self, store: Any, every_s: float, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush every `every_s` seconds until cancelled, then once more."""
        task_status.started()
        try:
            while True:
                await trio.sleep(every_s)
                await self.flush(store)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.flush(store)
