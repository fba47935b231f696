"""The bounded send queue of one WebSocket connection.

Producers (the hub's fan-out, the connection's own replies, its user stream)
put encoded envelopes without waiting; the connection's writer takes
everything pending as one batch and sends it as one frame. What happens when
the buffer is full depends on the envelope's class (DESIGN.md, "How a change
flows", step 5):

- durable events and replies never drop: if one does not fit, `put_durable`
  raises `SlowConsumer` and the connection is closed with 4008 (the client
  resumes later and loses nothing);
- latest-value events (presence, counters) coalesce by key: a newer value
  replaces an older one still pending, in the older one's queue position;
- droppable events (typing, notices) are dropped when the buffer is full.

Durable events that a connection's stream reads from the store (gap fills,
resume replays) are paced instead (`put_durable_paced`): while the buffer is
above `paced_share` of its capacity, the connection's writer sends a batch
first (`flush`), or, with no `flush`, the caller waits for the writer to make
room and only if it makes none for `stall_timeout_s` is the client a slow
consumer. Ephemeral events may fill
only `ephemeral_share` of the capacity. Both leave the rest of the capacity to
replies, so neither pushes a reply over the limit on its own (and ephemeral
events never cause a disconnect). Sizes are counted in characters of the encoded JSON, a cheap
lower bound of its UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

__all__ = ["SendBuffer", "SendBufferStats", "SlowConsumer"]


class SlowConsumer(Exception):
    """A durable envelope did not fit: the connection must close with 4008."""


@attrs.define
class SendBufferStats:
    """Counters of one buffer's backpressure decisions."""

    dropped: int = 0
    coalesced: int = 0
    overflows: int = 0
    queued: int = 0
    batches: int = 0


class _Slot:
    """One pending envelope; a `latest` slot's text is replaced in place."""

    __slots__ = ("key", "text")

    def __init__(self, text: str, key: str | None = None) -> None:
        self.text = text
        self.key = key


