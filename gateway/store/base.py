"""The store interface: durable state and the per-user event streams.

A `Store` is blocking; call it from Trio through `gateway.store.run_store`.
Every change runs inside `store.transaction()`, which yields a `Tx`: the
state changes made through it and the stream events it appends commit
together or not at all (the outbox of DESIGN.md, "How a change flows").
`store.snapshot()` yields the same `Tx` for consistent reads only.

The `Tx` methods work at the data level (get, insert, update, query one
kind of record) so that each implementation (SQLite now, MongoDB later)
maps them onto its own queries; the domain layer never writes SQL. Rows
are plain dicts with snake_case keys, described per record kind below.
Rows of ordered kinds (notifications, messages, announcements, feed items)
carry a `pos`: an integer the store assigns on insert, increasing in
insertion order, used for ordering and paging.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from gateway.events import Cursor, StoredEvent, new_id

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_COUNT",
    "EVIDENCE_SAMPLES",
    "Append",
    "Row",
    "Store",
    "Tx",
    "merge_evidence",
    "number_appends",
]

Row = dict[str, Any]

# One event to append: (user id, event type, payload).
Append = tuple[str, str, dict[str, Any]]


def number_appends(
    appends: Sequence[Append], heads: dict[str, tuple[str, int]], created_at: str
) -> list[StoredEvent]:
    """A batch's events numbered after each user's head (`heads`: user -> (epoch,
    seq before the batch), advanced here), in the batch's order."""
    events = []
    for user_id, type, payload in appends:
        epoch, seq = heads[user_id]
        heads[user_id] = (epoch, seq + 1)
        events.append(
            StoredEvent(
                user_id=user_id,
                epoch=epoch,
                seq=seq + 1,
                id=new_id("evt"),
                type=type,
                payload=payload,
                created_at=created_at,
            )
        )
    return events


DEFAULT_MAX_AGE = dt.timedelta(days=7)
DEFAULT_MAX_COUNT = 10_000

# Parity evidence keeps at most this many samples (the newest) per row.
EVIDENCE_SAMPLES = 20
EVIDENCE_KEY = ("hour", "domain", "source", "stage")


def merge_evidence(stored: Row | None, added: Row) -> Row:
    """A parity evidence row with `added` merged in: counts summed, samples appended
    (the newest `EVIDENCE_SAMPLES` kept), the earliest `first_at`, the latest `last_at`."""
    if stored is None:
        stored = {**{k: added[k] for k in EVIDENCE_KEY}, "counts": {}, "samples": []}
        stored["first_at"], stored["last_at"] = added["first_at"], added["last_at"]
    counts = dict(stored["counts"])
    for name, value in added["counts"].items():
        counts[name] = int(counts.get(name, 0)) + int(value)
    samples = [*stored["samples"], *added.get("samples", ())][-EVIDENCE_SAMPLES:]
    return {
        **{k: stored[k] for k in EVIDENCE_KEY},
        "counts": counts,
        "samples": samples,
        "first_at": min(stored["first_at"], added["first_at"]),
        "last_at": max(stored["last_at"], added["last_at"]),
    }


