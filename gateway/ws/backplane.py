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
from typing import TYPE_CHECKING, Protocol

import trio

from gateway.events import Ephemeral, StoredEvent

if TYPE_CHECKING:
    from gateway.ws.hub import Hub

__all__ = ["Backplane", "LocalBackplane"]


class Backplane(Protocol):
    """Carries published events to the hub of every node."""

    node_id: str

    async def publish(
        self, events: Sequence[StoredEvent], ephemeral: Sequence[Ephemeral] = ()
    ) -> None:
        """Hand committed events to every node (this one included)."""
        ...

    async def run(self, hub: Hub, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Deliver what arrives to `hub` until cancelled; `started()` once ready."""
        ...


class LocalBackplane:
    """The in-process backplane of a single node."""

    def __init__(self, node_id: str = "local") -> None:
        self.node_id = node_id
        self._hub: Hub | None = None

    def attach(self, hub: Hub) -> None:
        self._hub = hub

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
