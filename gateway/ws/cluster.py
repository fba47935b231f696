"""Cluster-wide state in Redis: node leases, presence, per-user connection slots.

Every node holds a lease, `<prefix>node:<id>` (its URL and connection count
as JSON, with a TTL), refreshed every heartbeat, and is a member of
`<prefix>nodes`. What a node contributes to a user's state is written under
its node id, so a node that dies without cleaning up stops counting once its
lease expires:

- presence: `<prefix>presence:<user>` maps node id -> ONLINE | AWAY (this
  node's aggregate over the user's local connections). A Lua script writes the
  node's field and recomputes the cluster-wide aggregate over the fields of
  live nodes (ONLINE if any is ONLINE, AWAY if all are AWAY, OFFLINE if none),
  compared with the last one announced (`<prefix>presence-last:<user>`): the
  one caller that sees a change announces it. Announcing goes through the
  hub (`Hub.announce_presence`: the store's presence record and a
  `user.presence.updated` to the `presence:<user>` topic on every node).
- slots: `<prefix>slots:<user>` maps node id -> the connections the node
  holds for the user. A claim is one Lua script: the fields of live nodes
  (a dead node's are dropped on the way) plus this node's count, against the
  limit. Each node writes its own field as an absolute value under a per-user
  lock, so writes of one user never cross and a lost release heals on the
  next write.
- `<prefix>node-presence:<id>` and `<prefix>node-slots:<id>`: the users a node
  has fields for, so the node that notices an expired lease can reap them
  (a presence change announced for each user who went OFFLINE with it), and
  a node restarted under the same id can clear what it left behind.

The scripts read lease keys they are not given as KEYS: this works on a
single Redis server (or a replicated one), not on Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio
from coredis.tokens import PureToken

if TYPE_CHECKING:
    import coredis

    from gateway.ws.hub import Hub

__all__ = ["ClusterState", "Keys"]

log = logging.getLogger("cutover.cluster")

CHUNK = 256  # users per pipelined batch of script calls

# KEYS: presence hash, last announced aggregate, this node's presence users
# ARGV: node id, its status (OFFLINE removes the field), user id, lease prefix
PRESENCE = """
local hash, last_key, members = KEYS[1], KEYS[2], KEYS[3]
local node, status, user, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if status == 'OFFLINE' then
  redis.call('HDEL', hash, node)
  redis.call('SREM', members, user)
else
  redis.call('HSET', hash, node, status)
  redis.call('SADD', members, user)
end
local aggregate = 'OFFLINE'
local fields = redis.call('HGETALL', hash)
for i = 1, #fields, 2 do
  local other, value = fields[i], fields[i + 1]
  if other ~= node and redis.call('EXISTS', lease .. other) == 0 then
    redis.call('HDEL', hash, other)
  elseif value == 'ONLINE' then
    aggregate = 'ONLINE'
  elseif aggregate == 'OFFLINE' then
    aggregate = 'AWAY'
  end
end
local last = redis.call('GET', last_key) or 'OFFLINE'
if aggregate == 'OFFLINE' then
  redis.call('DEL', last_key)
else
  redis.call('SET', last_key, aggregate)
end
if last == aggregate then
  return false
end
return aggregate
"""

# KEYS: slots hash, this node's slot users
# ARGV: node id, connections this node would hold, limit, lease prefix, user id
CLAIM = """
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local other = fields[i]
  if other ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[4] .. other) == 1 then
      others = others + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], other)
    end
  end
end
if others + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""

# KEYS: slots hash, this node's slot users; ARGV: node id, connections held, user id
SLOTS = """
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 1
"""


@attrs.frozen
class Keys:
    """The names of the cluster's keys, under one prefix."""

    prefix: str = "cutover:"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def lease_prefix(self) -> str:
        return f"{self.prefix}node:"

    def lease(self, node_id: str) -> str:
        return f"{self.lease_prefix}{node_id}"

    def presence(self, user_id: str) -> str:
        return f"{self.prefix}presence:{user_id}"

    def presence_last(self, user_id: str) -> str:
        return f"{self.prefix}presence-last:{user_id}"

    def node_presence(self, node_id: str) -> str:
        return f"{self.prefix}node-presence:{node_id}"

    def slots(self, user_id: str) -> str:
        return f"{self.prefix}slots:{user_id}"

    def node_slots(self, node_id: str) -> str:
        return f"{self.prefix}node-slots:{node_id}"

    def reaping(self, node_id: str) -> str:
        return f"{self.prefix}reaping:{node_id}"


