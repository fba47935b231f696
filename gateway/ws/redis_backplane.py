"""The Redis backplane of many nodes: pub/sub through coredis, on Trio.

What a node publishes goes to its own hub at once and, as JSON, to one Redis
channel per audience: `<prefix>user:<id>` (durable events and user-targeted
ephemeral events, narrowed to that user), `<prefix>topic:<topic>`,
`<prefix>tenant:<tenant>` (a tenant admin's broadcast) and `<prefix>everyone`
(the operator's). A node subscribes only to what its local connections need:
the hub tells it when a user or topic gains its first local member and loses
its last (`follow` / `unfollow`), a user bringing its tenant's channel and the
everyone channel with it, and the changes go to Redis in batched SUBSCRIBE and
UNSUBSCRIBE commands. So a node's traffic grows with its own users and
topics, not with the cluster's. A node skips its own messages (it delivered
them already); what arrives from others is fed to the hub with
`deliver_durable` / `deliver_ephemeral`, whose audience rules (tenants,
`exclude_user`, rollout) apply as for local events.

Redis pub/sub is at most once. A notification lost in Redis (a restart, a
dropped connection, a publish while Redis is away) is still delivered by the
store tail (`Hub._tail_streams`, every 5 s), and sooner after a reconnect:
once every channel is subscribed again the backplane reads the stream heads
of the node's users and nudges the streams that are behind. Ephemeral events
published while Redis is away reach only the publishing node's connections.

The subscriber reconnects with jittered exponential backoff (50 ms to 2 s)
and subscribes to everything again; while it is disconnected `ready` is
False, which `/readyz` reports as 503. Leases, presence and connection slots
(`gateway.ws.cluster.ClusterState`) are kept by a maintenance task that
heartbeats, rewrites this node's state after a reconnect or a lapsed lease,
and reaps nodes whose lease expired. While Redis is away, claims fall back to
the per-node limit (a node keeps serving), and presence changes are written
when it is back.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import coredis
import trio
from coredis.patterns.pubsub import PubSub
from coredis.retry import NoRetryPolicy

from gateway.config import ConfigError
from gateway.events import Ephemeral, StoredEvent
from gateway.ws.cluster import ClusterState, Keys

if TYPE_CHECKING:
    from gateway.ws.hub import Hub

__all__ = ["Channels", "Interest", "RedisBackplane", "decode_message", "encode_durable"]

log = logging.getLogger("cutover.backplane")

WIRE_VERSION = 1
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE / UNSUBSCRIBE command
PUBLISH_BATCH = 512  # messages per pipelined round trip
URL_SCHEMES = ("redis://", "rediss://", "unix://")

Kind = Literal["user", "topic"]


# -- names and wire format (no I/O) ------------------------------------------------


@attrs.frozen
class Channels:
    """The pub/sub channels of one cluster (one prefix)."""

    prefix: str = "cutover:"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}topic:{topic}"

    def tenant(self, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}"

    @property
    def everyone(self) -> str:
        return f"{self.prefix}everyone"

    def of_member(self, kind: Kind, key: str) -> list[str]:
        """The channels a local user (or topic) needs while it has members."""
        if kind == "topic":
            return [self.topic(key)]
        channels = [self.user(key), self.everyone]
        tenant, slash, _sub = key.partition("/")
        if slash:
            channels.append(self.tenant(tenant))
        return channels

    def of_ephemeral(self, event: Ephemeral) -> list[tuple[str, Ephemeral]]:
        """Where an ephemeral event goes: one channel per audience; an event for a
        list of users goes to each user's channel narrowed to that user, so a node
        with several of them delivers it once to each."""
        if event.broadcast:
            return [(self.tenant(event.tenant) if event.tenant else self.everyone, event)]
        if event.topic is not None:
            return [(self.topic(event.topic), event)]
        if len(event.users) == 1:
            return [(self.user(event.users[0]), event)]
        return [(self.user(u), attrs.evolve(event, users=(u,))) for u in dict.fromkeys(event.users)]


class Interest:
    """Which channels this node's local members need, counted (a tenant's channel
    by its local users, the everyone channel by all of them)."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels
        self._counts: Counter[str] = Counter()
        self.users: set[str] = set()

    def follow(self, kind: Kind, key: str) -> None:
        if kind == "user":
            self.users.add(key)
        self._counts.update(self.channels.of_member(kind, key))

    def unfollow(self, kind: Kind, key: str) -> None:
        if kind == "user":
            self.users.discard(key)
        for channel in self.channels.of_member(kind, key):
            left = self._counts[channel] - 1
            if left > 0:
                self._counts[channel] = left
            else:
                del self._counts[channel]

    def wanted(self) -> set[str]:
        return set(self._counts)

    def user_of(self, channel: str) -> str | None:
        prefix = self.channels.user("")
        return channel[len(prefix) :] if channel.startswith(prefix) else None


