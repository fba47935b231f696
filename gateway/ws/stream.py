"""One connection's view of its user's durable event stream.

`UserStream` delivers the user's durable events to one connection in `seq`
order without gaps (PROTOCOL.md 2.3). The hub offers live events without
waiting (`offer`); the stream's driver (the connection's writer, `work`, or
the stream's own pump, `run`) sends them on:

- an event with `seq == last_sent + 1` is sent as is;
- a gap (`seq > last_sent + 1`, an event lost or reordered on the backplane)
  is filled from the store before sending on;
- duplicates and older events are skipped;
- when the bounded inbox overflowed, the driver refills from the store;
- every `tail_interval_s` it compares `last_sent` with the store's stream
  position and fills what a lost notification missed (store tailing).

Live events go into the send buffer at the driver's next step: if they
overflow it, the client is a slow consumer (4008) and resumes later. While
the driver is not in a step (the connection's writer may be blocked in a
send), `offer` checks at once whether the inbox and the buffer together
still fit, so a client that stops reading is cut off as soon as its buffer
would overflow, not only once its writer is free again. Events read from the store
(fills, refills, resume replays) are paced to the writer, so a long replay
never overflows the buffer: the connection's writer sends a batch to make
room (each send bounded by the transport's send timeout); the standalone
pump waits for room and gives up when the writer makes none for
`stall_timeout_s`.

`session.resume` runs inside the driver, so replayed and live events never
interleave out of order. Events of a domain whose push is OFF for the user
(rollout) are withheld: the connection gets a `stream.skipped` envelope with
the same `seq` instead, so its `seq` stays contiguous.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
T = TypeVar("T")


PAGE = 1000


@attrs.frozen
class ResumeRequest:
    """A client's `session.resume`, queued for the pump."""

    epoch: str
    last_seq: int
    reply_to: str | None


RESUME_QUEUE = 4  # pending `session.resume`s; the reader waits past this


