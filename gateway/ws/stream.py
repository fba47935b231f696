"""One connection's view of its user's durable event stream.

`UserStream` delivers the user's durable events to one connection in `seq`
order without gaps (PROTOCOL.md 2.3). The hub offers live events without
waiting (`offer`); a single pump task sends them on:

- an event with `seq == last_sent + 1` is sent as is;
- a gap (`seq > last_sent + 1`, an event lost or reordered on the backplane)
  is filled from the store before sending on;
- duplicates and older events are skipped;
- when the bounded inbox overflowed, the pump refills from the store;
- every `tail_interval_s` it compares `last_sent` with the store's stream
  position and fills what a lost notification missed (store tailing).

Live events go into the send buffer at once: if they overflow it, the client
is a slow consumer (4008) and resumes later. Events read from the store
(fills, refills, resume replays) are paced to the writer, so a long replay
never overflows the buffer; only a writer that makes no progress for
`stall_timeout_s` ends it.

`session.resume` runs inside the pump, so replayed and live events never
interleave out of order. Events of a domain whose push is OFF for the user
(rollout) are withheld: the connection gets a `stream.skipped` envelope with
the same `seq` instead, so its `seq` stays contiguous.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import attrs
import trio

from contracts import encode_envelope
from gateway.errors import HistoryExpired
from gateway.events import Cursor, StoredEvent, iso, new_id, utcnow
from gateway.ports import RolloutView, Runner, StreamStore
from gateway.rollout import domain_of_event
from gateway.ws.sendbuffer import SendBuffer, SlowConsumer
from ops import metrics as _metrics

__all__ = ["ResumeRequest", "UserStream"]

log = logging.getLogger(__name__)


PAGE = 1000


@attrs.frozen
class ResumeRequest:
    """A client's `session.resume`, queued for the pump."""

    epoch: str
    last_seq: int
    reply_to: str | None


