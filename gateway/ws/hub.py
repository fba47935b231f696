"""The node-local registry of WebSocket connections and the fan-out to them.

The hub knows which connections of which users are open on this node and
which topics each is subscribed to. It receives committed events from the
backplane and offers each one, encoded once, to the connections concerned:
durable events to every local connection of the event's user (through that
connection's `UserStream`, which keeps `seq` order), ephemeral events to a
topic's subscribers, a list of users, or everyone. It never waits on a
connection: every offer is a non-blocking put into a bounded buffer.

It also aggregates presence over a user's connections (ONLINE if any is
ONLINE, AWAY if all are AWAY, OFFLINE when the last one goes) and drives
graceful shutdown (`system.reconnect` with a distinct jittered delay, then
close 1012).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from contracts import CloseCode, encode_envelope
from gateway.errors import RateLimited
from gateway.events import Cursor, Ephemeral, Outcome, StoredEvent, iso, new_id, parse_iso, utcnow
from gateway.ws.backplane import Backplane, LocalBackplane
from ops import metrics as _metrics

if TYPE_CHECKING:
    from gateway.ports import RolloutView, Runner, SessionDomain, StreamStore
    from gateway.ws.sendbuffer import SendBuffer

__all__ = ["Hub", "HubMember", "PresenceStatus"]

log = logging.getLogger(__name__)

PresenceStatus = str  # "ONLINE" | "AWAY" | "OFFLINE"


class _Stream(Protocol):
    def offer(self, event: StoredEvent, text: str | None = None) -> None: ...

    def nudge(self, head: Cursor) -> None: ...


class HubMember(Protocol):
    """What the hub needs of a connection."""

    id: str
    user_id: str
    presence: PresenceStatus
    topics: set[str]
    buffer: SendBuffer

    @property
    def stream(self) -> _Stream: ...

    def close_soon(self, code: int, reason: str, final_text: str | None = None) -> None:
        """Queue `final_text`, then close with `code` after it is flushed."""
        ...


REVOKED = "subscription.revoked"


class Hub:
    """The registry of this node's connections, by user and by topic."""

    def __init__(
        self,
        *,
        domain: SessionDomain | None = None,
        backplane: Backplane | None = None,
        rollout: RolloutView | None = None,
        presence_runner: Runner | None = None,
        rng: random.Random | None = None,
        reconnect_window_ms: tuple[int, int] = (1_000, 30_000),
        store: StreamStore | None = None,
        tail_interval_s: float = 5.0,
    ) -> None:
        self.domain = domain
        self.store = store
        self.tail_interval_s = tail_interval_s
        # True once `run` tails the streams of the whole node (connections then do not).
        self.tails = False
        self.backplane: Backplane = backplane or LocalBackplane()
        self.rollout = rollout
        self._presence_runner = presence_runner
        self._rng = rng or random.Random()
        self._reconnect_window_ms = reconnect_window_ms
        self._by_user: dict[str, set[HubMember]] = {}
        self._by_topic: dict[str, set[HubMember]] = {}
        self._presence: dict[str, PresenceStatus] = {}
        self._presence_locks: dict[str, trio.Lock] = {}
        # Handshakes admitted per user, from before the upgrade to the socket's end.
        self._slots: dict[str, int] = {}
        self._empty = trio.Event()
        self._empty.set()
        self.delivered_durable = 0
        self.delivered_ephemeral = 0

    # -- lifecycle -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Hub] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the backplane feeding this hub (and the node's store tail) until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.backplane.run, self)
            if self.store is not None:
                self.tails = True
                nursery.start_soon(self._tail_streams, self.store)
            task_status.started(self)

    async def _tail_streams(self, store: StreamStore) -> None:
        """Every `tail_interval_s`, read every local user's stream head in one batched
        query and nudge the connections that are behind: a published event whose
        notification never arrived still reaches its users within the interval."""
        from gateway.store import run_store

        while True:
            await trio.sleep(self.tail_interval_s)
            users = list(self._by_user)
            if not users:
                continue
            try:
                heads = await run_store(store.stream_heads, users)
            except Exception:
                log.warning("tailing the node's streams failed", exc_info=True)
                continue
            for user_id, head in heads.items():
                for member in list(self._by_user.get(user_id, ())):
                    member.stream.nudge(head)

    # -- registry ------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(members) for members in self._by_user.values())

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    @property
    def topic_count(self) -> int:
        return len(self._by_topic)

    def connection_count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def claim_slot(self, user_id: str, limit: int) -> None:
        """Reserve one of `user_id`'s `limit` connection slots, or refuse (429).

        Claimed before the upgrade and released when the socket ends
        (`release_slot`), with no await in between check and count, so
        concurrent handshakes of one user can never exceed the limit.
        """
        held = self._slots.get(user_id, 0)
        if held >= limit:
            raise RateLimited(f"more than {limit} connections for this user", retry_after_ms=5000)
        self._slots[user_id] = held + 1

    async def claim(self, user_id: str, limit: int) -> None:
        """`claim_slot`, then the same limit over every node (the backplane's count)."""
        self.claim_slot(user_id, limit)
        try:
            granted = await self.backplane.claim_slot(user_id, limit)
        except BaseException:
            self.release_slot(user_id)
            raise
        if not granted:
            self.release_slot(user_id)
            raise RateLimited(
                f"more than {limit} connections for this user across the cluster",
                retry_after_ms=5000,
            )

    def release_slot(self, user_id: str) -> None:
        held = self._slots.get(user_id, 0) - 1
        if held > 0:
            self._slots[user_id] = held
        else:
            self._slots.pop(user_id, None)
        self.backplane.slot_released(user_id)

    def slots_held(self, user_id: str) -> int:
        return self._slots.get(user_id, 0)

    def connections(self, user_id: str | None = None) -> list[HubMember]:
        if user_id is not None:
            return list(self._by_user.get(user_id, ()))
        return [member for members in self._by_user.values() for member in members]

    def subscribers(self, topic: str) -> list[HubMember]:
        return list(self._by_topic.get(topic, ()))

    def is_empty(self) -> bool:
        return not self._by_user and not self._by_topic and not self._presence

    def register(self, member: HubMember) -> None:
        if member.user_id not in self._by_user:
            self.backplane.follow("user", member.user_id)
        self._by_user.setdefault(member.user_id, set()).add(member)
        self._empty = trio.Event() if self._empty.is_set() else self._empty
        _metrics.CONNECTIONS_ACTIVE.inc()

    def unregister(self, member: HubMember) -> None:
        """Forget a connection and all of its subscriptions (idempotent)."""
        for topic in list(member.topics):
            self.unsubscribe(member, topic)
        members = self._by_user.get(member.user_id)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self._by_user[member.user_id]
            self.backplane.unfollow("user", member.user_id)
        _metrics.CONNECTIONS_ACTIVE.dec()
        if not self._by_user:
            self._empty.set()

    def subscribe(self, member: HubMember, topic: str) -> None:
        if topic not in self._by_topic:
            self.backplane.follow("topic", topic)
        self._by_topic.setdefault(topic, set()).add(member)
        member.topics.add(topic)

    def unsubscribe(self, member: HubMember, topic: str) -> None:
        member.topics.discard(topic)
        members = self._by_topic.get(topic)
        if members is None:
            return
        members.discard(member)
        if not members:
            del self._by_topic[topic]
            self.backplane.unfollow("topic", topic)

    def revoke(self, user_id: str, topic: str) -> int:
        """A permission changed: drop `user_id`'s subscriptions to `topic` now."""
        revoked = 0
        for member in list(self._by_topic.get(topic, ())):
            if member.user_id == user_id:
                self.unsubscribe(member, topic)
                revoked += 1
        return revoked

    # -- fan-out -------------------------------------------------------------

    async def publish(
        self,
        outcome_or_events: Outcome[object] | Sequence[StoredEvent],
        ephemeral: Sequence[Ephemeral] = (),
    ) -> None:
        """Hand what a committed mutation produced to the backplane."""
        if isinstance(outcome_or_events, Outcome):
            events: Sequence[StoredEvent] = outcome_or_events.events
            ephemeral = (*outcome_or_events.ephemeral, *ephemeral)
        else:
            events = outcome_or_events
        if not events and not ephemeral:
            return
        for kind in (*(e.type for e in events), *(e.type for e in ephemeral)):
            _metrics.EVENTS_PUBLISHED.labels(kind).inc()
        await self.backplane.publish(events, ephemeral)

    def deliver_durable(self, events: Iterable[StoredEvent]) -> None:
        """Offer each event, encoded once, to every local connection of its user."""
        delivered = 0
        for event in events:
            members = self._by_user.get(event.user_id)
            if not members:
                continue
            text = encode_envelope(
                event.type, event.payload, id=event.id, seq=event.seq, sent_at=event.created_at
            )
            for member in members:
                member.stream.offer(event, text)
                delivered += 1
            lag = (utcnow() - parse_iso(event.created_at)).total_seconds()
            _metrics.PUBLISH_TO_DELIVER.observe(max(lag, 0.0))
        self.delivered_durable += delivered
        if delivered:
            _metrics.EVENTS_DELIVERED.labels("durable").inc(delivered)

    def deliver_ephemeral(self, event: Ephemeral) -> None:
        """Offer an ephemeral event, encoded once, to its audience on this node."""
        audience = self._audience(event)
        if not audience:
            return
        if event.type == REVOKED:
            # A permission changed: drop the subscription before anything else is queued.
            for user_id in event.users:
                self.revoke(user_id, event.payload["topic"])
        domain = self._domain_of(event.type)
        text = encode_envelope(event.type, event.payload, id=event.id, sent_at=iso(utcnow()))
        key = event.key or f"{event.type}:{event.topic or ''}"
        delivered = 0
        for member in audience:
            if domain is not None and not self._push_enabled(member.user_id, domain):
                continue
            if event.cls == "latest":
                queued = member.buffer.put_latest(key, text)
            else:
                queued = member.buffer.put_droppable(text)
            delivered += queued
        self.delivered_ephemeral += delivered
        if delivered:
            _metrics.EVENTS_DELIVERED.labels(event.cls).inc(delivered)

    def _audience(self, event: Ephemeral) -> list[HubMember]:
        inside = f"{event.tenant}/" if event.tenant else None
        if event.broadcast:
            members = [
                m
                for user_id, group in self._by_user.items()
                if inside is None or user_id.startswith(inside)
                for m in group
            ]
        else:
            if event.topic is not None:
                members = list(self._by_topic.get(event.topic, ()))
            else:
                members = [m for user in event.users for m in self._by_user.get(user, ())]
            if inside is not None:
                members = [m for m in members if m.user_id.startswith(inside)]
        if event.exclude_user is not None:
            members = [m for m in members if m.user_id != event.exclude_user]
        return members

    def _domain_of(self, event_type: str) -> str | None:
        if self.rollout is None:
            return None
        from gateway.rollout import domain_of_event

        return domain_of_event(event_type)

    def _push_enabled(self, user_id: str, domain: str) -> bool:
        return self.rollout is None or bool(self.rollout.push_enabled(user_id, domain))

    # -- presence ------------------------------------------------------------

    def aggregate_presence(self, user_id: str) -> PresenceStatus:
        """ONLINE if any connection is ONLINE, AWAY if all are AWAY, OFFLINE if none."""
        members = self._by_user.get(user_id)
        if not members:
            return "OFFLINE"
        if any(member.presence == "ONLINE" for member in members):
            return "ONLINE"
        return "AWAY"

    async def presence_changed(self, user_id: str) -> None:
        """Recompute a user's presence; store and publish it if the aggregate changed."""
        lock = self._presence_locks.setdefault(user_id, trio.Lock())
        try:
            async with lock:
                status = self.aggregate_presence(user_id)
                if self._presence.get(user_id, "OFFLINE") == status:
                    return
                if status == "OFFLINE":
                    self._presence.pop(user_id, None)
                else:
                    self._presence[user_id] = status
                # Many nodes: the backplane weighs the user's other nodes in.
                announce = await self.backplane.presence(user_id, status)
                if announce is not None:
                    await self.announce_presence(user_id, announce)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._presence_locks.pop(user_id, None)

    async def announce_presence(self, user_id: str, status: PresenceStatus) -> None:
        """Store `status` as the user's presence and publish it to its watchers."""
        if self.domain is None:
            return
        outcome = await self._run_presence(self.domain, user_id, status)
        if isinstance(outcome, Outcome):
            await self.publish(outcome)

    async def _run_presence(
        self, domain: SessionDomain, user_id: str, status: PresenceStatus
    ) -> Outcome[object]:
        if self._presence_runner is not None:
            return await self._presence_runner(domain.set_presence, user_id, status)
        from gateway.store import run_store

        return await run_store(domain.set_presence, user_id, status)

    # -- shutdown ------------------------------------------------------------

    def reconnect_delays(self, count: int) -> list[int]:
        """`count` distinct, jittered delays (ms) spread over the reconnect window."""
        low, high = self._reconnect_window_ms
        span = max(high - low, count)
        return self._rng.sample(range(low, low + span), count)

    async def shutdown(self, grace_s: float = 10.0) -> bool:
        """Tell every connection to reconnect later and close it with 1012.

        Returns True when every connection closed within `grace_s`.
        """
        members = self.connections()
        for member, delay in zip(members, self.reconnect_delays(len(members)), strict=True):
            text = encode_envelope(
                "system.reconnect",
                {"retryAfterMs": delay, "reason": "SERVER_RESTART"},
                id=new_id("evt"),
                sent_at=iso(utcnow()),
            )
            member.close_soon(int(CloseCode.SERVICE_RESTART), "server restart", text)
        with trio.move_on_after(grace_s):
            await self._empty.wait()
        if self._by_user:
            log.warning("%d connections still open after the shutdown grace", len(self))
            return False
        return True
