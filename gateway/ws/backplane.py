"""How committed events reach every node's hub.

A `Backplane` carries what a domain mutation produced (durable events and
ephemeral events) from the node that committed it to the hubs of all nodes.
`LocalBackplane` is the single-node case: publishing delivers to the local
hub at once. A multi-node implementation (Redis pub/sub) serializes the
events to JSON on a channel and, in `run`, feeds what it receives into the
hub with the same two calls; a notification it loses is still delivered
within seconds by the streams' store tailing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import trio

from gateway.events import Ephemeral, StoredEvent

if TYPE_CHECKING:
    from gateway.ws.hub import Hub

__all__ = ["Backplane", "LocalBackplane"]

MemberKind = Literal["user", "topic"]


class Backplane(Protocol):
    """Carries published events to the hub of every node."""

    node_id: str
    kind: str  # "local" or "redis", as `cutover ops status` shows it

    async def publish(
        self, events: Sequence[StoredEvent], ephemeral: Sequence[Ephemeral] = ()
    ) -> None:
        """Hand committed events to every node (this one included)."""
        ...

    async def run(self, hub: Hub, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Deliver what arrives to `hub` until cancelled; `started()` once ready."""
        ...

    # Many nodes (gateway.ws.redis_backplane): what the hub tells the backplane.

    @property
    def ready(self) -> bool:
        """Whether events from other nodes reach this one (False: `/readyz` is 503)."""
        ...

    def follow(self, kind: MemberKind, key: str) -> None:
        """A local user or topic gained its first member: its events must reach this node."""
        ...

    def unfollow(self, kind: MemberKind, key: str) -> None:
        """A local user or topic lost its last member."""
        ...

    async def following(self, kind: MemberKind, key: str) -> None:
        """Wait until events published for a followed user or topic from any node
        reach this one (bounded; at once while the backplane is not ready, when
        `/readyz` says so and a resync follows)."""
        ...

    async def presence(self, user_id: str, status: str) -> str | None:
        """This node's aggregate presence of a user changed to `status`: the status
        the hub announces, or None when there is nothing to announce (the
        cluster-wide aggregate did not change, or the backplane announced it)."""
        ...

    async def claim_slot(self, user_id: str, limit: int) -> bool:
        """Whether the user's connections on every node (this node's as the hub
        counts them, the one being admitted included) stay within `limit`."""
        ...

    def slot_released(self, user_id: str) -> None:
        """One of the user's connections on this node ended."""
        ...

    # What the runtime tells and asks (`cutover ops status`).

    def advertise(self, url: str | None) -> None:
        """The URL other nodes and operators see for this node."""
        ...

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node: its id, connection count, and `alive`."""
        ...


class LocalBackplane:
    """The in-process backplane of a single node."""

    kind = "local"

    def __init__(self, node_id: str = "local") -> None:
        self.node_id = node_id
        self._hub: Hub | None = None

    def attach(self, hub: Hub) -> None:
        self._hub = hub

    @property
    def ready(self) -> bool:
        return True

    def follow(self, kind: MemberKind, key: str) -> None:
        """One node receives everything it publishes: nothing to subscribe to."""

    def unfollow(self, kind: MemberKind, key: str) -> None:
        pass

    async def following(self, kind: MemberKind, key: str) -> None:
        await trio.lowlevel.checkpoint()

    async def presence(self, user_id: str, status: str) -> str | None:
        return status  # this node's aggregate is the user's

    async def claim_slot(self, user_id: str, limit: int) -> bool:
        return True  # the hub's per-node count is the user's

    def slot_released(self, user_id: str) -> None:
        pass

    def advertise(self, url: str | None) -> None:
        """Nobody else asks: the one node is the cluster."""

    async def nodes(self) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        connections = len(self._hub) if self._hub is not None else 0
        return [{"id": self.node_id, "connections": connections, "alive": True}]

    async def publish(
        self, events: Sequence[StoredEvent], ephemeral: Sequence[Ephemeral] = ()
    ) -> None:
        if self._hub is None:
            raise RuntimeError("the backplane is not running")
        if events:
            self._hub.deliver_durable(events)
        for event in ephemeral:
            self._hub.deliver_ephemeral(event)
        await trio.lowlevel.checkpoint()

    async def run(
        self, hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._hub = hub
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._hub = None