class UserStream:
    """Gap-free, ordered delivery of one user's durable events to one connection."""

    def __init__(
        self,
        *,
        user_id: str,
        store: StreamStore,
        buffer: SendBuffer,
        cursor: Cursor,
        rollout: RolloutView | None = None,
        runner: Runner | None = None,
        inbox_size: int = 256,
        tail_interval_s: float | None = 5.0,
        stall_timeout_s: float = 5.0,
    ) -> None:
        self.user_id = user_id
        self.store = store
        self.buffer = buffer
        self.epoch = cursor.epoch
        self.last_sent = cursor.seq
        self.rollout = rollout
        self._runner = runner
        # A list, not a deque: an idle connection's empty list is 56 bytes, an
        # empty deque about 600; the inbox is short (live events between two steps).
        self._inbox: list[tuple[StoredEvent, str | None]] = []
        self._inbox_size = inbox_size
        self._must_refill = False
        self._tail_interval_s = tail_interval_s
        self._stall_timeout_s = stall_timeout_s
        self._wakeup = trio.Event()
        self._resume_send, self._resume_receive = trio.open_memory_channel[ResumeRequest](4)
        self.started = False
        self.stats = {"live": 0, "filled": 0, "skipped_dup": 0, "withheld": 0, "overflowed": 0}

    # -- producers -----------------------------------------------------------

    def offer(self, event: StoredEvent, text: str | None = None) -> None:
        """Take a live event without waiting (the hub's fan-out)."""
        if event.seq <= self.last_sent and event.epoch == self.epoch:
            self.stats["skipped_dup"] += 1
            return
        if len(self._inbox) >= self._inbox_size:
            self._must_refill = True
            self.stats["overflowed"] += 1
        else:
            self._inbox.append((event, text))
        self._wakeup.set()

    def nudge(self, head: Cursor) -> None:
        """The store holds more than was sent (the hub's tail): refill from it."""
        if head.epoch == self.epoch and head.seq > self.last_sent:
            self._must_refill = True
            self._wakeup.set()

    async def request_resume(self, epoch: str, last_seq: int, reply_to: str | None) -> None:
        """Queue a `session.resume`; the pump replays and replies in order."""
        await self._resume_send.send(ResumeRequest(epoch, last_seq, reply_to))
        self._wakeup.set()

    # -- the pump ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send events on until cancelled; raises `SlowConsumer` when live events
        overflow the send buffer or the writer stalls during a replay."""
        self.started = True
        task_status.started()
        if self._tail_interval_s is None:
            # The hub tails every stream of the node in one query and nudges this one.
            while True:
                await self._wait_for_work()
                self._wakeup = trio.Event()
                await self._step()
        # a random phase, so the tails of many connections do not fall together
        next_tail = trio.current_time() + self._tail_interval_s * random.uniform(0.5, 1.0)
        while True:
            with trio.move_on_at(next_tail):
                await self._wait_for_work()
            self._wakeup = trio.Event()
            await self._step()
            if trio.current_time() >= next_tail:
                try:
                    await self.tail()
                except SlowConsumer:
                    raise
                except Exception:
                    # the next tail (or the next live event) tries again
                    log.warning("tailing the stream of %s failed", self.user_id, exc_info=True)
                next_tail = trio.current_time() + self._tail_interval_s

    async def _wait_for_work(self) -> None:
        if self._inbox or self._must_refill or self._has_resume():
            await trio.lowlevel.checkpoint()
            return
        await self._wakeup.wait()

    def _has_resume(self) -> bool:
        return self._resume_receive.statistics().current_buffer_used > 0

    async def _step(self) -> None:
        """Handle every pending resume, then every pending live event."""
        while True:
            try:
                request = self._resume_receive.receive_nowait()
            except trio.WouldBlock:
                break
            await self._resume(request)
        if self._must_refill:
            self._must_refill = False
            self._inbox.clear()
            await self._fill()
        while self._inbox:
            event, text = self._inbox.pop(0)
            if event.epoch != self.epoch:
                # from before a reset of the store's history: the tail will tell
                self.stats["skipped_dup"] += 1
            elif event.seq <= self.last_sent:
                self.stats["skipped_dup"] += 1
            elif event.seq == self.last_sent + 1:
                await self._send(event, text, live=True)
                self.stats["live"] += 1
            else:
                await self._fill(until=event.seq)
                if event.seq == self.last_sent + 1:
                    await self._send(event, text, live=True)
                    self.stats["live"] += 1

    async def tail(self) -> None:
        """Fill whatever the store holds beyond `last_sent` (a lost notification)."""
        position: Cursor = await self._run(self.store.stream_position, self.user_id)
        if position.epoch == self.epoch and position.seq > self.last_sent:
            await self._fill()

    async def _fill(self, until: int | None = None) -> None:
        """Send stored events after `last_sent` (up to `until` exclusive, or all)."""
        while until is None or self.last_sent + 1 < until:
            try:
                page = await self._run(self.store.events_after, self.user_id, self.last_sent, PAGE)
            except HistoryExpired:
                log.warning("stream of %s lost history after seq %d", self.user_id, self.last_sent)
                await self._reset("HISTORY_EXPIRED", None)
                return
            sent = 0
            for event in page:
                if until is not None and event.seq >= until:
                    return
                if event.seq == self.last_sent + 1:
                    await self._send(event, None)
                    self.stats["filled"] += 1
                    sent += 1
            if len(page) < PAGE or sent == 0:
                return

    # -- resume --------------------------------------------------------------

    async def _resume(self, request: ResumeRequest) -> None:
        position: Cursor = await self._run(self.store.stream_position, self.user_id)
        if request.epoch != position.epoch or request.last_seq > position.seq:
            self._count_resume("epoch_changed")
            await self._reset("EPOCH_CHANGED", request.reply_to, position)
            return
        self.epoch = position.epoch
        self.last_sent = request.last_seq
        self._inbox = [item for item in self._inbox if item[0].seq > request.last_seq]
        try:
            first = True
            while True:
                page = await self._run(self.store.events_after, self.user_id, self.last_sent, PAGE)
                if first and page and page[0].seq != request.last_seq + 1:
                    raise HistoryExpired(f"events after {request.last_seq} are gone")
                first = False
                for event in page:
                    if event.seq == self.last_sent + 1:
                        await self._send(event, None)
                if len(page) < PAGE:
                    break
        except HistoryExpired:
            self._count_resume("history_expired")
            await self._reset("HISTORY_EXPIRED", request.reply_to)
            return
        self._count_resume("resumed")
        await self._put(
            self._envelope(
                "session.resumed",
                {"fromSeq": request.last_seq + 1, "toSeq": self.last_sent},
                request.reply_to,
            )
        )

    async def _reset(self, reason: str, reply_to: str | None, position: Cursor | None = None):
        """Tell the client to refetch; continue from the store's current position."""
        if position is None:
            position = await self._run(self.store.stream_position, self.user_id)
        self.epoch = position.epoch
        self.last_sent = position.seq
        self._inbox = [item for item in self._inbox if item[0].seq > position.seq]
        await self._put(
            self._envelope(
                "session.reset",
                {"reason": reason, "epoch": position.epoch, "seq": position.seq},
                reply_to,
            )
        )

    # -- sending -------------------------------------------------------------

    async def _send(self, event: StoredEvent, text: str | None, *, live: bool = False) -> None:
        """Queue one event: a live one at once (overflow: `SlowConsumer`), one read
        from the store paced to the writer."""
        domain = domain_of_event(event.type) if self.rollout is not None else None
        if (
            domain is not None
            and self.rollout is not None
            and not self.rollout.push_enabled(self.user_id, domain)
        ):
            self.stats["withheld"] += 1
            text = encode_envelope(
                "stream.skipped",
                {"domain": domain, "type": event.type},
                id=event.id,
                seq=event.seq,
                sent_at=event.created_at,
            )
        elif text is None:
            text = encode_envelope(
                event.type, event.payload, id=event.id, seq=event.seq, sent_at=event.created_at
            )
        if live:
            self.buffer.put_durable(text)
        else:
            await self.buffer.put_durable_paced(text, stall_timeout_s=self._stall_timeout_s)
        self.last_sent = event.seq

    async def _put(self, text: str) -> None:
        await self.buffer.put_durable_paced(text, stall_timeout_s=self._stall_timeout_s)

    def _envelope(self, type_: str, payload: dict, reply_to: str | None) -> str:
        return encode_envelope(
            type_, payload, id=new_id("evt"), sent_at=iso(utcnow()), reply_to=reply_to
        )

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._runner is not None:
            return await self._runner(fn, *args)
        from gateway.store import run_store

        return await run_store(fn, *args)

    @staticmethod
    def _count_resume(outcome: str) -> None:
        _metrics.RESUMES.labels(outcome).inc()
