"""Fault injection, for proving that the parity gate can fail.

Only `cutover serve --allow-faults` accepts `CUTOVER_FAULTS`, a comma list of
`drop_push=P` (drop a fraction of durable frames at the socket),
`omit_push=TYPE:P` (never produce that event type for a fraction of changes),
`delay_push_ms=N` (hold durable frames N ms before writing them) and
`skew_unread=N` (push payloads report unread counts off by N).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from gateway.events import StoredEvent
from gateway.ws.transport import Transport

__all__ = ["FaultError", "Faults", "FaultyTransport", "OmittingStore", "parse_faults"]

UNREAD_KEYS = ("unreadCount", "totalUnread")


class FaultError(ValueError):
    """A CUTOVER_FAULTS value that cannot be parsed."""


@attrs.frozen
class Faults:
    drop_push: float = 0.0
    omit_push: tuple[tuple[str, float], ...] = ()
    delay_push_ms: int = 0
    skew_unread: int = 0
    seed: int | None = None
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    @property
    def active(self) -> bool:
        return bool(self.drop_push or self.omit_push or self.delay_push_ms or self.skew_unread)

    @property
    def touches_frames(self) -> bool:
        return bool(self.drop_push or self.delay_push_ms or self.skew_unread)

    def omit(self, event_type: str) -> bool:
        """Whether to leave this change's event of `event_type` unproduced."""
        return any(
            event_type == kind and self.rng.random() < share for kind, share in self.omit_push
        )

    def rewrite_frame(self, frame: str) -> str | None:
        """A frame as the faulty socket writes it (None: nothing left to write)."""
        kept = []
        for line in frame.split("\n"):
            if '"seq":' not in line:
                kept.append(line)
                continue
            if self.drop_push and self.rng.random() < self.drop_push:
                continue
            if self.skew_unread:
                line = self._skew(line)
            kept.append(line)
        return "\n".join(kept) if kept else None

    def _skew(self, line: str) -> str:
        envelope = json.loads(line)
        _skew_counts(envelope.get("payload"), self.skew_unread)
        return json.dumps(envelope, separators=(",", ":"))


def _skew_counts(value: Any, by: int) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in UNREAD_KEYS and isinstance(item, int):
                value[key] = item + by
            else:
                _skew_counts(item, by)
    elif isinstance(value, list):
        for item in value:
            _skew_counts(item, by)


def parse_faults(text: str | None) -> Faults:
    """Parse `CUTOVER_FAULTS`; an empty value means no faults."""
    if not text:
        return Faults()
    values: dict[str, Any] = {}
    omit: list[tuple[str, float]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise FaultError(f"fault {part!r}: expected NAME=VALUE")
        try:
            if name == "drop_push":
                values["drop_push"] = _share(float(value))
            elif name == "omit_push":
                kind, _, share = value.rpartition(":")
                if not kind:
                    raise FaultError(f"fault {part!r}: expected omit_push=TYPE:P")
                omit.append((kind, _share(float(share))))
            elif name == "delay_push_ms":
                values["delay_push_ms"] = int(value)
            elif name == "skew_unread":
                values["skew_unread"] = int(value)
            elif name == "seed":
                values["seed"] = int(value)
            else:
                raise FaultError(f"unknown fault {name!r}")
        except ValueError as exc:
            if isinstance(exc, FaultError):
                raise
            raise FaultError(f"fault {part!r}: {exc}") from exc
    seed = values.get("seed")
    return Faults(omit_push=tuple(omit), rng=random.Random(seed), **values)


def _share(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise FaultError(f"a fraction must be within 0..1, not {value}")
    return value


class _OmittingTx:
    """A transaction that leaves some events unproduced (`omit_push`)."""

    def __init__(self, tx: Any, faults: Faults) -> None:
        self._tx = tx
        self._faults = faults

    def append_event(self, user_id: str, type: str, payload: dict) -> StoredEvent:
        if self._faults.omit(type):
            # Never committed: seq 0, which the runtime does not publish.
            return StoredEvent(user_id, "", 0, "", type, payload, "")
        return self._tx.append_event(user_id, type, payload)

    def append_events(self, appends: Sequence[tuple[str, str, dict]]) -> list[StoredEvent]:
        omitted = [self._faults.omit(type) for _, type, _ in appends]
        kept = iter(
            self._tx.append_events([a for a, o in zip(appends, omitted, strict=True) if not o])
        )
        return [
            StoredEvent(user_id, "", 0, "", type, payload, "") if o else next(kept)
            for (user_id, type, payload), o in zip(appends, omitted, strict=True)
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class OmittingStore:
    """A store whose transactions apply `omit_push`; everything else passes through."""

    def __init__(self, store: Any, faults: Faults) -> None:
        self._store = store
        self._faults = faults

    @contextmanager
    def transaction(self) -> Iterator[_OmittingTx]:
        with self._store.transaction() as tx:
            yield _OmittingTx(tx, self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class FaultyTransport:
    """A WebSocket transport that writes frames as the faults say (`drop_push`,
    `delay_push_ms`, `skew_unread`); wrapped around the real one at the
    handshake, never a branch inside it."""

    def __init__(self, inner: Transport, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    async def receive(self) -> str:
        return await self._inner.receive()

    async def send(self, text: str) -> None:
        if self._faults.delay_push_ms and '"seq":' in text:
            await trio.sleep(self._faults.delay_push_ms / 1000)
        rewritten = self._faults.rewrite_frame(text)
        if rewritten is not None:
            await self._inner.send(rewritten)

    async def close(self, code: int, reason: str = "") -> None:
        await self._inner.close(code, reason)
