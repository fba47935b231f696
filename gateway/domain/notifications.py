"""Notifications: the inbox each user has, with its unread count."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.domain._change import Change, check_limit, require_text
from gateway.domain.viewer import Viewer, record_id
from gateway.errors import BadRequest, Forbidden
from gateway.store import Row, Tx

__all__ = [
    "create_notification",
    "mark_notifications_read",
    "notification_shape",
    "notifications_page",
    "notify",
    "unread_count",
]

MAX_IDS = 500


def notification_shape(row: Row) -> dict[str, Any]:
    """A stored notification as the GraphQL `Notification` type."""
    return {
        "id": row["id"],
        "kind": row["kind"],
        "text": row["text"],
        "data": row["data"],
        "createdAt": row["created_at"],
        "readAt": row["read_at"],
    }


def notify(
    change: Change, user_id: str, kind: str, text: str, data: str | None = None
) -> dict[str, Any]:
    """Create a notification and append `notification.new` to its user's stream."""
    row = change.tx.insert_notification(
        {
            "id": record_id("ntf", user_id),
            "user_id": user_id,
            "kind": kind,
            "text": text,
            "data": data,
            "created_at": change.stamp,
            "read_at": None,
        }
    )
    notification = notification_shape(row)
    change.emit(
        user_id,
        "notification.new",
        {
            "notification": notification,
            "unreadCount": change.tx.count_unread_notifications(user_id),
        },
    )
    return notification


def create_notification(
    change: Change, viewer: Viewer, user_id: str, kind: str, text: str, data: str | None
) -> dict[str, Any]:
    if not viewer.is_admin:
        raise Forbidden("createNotification needs the admin scope")
    require_text(user_id, "userId", max_length=200)
    user_id = viewer.qualify(user_id)  # a tenant's admin notifies only that tenant's users
    require_text(kind, "kind", max_length=100)
    require_text(text, "text")
    if data is not None and not isinstance(data, str):
        raise BadRequest("data must be a string", path="data")
    return notify(change, user_id, kind, text, data)


def mark_notifications_read(
    change: Change, viewer: Viewer, ids: Iterable[str] | None, all: bool
) -> int:
    """Mark some or all of the viewer's notifications read; returns the new unread count."""
    tx = change.tx
    if all:
        changed = tx.mark_notifications_read(viewer.user_id, None, change.stamp)
        wanted = None
    else:
        if ids is None:
            raise BadRequest("give ids or all: true", path="ids")
        wanted = list(dict.fromkeys(ids))
        if len(wanted) > MAX_IDS:
            raise BadRequest(f"at most {MAX_IDS} ids at once", path="ids")
        changed = tx.mark_notifications_read(viewer.user_id, wanted, change.stamp)
    count = tx.count_unread_notifications(viewer.user_id)
    if changed:
        change.emit(
            viewer.user_id,
            "notification.read",
            {"ids": wanted, "all": bool(all), "unreadCount": count},
        )
    return count


def unread_count(tx: Tx, viewer: Viewer) -> int:
    return tx.count_unread_notifications(viewer.user_id)


def notifications_page(tx: Tx, viewer: Viewer, first: int, after: str | None) -> dict[str, Any]:
    """A page of the viewer's notifications, newest first; `after` is a previous `nextCursor`."""
    first = check_limit(first, "first")
    before_pos = None
    if after is not None:
        try:
            before_pos = int(after)
        except (TypeError, ValueError):
            raise BadRequest("after is not a cursor this server issued", path="after") from None
    rows = tx.list_notifications(viewer.user_id, first + 1, before_pos)
    items = rows[:first]
    more = len(rows) > first
    return {
        "items": [notification_shape(row) for row in items],
        "nextCursor": str(items[-1]["pos"]) if more and items else None,
        "unreadCount": tx.count_unread_notifications(viewer.user_id),
    }
