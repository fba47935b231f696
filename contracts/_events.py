"""Server event payloads (PROTOCOL.md 2.3 durable, 2.4 ephemeral) and the
catalog of every type the server sends, replies included."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from ._objects import (
    Announcement,
    Conversation,
    FeedItem,
    FollowRequest,
    Message,
    Notification,
    Presence,
    Rsvp,
    RsvpCounts,
)
from ._replies import (
    Ack,
    ErrorPayload,
    PingPong,
    SessionReset,
    SessionResumed,
    SessionWelcome,
)
from ._scalars import OrgRole, Timestamp

EphemeralClass = Literal["latest", "drop", "notice"]
"""How an ephemeral event behaves in a full send buffer (DESIGN.md, \"How a change flows\")."""

__all__ = [
    "EVENT_TYPES",
    "Audience",
    "ChatConversationUpdated",
    "ChatMessage",
    "ChatMessageDelivered",
    "ChatRead",
    "ChatTyping",
    "EventCountersUpdated",
    "EventRsvpUpdated",
    "EventSavedUpdated",
    "EventSpec",
    "FeedItemPosted",
    "FollowRequestChanged",
    "NotificationNew",
    "NotificationRead",
    "OrganizationAnnouncement",
    "OrganizationMemberUpdated",
    "StreamSkipped",
    "SubscriptionRevoked",
    "SystemNotice",
    "SystemReconnect",
]


# Durable events (2.3): each carries a `seq` in the user's stream.


@attrs.frozen(kw_only=True)
class NotificationNew:
    """`notification.new`: a notification arrived; the inbox's new unread count."""

    notification: Notification
    unread_count: int


@attrs.frozen(kw_only=True)
class NotificationRead:
    """`notification.read`: some (`ids`) or all notifications were marked read."""

    ids: list[str] | None
    all: bool
    unread_count: int


@attrs.frozen(kw_only=True)
class ChatMessage:
    """`chat.message`: a message was posted in a conversation."""

    message: Message


@attrs.frozen(kw_only=True)
class ChatConversationUpdated:
    """`chat.conversation.updated`: a conversation as this recipient sees it now."""

    conversation: Conversation
    total_unread: int


@attrs.frozen(kw_only=True)
class ChatRead:
    """`chat.read`: a participant read a conversation up to a message."""

    conversation_id: str
    user_id: str
    up_to_message_id: str | None
    read_at: Timestamp


@attrs.frozen(kw_only=True)
class ChatMessageDelivered:
    """`chat.message.delivered`: a recipient's device received a message."""

    conversation_id: str
    message_id: str
    user_id: str
    delivered_at: Timestamp


@attrs.frozen(kw_only=True)
class FollowRequestChanged:
    """`follow.request.created` / `follow.request.updated`: a follow request now."""

    request: FollowRequest


@attrs.frozen(kw_only=True)
class EventRsvpUpdated:
    """`event.rsvp.updated`: a user's RSVP and the event's new counts."""

    rsvp: Rsvp
    counts: RsvpCounts
    attendees_preview: list[str]


@attrs.frozen(kw_only=True)
class EventSavedUpdated:
    """`event.saved.updated`: the user saved or unsaved an event."""

    event_id: str
    saved: bool


@attrs.frozen(kw_only=True)
class OrganizationMemberUpdated:
    """`organization.member.updated`: a member's role changed (null: removed)."""

    org_id: str
    user_id: str
    role: OrgRole | None


@attrs.frozen(kw_only=True)
class OrganizationAnnouncement:
    """`organization.announcement`: an announcement was posted to the org."""

    announcement: Announcement


@attrs.frozen(kw_only=True)
class FeedItemPosted:
    """`activity.feed.item`: someone the user follows posted."""

    item: FeedItem


# Ephemeral events (2.4): no `seq`, never replayed.


@attrs.frozen(kw_only=True)
class ChatTyping:
    """`chat.typing.started` / `chat.typing.stopped`: a participant is (no longer) typing."""

    conversation_id: str
    user_id: str


@attrs.frozen(kw_only=True)
class EventCountersUpdated:
    """`event.counters.updated`: an event's live counters."""

    event_id: str
    going: int
    interested: int
    checked_in: int


@attrs.frozen(kw_only=True)
class SystemNotice:
    """`system.notice`: an operator's message to every connected user."""

    id: str
    text: str
    severity: str


@attrs.frozen(kw_only=True)
class StreamSkipped:
    """`stream.skipped`: a durable event withheld because its domain is OFF for
    this user; it keeps the event's `seq`, so the stream stays contiguous."""

    domain: str
    type: str


@attrs.frozen(kw_only=True)
class SubscriptionRevoked:
    """`subscription.revoked`: a permission changed; this user no longer receives `topic`."""

    topic: str
    reason: str


@attrs.frozen(kw_only=True)
class SystemReconnect:
    """`system.reconnect`: the server will close this connection; come back after a delay."""

    retry_after_ms: int
    reason: str


Audience = Literal["users", "topic", "broadcast", "connection"]


@attrs.frozen(kw_only=True)
class EventSpec:
    """One server frame type and how it is delivered.

    `recipients` says in words who receives it (PROTOCOL.md's "sent to");
    `audience` is how the hub addresses it: named `users` (every durable
    event), the subscribers of a `topic` (prefix in `topic`), a `broadcast`
    to everyone connected, or one `connection`. `ephemeral_class` is what a
    full send buffer does with an ephemeral event (`latest` coalesces,
    `drop` drops, `notice` is kept). `control` marks replies and session
    frames, which are not domain events.
    """

    name: str
    payload_cls: type
    durable: bool
    recipients: str
    audience: Audience = "users"
    topic: str | None = None
    ephemeral_class: EphemeralClass | None = None
    control: bool = False


def _catalog(*specs: EventSpec) -> Mapping[str, EventSpec]:
    return MappingProxyType({spec.name: spec for spec in specs})


_REPLY_TO = "the connection whose action it answers"

EVENT_TYPES: Mapping[str, EventSpec] = _catalog(
    # durable
    EventSpec(
        name="notification.new",
        payload_cls=NotificationNew,
        durable=True,
        recipients="the notified user",
    ),
    EventSpec(
        name="notification.read",
        payload_cls=NotificationRead,
        durable=True,
        recipients="the user",
    ),
    EventSpec(
        name="chat.message",
        payload_cls=ChatMessage,
        durable=True,
        recipients="every participant (the sender's other devices too)",
    ),
    EventSpec(
        name="chat.conversation.updated",
        payload_cls=ChatConversationUpdated,
        durable=True,
        recipients="every participant",
    ),
    EventSpec(
        name="chat.read",
        payload_cls=ChatRead,
        durable=True,
        recipients="every participant",
    ),
    EventSpec(
        name="chat.message.delivered",
        payload_cls=ChatMessageDelivered,
        durable=True,
        recipients="the sender",
    ),
    EventSpec(
        name="follow.request.created",
        payload_cls=FollowRequestChanged,
        durable=True,
        recipients="target and requester",
    ),
    EventSpec(
        name="follow.request.updated",
        payload_cls=FollowRequestChanged,
        durable=True,
        recipients="target and requester",
    ),
    EventSpec(
        name="event.rsvp.updated",
        payload_cls=EventRsvpUpdated,
        durable=True,
        recipients="the RSVPing user and the host",
    ),
    EventSpec(
        name="event.saved.updated",
        payload_cls=EventSavedUpdated,
        durable=True,
        recipients="the user (all tabs and devices)",
    ),
    EventSpec(
        name="organization.member.updated",
        payload_cls=OrganizationMemberUpdated,
        durable=True,
        recipients="the affected user and the org's owners/admins",
    ),
    EventSpec(
        name="organization.announcement",
        payload_cls=OrganizationAnnouncement,
        durable=True,
        recipients="every member",
    ),
    EventSpec(
        name="activity.feed.item",
        payload_cls=FeedItemPosted,
        durable=True,
        recipients="the author's accepted followers",
    ),
    # ephemeral
    EventSpec(
        name="chat.typing.started",
        payload_cls=ChatTyping,
        durable=False,
        recipients="subscribers of conversation:<id> other than the typist",
        audience="topic",
        topic="conversation",
        ephemeral_class="drop",
    ),
    EventSpec(
        name="chat.typing.stopped",
        payload_cls=ChatTyping,
        durable=False,
        recipients="subscribers of conversation:<id> other than the typist",
        audience="topic",
        topic="conversation",
        ephemeral_class="drop",
    ),
    EventSpec(
        name="user.presence.updated",
        payload_cls=Presence,
        durable=False,
        recipients="subscribers of presence:<userId>",
        audience="topic",
        topic="presence",
        ephemeral_class="latest",
    ),
    EventSpec(
        name="event.counters.updated",
        payload_cls=EventCountersUpdated,
        durable=False,
        recipients="subscribers of event:<id>",
        audience="topic",
        topic="event",
        ephemeral_class="latest",
    ),
    EventSpec(
        name="system.notice",
        payload_cls=SystemNotice,
        durable=False,
        recipients="every connected user",
        audience="broadcast",
        ephemeral_class="notice",
    ),
    EventSpec(
        name="system.reconnect",
        payload_cls=SystemReconnect,
        durable=False,
        recipients="a connection about to be closed by the server",
        audience="connection",
        ephemeral_class="notice",
    ),
    EventSpec(
        name="subscription.revoked",
        payload_cls=SubscriptionRevoked,
        durable=False,
        recipients="the connections of a user who lost access to a topic",
        audience="users",
        ephemeral_class="notice",
        control=True,
    ),
    # replies and session control
    EventSpec(
        name="stream.skipped",
        payload_cls=StreamSkipped,
        durable=True,
        recipients="a user whose rollout stage is OFF for the event's domain",
        audience="users",
        control=True,
    ),
    EventSpec(
        name="ack",
        payload_cls=Ack,
        durable=False,
        recipients=_REPLY_TO,
        audience="connection",
        control=True,
    ),
    EventSpec(
        name="error",
        payload_cls=ErrorPayload,
        durable=False,
        recipients=_REPLY_TO,
        audience="connection",
        control=True,
    ),
    EventSpec(
        name="ping.pong",
        payload_cls=PingPong,
        durable=False,
        recipients=_REPLY_TO,
        audience="connection",
        control=True,
    ),
    EventSpec(
        name="session.welcome",
        payload_cls=SessionWelcome,
        durable=False,
        recipients="a connection, first frame after the handshake",
        audience="connection",
        control=True,
    ),
    EventSpec(
        name="session.resumed",
        payload_cls=SessionResumed,
        durable=False,
        recipients=_REPLY_TO,
        audience="connection",
        control=True,
    ),
    EventSpec(
        name="session.reset",
        payload_cls=SessionReset,
        durable=False,
        recipients=_REPLY_TO,
        audience="connection",
        control=True,
    ),
)
