"""Presence: whether a user is online, and who may watch it; which topics a viewer
may subscribe to. Nothing here reaches across tenants: a topic naming another
tenant's user, conversation or event is refused like one naming nothing."""

from __future__ import annotations

from typing import Any

from gateway.domain._change import Change
from gateway.domain.chat import is_participant
from gateway.domain.follows import follows_either_way
from gateway.domain.gatherings import event_visible
from gateway.domain.viewer import Viewer
from gateway.errors import BadRequest
from gateway.events import Ephemeral
from gateway.store import Tx

__all__ = ["PRESENCE_STATUSES", "can_see_presence", "can_subscribe", "presence", "set_presence"]

PRESENCE_STATUSES = ("ONLINE", "AWAY", "OFFLINE")
MAX_USERS = 200


def can_see_presence(tx: Tx, viewer: Viewer, user_id: str) -> bool:
    """Oneself, users sharing a conversation, and accepted follows either way
    (never a user of another tenant)."""
    if not viewer.shares_tenant(user_id):
        return False
    return (
        user_id == viewer.user_id
        or tx.share_conversation(viewer.user_id, user_id)
        or follows_either_way(tx, viewer.user_id, user_id)
    )


def can_subscribe(tx: Tx, viewer: Viewer, topic: str) -> bool:
    """Whether the viewer may subscribe to a topic (PROTOCOL.md 2.5)."""
    if not isinstance(topic, str):
        return False
    kind, sep, ident = topic.partition(":")
    if not sep or not ident:
        return False
    if kind == "conversation":
        return is_participant(tx, ident, viewer.user_id)
    if kind == "presence":
        # The topic names the qualified id (`presence:acme/bob`), as it is published.
        return can_see_presence(tx, viewer, ident)
    if kind == "event":
        return event_visible(tx, viewer, ident)
    return False


def presence(tx: Tx, viewer: Viewer, user_ids: Any) -> list[dict[str, Any]]:
    """Each requested user's presence; users the viewer may not watch show OFFLINE."""
    if not isinstance(user_ids, list | tuple) or not all(isinstance(u, str) for u in user_ids):
        raise BadRequest("userIds must be a list of user ids", path="userIds")
    wanted = list(dict.fromkeys(map(viewer.qualify, user_ids)))
    if len(wanted) > MAX_USERS:
        raise BadRequest(f"at most {MAX_USERS} userIds", path="userIds")
    visible = [uid for uid in wanted if can_see_presence(tx, viewer, uid)]
    stored = {row["user_id"]: row for row in tx.get_presences(visible)}
    result = []
    for uid in wanted:
        row = stored.get(uid)
        result.append(
            {
                "userId": uid,
                "status": row["status"] if row is not None else "OFFLINE",
                "lastSeenAt": row["last_seen_at"] if row is not None else None,
            }
        )
    return result


def set_presence(change: Change, user_id: str, status: str) -> dict[str, Any]:
    """Record a user's status and when they were last seen; tells `presence:<id>`."""
    if status not in PRESENCE_STATUSES:
        raise BadRequest(f"unknown presence status {status!r}", path="status")
    change.tx.put_presence(user_id, status, change.stamp)
    value = {"userId": user_id, "status": status, "lastSeenAt": change.stamp}
    change.announce(
        Ephemeral(
            "user.presence.updated",
            value,
            cls="latest",
            topic=f"presence:{user_id}",
            key=f"presence:{user_id}",
        )
    )
    return value
