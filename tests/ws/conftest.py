"""In-memory fakes of the store, domain, rollout and auth for the push-path core.

They expose the same methods as `gateway.store.Store`, `gateway.domain.Domain`,
`gateway.rollout.RolloutConfig` and `gateway.auth.Authenticator`, with just
enough behaviour to drive the connection: per-user streams with `seq`,
chat conversations with participants, typing and presence events.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from gateway.auth import Principal
from gateway.domain.viewer import Viewer
from gateway.errors import Forbidden, HistoryExpired, NotFound, TokenExpired, Unauthorized
from gateway.events import Cursor, Ephemeral, Outcome, StoredEvent, iso, new_id, utcnow
from gateway.ws.connection import Connection, WsSettings
from gateway.ws.hub import Hub
from gateway.ws.transport import MemoryClient, MemoryTransport


class FakeStore:
    """Per-user event streams; events before `retained_from[user]` are gone."""

    def __init__(self, epoch: str = "ep1") -> None:
        self.epoch = epoch
        self.streams: dict[str, list[StoredEvent]] = {}
        self.retained_from: dict[str, int] = {}
        self.calls: list[tuple[str, str, int]] = []

    def append(self, user_id: str, type: str = "notification.new", payload: Any = None):
        stream = self.streams.setdefault(user_id, [])
        event = StoredEvent(
            user_id=user_id,
            epoch=self.epoch,
            seq=len(stream) + 1,
            id=new_id("evt"),
            type=type,
            payload=payload if payload is not None else {"n": len(stream) + 1},
            created_at=iso(utcnow()),
        )
        stream.append(event)
        return event

    def stream_position(self, user_id: str) -> Cursor:
        self.calls.append(("stream_position", user_id, -1))
        return Cursor(self.epoch, len(self.streams.get(user_id, ())))

    def events_after(self, user_id: str, after_seq: int, limit: int = 1000):
        self.calls.append(("events_after", user_id, after_seq))
        if after_seq + 1 < self.retained_from.get(user_id, 1):
            raise HistoryExpired(f"events after {after_seq} are gone")
        return list(self.streams.get(user_id, ())[after_seq : after_seq + limit])


class FakeDomain:
    """Chat conversations, typing and presence over a `FakeStore`."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.conversations: dict[str, set[str]] = {}
        self.presence_calls: list[tuple[str, str]] = []
        self.fail_next: Exception | None = None
        self._ids = itertools.count(1)

    def _check(self, viewer: Viewer, conversation_id: str) -> set[str]:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        members = self.conversations.get(conversation_id)
        if members is None:
            raise NotFound(f"conversation {conversation_id} not found")
        if viewer.user_id not in members:
            raise Forbidden("not a participant")
        return members

    def send_chat_message(self, viewer, conversation_id, body, client_message_id):
        members = self._check(viewer, conversation_id)
        message = {
            "id": f"m{next(self._ids)}",
            "conversationId": conversation_id,
            "senderId": viewer.user_id,
            "body": body,
            "clientMessageId": client_message_id,
        }
        events = tuple(
            self.store.append(user, "chat.message", {"message": message})
            for user in sorted(members)
        )
        return Outcome(message, events)

    def mark_conversation_read(self, viewer, conversation_id, up_to_message_id=None):
        self._check(viewer, conversation_id)
        conversation = {"id": conversation_id, "unreadCount": 0}
        event = self.store.append(
            viewer.user_id, "chat.conversation.updated", {"conversation": conversation}
        )
        return Outcome(conversation, (event,))

    def mark_delivered(self, viewer, conversation_id, message_ids):
        self._check(viewer, conversation_id)
        return Outcome(len(message_ids))

    def typing(self, viewer, conversation_id, state):
        self._check(viewer, conversation_id)
        event = Ephemeral(
            f"chat.typing.{state}",
            {"conversationId": conversation_id, "userId": viewer.user_id},
            cls="drop",
            topic=f"conversation:{conversation_id}",
            exclude_user=viewer.user_id,
        )
        return Outcome(None, ephemeral=(event,))

    def set_presence(self, user_id, status):
        self.presence_calls.append((user_id, status))
        event = Ephemeral(
            "user.presence.updated",
            {"userId": user_id, "status": status, "lastSeenAt": iso(utcnow())},
            cls="latest",
            topic=f"presence:{user_id}",
            key=f"presence:{user_id}",
        )
        return Outcome(None, ephemeral=(event,))

    def can_subscribe(self, viewer, topic: str) -> bool:
        kind, _, ident = topic.partition(":")
        if kind == "conversation":
            return viewer.user_id in self.conversations.get(ident, ())
        return kind in ("presence", "event")


