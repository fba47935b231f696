"""Client actions (PROTOCOL.md 2.5): the frame a client sends and each action's payload.

A field with a default of None is optional in the payload and left out when None.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NewType

import attrs

__all__ = [
    "ACTIONS",
    "TOPIC_PATTERN",
    "AuthRefreshRequest",
    "ChatDeliveredRequest",
    "ChatReadRequest",
    "ChatSendRequest",
    "ChatTypingRequest",
    "ClientAction",
    "NotificationSubscribeRequest",
    "PingRequest",
    "PresenceSetRequest",
    "SessionResumeRequest",
    "Topic",
    "TopicRequest",
]

Topic = NewType("Topic", str)
"""A subscription topic `<kind>:<id>`: the contract's `conversation:<id>`,
`presence:<userId>` and `event:<id>`, or a topic an app declares in the registry."""

TOPIC_PATTERN = r"^[a-z][a-z0-9_.-]*:\S+$"


@attrs.frozen(kw_only=True)
class PingRequest:
    """`ping`: a heartbeat; answered by `ping.pong`."""


@attrs.frozen(kw_only=True)
class SessionResumeRequest:
    """`session.resume`: replay the stream after `lastSeq` of `epoch`."""

    epoch: str
    last_seq: int


@attrs.frozen(kw_only=True)
class AuthRefreshRequest:
    """`auth.refresh`: extend the session with a fresh JWT for the same user."""

    token: str


@attrs.frozen(kw_only=True)
class TopicRequest:
    """`subscribe` / `unsubscribe`: start or stop receiving a topic's ephemeral events."""

    topic: Topic


@attrs.frozen(kw_only=True)
class NotificationSubscribeRequest:
    """`notification.subscribe`: kept for older clients; notifications always flow."""


@attrs.frozen(kw_only=True)
class ChatSendRequest:
    """`chat.send`: post a message; idempotent on `clientMessageId`."""

    conversation_id: str
    body: str
    client_message_id: str


@attrs.frozen(kw_only=True)
class ChatReadRequest:
    """`chat.read`: mark a conversation read up to a message (default: the latest)."""

    conversation_id: str
    up_to_message_id: str | None = None


@attrs.frozen(kw_only=True)
class ChatDeliveredRequest:
    """`chat.delivered`: this device received these messages."""

    conversation_id: str
    message_ids: list[str]


@attrs.frozen(kw_only=True)
class ChatTypingRequest:
    """`chat.typing`: the user started or stopped typing in a conversation."""

    conversation_id: str
    state: Literal["started", "stopped"]


@attrs.frozen(kw_only=True)
class PresenceSetRequest:
    """`presence.set`: the user's presence on this connection (a hidden tab says AWAY)."""

    status: Literal["ONLINE", "AWAY"]


@attrs.frozen(kw_only=True)
class ClientAction:
    """A decoded client frame: `{"v", "id"?, "action", "payload"}`.

    `payload` is an instance of `ACTIONS[action]`. `id`, when present, is what
    the reply's `replyTo` carries.
    """

    v: int
    id: str | None
    action: str
    payload: object


ACTIONS: Mapping[str, type] = MappingProxyType(
    {
        "ping": PingRequest,
        "session.resume": SessionResumeRequest,
        "auth.refresh": AuthRefreshRequest,
        "subscribe": TopicRequest,
        "unsubscribe": TopicRequest,
        "notification.subscribe": NotificationSubscribeRequest,
        "chat.send": ChatSendRequest,
        "chat.read": ChatReadRequest,
        "chat.delivered": ChatDeliveredRequest,
        "chat.typing": ChatTypingRequest,
        "presence.set": PresenceSetRequest,
    }
)
"""Every client action and its payload class."""
