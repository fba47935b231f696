"""The activity feed: short posts, shown to the author's accepted followers."""

from __future__ import annotations

from typing import Any

from gateway.domain._change import Change, check_limit, require_text
from gateway.domain.follows import followers, following
from gateway.domain.viewer import Viewer, record_id
from gateway.store import Row, Tx

__all__ = ["feed", "feed_item_shape", "post_feed_item"]


def feed_item_shape(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "authorId": row["author_id"],
        "text": row["text"],
        "createdAt": row["created_at"],
    }


def feed(tx: Tx, viewer: Viewer, first: int) -> list[dict[str, Any]]:
    """The viewer's own items and those of the users they follow, newest first."""
    first = check_limit(first, "first")
    authors = [viewer.user_id, *following(tx, viewer.user_id)]
    return [feed_item_shape(row) for row in tx.list_feed_items(authors, first)]


def post_feed_item(change: Change, viewer: Viewer, text: str) -> dict[str, Any]:
    require_text(text, "text")
    row = change.tx.insert_feed_item(
        {
            "id": record_id("itm", viewer.user_id),
            "author_id": viewer.user_id,
            "text": text,
            "created_at": change.stamp,
        }
    )
    item = feed_item_shape(row)
    for user_id in followers(change.tx, viewer.user_id):
        change.emit(user_id, "activity.feed.item", {"item": item})
    return item