class FakeRollout:
    """Per-domain push switch; `chat.*` events belong to `chat`."""

    def __init__(self) -> None:
        self.off: set[str] = set()

    def view_for(self, user_id: str) -> dict:
        return {
            d: {"stage": "OFF" if d in self.off else "LIVE", "pollIntervalMs": 30000}
            for d in ("chat", "notification")
        }

    def push_enabled(self, user_id: str, domain: str) -> bool:
        return domain not in self.off


class FakeAuth:
    """Tokens are `user:ttl` strings; `expired` and `bad` are refused."""

    async def verify_async(self, token: str):
        await trio.lowlevel.checkpoint()
        if token == "expired":
            raise TokenExpired("token has expired")
        user, _, ttl = token.partition(":")
        if not ttl:
            raise Unauthorized("malformed token")
        return Principal(user, expires_at=time.time() + float(ttl), token=token)


async def inline_runner(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call inline: the fakes do not block, and virtual time stays exact."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


class World:
    """A hub with fakes behind it, and helpers to open connections."""

    def __init__(self, nursery: trio.Nursery, settings: WsSettings | None = None) -> None:
        self.nursery = nursery
        self.store = FakeStore()
        self.domain = FakeDomain(self.store)
        self.rollout = FakeRollout()
        self.auth = FakeAuth()
        self.settings = settings or WsSettings()
        self.hub = Hub(domain=self.domain, presence_runner=inline_runner, rollout=self.rollout)
        self.connections: list[tuple[Connection, MemoryClient]] = []

    async def connect(
        self,
        user_id: str,
        *,
        ttl_s: float = 3600,
        client_buffer: int = 64,
        welcome: bool = True,
        settings: WsSettings | None = None,
    ) -> tuple[Connection, MemoryClient]:
        transport = MemoryTransport(client_buffer=client_buffer)
        principal = Principal(user_id, expires_at=time.time() + ttl_s)
        conn = Connection(
            transport,
            principal,
            hub=self.hub,
            store=self.store,
            domain=self.domain,
            authenticator=self.auth,
            rollout=self.rollout,
            settings=settings or self.settings,
            runner=inline_runner,
            viewer_factory=lambda p: Viewer(p.user_id),
        )
        self.nursery.start_soon(conn.serve)
        self.connections.append((conn, transport.client))
        if welcome:
            envelope = await transport.client.receive()
            assert envelope["type"] == "session.welcome"
        return conn, transport.client

    async def publish(self, *events: StoredEvent) -> None:
        await self.hub.publish(events)


@pytest.fixture
def ws_settings() -> WsSettings:
    return WsSettings()


@pytest.fixture
async def world(nursery, ws_settings, autojump_clock):
    world = World(nursery, ws_settings)
    await nursery.start(world.hub.run)
    yield world
    # Teardown: every connection ends, and the hub forgets everything.
    with trio.fail_after(30):
        for conn, client in world.connections:
            client.close()
            await conn.closed.wait()
    assert len(world.hub) == 0
    assert world.hub.is_empty(), (world.hub._by_user, world.hub._by_topic, world.hub._presence)
    assert not world.hub._presence_locks
    nursery.cancel_scope.cancel()
