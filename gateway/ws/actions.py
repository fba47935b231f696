"""What each client action does: one handler per action of the contract.

`contracts.ACTIONS` is the one table of actions (name -> payload class);
`HANDLERS` maps every name in it to a coroutine taking the connection, the
frame's id and the typed payload. Import fails if the two disagree, so an
action added to the contract without a handler (or a handler without an
action) cannot ship.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from contracts import (
    ACTIONS,
    AuthRefreshRequest,
    ChatDeliveredRequest,
    ChatReadRequest,
    ChatSendRequest,
    ChatTypingRequest,
    NotificationSubscribeRequest,
    PingRequest,
    PresenceSetRequest,
    SessionResumeRequest,
    TopicRequest,
    unstructure,
)
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.events import iso, utcnow

if TYPE_CHECKING:
    from gateway.ws.connection import Connection

__all__ = ["HANDLERS", "Handler"]

P = TypeVar("P")
Handler = Callable[["Connection", "str | None", Any], Awaitable[None]]

HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Callable[[Connection, str | None, P], Awaitable[None]]], Any]:
    """Register a handler for the named actions (each must be in the contract)."""

    def register(handler: Callable[[Connection, str | None, P], Awaitable[None]]):
        for name in names:
            if name not in ACTIONS or name in HANDLERS:
                raise RuntimeError(f"action {name!r}: not in the contract, or handled twice")
            HANDLERS[name] = handler
        return handler

    return register


def _plain(value: Any) -> Any:
    """A JSON-ready value: dicts and lists as they are, attrs objects unstructured."""
    if value is None or isinstance(value, dict | list | str | int | float | bool):
        return value
    return unstructure(value)


@handles("ping")
async def ping(conn: Connection, action_id: str | None, _payload: PingRequest) -> None:
    conn.reply("ping.pong", {"serverTime": iso(utcnow())}, action_id)


@handles("session.resume")
async def resume(conn: Connection, action_id: str | None, payload: SessionResumeRequest) -> None:
    if payload.last_seq < 0:
        raise BadRequest("lastSeq must not be negative", path="payload.lastSeq")
    await conn.stream.request_resume(payload.epoch, payload.last_seq, action_id)


@handles("auth.refresh")
async def refresh(conn: Connection, action_id: str | None, payload: AuthRefreshRequest) -> None:
    if conn.authenticator is None:
        raise Unauthorized("token refresh is not available on this connection")
    principal = await conn.authenticator.verify_async(payload.token)
    if principal.user_id != conn.user_id:
        raise Unauthorized("the token belongs to another user")
    conn.principal = principal
    conn.set_expiry(principal.expires_at)
    expires = dt.datetime.fromtimestamp(principal.expires_at, dt.UTC)
    conn.ack({"expiresAt": iso(expires)}, action_id)


@handles("subscribe")
async def subscribe(conn: Connection, action_id: str | None, payload: TopicRequest) -> None:
    topic = payload.topic
    if topic not in conn.topics:
        limit = conn.settings.max_subscriptions
        if len(conn.topics) >= limit:
            raise Forbidden(f"at most {limit} subscriptions per connection")
        if not await conn.may_subscribe(topic):
            raise Forbidden(f"not allowed to subscribe to {topic}")
        conn.hub.subscribe(conn, topic)
    # Acked once the topic's events from every node reach this one.
    await conn.hub.backplane.following("topic", topic)
    conn.ack({"topic": topic}, action_id)


@handles("unsubscribe")
async def unsubscribe(conn: Connection, action_id: str | None, payload: TopicRequest) -> None:
    conn.hub.unsubscribe(conn, payload.topic)
    conn.ack({"topic": payload.topic}, action_id)


@handles("notification.subscribe")
async def notification_subscribe(
    conn: Connection, action_id: str | None, _payload: NotificationSubscribeRequest
) -> None:
    conn.ack({}, action_id)


@handles("chat.send")
async def chat_send(conn: Connection, action_id: str | None, payload: ChatSendRequest) -> None:
    outcome = await conn.run(
        conn.domain.send_chat_message,
        conn.viewer(),
        payload.conversation_id,
        payload.body,
        payload.client_message_id,
    )
    await conn.publish(outcome)
    conn.ack({"message": _plain(outcome.value)}, action_id)


@handles("chat.read")
async def chat_read(conn: Connection, action_id: str | None, payload: ChatReadRequest) -> None:
    outcome = await conn.run(
        conn.domain.mark_conversation_read,
        conn.viewer(),
        payload.conversation_id,
        payload.up_to_message_id,
    )
    await conn.publish(outcome)
    conn.ack({"conversation": _plain(outcome.value)}, action_id)


@handles("chat.delivered")
async def chat_delivered(
    conn: Connection, action_id: str | None, payload: ChatDeliveredRequest
) -> None:
    outcome = await conn.run(
        conn.domain.mark_delivered,
        conn.viewer(),
        payload.conversation_id,
        list(payload.message_ids),
    )
    await conn.publish(outcome)
    conn.ack({}, action_id)


@handles("chat.typing")
async def chat_typing(conn: Connection, action_id: str | None, payload: ChatTypingRequest) -> None:
    conversation_id = payload.conversation_id
    outcome = await conn.run(conn.domain.typing, conn.viewer(), conversation_id, payload.state)
    if payload.state == "started":
        if conversation_id not in conn.typing and len(conn.typing) >= conn.settings.max_typing:
            oldest = min(conn.typing, key=conn.typing.__getitem__)
            await conn.stop_typing(oldest)
        conn.typing[conversation_id] = trio.current_time() + conn.settings.typing_timeout_s
    else:
        conn.typing.pop(conversation_id, None)
    await conn.publish(outcome)
    conn.ack({}, action_id)


@handles("presence.set")
async def presence_set(
    conn: Connection, action_id: str | None, payload: PresenceSetRequest
) -> None:
    if payload.status not in ("ONLINE", "AWAY"):
        raise BadRequest("status must be ONLINE or AWAY", path="payload.status")
    conn.presence = payload.status
    await conn.hub.presence_changed(conn.user_id)
    conn.ack({}, action_id)


if set(HANDLERS) != set(ACTIONS):  # pragma: no cover - a contract change without a handler
    raise RuntimeError(f"actions without handlers: {sorted(set(ACTIONS) - set(HANDLERS))}")
