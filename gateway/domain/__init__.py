"""The domain services: one method per GraphQL query and mutation, plus the
chat, typing and presence actions of the WebSocket path.

`Domain` is blocking (it runs store transactions); call it from Trio through
`gateway.store.run_store`. Queries return dicts shaped like the GraphQL
types (camelCase keys). Mutations return an `Outcome`: the value, the
durable events committed in the same transaction as the change (one per
recipient), and the ephemeral events to hand out after commit.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from gateway.domain import chat, feed, follows, gatherings, notifications, orgs, presence
from gateway.domain._change import Change, require_text
from gateway.domain.viewer import ADMIN_SCOPE, Viewer
from gateway.errors import BadRequest, Forbidden
from gateway.events import Ephemeral, Outcome, iso, new_id, utcnow
from gateway.store import Store, Tx

__all__ = ["ADMIN_SCOPE", "NOTICE_SEVERITIES", "Domain", "Viewer"]

T = TypeVar("T")

NOTICE_SEVERITIES = ("info", "warning", "critical")


class Domain:
    """The product's behaviour over one store."""

    def __init__(self, store: Store, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock
        self._request = threading.local()

    # -- plumbing ------------------------------------------------------------

    @contextmanager
    def consistent_read(self) -> Iterator[None]:
        """Serve every query of this thread from one snapshot until the block ends.

        A polling request reads its badge and its conversations at the same
        moment, so the per-conversation counts always sum to the badge.
        """
        with self.store.snapshot() as tx:
            self._request.tx = tx
            try:
                yield
            finally:
                self._request.tx = None

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        shared = getattr(self._request, "tx", None)
        if shared is not None:
            yield shared
            return
        with self.store.snapshot() as tx:
            yield tx

    def _mutate(self, fn: Callable[[Change], T]) -> Outcome[T]:
        """Run `fn` in one write transaction; its events commit with its changes."""
        with self.store.transaction() as tx:
            change = Change(tx, self.clock())
            value = fn(change)
        return Outcome(value, tuple(change.events), tuple(change.ephemeral))

    def _ephemeral_only(self, fn: Callable[[Change], T]) -> Outcome[T]:
        """Run a check-and-announce action over a read snapshot."""
        with self.store.snapshot() as tx:
            change = Change(tx, self.clock())
            value = fn(change)
        return Outcome(value, (), tuple(change.ephemeral))

    # -- users and the stream ---------------------------------------------

    def ensure_user(self, user_id: str, name: str | None = None) -> dict[str, Any]:
        """Record a user (no registration is needed; this keeps a display name)."""
        require_text(user_id, "userId", max_length=200)
        with self.store.transaction() as tx:
            row = tx.upsert_user(user_id, name)
        return {"id": row["id"], "name": row["name"]}

    def me(self, viewer: Viewer) -> dict[str, Any]:
        with self._read() as tx:
            row = tx.get_user(viewer.user_id)
        name = (row or {}).get("name") or viewer.name
        return {"id": viewer.user_id, "name": name}

    def realtime_cursor(self, viewer: Viewer) -> dict[str, Any]:
        """The viewer's stream position; inside `consistent_read`, the snapshot's own.

        Within one snapshot the data read afterwards is exactly at this cursor
        (the stream must exist already: read the cursor once before the snapshot).
        """
        shared = getattr(self._request, "tx", None)
        if shared is not None:
            cursor = shared.stream_position(viewer.user_id)
        else:
            cursor = self.store.stream_position(viewer.user_id)
        return {"epoch": cursor.epoch, "seq": cursor.seq}

    # -- notifications ---------------------------------------------------------

    def unread_notification_count(self, viewer: Viewer) -> int:
        with self._read() as tx:
            return notifications.unread_count(tx, viewer)

    def notifications(
        self, viewer: Viewer, first: int = 20, after: str | None = None
    ) -> dict[str, Any]:
        with self._read() as tx:
            return notifications.notifications_page(tx, viewer, first, after)

    def create_notification(
        self, viewer: Viewer, user_id: str, kind: str, text: str, data: str | None = None
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(
            lambda c: notifications.create_notification(c, viewer, user_id, kind, text, data)
        )

    def mark_notifications_read(
        self, viewer: Viewer, ids: list[str] | None = None, all: bool = False
    ) -> Outcome[int]:
        return self._mutate(lambda c: notifications.mark_notifications_read(c, viewer, ids, all))

    # -- chat ------------------------------------------------------------------

    def chat_unread_count(self, viewer: Viewer) -> int:
        with self._read() as tx:
            return chat.total_unread(tx, viewer.user_id)

    def conversations(
        self, viewer: Viewer, first: int = 50, fields: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """The viewer's conversations; `fields` (None: all) as in `chat.conversation_views`."""
        with self._read() as tx:
            return chat.conversations(tx, viewer, first, fields)

    def conversation(self, viewer: Viewer, id: str) -> dict[str, Any]:
        with self._read() as tx:
            return chat.conversation(tx, viewer, id)

    def messages(
        self, viewer: Viewer, conversation_id: str, last: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        with self._read() as tx:
            return chat.messages(tx, viewer, conversation_id, last, before)

    def create_conversation(
        self, viewer: Viewer, participant_ids: list[str]
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: chat.create_conversation(c, viewer, participant_ids))

    def leave_conversation(self, viewer: Viewer, conversation_id: str) -> Outcome[bool]:
        return self._mutate(lambda c: chat.leave_conversation(c, viewer, conversation_id))

    def send_chat_message(
        self,
        viewer: Viewer,
        conversation_id: str,
        body: str,
        client_message_id: str | None = None,
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(
            lambda c: chat.send_message(c, viewer, conversation_id, body, client_message_id)
        )

    def mark_conversation_read(
        self, viewer: Viewer, conversation_id: str, up_to_message_id: str | None = None
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(
            lambda c: chat.mark_conversation_read(c, viewer, conversation_id, up_to_message_id)
        )

    def mark_delivered(
        self, viewer: Viewer, conversation_id: str, message_ids: list[str]
    ) -> Outcome[int]:
        return self._mutate(lambda c: chat.mark_delivered(c, viewer, conversation_id, message_ids))

    def typing(self, viewer: Viewer, conversation_id: str, state: str) -> Outcome[None]:
        return self._ephemeral_only(lambda c: chat.typing(c, viewer, conversation_id, state))

    # -- follows and feed ------------------------------------------------------

    def follow_requests(self, viewer: Viewer, status: str = "PENDING") -> list[dict[str, Any]]:
        with self._read() as tx:
            return follows.incoming(tx, viewer, status)

    def sent_follow_requests(self, viewer: Viewer) -> list[dict[str, Any]]:
        with self._read() as tx:
            return follows.outgoing(tx, viewer)

    def request_follow(self, viewer: Viewer, user_id: str) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: follows.request_follow(c, viewer, user_id))

    def respond_follow_request(
        self, viewer: Viewer, id: str, accept: bool
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: follows.respond(c, viewer, id, accept))

    def feed(self, viewer: Viewer, first: int = 20) -> list[dict[str, Any]]:
        with self._read() as tx:
            return feed.feed(tx, viewer, first)

    def post_feed_item(self, viewer: Viewer, text: str) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: feed.post_feed_item(c, viewer, text))

    # -- gatherings ------------------------------------------------------------

    def event(self, viewer: Viewer, id: str) -> dict[str, Any] | None:
        with self._read() as tx:
            return gatherings.get_event(tx, viewer, id)

    def my_upcoming_rsvps(self, viewer: Viewer) -> list[dict[str, Any]]:
        now = iso(self.clock())
        with self._read() as tx:
            return gatherings.upcoming_rsvps(tx, viewer, now)

    def saved_events(self, viewer: Viewer) -> list[dict[str, Any]]:
        with self._read() as tx:
            return gatherings.saved_events(tx, viewer)

    def create_event(self, viewer: Viewer, title: str, starts_at: str) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: gatherings.create_gathering(c, viewer, title, starts_at))

    def set_rsvp(self, viewer: Viewer, event_id: str, status: str) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: gatherings.set_rsvp(c, viewer, event_id, status))

    def check_in(self, viewer: Viewer, event_id: str, user_id: str) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: gatherings.check_in(c, viewer, event_id, user_id))

    def set_event_saved(
        self, viewer: Viewer, event_id: str, saved: bool
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: gatherings.set_saved(c, viewer, event_id, saved))

    # -- organizations ---------------------------------------------------------

    def organization(self, viewer: Viewer, id: str) -> dict[str, Any]:
        with self._read() as tx:
            return orgs.organization(tx, viewer, id)

    def announcements(self, viewer: Viewer, org_id: str, first: int = 20) -> list[dict[str, Any]]:
        with self._read() as tx:
            return orgs.announcements(tx, viewer, org_id, first)

    def create_organization(self, viewer: Viewer, name: str) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: orgs.create_organization(c, viewer, name))

    def set_member_role(
        self, viewer: Viewer, org_id: str, user_id: str, role: str | None = None
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: orgs.set_member_role(c, viewer, org_id, user_id, role))

    def post_announcement(
        self, viewer: Viewer, org_id: str, title: str, body: str
    ) -> Outcome[dict[str, Any]]:
        return self._mutate(lambda c: orgs.post_announcement(c, viewer, org_id, title, body))

    # -- presence, topics and notices -----------------------------------------

    def presence(self, viewer: Viewer, user_ids: list[str]) -> list[dict[str, Any]]:
        with self._read() as tx:
            return presence.presence(tx, viewer, user_ids)

    def set_presence(self, viewer_or_user_id: Viewer | str, status: str) -> Outcome[dict[str, Any]]:
        user_id = (
            viewer_or_user_id.user_id
            if isinstance(viewer_or_user_id, Viewer)
            else str(viewer_or_user_id)
        )
        return self._mutate(lambda c: presence.set_presence(c, user_id, status))

    def can_subscribe(self, viewer: Viewer, topic: str) -> bool:
        with self._read() as tx:
            return presence.can_subscribe(tx, viewer, topic)

    def broadcast_notice(self, viewer: Viewer, text: str, severity: str = "info") -> Outcome[bool]:
        """An admin's notice to the connected users the admin answers for: a tenant's
        admin reaches that tenant's users only; an admin outside any tenant (the
        operator) reaches every connected user, of every tenant or none."""
        if not viewer.is_admin:
            raise Forbidden("broadcastNotice needs the admin scope")
        require_text(text, "text", max_length=2000)
        if severity not in NOTICE_SEVERITIES:
            raise BadRequest(
                f"severity must be one of {', '.join(NOTICE_SEVERITIES)}", path="severity"
            )
        notice_id = new_id("evt")
        notice = Ephemeral(
            "system.notice",
            {"id": notice_id, "text": text, "severity": severity},
            cls="notice",
            broadcast=True,
            tenant=viewer.tenant,
            id=notice_id,
        )
        return Outcome(True, (), (notice,))