def encode_durable(node_id: str, events: Sequence[StoredEvent]) -> str:
    """One user's committed events (in `seq` order) as a channel message."""
    return json.dumps(
        {"v": WIRE_VERSION, "node": node_id, "durable": [attrs.asdict(e) for e in events]},
        separators=(",", ":"),
    )


def encode_ephemeral(node_id: str, event: Ephemeral) -> str:
    return json.dumps(
        {"v": WIRE_VERSION, "node": node_id, "ephemeral": attrs.asdict(event)},
        separators=(",", ":"),
    )


def decode_message(data: str) -> tuple[str, list[StoredEvent], Ephemeral | None]:
    """(origin node, durable events, ephemeral event) of a channel message."""
    message = json.loads(data)
    if message.get("v") != WIRE_VERSION:
        raise ValueError(f"unknown backplane message version {message.get('v')!r}")
    durable = [StoredEvent(**item) for item in message.get("durable", ())]
    ephemeral = None
    if "ephemeral" in message:
        item = dict(message["ephemeral"])
        item["users"] = tuple(item.get("users", ()))
        ephemeral = Ephemeral(**item)
    return str(message["node"]), durable, ephemeral


def _messages(
    node_id: str,
    channels: Channels,
    events: Sequence[StoredEvent],
    ephemeral: Sequence[Ephemeral],
) -> list[tuple[str, str]]:
    by_user: dict[str, list[StoredEvent]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event)
    messages = [
        (channels.user(user_id), encode_durable(node_id, sorted(items, key=lambda e: e.seq)))
        for user_id, items in by_user.items()
    ]
    for notice in ephemeral:
        messages += [(c, encode_ephemeral(node_id, e)) for c, e in channels.of_ephemeral(notice)]
    return messages


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the backplane ----------------------------------------------------------------


