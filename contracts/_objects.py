"""The object shapes inside payloads: the GraphQL types of PROTOCOL.md section 3.

Attributes are snake_case; the converter renames them to the camelCase keys
of the GraphQL schema. A GraphQL-nullable field is typed `X | None` without a
default: the key is always present on the wire, its value may be null.
"""

from __future__ import annotations

import attrs

from ._scalars import (
    FollowStatus,
    OrgRole,
    PresenceStatus,
    RsvpStatus,
    Timestamp,
)

__all__ = [
    "OBJECT_TYPES",
    "Announcement",
    "Conversation",
    "Event",
    "FeedItem",
    "FollowRequest",
    "Membership",
    "Message",
    "Notification",
    "Presence",
    "Rsvp",
    "RsvpCounts",
]


@attrs.frozen(kw_only=True)
class Notification:
    """An entry of a user's notification inbox."""

    id: str
    kind: str
    text: str
    data: str | None
    created_at: Timestamp
    read_at: Timestamp | None


@attrs.frozen(kw_only=True)
class Message:
    """A chat message, with who it was delivered to and who has read it."""

    id: str
    conversation_id: str
    sender_id: str
    body: str
    created_at: Timestamp
    client_message_id: str | None
    delivered_to: list[str]
    read_by: list[str]


@attrs.frozen(kw_only=True)
class Conversation:
    """A conversation as one participant sees it (its own unread count)."""

    id: str
    participant_ids: list[str]
    last_message: Message | None
    unread_count: int
    last_read_message_id: str | None
    updated_at: Timestamp


@attrs.frozen(kw_only=True)
class FollowRequest:
    """A request by one user to follow another, and its status."""

    id: str
    from_user_id: str
    to_user_id: str
    status: FollowStatus
    created_at: Timestamp
    updated_at: Timestamp


@attrs.frozen(kw_only=True)
class RsvpCounts:
    """How many users are going to, or interested in, an event."""

    going: int
    interested: int


@attrs.frozen(kw_only=True)
class Event:
    """A hosted event, as the viewing user sees it."""

    id: str
    title: str
    host_id: str
    starts_at: Timestamp
    rsvp_counts: RsvpCounts
    attendees_preview: list[str]
    checked_in_count: int
    viewer_rsvp: RsvpStatus | None
    viewer_saved: bool


@attrs.frozen(kw_only=True)
class Rsvp:
    """A user's answer to an event invitation, with the event."""

    event_id: str
    user_id: str
    status: RsvpStatus
    updated_at: Timestamp
    event: Event


@attrs.frozen(kw_only=True)
class Membership:
    """A user's role in an organization."""

    user_id: str
    role: OrgRole


@attrs.frozen(kw_only=True)
class Announcement:
    """A message posted by an organization's owner or admin to every member."""

    id: str
    org_id: str
    author_id: str
    title: str
    body: str
    created_at: Timestamp


@attrs.frozen(kw_only=True)
class FeedItem:
    """A post in the activity feed of the author's followers."""

    id: str
    author_id: str
    text: str
    created_at: Timestamp


@attrs.frozen(kw_only=True)
class Presence:
    """Whether a user is online, and when they were last seen."""

    user_id: str
    status: PresenceStatus
    last_seen_at: Timestamp | None


OBJECT_TYPES: tuple[type, ...] = (
    Notification,
    Message,
    Conversation,
    FollowRequest,
    RsvpCounts,
    Event,
    Rsvp,
    Membership,
    Announcement,
    FeedItem,
    Presence,
)
"""The GraphQL object types that payloads carry (published in the JSON Schema)."""
