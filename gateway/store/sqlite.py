"""The embedded store: one SQLite file in WAL mode.

Each thread gets its own connection (`threading.local`). Writes run as
`BEGIN IMMEDIATE` transactions, so concurrent writers queue on SQLite's
write lock (bounded by `busy_timeout`) instead of failing halfway, and
`seq` assignment inside a transaction is serialized across threads and
processes sharing the file.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from gateway.errors import Conflict, HistoryExpired, StoreUnavailable
from gateway.events import Cursor, StoredEvent, iso, utcnow
from gateway.store._sqlite_schema import SCHEMA
from gateway.store.base import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_COUNT,
    EVIDENCE_KEY,
    Append,
    Row,
    Store,
    Tx,
    merge_evidence,
    number_appends,
)

__all__ = ["SqliteStore", "SqliteTx"]

BUSY_TIMEOUT_MS = 30_000
HEADS_CHUNK = 500  # ids per query of a node-wide tail or a batch (under SQLite's variable limit)


# Stored payloads: compact JSON text (one encoder for every call, as `json.dumps` would build).
_compact = json.JSONEncoder(separators=(",", ":")).encode


def new_epoch() -> str:
    """A fresh, random stream epoch."""
    return secrets.token_hex(8)


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    return [dict(row) for row in cursor.fetchall()]


def _row(cursor: sqlite3.Cursor) -> Row | None:
    row = cursor.fetchone()
    return dict(row) if row is not None else None


def _json_ids(ids: Iterable[str]) -> str:
    """Distinct ids as one JSON array, for `json_each(?)`."""
    return json.dumps(list(dict.fromkeys(ids)))


def _placeholders(values: list[Any]) -> str:
    return ",".join("?" * len(values))


class SqliteTx(Tx):
    """A transaction on one thread's connection."""

    def __init__(
        self, conn: sqlite3.Connection, clock: Callable[[], dt.datetime], *, writable: bool
    ):
        self._conn = conn
        self._clock = clock
        self._writable = writable

    def _q(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, tuple(params))

    def _w(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        return self._conn.execute(sql, tuple(params))

    def _next(self, name: str) -> int:
        row = self._w(
            "INSERT INTO counters (name, value) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            (name,),
        ).fetchall()
        return int(row[0][0])

    # -- the per-user stream ---------------------------------------------

    def _stream(self, user_id: str) -> Row | None:
        return _row(self._q("SELECT * FROM streams WHERE user_id = ?", (user_id,)))

    def _ensure_stream(self, user_id: str) -> Row:
        stream = self._stream(user_id)
        if stream is None:
            stream = {"user_id": user_id, "epoch": new_epoch(), "head_seq": 0, "retained_from": 1}
            self._w(
                "INSERT INTO streams (user_id, epoch, head_seq, retained_from) VALUES (?, ?, 0, 1)",
                (user_id, stream["epoch"]),
            )
        return stream

    def append_event(self, user_id: str, type: str, payload: dict[str, Any]) -> StoredEvent:
        return self.append_events([(user_id, type, payload)])[0]

    def append_events(self, appends: Sequence[Append]) -> list[StoredEvent]:
        """The batch in three statements: read the heads, move them (creating the
        streams that are new), insert every event (`executemany`)."""
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        if not appends:
            return []
        users = list(dict.fromkeys(user_id for user_id, _, _ in appends))
        heads: dict[str, tuple[str, int]] = {}
        for start in range(0, len(users), HEADS_CHUNK):
            chunk = users[start : start + HEADS_CHUNK]
            rows = self._q(
                f"SELECT user_id, epoch, head_seq FROM streams WHERE user_id IN ({_placeholders(chunk)})",
                chunk,
            )
            for user_id, epoch, head_seq in rows.fetchall():
                heads[user_id] = (epoch, head_seq)
        for user_id in users:
            if user_id not in heads:
                heads[user_id] = (new_epoch(), 0)
        now = self._clock()
        created_at, created_ts = iso(now), now.timestamp()
        events = number_appends(appends, heads, created_at)
        rows_out = [
            (e.user_id, e.epoch, e.seq, e.id, e.type, _compact(e.payload), created_at, created_ts)
            for e in events
        ]
        self._conn.executemany(
            "INSERT INTO streams (user_id, epoch, head_seq, retained_from) VALUES (?, ?, ?, 1)"
            " ON CONFLICT (user_id) DO UPDATE SET head_seq = excluded.head_seq",
            [(user_id, *heads[user_id]) for user_id in users],
        )
        self._conn.executemany(
            "INSERT INTO stream_events (user_id, epoch, seq, id, type, payload, created_at, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows_out,
        )
        return events

    def stream_position(self, user_id: str) -> Cursor:
        stream = self._stream(user_id) if not self._writable else self._ensure_stream(user_id)
        if stream is None:
            raise LookupError(f"{user_id} has no stream yet; read its position outside a snapshot")
        return Cursor(stream["epoch"], stream["head_seq"])

    # -- idempotency records ---------------------------------------------

    def remember_idempotency(self, scope: str, key: str, result_json: str, now: float) -> None:
        self._w(
            "INSERT OR REPLACE INTO idempotency (scope, key, result_json, created_ts) VALUES (?, ?, ?, ?)",
            (scope, key, result_json, now),
        )

    def recall_idempotency(self, scope: str, key: str, since: float) -> str | None:
        row = self._q(
            "SELECT result_json FROM idempotency WHERE scope = ? AND key = ? AND created_ts >= ?",
            (scope, key, since),
        ).fetchone()
        return row[0] if row is not None else None

    def remember_idempotencies(
        self, scope: str, records: Sequence[tuple[str, str]], now: float
    ) -> None:
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        self._conn.executemany(
            "INSERT OR REPLACE INTO idempotency (scope, key, result_json, created_ts) VALUES (?, ?, ?, ?)",
            [(scope, key, result_json, now) for key, result_json in records],
        )

    def recall_idempotencies(self, scope: str, keys: Sequence[str], since: float) -> dict[str, str]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), HEADS_CHUNK):
            chunk = wanted[start : start + HEADS_CHUNK]
            rows = self._q(
                "SELECT key, result_json FROM idempotency WHERE scope = ? AND created_ts >= ?"
                f" AND key IN ({_placeholders(chunk)})",
                (scope, since, *chunk),
            )
            found.update((key, result_json) for key, result_json in rows.fetchall())
        return found

    # -- users -------------------------------------------------------------

    def get_user(self, user_id: str) -> Row | None:
        return _row(self._q("SELECT id, name FROM users WHERE id = ?", (user_id,)))

    def upsert_user(self, user_id: str, name: str | None) -> Row:
        self._w(
            "INSERT INTO users (id, name) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = COALESCE(excluded.name, users.name)",
            (user_id, name),
        )
        user = self.get_user(user_id)
        assert user is not None
        return user

    # -- notifications -----------------------------------------------------

    def insert_notification(self, row: Row) -> Row:
        cursor = self._w_named(
            "INSERT INTO notifications (id, user_id, kind, text, data, created_at, read_at)"
            " VALUES (:id, :user_id, :kind, :text, :data, :created_at, :read_at)",
            {"read_at": None, "data": None, **row},
        )
        return {"read_at": None, "data": None, **row, "pos": cursor.lastrowid}

    def _w_named(self, sql: str, params: dict[str, Any]) -> sqlite3.Cursor:
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        return self._conn.execute(sql, params)

    def list_notifications(
        self, user_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        if before_pos is None:
            return _rows(
                self._q(
                    "SELECT * FROM notifications WHERE user_id = ? ORDER BY pos DESC LIMIT ?",
                    (user_id, limit),
                )
            )
        return _rows(
            self._q(
                "SELECT * FROM notifications WHERE user_id = ? AND pos < ? ORDER BY pos DESC LIMIT ?",
                (user_id, before_pos, limit),
            )
        )

    def count_unread_notifications(self, user_id: str) -> int:
        return self._q(
            "SELECT COUNT(*) FROM notifications WHERE user_id = ? AND read_at IS NULL", (user_id,)
        ).fetchone()[0]

    def mark_notifications_read(self, user_id: str, ids: Iterable[str] | None, read_at: str) -> int:
        if ids is None:
            cursor = self._w(
                "UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL",
                (read_at, user_id),
            )
            return cursor.rowcount
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        cursor = self._w(
            "UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL"
            f" AND id IN ({_placeholders(wanted)})",
            (read_at, user_id, *wanted),
        )
        return cursor.rowcount

    # -- conversations, participants, messages -----------------------------

    def insert_conversation(self, row: Row, participant_ids: Iterable[str]) -> None:
        self._w(
            "INSERT INTO conversations (id, created_at, updated_at, last_message_id) VALUES (?, ?, ?, ?)",
            (row["id"], row["created_at"], row["updated_at"], row.get("last_message_id")),
        )
        for user_id in dict.fromkeys(participant_ids):
            self._w(
                "INSERT INTO participants (conversation_id, user_id) VALUES (?, ?)",
                (row["id"], user_id),
            )

    def get_conversation(self, conversation_id: str) -> Row | None:
        return _row(self._q("SELECT * FROM conversations WHERE id = ?", (conversation_id,)))

    def touch_conversation(
        self, conversation_id: str, updated_at: str, last_message_id: str
    ) -> None:
        self._w(
            "UPDATE conversations SET updated_at = ?, last_message_id = ? WHERE id = ?",
            (updated_at, last_message_id, conversation_id),
        )

    def list_participants(self, conversation_id: str) -> list[str]:
        cursor = self._q(
            "SELECT user_id FROM participants WHERE conversation_id = ? ORDER BY user_id",
            (conversation_id,),
        )
        return [row[0] for row in cursor.fetchall()]

    def is_participant(self, conversation_id: str, user_id: str) -> bool:
        cursor = self._q(
            "SELECT 1 FROM participants WHERE conversation_id = ? AND user_id = ?",
            (conversation_id, user_id),
        )
        return cursor.fetchone() is not None

    def remove_participant(self, conversation_id: str, user_id: str) -> bool:
        cursor = self._w(
            "DELETE FROM participants WHERE conversation_id = ? AND user_id = ?",
            (conversation_id, user_id),
        )
        return cursor.rowcount > 0

    def conversations_of(self, user_id: str, limit: int | None = None) -> list[Row]:
        return _rows(
            self._q(
                "SELECT c.* FROM participants p JOIN conversations c ON c.id = p.conversation_id"
                " WHERE p.user_id = ? ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
                (user_id, -1 if limit is None else limit),
            )
        )

    def share_conversation(self, user_a: str, user_b: str) -> bool:
        cursor = self._q(
            "SELECT 1 FROM participants a JOIN participants b"
            " ON b.conversation_id = a.conversation_id AND b.user_id = ?"
            " WHERE a.user_id = ? LIMIT 1",
            (user_b, user_a),
        )
        return cursor.fetchone() is not None

    def insert_message(self, row: Row) -> Row:
        full = {"client_message_id": None, **row}
        cursor = self._w_named(
            "INSERT INTO messages (id, conversation_id, sender_id, body, created_at, client_message_id)"
            " VALUES (:id, :conversation_id, :sender_id, :body, :created_at, :client_message_id)",
            full,
        )
        return {**full, "pos": cursor.lastrowid}

    def get_message(self, message_id: str) -> Row | None:
        return _row(self._q("SELECT * FROM messages WHERE id = ?", (message_id,)))

    def find_message_by_client_id(self, sender_id: str, client_message_id: str) -> Row | None:
        return _row(
            self._q(
                "SELECT * FROM messages WHERE sender_id = ? AND client_message_id = ?",
                (sender_id, client_message_id),
            )
        )

    def list_messages(
        self, conversation_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        if before_pos is None:
            return _rows(
                self._q(
                    "SELECT * FROM messages WHERE conversation_id = ? ORDER BY pos DESC LIMIT ?",
                    (conversation_id, limit),
                )
            )
        return _rows(
            self._q(
                "SELECT * FROM messages WHERE conversation_id = ? AND pos < ?"
                " ORDER BY pos DESC LIMIT ?",
                (conversation_id, before_pos, limit),
            )
        )

    def last_message(self, conversation_id: str) -> Row | None:
        return _row(
            self._q(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY pos DESC LIMIT 1",
                (conversation_id,),
            )
        )

    def count_messages_after(
        self, conversation_id: str, after_pos: int, exclude_sender: str
    ) -> int:
        return self._q(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND pos > ? AND sender_id != ?",
            (conversation_id, after_pos, exclude_sender),
        ).fetchone()[0]

    def get_read_state(self, conversation_id: str, user_id: str) -> Row | None:
        return _row(
            self._q(
                "SELECT * FROM read_states WHERE conversation_id = ? AND user_id = ?",
                (conversation_id, user_id),
            )
        )

    def list_read_states(self, conversation_id: str) -> list[Row]:
        return _rows(
            self._q(
                "SELECT * FROM read_states WHERE conversation_id = ? ORDER BY user_id",
                (conversation_id,),
            )
        )

    def put_read_state(
        self, conversation_id: str, user_id: str, message_id: str, message_pos: int, read_at: str
    ) -> None:
        self._w(
            "INSERT OR REPLACE INTO read_states"
            " (conversation_id, user_id, message_id, message_pos, read_at) VALUES (?, ?, ?, ?, ?)",
            (conversation_id, user_id, message_id, message_pos, read_at),
        )

    def insert_delivery(self, message_id: str, user_id: str, delivered_at: str) -> bool:
        cursor = self._w(
            "INSERT OR IGNORE INTO deliveries (message_id, user_id, delivered_at) VALUES (?, ?, ?)",
            (message_id, user_id, delivered_at),
        )
        return cursor.rowcount == 1

    # Batched reads of the conversation list: one query each, the ids as one
    # JSON array parameter (no variable limit).

    def last_messages(self, conversation_ids: Iterable[str]) -> dict[str, Row]:
        rows = self._q(
            "SELECT * FROM messages WHERE pos IN (SELECT (SELECT MAX(m.pos) FROM messages m"
            " WHERE m.conversation_id = w.value) FROM json_each(?) w)",
            (_json_ids(conversation_ids),),
        )
        return {row["conversation_id"]: row for row in _rows(rows)}

    def participants_of(self, conversation_ids: Iterable[str]) -> dict[str, list[str]]:
        wanted = list(dict.fromkeys(conversation_ids))
        found: dict[str, list[str]] = {conversation_id: [] for conversation_id in wanted}
        for conversation_id, user_id in self._q(
            "SELECT conversation_id, user_id FROM participants"
            " WHERE conversation_id IN (SELECT value FROM json_each(?))"
            " ORDER BY conversation_id, user_id",
            (json.dumps(wanted),),
        ).fetchall():
            found[conversation_id].append(user_id)
        return found

    def read_states_of(self, conversation_ids: Iterable[str]) -> dict[str, list[Row]]:
        wanted = list(dict.fromkeys(conversation_ids))
        found: dict[str, list[Row]] = {conversation_id: [] for conversation_id in wanted}
        for row in _rows(
            self._q(
                "SELECT * FROM read_states WHERE conversation_id IN (SELECT value FROM json_each(?))"
                " ORDER BY conversation_id, user_id",
                (json.dumps(wanted),),
            )
        ):
            found[row["conversation_id"]].append(row)
        return found

    def unread_counts(self, user_id: str, conversation_ids: Iterable[str]) -> dict[str, int]:
        cursor = self._q(
            "SELECT w.value, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = w.value"
            " AND m.pos > COALESCE((SELECT r.message_pos FROM read_states r"
            " WHERE r.conversation_id = w.value AND r.user_id = ?1), 0)"
            " AND m.sender_id != ?1) FROM json_each(?2) w",
            (user_id, _json_ids(conversation_ids)),
        )
        return dict(cursor.fetchall())

    def list_deliveries(self, message_ids: Iterable[str]) -> list[Row]:
        wanted = list(dict.fromkeys(message_ids))
        if not wanted:
            return []
        return _rows(
            self._q(
                f"SELECT * FROM deliveries WHERE message_id IN ({_placeholders(wanted)})"
                " ORDER BY message_id, user_id",
                wanted,
            )
        )

    # -- follow requests ---------------------------------------------------

    def insert_follow_request(self, row: Row) -> None:
        self._w_named(
            "INSERT INTO follow_requests (id, from_user_id, to_user_id, status, created_at, updated_at)"
            " VALUES (:id, :from_user_id, :to_user_id, :status, :created_at, :updated_at)",
            row,
        )

    def get_follow_request(self, request_id: str) -> Row | None:
        return _row(self._q("SELECT * FROM follow_requests WHERE id = ?", (request_id,)))

    def find_follow_request(self, from_user_id: str, to_user_id: str) -> Row | None:
        return _row(
            self._q(
                "SELECT * FROM follow_requests WHERE from_user_id = ? AND to_user_id = ?",
                (from_user_id, to_user_id),
            )
        )

    def update_follow_request(self, request_id: str, status: str, updated_at: str) -> None:
        self._w(
            "UPDATE follow_requests SET status = ?, updated_at = ? WHERE id = ?",
            (status, updated_at, request_id),
        )

    def _follow_requests(self, column: str, user_id: str, status: str | None) -> list[Row]:
        if status is None:
            return _rows(
                self._q(
                    f"SELECT * FROM follow_requests WHERE {column} = ?"
                    " ORDER BY updated_at DESC, id DESC",
                    (user_id,),
                )
            )
        return _rows(
            self._q(
                f"SELECT * FROM follow_requests WHERE {column} = ? AND status = ?"
                " ORDER BY updated_at DESC, id DESC",
                (user_id, status),
            )
        )

    def follow_requests_to(self, user_id: str, status: str | None = None) -> list[Row]:
        return self._follow_requests("to_user_id", user_id, status)

    def follow_requests_from(self, user_id: str, status: str | None = None) -> list[Row]:
        return self._follow_requests("from_user_id", user_id, status)

    # -- gatherings, rsvps, check-ins, saved -------------------------------

    def insert_gathering(self, row: Row) -> None:
        self._w_named(
            "INSERT INTO gatherings (id, title, host_id, starts_at, created_at)"
            " VALUES (:id, :title, :host_id, :starts_at, :created_at)",
            row,
        )

    def get_gathering(self, event_id: str) -> Row | None:
        return _row(self._q("SELECT * FROM gatherings WHERE id = ?", (event_id,)))

    def get_rsvp(self, event_id: str, user_id: str) -> Row | None:
        return _row(
            self._q(
                "SELECT event_id, user_id, status, updated_at FROM rsvps"
                " WHERE event_id = ? AND user_id = ?",
                (event_id, user_id),
            )
        )

    def put_rsvp(self, row: Row) -> None:
        existing = self.get_rsvp(row["event_id"], row["user_id"])
        if existing is not None and existing["status"] == row["status"]:
            self._w(
                "UPDATE rsvps SET updated_at = ? WHERE event_id = ? AND user_id = ?",
                (row["updated_at"], row["event_id"], row["user_id"]),
            )
            return
        self._w(
            "INSERT OR REPLACE INTO rsvps (event_id, user_id, status, updated_at, seq)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                row["event_id"],
                row["user_id"],
                row["status"],
                row["updated_at"],
                self._next("rsvps"),
            ),
        )

    def count_rsvps(self, event_id: str) -> dict[str, int]:
        cursor = self._q(
            "SELECT status, COUNT(*) FROM rsvps WHERE event_id = ? GROUP BY status", (event_id,)
        )
        return {status: count for status, count in cursor.fetchall()}

    def rsvp_user_ids(self, event_id: str, status: str, limit: int) -> list[str]:
        cursor = self._q(
            "SELECT user_id FROM rsvps WHERE event_id = ? AND status = ? ORDER BY seq LIMIT ?",
            (event_id, status, limit),
        )
        return [row[0] for row in cursor.fetchall()]

    def rsvps_of(self, user_id: str) -> list[Row]:
        return _rows(
            self._q(
                "SELECT event_id, user_id, status, updated_at FROM rsvps WHERE user_id = ?",
                (user_id,),
            )
        )

    def insert_check_in(self, event_id: str, user_id: str, checked_in_at: str) -> bool:
        cursor = self._w(
            "INSERT OR IGNORE INTO check_ins (event_id, user_id, checked_in_at) VALUES (?, ?, ?)",
            (event_id, user_id, checked_in_at),
        )
        return cursor.rowcount == 1

    def count_check_ins(self, event_id: str) -> int:
        return self._q("SELECT COUNT(*) FROM check_ins WHERE event_id = ?", (event_id,)).fetchone()[
            0
        ]

    def set_saved(self, event_id: str, user_id: str, saved: bool, saved_at: str) -> bool:
        if not saved:
            cursor = self._w(
                "DELETE FROM saved_events WHERE user_id = ? AND event_id = ?", (user_id, event_id)
            )
            return cursor.rowcount == 1
        if self.is_saved(event_id, user_id):
            return False
        self._w(
            "INSERT INTO saved_events (user_id, event_id, saved_at, seq) VALUES (?, ?, ?, ?)",
            (user_id, event_id, saved_at, self._next("saved_events")),
        )
        return True

    def is_saved(self, event_id: str, user_id: str) -> bool:
        cursor = self._q(
            "SELECT 1 FROM saved_events WHERE user_id = ? AND event_id = ?", (user_id, event_id)
        )
        return cursor.fetchone() is not None

    def saved_event_ids(self, user_id: str) -> list[str]:
        cursor = self._q(
            "SELECT event_id FROM saved_events WHERE user_id = ? ORDER BY seq DESC", (user_id,)
        )
        return [row[0] for row in cursor.fetchall()]

    # -- organizations, memberships, announcements ------------------------

    def insert_organization(self, row: Row) -> None:
        self._w_named(
            "INSERT INTO organizations (id, name, created_at) VALUES (:id, :name, :created_at)", row
        )

    def get_organization(self, org_id: str) -> Row | None:
        return _row(self._q("SELECT * FROM organizations WHERE id = ?", (org_id,)))

    def get_membership(self, org_id: str, user_id: str) -> Row | None:
        return _row(
            self._q(
                "SELECT org_id, user_id, role, updated_at FROM memberships"
                " WHERE org_id = ? AND user_id = ?",
                (org_id, user_id),
            )
        )

    def put_membership(self, org_id: str, user_id: str, role: str, updated_at: str) -> None:
        if self.get_membership(org_id, user_id) is not None:
            self._w(
                "UPDATE memberships SET role = ?, updated_at = ? WHERE org_id = ? AND user_id = ?",
                (role, updated_at, org_id, user_id),
            )
            return
        self._w(
            "INSERT INTO memberships (org_id, user_id, role, updated_at, seq) VALUES (?, ?, ?, ?, ?)",
            (org_id, user_id, role, updated_at, self._next("memberships")),
        )

    def delete_membership(self, org_id: str, user_id: str) -> bool:
        cursor = self._w(
            "DELETE FROM memberships WHERE org_id = ? AND user_id = ?", (org_id, user_id)
        )
        return cursor.rowcount == 1

    def list_memberships(self, org_id: str) -> list[Row]:
        return _rows(
            self._q(
                "SELECT org_id, user_id, role, updated_at FROM memberships"
                " WHERE org_id = ? ORDER BY seq",
                (org_id,),
            )
        )

    def insert_announcement(self, row: Row) -> Row:
        cursor = self._w_named(
            "INSERT INTO announcements (id, org_id, author_id, title, body, created_at)"
            " VALUES (:id, :org_id, :author_id, :title, :body, :created_at)",
            row,
        )
        return {**row, "pos": cursor.lastrowid}

    def list_announcements(self, org_id: str, limit: int) -> list[Row]:
        return _rows(
            self._q(
                "SELECT * FROM announcements WHERE org_id = ? ORDER BY pos DESC LIMIT ?",
                (org_id, limit),
            )
        )

    # -- feed ----------------------------------------------------------------

    def insert_feed_item(self, row: Row) -> Row:
        cursor = self._w_named(
            "INSERT INTO feed_items (id, author_id, text, created_at)"
            " VALUES (:id, :author_id, :text, :created_at)",
            row,
        )
        return {**row, "pos": cursor.lastrowid}

    def list_feed_items(self, author_ids: Iterable[str], limit: int) -> list[Row]:
        authors = list(dict.fromkeys(author_ids))
        if not authors:
            return []
        return _rows(
            self._q(
                f"SELECT * FROM feed_items WHERE author_id IN ({_placeholders(authors)})"
                " ORDER BY pos DESC LIMIT ?",
                (*authors, limit),
            )
        )

    # -- presence -------------------------------------------------------------

    def put_presence(self, user_id: str, status: str, last_seen_at: str) -> None:
        self._w(
            "INSERT OR REPLACE INTO presence (user_id, status, last_seen_at) VALUES (?, ?, ?)",
            (user_id, status, last_seen_at),
        )

    def get_presences(self, user_ids: Iterable[str]) -> list[Row]:
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return []
        return _rows(
            self._q(
                f"SELECT * FROM presence WHERE user_id IN ({_placeholders(wanted)})",
                wanted,
            )
        )


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """sqlite3's errors as the gateway's: a constraint is a conflict, anything
    else the database raises means the store cannot serve the request now."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"the change conflicts with stored data: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"the store cannot serve the request: {exc}") from exc


class SqliteStore(Store):
    """The store in one SQLite file (WAL mode), one connection per thread."""

    def __init__(self, path: str | Path, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        # SQLite takes one writer at a time; writers of this process queue here
        # instead of in SQLite's busy handler, which sleeps and retries.
        self._write_lock = threading.RLock()  # re-entrant: a nested call fails in _begin, not here
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        conn = self._connection()
        conn.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            self._connections.append(conn)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._local.conn = conn
        return conn

    @contextmanager
    def _begin(self, mode: str, writable: bool) -> Iterator[SqliteTx]:
        conn = self._connection()
        if conn.in_transaction:
            raise RuntimeError("transactions do not nest")
        with _mapped_errors():
            conn.execute(f"BEGIN {mode}")
            try:
                yield SqliteTx(conn, self._clock, writable=writable)
            except BaseException:
                conn.rollback()
                raise
            else:
                if writable:
                    conn.commit()
                else:
                    conn.rollback()

    @contextmanager
    def transaction(self) -> Iterator[SqliteTx]:
        with self._write_lock, self._begin("IMMEDIATE", writable=True) as tx:
            yield tx

    def snapshot(self) -> AbstractContextManager[SqliteTx]:
        return self._begin("DEFERRED", writable=False)

    # -- streams ---------------------------------------------------------------

    def stream_position(self, user_id: str) -> Cursor:
        with self.snapshot() as tx:
            stream = tx._stream(user_id)
        if stream is not None:
            return Cursor(stream["epoch"], stream["head_seq"])
        with self.transaction() as tx:
            return tx.stream_position(user_id)

    def stream_heads(self, user_ids: Sequence[str]) -> dict[str, Cursor]:
        heads: dict[str, Cursor] = {}
        ids = list(dict.fromkeys(user_ids))
        with self.snapshot() as tx:
            for start in range(0, len(ids), HEADS_CHUNK):
                chunk = ids[start : start + HEADS_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = tx._q(
                    f"SELECT user_id, epoch, head_seq FROM streams WHERE user_id IN ({marks})",
                    chunk,
                )
                for user_id, epoch, head_seq in rows.fetchall():
                    heads[user_id] = Cursor(epoch, head_seq)
        return heads

    def events_after(self, user_id: str, after_seq: int, limit: int = 1000) -> list[StoredEvent]:
        with self.snapshot() as tx:
            stream = tx._stream(user_id)
            if stream is None or after_seq >= stream["head_seq"]:
                return []
            if after_seq + 1 < stream["retained_from"]:
                raise HistoryExpired(
                    f"events after seq {after_seq} are no longer retained "
                    f"(the oldest kept is {stream['retained_from']})"
                )
            rows = tx._q(
                "SELECT * FROM stream_events WHERE user_id = ? AND epoch = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (user_id, stream["epoch"], after_seq, limit),
            ).fetchall()
        return [
            StoredEvent(
                user_id=row["user_id"],
                epoch=row["epoch"],
                seq=row["seq"],
                id=row["id"],
                type=row["type"],
                payload=json.loads(row["payload"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    def reset_stream(self, user_id: str) -> Cursor:
        epoch = new_epoch()
        with self.transaction() as tx:
            tx._w("DELETE FROM stream_events WHERE user_id = ?", (user_id,))
            tx._w(
                "INSERT OR REPLACE INTO streams (user_id, epoch, head_seq, retained_from)"
                " VALUES (?, ?, 0, 1)",
                (user_id, epoch),
            )
        return Cursor(epoch, 0)

    def prune(
        self,
        now: dt.datetime,
        max_age: dt.timedelta = DEFAULT_MAX_AGE,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> int:
        if max_count < 0:
            raise ValueError("max_count must not be negative")
        cutoff = (now - max_age).timestamp()
        removed = 0
        with self.transaction() as tx:
            # Cut each stream at its newest too-old event, so what remains stays contiguous.
            cut: dict[str, int] = {
                user_id: seq
                for user_id, seq in tx._q(
                    "SELECT user_id, MAX(seq) FROM stream_events WHERE created_ts < ? GROUP BY user_id",
                    (cutoff,),
                ).fetchall()
            }
            for user_id, head_seq in tx._q(
                "SELECT user_id, head_seq FROM streams WHERE head_seq - retained_from >= ?",
                (max_count,),
            ).fetchall():
                cut[user_id] = max(cut.get(user_id, 0), head_seq - max_count)
            for user_id, upto in cut.items():
                stream = tx._stream(user_id)
                if stream is None or upto < stream["retained_from"]:
                    continue
                removed += tx._w(
                    "DELETE FROM stream_events WHERE user_id = ? AND seq <= ?", (user_id, upto)
                ).rowcount
                tx._w("UPDATE streams SET retained_from = ? WHERE user_id = ?", (upto + 1, user_id))
            tx._w("DELETE FROM idempotency WHERE created_ts < ?", (cutoff,))
            tx._w("DELETE FROM tickets WHERE expires_at < ?", (now.timestamp(),))
        return removed

    # -- tickets ---------------------------------------------------------------

    def put_ticket(
        self, ticket_hash: str, user_id: str, expires_at: float, claims_json: str
    ) -> None:
        with self.transaction() as tx:
            tx._w(
                "INSERT INTO tickets (ticket_hash, user_id, expires_at, claims_json) VALUES (?, ?, ?, ?)",
                (ticket_hash, user_id, expires_at, claims_json),
            )

    def peek_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        with self.snapshot() as tx:
            row = tx._q(
                "SELECT user_id, claims_json FROM tickets WHERE ticket_hash = ? AND expires_at > ?",
                (ticket_hash, now),
            ).fetchone()
        return None if row is None else (row["user_id"], row["claims_json"])

    def take_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        with self.transaction() as tx:
            rows = tx._w(
                "DELETE FROM tickets WHERE ticket_hash = ? RETURNING user_id, expires_at, claims_json",
                (ticket_hash,),
            ).fetchall()
        row = rows[0] if rows else None
        if row is None or row["expires_at"] <= now:
            return None
        return row["user_id"], row["claims_json"]

    # -- parity evidence -----------------------------------------------------------

    def add_evidence(self, rows: Sequence[Row]) -> None:
        with self.transaction() as tx:
            for row in rows:
                key = tuple(row[k] for k in EVIDENCE_KEY)
                found = tx._q(
                    "SELECT * FROM parity_evidence"
                    " WHERE hour = ? AND domain = ? AND source = ? AND stage = ?",
                    key,
                ).fetchone()
                stored = None
                if found is not None:
                    stored = {
                        **{k: found[k] for k in EVIDENCE_KEY},
                        "counts": json.loads(found["counts"]),
                        "samples": json.loads(found["samples"]),
                        "first_at": found["first_at"],
                        "last_at": found["last_at"],
                    }
                merged = merge_evidence(stored, row)
                tx._w(
                    "INSERT OR REPLACE INTO parity_evidence"
                    " (hour, domain, source, stage, counts, samples, first_at, last_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *key,
                        json.dumps(merged["counts"], sort_keys=True),
                        json.dumps(merged["samples"]),
                        merged["first_at"],
                        merged["last_at"],
                    ),
                )

    def evidence_since(self, since: str) -> list[Row]:
        with self.snapshot() as tx:
            rows = tx._q(
                "SELECT * FROM parity_evidence WHERE hour >= ?"
                " ORDER BY hour, domain, source, stage",
                (since,),
            ).fetchall()
        return [
            {
                **{k: row[k] for k in EVIDENCE_KEY},
                "counts": json.loads(row["counts"]),
                "samples": json.loads(row["samples"]),
                "first_at": row["first_at"],
                "last_at": row["last_at"],
            }
            for row in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