class UserStream:
    """Gap-free, ordered delivery of one user's durable events to one connection."""

    # Slots, and the Events and the resume queue made on first use: an idle
    # connection's stream is a few hundred bytes.
    __slots__ = (
        "_busy",
        "_failure",
        "_flush",
        "_inbox",
        "_inbox_size",
        "_must_refill",
        "_resume_room",
        "_resumes",
        "_runner",
        "_stall_timeout_s",
        "_tail_interval_s",
        "_wake",
        "_wakeup",
        "buffer",
        "epoch",
        "last_sent",
        "on_overflow",
        "rollout",
        "started",
        "stats",
        "store",
        "tail_at",
        "user_id",
    )

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
        wake: Callable[[], None] | None = None,
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
        # When the driver tails next (inf: the hub tails the node's streams).
        self.tail_at = math.inf
        # Who is told that there is work: the connection's writer (`wake`), or
        # the standalone pump's own Event.
        self._wake = wake
        self._wakeup: trio.Event | None = None
        self._resumes: list[ResumeRequest] | None = None
        self._resume_room: trio.Event | None = None
        self._busy = False
        self._failure: SlowConsumer | None = None
        self._flush: Callable[[], Awaitable[object]] | None = None
        # Called when a live event offered would overflow the send buffer (the
        # connection closes with 4008 at once); the driver raises it in any case.
        self.on_overflow: Callable[[SlowConsumer], None] | None = None
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
            if self.started and not self._busy and self._failure is None:
                # What the driver's next step puts live into the buffer must fit.
                chars = sum(len(t) for _, t in self._inbox if t is not None)
                try:
                    self.buffer.check_durable(len(self._inbox) + 1, chars + len(text or ""))
                except SlowConsumer as exc:
                    self._overflowed(exc)
                    return
            self._inbox.append((event, text))
        self._signal()

    def nudge(self, head: Cursor) -> None:
        """The store holds more than was sent (the hub's tail): refill from it."""
        if head.epoch == self.epoch and head.seq > self.last_sent:
            self._must_refill = True
            self._signal()

    async def request_resume(self, epoch: str, last_seq: int, reply_to: str | None) -> None:
        """Queue a `session.resume`; the driver replays and replies in order."""
        while self._resumes is not None and len(self._resumes) >= RESUME_QUEUE:
            self._resume_room = room = self._resume_room or trio.Event()
            await room.wait()
        if self._resumes is None:
            self._resumes = []
        self._resumes.append(ResumeRequest(epoch, last_seq, reply_to))
        self._signal()

    def _signal(self) -> None:
        if self._wake is not None:
            self._wake()
        elif self._wakeup is not None:
            self._wakeup.set()

    def _overflowed(self, exc: SlowConsumer) -> None:
        if self._failure is None:
            self._failure = exc
            if self.on_overflow is not None:
                self.on_overflow(exc)
        self._signal()

    # -- the driver ----------------------------------------------------------

    def start(self) -> None:
        """The driver runs from now on (and tails, if the stream tails itself)."""
        self.started = True
        if self._tail_interval_s is not None:
            # a random phase, so the tails of many connections do not fall together
            self.tail_at = trio.current_time() + self._tail_interval_s * random.uniform(0.5, 1.0)

    @property
    def pending(self) -> bool:
        """Whether `work` has something to do now."""
        return bool(
            self._inbox
            or self._must_refill
            or self._resumes
            or self._failure is not None
            or trio.current_time() >= self.tail_at
        )

    async def work(self, flush: Callable[[], Awaitable[object]] | None = None) -> None:
        """Do what is pending: resumes, refills, live events, a due tail.

        `flush` sends one batch of the send buffer (the connection's writer):
        paced events make room with it instead of waiting for another task.
        Raises `SlowConsumer` when a live event overflowed the send buffer or,
        without `flush`, the writer stalled during a replay.
        """
        if self._failure is not None:
            raise self._failure
        self._busy = True
        self._flush = flush
        try:
            await self._step()
            if trio.current_time() >= self.tail_at:
                try:
                    await self.tail()
                except SlowConsumer:
                    raise
                except Exception:
                    # the next tail (or the next live event) tries again
                    log.warning("tailing the stream of %s failed", self.user_id, exc_info=True)
                assert self._tail_interval_s is not None
                self.tail_at = trio.current_time() + self._tail_interval_s
        finally:
            self._busy = False
            self._flush = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The standalone pump: send events on until cancelled; raises `SlowConsumer`
        when live events overflow the send buffer or the writer stalls during a
        replay. (A `Connection` drives its stream from its writer instead.)"""
        self.start()
        task_status.started()
        while True:
            if self.pending:
                await trio.lowlevel.checkpoint()
            else:
                self._wakeup = trio.Event()
                with trio.move_on_at(self.tail_at):
                    await self._wakeup.wait()
                self._wakeup = None
            await self.work()

    async def _step(self) -> None:
        """Handle every pending resume, then every pending live event."""
        while self._resumes:
            request = self._resumes.pop(0)
            if not self._resumes:
                self._resumes = None
            if self._resume_room is not None:
                self._resume_room.set()
                self._resume_room = None
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
        if live:
            self.buffer.put_durable(self._encode(event, text))
        else:
            await self._put(self._encode(event, text))
        self.last_sent = event.seq

    def _encode(self, event: StoredEvent, text: str | None) -> str:
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
        return text

    async def _put(self, text: str) -> None:
        await self.buffer.put_durable_paced(
            text, stall_timeout_s=self._stall_timeout_s, flush=self._flush
        )

    def _envelope(self, type_: str, payload: dict, reply_to: str | None) -> str:
        return encode_envelope(
            type_, payload, id=new_id("evt"), sent_at=iso(utcnow()), reply_to=reply_to
        )

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._runner is not None:
            return await self._runner(fn, *args)
        from gateway.store import run_store

        return await run_store(fn, *args)

    @staticmethod
    def _count_resume(outcome: str) -> None:
        _metrics.RESUMES.labels(outcome).inc()