class _UserLocks:
    """One lock per user, made on demand and forgotten when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[str, trio.Lock] = {}

    @asynccontextmanager
    async def hold(self, users: Iterable[str]) -> AsyncIterator[None]:
        # Sorted, and every other holder takes one user at a time: no deadlock.
        async with AsyncExitStack() as stack:
            for user_id in sorted(set(users)):
                lock = self._locks.setdefault(user_id, trio.Lock())
                await stack.enter_async_context(lock)
                stack.callback(self._forget, user_id, lock)
            yield

    def _forget(self, user_id: str, lock: trio.Lock) -> None:
        # Runs before the lock is released (LIFO): forget it only if nobody waits.
        if lock.statistics().tasks_waiting == 0 and self._locks.get(user_id) is lock:
            del self._locks[user_id]

    def __len__(self) -> int:
        return len(self._locks)


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClusterState:
    """This node's share of the cluster's state in Redis (see the module docstring)."""

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        node_id: str,
        keys: Keys,
        lease_ttl_s: float,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.keys = keys
        self.lease_ttl_s = lease_ttl_s
        self.started_at = time.time()
        self._presence = client.register_script(PRESENCE)
        self._claim = client.register_script(CLAIM)
        self._slots = client.register_script(SLOTS)
        self._locks = _UserLocks()
        # Users this node has (or may have) a slot field for.
        self.slot_users: set[str] = set()

    # -- the lease -------------------------------------------------------------

    async def heartbeat(self, hub: Hub, url: str | None) -> bool:
        """Refresh this node's lease; True when it had lapsed (or is new), so
        what this node wrote may have been reaped and must be written again."""
        lease = {
            "id": self.node_id,
            "url": url,
            "connections": len(hub),
            "users": hub.user_count,
            "startedAt": self.started_at,
            "heartbeatAt": time.time(),
        }
        async with self.client.pipeline(transaction=False) as pipe:
            previous = pipe.set(
                self.keys.lease(self.node_id),
                json.dumps(lease),
                px=int(self.lease_ttl_s * 1000),
                get=True,
            )
            pipe.sadd(self.keys.nodes, [self.node_id])
        return await previous is None

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node the cluster knows: live ones with their lease, the others
        (a lease expired, not yet reaped) with `alive: false`."""
        ids = sorted(await self.client.smembers(self.keys.nodes))
        if not ids:
            return []
        values = await self.client.mget([self.keys.lease(node_id) for node_id in ids])
        nodes = []
        for node_id, value in zip(ids, values, strict=True):
            if value is None:
                nodes.append({"id": node_id, "alive": False})
            else:
                nodes.append({**json.loads(value), "alive": True})
        return nodes

    # -- presence --------------------------------------------------------------

    async def update_presence(self, hub: Hub, user_id: str) -> None:
        """Write this node's view of `user_id` (read now, under the user's lock)
        and announce the cluster-wide aggregate if it changed."""
        async with self._locks.hold([user_id]):
            status = hub.aggregate_presence(user_id)
            changed: Any = await self._presence(
                keys=self._presence_keys(user_id, self.node_id),
                args=[self.node_id, status, user_id, self.keys.lease_prefix],
            )
            if changed is not None:
                await hub.announce_presence(user_id, str(changed))

    async def _write_presence(
        self, hub: Hub, users: Sequence[str], node_id: str, local: bool
    ) -> None:
        """Rewrite the presence fields of `users` for `node_id` (this node's from
        the hub, a dead node's as OFFLINE) and announce what changed."""
        for chunk in _chunks(users):
            async with self._locks.hold(chunk):
                async with self.client.pipeline(transaction=False) as pipe:
                    replies: list[Any] = [
                        self._presence(
                            keys=self._presence_keys(user_id, node_id),
                            args=[
                                node_id,
                                hub.aggregate_presence(user_id) if local else "OFFLINE",
                                user_id,
                                self.keys.lease_prefix,
                            ],
                            client=pipe,
                        )
                        for user_id in chunk
                    ]
                for user_id, reply in zip(chunk, replies, strict=True):
                    changed = await reply
                    if changed is not None:
                        await hub.announce_presence(user_id, str(changed))

    def _presence_keys(self, user_id: str, node_id: str) -> list[str]:
        keys = self.keys
        return [keys.presence(user_id), keys.presence_last(user_id), keys.node_presence(node_id)]

    # -- connection slots --------------------------------------------------------

    async def claim(self, hub: Hub, user_id: str, limit: int) -> bool:
        """Whether this node may hold `hub.slots_held(user_id)` connections of the
        user (the one being admitted included) with the other live nodes' counts
        under `limit`; writes this node's count when it may."""
        self.slot_users.add(user_id)
        async with self._locks.hold([user_id]):
            granted: Any = await self._claim(
                keys=[self.keys.slots(user_id), self.keys.node_slots(self.node_id)],
                args=[
                    self.node_id,
                    hub.slots_held(user_id),
                    limit,
                    self.keys.lease_prefix,
                    user_id,
                ],
            )
        return bool(granted)

    async def write_slots(self, hub: Hub, users: Iterable[str]) -> None:
        """Write this node's slot count of each user as the hub holds it now."""
        for chunk in _chunks(sorted(set(users))):
            async with (
                self._locks.hold(chunk),
                self.client.pipeline(transaction=False) as pipe,
            ):
                for user_id in chunk:
                    self._slots(
                        keys=[self.keys.slots(user_id), self.keys.node_slots(self.node_id)],
                        args=[self.node_id, hub.slots_held(user_id), user_id],
                        client=pipe,
                    )
            for user_id in chunk:
                if hub.slots_held(user_id) == 0:
                    self.slot_users.discard(user_id)

    # -- whole-node passes ---------------------------------------------------------

    async def resync(self, hub: Hub) -> None:
        """Write everything this node holds again (after a reconnect, a lapsed
        lease or a restart under the same id), and clear what it no longer holds."""
        keys = self.keys
        presence_users = await self.client.smembers(keys.node_presence(self.node_id))
        local = {member.user_id for member in hub.connections()}
        await self._write_presence(hub, sorted(presence_users | local), self.node_id, True)
        slot_users = await self.client.smembers(keys.node_slots(self.node_id))
        await self.write_slots(hub, slot_users | self.slot_users)

    async def reap(self, hub: Hub) -> list[str]:
        """Clear the state of every node whose lease expired; returns their ids."""
        ids = [n for n in await self.client.smembers(self.keys.nodes) if n != self.node_id]
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            alive = [pipe.exists([self.keys.lease(node_id)]) for node_id in ids]
        reaped = []
        for node_id, exists in zip(ids, alive, strict=True):
            if await exists:
                continue
            claimed = await self.client.set(
                self.keys.reaping(node_id),
                self.node_id,
                px=int(max(self.lease_ttl_s, 5) * 1000),
                condition=PureToken.NX,
            )
            if not claimed:
                continue  # another node is reaping it
            log.warning("node %s stopped renewing its lease: clearing its state", node_id)
            await self.clear_node(hub, node_id)
            reaped.append(node_id)
        return reaped

    async def clear_node(self, hub: Hub, node_id: str) -> None:
        """Remove a node's presence and slot fields (announcing who went OFFLINE
        with it), its user sets and, if its lease is gone, its membership."""
        keys = self.keys
        users = sorted(await self.client.smembers(keys.node_presence(node_id)))
        await self._write_presence(hub, users, node_id, False)
        slot_users = sorted(await self.client.smembers(keys.node_slots(node_id)))
        for chunk in _chunks(slot_users):
            async with self.client.pipeline(transaction=False) as pipe:
                for user_id in chunk:
                    pipe.hdel(keys.slots(user_id), [node_id])
        if not await self.client.exists([keys.lease(node_id)]):
            await self.client.delete([keys.node_presence(node_id), keys.node_slots(node_id)])
            await self.client.srem(keys.nodes, [node_id])
        await self.client.delete([keys.reaping(node_id)])

    async def leave(self, hub: Hub) -> None:
        """A graceful exit: drop this node's lease and whatever it still holds."""
        await self.client.srem(self.keys.nodes, [self.node_id])  # no reaper comes now
        await self.client.delete([self.keys.lease(self.node_id)])
        await self.clear_node(hub, self.node_id)