class Tx(abc.ABC):
    """One store transaction: reads, state changes and stream appends.

    Record kinds and their row keys:

    - user: `id`, `name`
    - notification: `id`, `user_id`, `kind`, `text`, `data`, `created_at`,
      `read_at`, `pos`
    - conversation: `id`, `created_at`, `updated_at`, `last_message_id`
    - message: `id`, `conversation_id`, `sender_id`, `body`, `created_at`,
      `client_message_id`, `pos`
    - read state: `conversation_id`, `user_id`, `message_id`, `message_pos`, `read_at`
    - delivery: `message_id`, `user_id`, `delivered_at`
    - follow request: `id`, `from_user_id`, `to_user_id`, `status`,
      `created_at`, `updated_at`
    - gathering (an event people attend): `id`, `title`, `host_id`,
      `starts_at`, `created_at`
    - rsvp: `event_id`, `user_id`, `status`, `updated_at`
    - organization: `id`, `name`, `created_at`
    - membership: `org_id`, `user_id`, `role`, `updated_at`
    - announcement: `id`, `org_id`, `author_id`, `title`, `body`, `created_at`, `pos`
    - feed item: `id`, `author_id`, `text`, `created_at`, `pos`
    - presence: `user_id`, `status`, `last_seen_at`

    Times are contract time strings (`iso()`), which sort chronologically.
    """

    # -- the per-user stream ---------------------------------------------

    @abc.abstractmethod
    def append_event(self, user_id: str, type: str, payload: dict[str, Any]) -> StoredEvent:
        """Append to the user's stream with the next contiguous `seq` of its epoch."""

    def append_events(self, appends: Sequence[Append]) -> list[StoredEvent]:
        """Append many events, as `append_event` for each in the order given, in
        fewer statements where the store allows: each user's events take the
        next contiguous `seq`s of its stream in their order in `appends`."""
        return [self.append_event(user_id, type, payload) for user_id, type, payload in appends]

    @abc.abstractmethod
    def stream_position(self, user_id: str) -> Cursor:
        """The user's stream position as this transaction sees it."""

    # -- idempotency records ---------------------------------------------

    @abc.abstractmethod
    def remember_idempotency(self, scope: str, key: str, result_json: str, now: float) -> None:
        """Record the result of a request made with an idempotency key."""

    @abc.abstractmethod
    def recall_idempotency(self, scope: str, key: str, since: float) -> str | None:
        """The result recorded for (scope, key) at or after `since`, if any."""

    def remember_idempotencies(
        self, scope: str, records: Sequence[tuple[str, str]], now: float
    ) -> None:
        """`remember_idempotency` for each (key, result_json) of `records`."""
        for key, result_json in records:
            self.remember_idempotency(scope, key, result_json, now)

    def recall_idempotencies(self, scope: str, keys: Sequence[str], since: float) -> dict[str, str]:
        """`recall_idempotency` for many keys: {key: result_json} of those recorded."""
        found = {key: self.recall_idempotency(scope, key, since) for key in dict.fromkeys(keys)}
        return {key: result for key, result in found.items() if result is not None}

    # -- users -------------------------------------------------------------

    @abc.abstractmethod
    def get_user(self, user_id: str) -> Row | None: ...

    @abc.abstractmethod
    def upsert_user(self, user_id: str, name: str | None) -> Row:
        """Record a user; a given name replaces the stored one, None keeps it."""

    # -- notifications -----------------------------------------------------

    @abc.abstractmethod
    def insert_notification(self, row: Row) -> Row:
        """Insert a notification; returns it with its `pos`."""

    @abc.abstractmethod
    def list_notifications(
        self, user_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        """The user's notifications, newest first, optionally only those before `before_pos`."""

    @abc.abstractmethod
    def count_unread_notifications(self, user_id: str) -> int: ...

    @abc.abstractmethod
    def mark_notifications_read(self, user_id: str, ids: Iterable[str] | None, read_at: str) -> int:
        """Set `read_at` on the user's unread notifications (all when `ids` is None); returns how many."""

    # -- conversations, participants, messages -----------------------------

    @abc.abstractmethod
    def insert_conversation(self, row: Row, participant_ids: Iterable[str]) -> None: ...

    @abc.abstractmethod
    def get_conversation(self, conversation_id: str) -> Row | None: ...

    @abc.abstractmethod
    def touch_conversation(
        self, conversation_id: str, updated_at: str, last_message_id: str
    ) -> None:
        """Record a conversation's newest message."""

    @abc.abstractmethod
    def list_participants(self, conversation_id: str) -> list[str]:
        """Participant user ids, sorted."""

    @abc.abstractmethod
    def is_participant(self, conversation_id: str, user_id: str) -> bool: ...

    @abc.abstractmethod
    def remove_participant(self, conversation_id: str, user_id: str) -> bool:
        """Take a user out of a conversation; False when they were not in it."""

    @abc.abstractmethod
    def conversations_of(self, user_id: str, limit: int | None = None) -> list[Row]:
        """The user's conversations, most recently updated first."""

    @abc.abstractmethod
    def share_conversation(self, user_a: str, user_b: str) -> bool: ...

    @abc.abstractmethod
    def insert_message(self, row: Row) -> Row:
        """Insert a message; returns it with its `pos`."""

    @abc.abstractmethod
    def get_message(self, message_id: str) -> Row | None: ...

    @abc.abstractmethod
    def find_message_by_client_id(self, sender_id: str, client_message_id: str) -> Row | None: ...

    @abc.abstractmethod
    def list_messages(
        self, conversation_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        """The conversation's messages, newest first, optionally only those before `before_pos`."""

    @abc.abstractmethod
    def last_message(self, conversation_id: str) -> Row | None: ...

    @abc.abstractmethod
    def count_messages_after(
        self, conversation_id: str, after_pos: int, exclude_sender: str
    ) -> int:
        """How many messages after `after_pos` were sent by someone other than `exclude_sender`."""

    @abc.abstractmethod
    def get_read_state(self, conversation_id: str, user_id: str) -> Row | None: ...

    @abc.abstractmethod
    def list_read_states(self, conversation_id: str) -> list[Row]: ...

    @abc.abstractmethod
    def put_read_state(
        self, conversation_id: str, user_id: str, message_id: str, message_pos: int, read_at: str
    ) -> None: ...

    @abc.abstractmethod
    def insert_delivery(self, message_id: str, user_id: str, delivered_at: str) -> bool:
        """Record a delivery; False when it was already recorded."""

    @abc.abstractmethod
    def list_deliveries(self, message_ids: Iterable[str]) -> list[Row]: ...

    # Batched reads of the conversation list: a store may answer each in one
    # query; these defaults make the per-conversation reads above.

    def last_messages(self, conversation_ids: Iterable[str]) -> dict[str, Row]:
        """Each conversation's newest message by conversation id (none: left out)."""
        found = {}
        for conversation_id in dict.fromkeys(conversation_ids):
            row = self.last_message(conversation_id)
            if row is not None:
                found[conversation_id] = row
        return found

    def participants_of(self, conversation_ids: Iterable[str]) -> dict[str, list[str]]:
        """`list_participants` of each conversation."""
        return {cid: self.list_participants(cid) for cid in dict.fromkeys(conversation_ids)}

    def read_states_of(self, conversation_ids: Iterable[str]) -> dict[str, list[Row]]:
        """`list_read_states` of each conversation."""
        return {cid: self.list_read_states(cid) for cid in dict.fromkeys(conversation_ids)}

    def unread_counts(self, user_id: str, conversation_ids: Iterable[str]) -> dict[str, int]:
        """Per conversation, the messages from others after the user's read state (all without one)."""
        counts = {}
        for conversation_id in dict.fromkeys(conversation_ids):
            read = self.get_read_state(conversation_id, user_id)
            after = read["message_pos"] if read is not None else 0
            counts[conversation_id] = self.count_messages_after(conversation_id, after, user_id)
        return counts

    # -- follow requests ---------------------------------------------------

    @abc.abstractmethod
    def insert_follow_request(self, row: Row) -> None: ...

    @abc.abstractmethod
    def get_follow_request(self, request_id: str) -> Row | None: ...

    @abc.abstractmethod
    def find_follow_request(self, from_user_id: str, to_user_id: str) -> Row | None: ...

    @abc.abstractmethod
    def update_follow_request(self, request_id: str, status: str, updated_at: str) -> None: ...

    @abc.abstractmethod
    def follow_requests_to(self, user_id: str, status: str | None = None) -> list[Row]:
        """Requests to the user, newest first, optionally of one status."""

    @abc.abstractmethod
    def follow_requests_from(self, user_id: str, status: str | None = None) -> list[Row]:
        """Requests from the user, newest first, optionally of one status."""

    # -- gatherings, rsvps, check-ins, saved -------------------------------

    @abc.abstractmethod
    def insert_gathering(self, row: Row) -> None: ...

    @abc.abstractmethod
    def get_gathering(self, event_id: str) -> Row | None: ...

    @abc.abstractmethod
    def get_rsvp(self, event_id: str, user_id: str) -> Row | None: ...

    @abc.abstractmethod
    def put_rsvp(self, row: Row) -> None:
        """Insert or replace the user's RSVP to an event."""

    @abc.abstractmethod
    def count_rsvps(self, event_id: str) -> dict[str, int]:
        """RSVP counts by status (statuses with none are absent)."""

    @abc.abstractmethod
    def rsvp_user_ids(self, event_id: str, status: str, limit: int) -> list[str]:
        """Users with that status, earliest first."""

    @abc.abstractmethod
    def rsvps_of(self, user_id: str) -> list[Row]: ...

    @abc.abstractmethod
    def insert_check_in(self, event_id: str, user_id: str, checked_in_at: str) -> bool:
        """Record a check-in; False when already checked in."""

    @abc.abstractmethod
    def count_check_ins(self, event_id: str) -> int: ...

    @abc.abstractmethod
    def set_saved(self, event_id: str, user_id: str, saved: bool, saved_at: str) -> bool:
        """Save or unsave an event for a user; returns whether anything changed."""

    @abc.abstractmethod
    def is_saved(self, event_id: str, user_id: str) -> bool: ...

    @abc.abstractmethod
    def saved_event_ids(self, user_id: str) -> list[str]:
        """The user's saved events, most recently saved first."""

    # -- organizations, memberships, announcements ------------------------

    @abc.abstractmethod
    def insert_organization(self, row: Row) -> None: ...

    @abc.abstractmethod
    def get_organization(self, org_id: str) -> Row | None: ...

    @abc.abstractmethod
    def get_membership(self, org_id: str, user_id: str) -> Row | None: ...

    @abc.abstractmethod
    def put_membership(self, org_id: str, user_id: str, role: str, updated_at: str) -> None: ...

    @abc.abstractmethod
    def delete_membership(self, org_id: str, user_id: str) -> bool: ...

    @abc.abstractmethod
    def list_memberships(self, org_id: str) -> list[Row]:
        """Members in the order they joined."""

    @abc.abstractmethod
    def insert_announcement(self, row: Row) -> Row: ...

    @abc.abstractmethod
    def list_announcements(self, org_id: str, limit: int) -> list[Row]:
        """Newest first."""

    # -- feed ----------------------------------------------------------------

    @abc.abstractmethod
    def insert_feed_item(self, row: Row) -> Row: ...

    @abc.abstractmethod
    def list_feed_items(self, author_ids: Iterable[str], limit: int) -> list[Row]:
        """Items by any of the authors, newest first."""

    # -- presence -------------------------------------------------------------

    @abc.abstractmethod
    def put_presence(self, user_id: str, status: str, last_seen_at: str) -> None: ...

    @abc.abstractmethod
    def get_presences(self, user_ids: Iterable[str]) -> list[Row]: ...


class Store(abc.ABC):
    """Durable state and per-user event streams (blocking)."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction; an exception inside it rolls everything back."""

    @abc.abstractmethod
    def snapshot(self) -> AbstractContextManager[Tx]:
        """A read transaction over one consistent view (writes are refused)."""

    @abc.abstractmethod
    def stream_position(self, user_id: str) -> Cursor:
        """The user's epoch and head `seq` (0 for a user with no events)."""

    @abc.abstractmethod
    def stream_heads(self, user_ids: Sequence[str]) -> dict[str, Cursor]:
        """The positions of many users' streams in one read (users without one are left out)."""

    @abc.abstractmethod
    def events_after(self, user_id: str, after_seq: int, limit: int = 1000) -> list[StoredEvent]:
        """Up to `limit` events of the current epoch with `seq > after_seq`, in order.

        Raises `HistoryExpired` when some of those events are no longer retained.
        """

    @abc.abstractmethod
    def reset_stream(self, user_id: str) -> Cursor:
        """Start the user's stream over in a new epoch at seq 0."""

    @abc.abstractmethod
    def prune(
        self,
        now: dt.datetime,
        max_age: dt.timedelta = DEFAULT_MAX_AGE,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> int:
        """Drop events older than `max_age` or beyond the newest `max_count` per user.

        Returns how many events were removed.
        """

    @abc.abstractmethod
    def put_ticket(
        self, ticket_hash: str, user_id: str, expires_at: float, claims_json: str
    ) -> None:
        """Store a single-use WebSocket ticket by its hash."""

    @abc.abstractmethod
    def peek_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        """(user_id, claims_json) of a ticket that exists and has not expired; kept."""

    @abc.abstractmethod
    def take_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        """Delete a ticket; (user_id, claims_json) when it existed and had not expired."""

    # -- parity evidence ------------------------------------------------------------

    @abc.abstractmethod
    def add_evidence(self, rows: Sequence[Row]) -> None:
        """Add parity evidence, each row merged into the stored row of its key.

        A row: `hour` (the contract time of the hour's start), `domain`,
        `source` (`audit`, `beacon`), `stage` (the users' stage), `counts`
        ({classification: n}), `samples` (a list of JSON objects), `first_at`
        and `last_at` (contract times of the first and last evidence in it).
        The merge (`merge_evidence`) is atomic per row whatever other nodes add
        at the same moment: counts are summed, never overwritten.
        """

    @abc.abstractmethod
    def evidence_since(self, since: str) -> list[Row]:
        """The evidence rows of every hour starting at or after `since` (a contract
        time), ordered by hour, domain, source and stage."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection."""