class SendBuffer:
    """The bounded, non-blocking send queue of one connection."""

    # Slots, and the Event a paced put waits on and the coalescing index made
    # on first use: an idle connection's buffer is a few hundred bytes.
    __slots__ = (
        "_bytes",
        "_closed",
        "_ending",
        "_ephemeral_bytes",
        "_ephemeral_items",
        "_latest",
        "_paced_bytes",
        "_paced_items",
        "_room",
        "_slots",
        "_wakeup",
        "max_bytes",
        "max_items",
        "stats",
    )

    def __init__(
        self,
        *,
        max_items: int = 1024,
        max_bytes: int = 1 << 20,
        ephemeral_share: float = 0.75,
        paced_share: float = 0.75,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a send buffer needs room for at least one envelope")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._ephemeral_items = max(1, int(max_items * ephemeral_share))
        self._ephemeral_bytes = max(1, int(max_bytes * ephemeral_share))
        self._paced_items = max(1, int(max_items * paced_share))
        self._paced_bytes = max(1, int(max_bytes * paced_share))
        self._room: trio.Event | None = None
        # A list, not a deque: an idle connection's empty list is 56 bytes, an
        # empty deque about 600; batches are taken from the front in one slice.
        self._slots: list[_Slot] = []
        self._latest: dict[str, _Slot] | None = None
        self._bytes = 0
        self._closed = False
        self._ending = False  # a last envelope is queued: nothing durable after it
        self._wakeup = trio.Event()
        self.stats = SendBufferStats()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    # -- producers -----------------------------------------------------------

    def put_durable(self, text: str) -> None:
        """Queue a durable event or a reply; raise `SlowConsumer` if it does not fit."""
        if self._closed or self._ending:
            return
        self.check_durable(1, len(text))
        self._append(_Slot(text))

    def check_durable(self, items: int, chars: int) -> None:
        """Raise `SlowConsumer` unless `items` more durable envelopes of `chars`
        characters in all would fit now."""
        if self._closed:
            return
        if len(self._slots) + items > self.max_items or self._bytes + chars > self.max_bytes:
            self.stats.overflows += 1
            raise SlowConsumer(
                f"send buffer full ({len(self._slots)} envelopes, {self._bytes} bytes pending)"
            )

    async def put_durable_paced(
        self,
        text: str,
        *,
        stall_timeout_s: float,
        flush: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Queue a durable event once there is room; `SlowConsumer` if none comes in time.

        With `flush` (the writer's own send of one batch, when the writer is
        the caller), room is made by sending: each send is bounded by the
        transport's send timeout. Without it, the wait restarts whenever the
        writer takes a batch: what ends the connection is a writer that makes
        no progress for `stall_timeout_s`.
        """
        while not self._ending and not self._closed and not self._has_paced_room(text):
            if flush is not None:
                await flush()
                # The send is shielded: a close requested meanwhile lands here.
                await trio.lowlevel.checkpoint()
                continue
            self._room = room = self._room or trio.Event()
            with trio.move_on_after(stall_timeout_s) as waited:
                await room.wait()
            self._room = None
            if waited.cancelled_caught:
                self.stats.overflows += 1
                raise SlowConsumer(
                    f"no room in the send buffer for {stall_timeout_s:g} s "
                    f"({len(self._slots)} envelopes, {self._bytes} bytes pending)"
                )
        if not self._ending and not self._closed:
            self._append(_Slot(text))

    def put_final(self, text: str) -> None:
        """Queue a last envelope before a close (`system.reconnect`, `error`), ignoring
        limits; paced durable events that would follow it are left for the resume."""
        self._ending = True
        if not self._closed:
            self._append(_Slot(text))

    def put_latest(self, key: str, text: str) -> bool:
        """Queue a latest-value event, replacing a pending one with the same key.

        Returns False when it was dropped because the buffer is full.
        """
        if self._closed:
            return False
        latest = self._latest
        slot = latest.get(key) if latest is not None else None
        if slot is not None:
            self._bytes += len(text) - len(slot.text)
            slot.text = text
            self.stats.coalesced += 1
            return True
        if not self._has_ephemeral_room(text):
            self.stats.dropped += 1
            return False
        slot = _Slot(text, key)
        if latest is None:
            self._latest = latest = {}
        latest[key] = slot
        self._append(slot)
        return True

    def put_droppable(self, text: str) -> bool:
        """Queue a typing indicator or a notice; drop it (False) when the buffer is full."""
        if self._closed:
            return False
        if not self._has_ephemeral_room(text):
            self.stats.dropped += 1
            return False
        self._append(_Slot(text))
        return True

    # -- the writer ----------------------------------------------------------

    async def get_batch(self, max_bytes: int | None = None) -> list[str]:
        """Wait until something is pending and take everything pending, in order.

        With `max_bytes`, stop before the batch would exceed it (but always take
        at least one envelope), so one frame stays within what clients accept.
        Raises `trio.EndOfChannel` once the buffer is closed and empty.
        """
        while not self._slots:
            if self._closed:
                raise trio.EndOfChannel
            await self.wait()
        return self.take_batch(max_bytes)

    def take_batch(self, max_bytes: int | None = None) -> list[str]:
        """What `get_batch` takes, without waiting (empty when nothing is pending)."""
        if max_bytes is None or self._bytes <= max_bytes:
            return self.take_all()
        batch: list[str] = []
        size = 0
        latest = self._latest
        for slot in self._slots:
            if batch and size + len(slot.text) > max_bytes:
                break
            if slot.key is not None and latest is not None:
                del latest[slot.key]
            batch.append(slot.text)
            size += len(slot.text) + 1
            self._bytes -= len(slot.text)
        del self._slots[: len(batch)]
        self.stats.batches += 1
        self._made_room()
        return batch

    def take_all(self) -> list[str]:
        """Everything pending, in order, without waiting (used to flush before a close)."""
        batch = [slot.text for slot in self._slots]
        self._slots.clear()
        self._latest = None
        self._bytes = 0
        if batch:
            self.stats.batches += 1
            self._made_room()
        return batch

    async def wait(self) -> None:
        """Wait for the next `wake` (a put, a close, or a producer's signal)."""
        await self._wakeup.wait()
        self._wakeup = trio.Event()

    def wake(self) -> None:
        """Wake the writer waiting in `wait` (the connection's stream has work)."""
        self._wakeup.set()

    def close(self) -> None:
        """Accept nothing more; the writer still drains what is pending."""
        self._closed = True
        self._wakeup.set()
        self._made_room()

    # -- internals -----------------------------------------------------------

    def _made_room(self) -> None:
        if self._room is not None:
            self._room.set()

    def has_paced_room(self, text: str) -> bool:
        """Whether a paced put of `text` would be queued now."""
        return self._has_paced_room(text)

    def _has_paced_room(self, text: str) -> bool:
        if not self._slots:
            return True  # an event larger than the share still goes, alone
        return len(self._slots) < self._paced_items and self._bytes + len(text) <= self._paced_bytes

    def _has_ephemeral_room(self, text: str) -> bool:
        return (
            len(self._slots) < self._ephemeral_items
            and self._bytes + len(text) <= self._ephemeral_bytes
        )

    def _append(self, slot: _Slot) -> None:
        self._slots.append(slot)
        self._bytes += len(slot.text)
        self.stats.queued += 1
        self._wakeup.set()