class RedisBackplane:
    """Carries events between nodes over Redis pub/sub; keeps the cluster's state."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        prefix: str = "cutover:",
        lease_ttl_s: float = 20.0,
        heartbeat_s: float | None = None,
        command_timeout_s: float = 5.0,
        keepalive_s: float = 5.0,
        reconnect_s: tuple[float, float] = (0.05, 2.0),
        publish_queue: int = 1024,
    ) -> None:
        if not url.startswith(URL_SCHEMES):
            raise ConfigError(f"--redis-url {url!r}: expected redis://, rediss:// or unix://")
        if lease_ttl_s <= 0:
            raise ConfigError(f"the Redis lease TTL must be greater than 0, got {lease_ttl_s}")
        self.url = url
        self.node_id = node_id
        self.channels = Channels(prefix)
        self.keys = Keys(prefix)
        self.lease_ttl_s = lease_ttl_s
        # Several heartbeats per lease: one lost beat does not expire it.
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else lease_ttl_s / 4
        self.command_timeout_s = command_timeout_s
        self.keepalive_s = keepalive_s
        self.reconnect_s = reconnect_s
        self.advertised_url: str | None = None
        # False: stop without a goodbye, as a node that dies (tests of lease expiry).
        self.leave_on_exit = True
        self.cluster: ClusterState | None = None
        self.stats: Counter[str] = Counter()
        self._interest = Interest(self.channels)
        self._subscribed: set[str] = set()
        self._hub: Hub | None = None
        self._ready = False
        self._ready_since: float | None = None
        self._changed = trio.Event()  # the interest changed: subscribe or unsubscribe
        self._progress = trio.Event()  # a batch was applied or readiness changed
        self._resync = trio.Event()  # this node's cluster state must be written again
        self._beat_now = trio.Event()  # the lease's content changed: refresh it now
        self._slots_dirty: set[str] = set()
        self._slots_wakeup = trio.Event()
        self._outbox_send, self._outbox = trio.open_memory_channel[list[tuple[str, str]]](
            publish_queue
        )

    # -- what the hub and the runtime call ------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected to Redis with every channel this node needs subscribed."""
        return self._ready

    def follow(self, kind: Kind, key: str) -> None:
        """A local user or topic gained its first member."""
        self._interest.follow(kind, key)
        self._changed.set()

    def unfollow(self, kind: Kind, key: str) -> None:
        """A local user or topic lost its last member."""
        self._interest.unfollow(kind, key)
        self._changed.set()

    async def following(self, kind: Kind, key: str) -> None:
        """Wait (at most the command timeout) until the channels of a followed
        user or topic are subscribed, so a reply sent after it (a `subscribe`
        ack) promises that events published on any node from then on arrive."""
        channels = self._interest.channels.of_member(kind, key)
        with trio.move_on_after(self.command_timeout_s):
            while self._ready and not self._subscribed.issuperset(channels):
                await self._progress.wait()
        await trio.lowlevel.checkpoint()

    async def publish(
        self, events: Sequence[StoredEvent], ephemeral: Sequence[Ephemeral] = ()
    ) -> None:
        """Deliver to this node's hub now, and queue the messages for the others."""
        hub = self._hub
        if hub is None:
            raise RuntimeError("the backplane is not running")
        if events:
            hub.deliver_durable(events)
        for event in ephemeral:
            hub.deliver_ephemeral(event)
        await trio.lowlevel.checkpoint()
        if not self._ready:
            # The store tail delivers the durable events on the other nodes.
            self.stats["dropped"] += len(events) + len(ephemeral)
            return
        messages = _messages(self.node_id, self.channels, events, ephemeral)
        try:
            self._outbox_send.send_nowait(messages)
        except trio.WouldBlock:
            self.stats["dropped"] += len(messages)
            log.warning("the backplane's publish queue is full: a message is dropped")

    async def presence(self, user_id: str, status: str) -> str | None:
        """Write this node's view of the user; the cluster-wide aggregate is
        announced here when it changes, so the hub has nothing to announce."""
        cluster, hub = self.cluster, self._hub
        if cluster is None or hub is None or not self._ready:
            self._resync.set()  # written (and announced) once Redis is back
            return None
        try:
            with trio.fail_after(self.command_timeout_s):
                await cluster.update_presence(hub, user_id)
        except (Exception, trio.TooSlowError):
            log.warning("writing the presence of %s to Redis failed", user_id, exc_info=True)
            self._resync.set()
        return None

    async def claim_slot(self, user_id: str, limit: int) -> bool:
        """Whether the cluster holds fewer than `limit` connections of the user
        (this node's, the one being admitted included, read from the hub)."""
        cluster, hub = self.cluster, self._hub
        if cluster is None or hub is None or not self._ready:
            if cluster is not None:
                cluster.slot_users.add(user_id)
            return True  # the per-node limit only, until Redis is back
        try:
            with trio.fail_after(self.command_timeout_s):
                return await cluster.claim(hub, user_id, limit)
        except (Exception, trio.TooSlowError):
            log.warning("claiming a slot of %s in Redis failed", user_id, exc_info=True)
            self._resync.set()
            return True

    def slot_released(self, user_id: str) -> None:
        self._slots_dirty.add(user_id)
        self._slots_wakeup.set()

    def advertise(self, url: str | None) -> None:
        """The URL other nodes and operators see for this node."""
        self.advertised_url = url
        self._beat_now.set()

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node in Redis (connection counts as of each one's last heartbeat;
        this node's as of now)."""
        if self.cluster is None or self._hub is None:
            raise RuntimeError("the backplane is not running")
        with trio.fail_after(self.command_timeout_s):
            nodes = await self.cluster.nodes()
        for node in nodes:
            if node["id"] == self.node_id and node.get("alive"):
                node.update(connections=len(self._hub), users=self._hub.user_count)
        return nodes

    async def settled(self) -> None:
        """Wait until connected with every wanted channel subscribed (tests, tools)."""
        while not (self._ready and self._subscribed == self._interest.wanted()):
            await self._progress.wait()

    # -- running -------------------------------------------------------------------

    async def run(
        self, hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; `started()` once connected (or after a first failed
        attempt, with `ready` False, so a node starts while Redis is away)."""
        self._hub = hub
        stop = trio.CancelScope()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(self._shielded, hub, stop)
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    stop.cancel()  # the shielded task ends its work and says goodbye
        finally:
            self._hub = None

    async def _shielded(
        self, hub: Hub, stop: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        # coredis runs its connections in the client's own nursery: shielding it
        # keeps the client usable for the shielded, bounded goodbye below, and
        # `stop` (cancelled by `run`) ends the work.
        with trio.CancelScope(shield=True):
            client = coredis.Redis.from_url(
                self.url,
                decode_responses=True,
                connect_timeout=self.command_timeout_s,
                stream_timeout=self.command_timeout_s,
                retry_policy=NoRetryPolicy(),
            )
            async with client:
                self.cluster = ClusterState(
                    client, node_id=self.node_id, keys=self.keys, lease_ttl_s=self.lease_ttl_s
                )
                with stop:
                    async with trio.open_nursery() as nursery:
                        first = trio.Event()
                        nursery.start_soon(self._subscriber, client, hub, first)
                        with trio.move_on_after(self.command_timeout_s):
                            await first.wait()
                        nursery.start_soon(self._publisher, client)
                        nursery.start_soon(self._heartbeat, hub)
                        nursery.start_soon(self._janitor, hub)
                        nursery.start_soon(self._resyncer, hub)
                        nursery.start_soon(self._slot_writer, hub)
                        task_status.started()
                self._set_ready(False)
                if not self.leave_on_exit:
                    return
                with trio.move_on_after(min(3.0, self.command_timeout_s)):
                    try:
                        await self.cluster.leave(hub)
                    except Exception as exc:
                        log.warning("leaving the cluster cleanly failed (%s)", _brief(exc))

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            log.log(
                logging.INFO if ready else logging.WARNING,
                "Redis backplane %s",
                "connected" if ready else "disconnected",
            )
        self._ready = ready
        self._bump()

    def _bump(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    # -- the subscriber --------------------------------------------------------------

    async def _subscriber(self, client: coredis.Redis[str], hub: Hub, first: trio.Event) -> None:
        failures = 0
        while True:
            try:
                await self._session(client, hub, first)
            except Exception as exc:  # ConnectionError, TimeoutError, their groups
                level = logging.WARNING if failures == 0 else logging.DEBUG
                log.log(level, "Redis subscriber lost (%s); reconnecting", _brief(exc))
            self._set_ready(False)
            first.set()
            self.stats["disconnects"] += 1
            if self._ready_since is not None and trio.current_time() - self._ready_since > 10:
                failures = 0  # it had been up a while: start the backoff over
            self._ready_since = None
            failures += 1
            low, high = self.reconnect_s
            await trio.sleep(min(high, low * 2 ** (failures - 1)) * random.uniform(0.5, 1.0))

    async def _session(self, client: coredis.Redis[str], hub: Hub, first: trio.Event) -> None:
        pubsub: PubSub[str] = PubSub(
            client.connection_pool,
            retry_policy=NoRetryPolicy(),
            subscription_timeout=self.command_timeout_s,
            # Leaving a session always waits this long for acknowledgements.
            unsubscription_timeout=0.25,
            max_idle_seconds=self.keepalive_s,
        )
        async with pubsub:
            self._subscribed = set()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, pubsub, hub)
                await self._apply(pubsub, nursery, hub, catch_up=False)
                self._set_ready(True)
                self._ready_since = trio.current_time()
                self._resync.set()
                first.set()
                # Whatever was published while this node was not listening.
                nursery.start_soon(self._catch_up, hub, sorted(self._interest.users))
                while True:
                    await self._changed.wait()
                    await self._apply(pubsub, nursery, hub, catch_up=True)

    async def _apply(
        self, pubsub: PubSub[str], nursery: trio.Nursery, hub: Hub, *, catch_up: bool
    ) -> None:
        """Bring the subscriptions in line with the interest, in batches."""
        self._changed = trio.Event()
        wanted = self._interest.wanted()
        add = sorted(wanted - self._subscribed)
        drop = sorted(self._subscribed - wanted)
        for chunk in _chunks(add, SUBSCRIBE_BATCH):
            await pubsub.subscribe(*chunk)
            self._subscribed.update(chunk)
        for chunk in _chunks(drop, SUBSCRIBE_BATCH):
            await pubsub.unsubscribe(*chunk)
            self._subscribed.difference_update(chunk)
        self.stats["subscribed"] += len(add)
        self.stats["unsubscribed"] += len(drop)
        if catch_up:
            # An event committed between a connection's registration and its
            # channel's subscription was published to nobody here.
            users = [u for u in map(self._interest.user_of, add) if u is not None]
            if users:
                nursery.start_soon(self._catch_up, hub, users)
        self._bump()

    async def _receive(self, pubsub: PubSub[str], hub: Hub) -> None:
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] != "message":
                continue
            try:
                origin, durable, ephemeral = decode_message(str(message["data"]))
            except (ValueError, TypeError, KeyError):
                log.warning("an unreadable backplane message was dropped", exc_info=True)
                continue
            if origin == self.node_id:
                continue  # delivered when it was published
            self.stats["received"] += 1
            if durable:
                hub.deliver_durable(durable)
            if ephemeral is not None:
                hub.deliver_ephemeral(ephemeral)

    async def _catch_up(self, hub: Hub, users: Sequence[str]) -> None:
        """Nudge the streams of `users` that are behind the store."""
        if hub.store is None or not users:
            return
        from gateway.store import run_store

        try:
            heads = await run_store(hub.store.stream_heads, list(users))
        except Exception:
            log.warning("reading stream heads after a subscription failed", exc_info=True)
            return
        for user_id, head in heads.items():
            for member in hub.connections(user_id):
                member.stream.nudge(head)

    # -- the publisher ----------------------------------------------------------------

    async def _publisher(self, client: coredis.Redis[str]) -> None:
        """Send queued messages, as many per round trip as are waiting."""
        async for batch in self._outbox:
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.extend(self._outbox.receive_nowait())
                except trio.WouldBlock:
                    break
            if not self._ready:
                self.stats["dropped"] += len(batch)
                continue
            try:
                with trio.fail_after(self.command_timeout_s):
                    async with client.pipeline(transaction=False) as pipe:
                        for channel, data in batch:
                            pipe.publish(channel, data)
                self.stats["published"] += len(batch)
            except (Exception, trio.TooSlowError) as exc:
                self.stats["dropped"] += len(batch)
                log.warning("publishing %d messages failed (%s)", len(batch), _brief(exc))

    # -- cluster state ---------------------------------------------------------------------

    async def _heartbeat(self, hub: Hub) -> None:
        """Refresh the lease; a lapsed one means this node's state may have been
        reaped, so it is written again."""
        assert self.cluster is not None
        failing = False
        while True:
            try:
                if await self.cluster.heartbeat(hub, self.advertised_url):
                    self._resync.set()
                failing = False
            except Exception as exc:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "refreshing this node's lease failed (%s)", _brief(exc))
                failing = True
            with trio.move_on_after(self.heartbeat_s):
                await self._beat_now.wait()
            self._beat_now = trio.Event()

    async def _janitor(self, hub: Hub) -> None:
        """Clear the state of nodes whose lease expired (their users go OFFLINE)."""
        assert self.cluster is not None
        while True:
            await trio.sleep(self.heartbeat_s)
            if not self._ready:
                continue
            # A round in progress finishes even when this node stops: cut short,
            # it would leave a dead node listed with no reaper to come.
            bound = trio.current_time() + min(self.lease_ttl_s, 5.0)
            try:
                with trio.CancelScope(shield=True, deadline=bound):
                    self.stats["reaped"] += len(await self.cluster.reap(hub))
            except Exception as exc:
                log.warning("reaping expired nodes failed (%s)", _brief(exc))

    async def _resyncer(self, hub: Hub) -> None:
        """Write this node's presence and slots again after a reconnect, a lapsed
        lease or a failed write."""
        assert self.cluster is not None
        while True:
            await self._resync.wait()
            if not self._ready:
                await self._progress.wait()  # until Redis is back
                continue
            self._resync = trio.Event()
            try:
                await self.cluster.resync(hub)
                self.stats["resyncs"] += 1
            except Exception as exc:
                log.warning("writing this node's state to Redis failed (%s)", _brief(exc))
                self._resync.set()
                await trio.sleep(min(self.heartbeat_s, 1.0))

    async def _slot_writer(self, hub: Hub) -> None:
        """Write the slot counts of users whose connections ended."""
        assert self.cluster is not None
        while True:
            await self._slots_wakeup.wait()
            self._slots_wakeup = trio.Event()
            if not self._ready or not self._slots_dirty:
                continue  # the resync after a reconnect writes them
            users, self._slots_dirty = self._slots_dirty, set()
            try:
                with trio.fail_after(self.command_timeout_s):
                    await self.cluster.write_slots(hub, users)
            except (Exception, trio.TooSlowError) as exc:
                log.warning("writing slot counts failed (%s)", _brief(exc))
                self._resync.set()


def _brief(exc: BaseException) -> str:
    """The innermost message of an exception (group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
