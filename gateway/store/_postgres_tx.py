"""PostgreSQL transactions at the data level, and the mapping of driver errors.

`PostgresTx` runs the `Tx` interface's queries on one pooled connection in
autocommit mode whose transaction `PostgresStore` has begun (it explains
the isolation levels and the write lock). Rows come back as dicts
(`dict_row`), keyed like the SQLite store's. Every driver error a statement
raises leaves here as the gateway's: `StoreUnavailable` for the database's
operational failures, `Conflict` for a broken uniqueness rule.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeAlias

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import PoolTimeout

from gateway.errors import Conflict, StoreUnavailable
from gateway.events import Cursor, StoredEvent, iso, new_id
from gateway.store.base import Append, Row, Tx
from gateway.store.sqlite import new_epoch

__all__ = ["DictConnection", "PostgresTx", "detail", "raise_mapped", "unavailable"]

DictConnection: TypeAlias = psycopg.Connection[DictRow]
"""A pooled connection: its rows are dicts (`dict_row`)."""


def detail(exc: BaseException) -> str:
    """A driver message on one line (libpq's span several)."""
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def unavailable(what: str, exc: psycopg.Error) -> StoreUnavailable:
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable("the store is unavailable: no PostgreSQL connection in time")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return StoreUnavailable(f"the store is busy: {what} waited past lock_timeout")
    return StoreUnavailable(f"the store is unavailable ({what}): {detail(exc)}")


def raise_mapped(what: str, exc: psycopg.Error) -> NoReturn:
    """Raise the gateway's error for a driver error (programming errors pass through)."""
    if isinstance(exc, psycopg.OperationalError):
        raise unavailable(what, exc) from exc
    if isinstance(exc, psycopg.IntegrityError):
        detail = exc.diag.message_primary or str(exc)
        raise Conflict(f"the store refused {what}: {detail}") from exc
    raise exc


class PostgresTx(Tx):
    """A transaction on one pooled connection."""

    def __init__(
        self, conn: DictConnection, clock: Callable[[], dt.datetime], *, writable: bool
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._writable = writable

    def _q(self, sql: str, params: Any = ()) -> psycopg.Cursor[DictRow]:
        try:
            return self._conn.execute(sql, params)
        except psycopg.Error as exc:
            raise_mapped("a read", exc)

    def _w(self, sql: str, params: Any = ()) -> psycopg.Cursor[DictRow]:
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        try:
            return self._conn.execute(sql, params)
        except psycopg.Error as exc:
            raise_mapped("a write", exc)

    def _one(self, sql: str, params: Any = ()) -> Row | None:
        return self._q(sql, params).fetchone()

    def _all(self, sql: str, params: Any = ()) -> list[Row]:
        return self._q(sql, params).fetchall()

    def _column(self, sql: str, params: Any = ()) -> list[Any]:
        return [next(iter(row.values())) for row in self._q(sql, params).fetchall()]

    # -- the per-user stream ---------------------------------------------

    def _stream(self, user_id: str) -> Row | None:
        return self._one("SELECT * FROM streams WHERE user_id = %s", (user_id,))

    def _ensure_stream(self, user_id: str) -> Row:
        self._w(
            "INSERT INTO streams (user_id, epoch, head_seq, retained_from)"
            " VALUES (%s, %s, 0, 1) ON CONFLICT (user_id) DO NOTHING",
            (user_id, new_epoch()),
        )
        stream = self._stream(user_id)
        assert stream is not None
        return stream

    def append_event(self, user_id: str, type: str, payload: dict[str, Any]) -> StoredEvent:
        return self.append_events([(user_id, type, payload)])[0]

    def append_events(self, appends: Sequence[Append]) -> list[StoredEvent]:
        """The batch in one statement: each user's head moved by its count of
        events (its stream made on the first), then every event inserted at its
        place below the new head."""
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        if not appends:
            return []
        counts: dict[str, int] = {}
        for user_id, _, _ in sorted(appends, key=lambda append: append[0]):
            counts[user_id] = counts.get(user_id, 0) + 1  # streams taken in one order
        left = dict(counts)
        backs: list[int] = []  # how far below the new head each event lands
        for user_id, _, _ in appends:
            left[user_id] -= 1
            backs.append(left[user_id])
        now = self._clock()
        created_at = iso(now)
        ids = [new_id("evt") for _ in appends]
        rows = self._w(
            "WITH head AS ("
            " INSERT INTO streams AS s (user_id, epoch, head_seq, retained_from)"
            " SELECT u.user_id, u.epoch, u.n, 1"
            " FROM unnest(%(users)s::text[], %(epochs)s::text[], %(counts)s::bigint[])"
            " AS u(user_id, epoch, n)"
            " ON CONFLICT (user_id) DO UPDATE SET head_seq = s.head_seq + EXCLUDED.head_seq"
            " RETURNING s.user_id, s.epoch, s.head_seq)"
            " INSERT INTO stream_events"
            " (user_id, epoch, seq, id, type, payload, created_at, created_ts)"
            " SELECT h.user_id, h.epoch, h.head_seq - e.back, e.id, e.type, e.payload::json,"
            " %(created_at)s, %(created_ts)s"
            " FROM unnest(%(event_users)s::text[], %(backs)s::bigint[], %(ids)s::text[],"
            " %(types)s::text[], %(payloads)s::text[]) AS e(user_id, back, id, type, payload)"
            " JOIN head h ON h.user_id = e.user_id"
            " RETURNING id, epoch, seq",
            {
                "users": list(counts),
                "epochs": [new_epoch() for _ in counts],
                "counts": list(counts.values()),
                "event_users": [user_id for user_id, _, _ in appends],
                "backs": backs,
                "ids": ids,
                "types": [type for _, type, _ in appends],
                "payloads": [_compact(payload) for _, _, payload in appends],
                "created_at": created_at,
                "created_ts": now.timestamp(),
            },
        ).fetchall()
        placed = {row["id"]: row for row in rows}
        assert len(placed) == len(appends)
        return [
            StoredEvent(
                user_id=user_id,
                epoch=placed[event_id]["epoch"],
                seq=placed[event_id]["seq"],
                id=event_id,
                type=type,
                payload=payload,
                created_at=created_at,
            )
            for (user_id, type, payload), event_id in zip(appends, ids, strict=True)
        ]

    def stream_position(self, user_id: str) -> Cursor:
        stream = self._stream(user_id) if not self._writable else self._ensure_stream(user_id)
        if stream is None:
            raise LookupError(f"{user_id} has no stream yet; read its position outside a snapshot")
        return Cursor(stream["epoch"], stream["head_seq"])

    # -- idempotency records ---------------------------------------------

    def remember_idempotency(self, scope: str, key: str, result_json: str, now: float) -> None:
        self._w(
            "INSERT INTO idempotency (scope, key, result_json, created_ts) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (scope, key) DO UPDATE"
            " SET result_json = EXCLUDED.result_json, created_ts = EXCLUDED.created_ts",
            (scope, key, result_json, now),
        )

    def recall_idempotency(self, scope: str, key: str, since: float) -> str | None:
        row = self._one(
            "SELECT result_json FROM idempotency WHERE scope = %s AND key = %s AND created_ts >= %s",
            (scope, key, since),
        )
        return row["result_json"] if row is not None else None

    def remember_idempotencies(
        self, scope: str, records: Sequence[tuple[str, str]], now: float
    ) -> None:
        if not records:
            return
        latest = dict(records)  # a key given twice: the last record, as one at a time would leave
        self._w(
            "INSERT INTO idempotency (scope, key, result_json, created_ts)"
            " SELECT %(scope)s, r.key, r.result_json, %(now)s"
            " FROM unnest(%(keys)s::text[], %(results)s::text[]) AS r(key, result_json)"
            " ON CONFLICT (scope, key) DO UPDATE"
            " SET result_json = EXCLUDED.result_json, created_ts = EXCLUDED.created_ts",
            {"scope": scope, "now": now, "keys": list(latest), "results": list(latest.values())},
        )

    def recall_idempotencies(self, scope: str, keys: Sequence[str], since: float) -> dict[str, str]:
        if not keys:
            return {}
        rows = self._all(
            "SELECT key, result_json FROM idempotency"
            " WHERE scope = %s AND key = ANY(%s::text[]) AND created_ts >= %s",
            (scope, list(dict.fromkeys(keys)), since),
        )
        return {row["key"]: row["result_json"] for row in rows}

    # -- users -------------------------------------------------------------

    def get_user(self, user_id: str) -> Row | None:
        return self._one("SELECT id, name FROM users WHERE id = %s", (user_id,))

    def upsert_user(self, user_id: str, name: str | None) -> Row:
        row = self._w(
            "INSERT INTO users (id, name) VALUES (%s, %s)"
            " ON CONFLICT (id) DO UPDATE SET name = COALESCE(EXCLUDED.name, users.name)"
            " RETURNING id, name",
            (user_id, name),
        ).fetchone()
        assert row is not None
        return row

    # -- notifications -----------------------------------------------------

    def insert_notification(self, row: Row) -> Row:
        full = {"read_at": None, "data": None, **row}
        pos = self._w(
            "INSERT INTO notifications (id, user_id, kind, text, data, created_at, read_at)"
            " VALUES (%(id)s, %(user_id)s, %(kind)s, %(text)s, %(data)s, %(created_at)s,"
            " %(read_at)s) RETURNING pos",
            full,
        ).fetchone()
        assert pos is not None
        return {**full, "pos": pos["pos"]}

    def list_notifications(
        self, user_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        if before_pos is None:
            return self._all(
                "SELECT * FROM notifications WHERE user_id = %s ORDER BY pos DESC LIMIT %s",
                (user_id, limit),
            )
        return self._all(
            "SELECT * FROM notifications WHERE user_id = %s AND pos < %s"
            " ORDER BY pos DESC LIMIT %s",
            (user_id, before_pos, limit),
        )

    def count_unread_notifications(self, user_id: str) -> int:
        return self._column(
            "SELECT COUNT(*) FROM notifications WHERE user_id = %s AND read_at IS NULL", (user_id,)
        )[0]

    def mark_notifications_read(self, user_id: str, ids: Iterable[str] | None, read_at: str) -> int:
        if ids is None:
            return self._w(
                "UPDATE notifications SET read_at = %s WHERE user_id = %s AND read_at IS NULL",
                (read_at, user_id),
            ).rowcount
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        return self._w(
            "UPDATE notifications SET read_at = %s"
            " WHERE user_id = %s AND read_at IS NULL AND id = ANY(%s)",
            (read_at, user_id, wanted),
        ).rowcount

    # -- conversations, participants, messages -----------------------------

    def insert_conversation(self, row: Row, participant_ids: Iterable[str]) -> None:
        self._w(
            "INSERT INTO conversations (id, created_at, updated_at, last_message_id)"
            " VALUES (%s, %s, %s, %s)",
            (row["id"], row["created_at"], row["updated_at"], row.get("last_message_id")),
        )
        participants = list(dict.fromkeys(participant_ids))
        if participants:
            self._w(
                "INSERT INTO participants (conversation_id, user_id) SELECT %s, unnest(%s::text[])",
                (row["id"], participants),
            )

    def get_conversation(self, conversation_id: str) -> Row | None:
        return self._one("SELECT * FROM conversations WHERE id = %s", (conversation_id,))

    def touch_conversation(
        self, conversation_id: str, updated_at: str, last_message_id: str
    ) -> None:
        self._w(
            "UPDATE conversations SET updated_at = %s, last_message_id = %s WHERE id = %s",
            (updated_at, last_message_id, conversation_id),
        )

    def list_participants(self, conversation_id: str) -> list[str]:
        return self._column(
            "SELECT user_id FROM participants WHERE conversation_id = %s ORDER BY user_id",
            (conversation_id,),
        )

    def is_participant(self, conversation_id: str, user_id: str) -> bool:
        return (
            self._one(
                "SELECT 1 AS found FROM participants WHERE conversation_id = %s AND user_id = %s",
                (conversation_id, user_id),
            )
            is not None
        )

    def remove_participant(self, conversation_id: str, user_id: str) -> bool:
        return (
            self._w(
                "DELETE FROM participants WHERE conversation_id = %s AND user_id = %s",
                (conversation_id, user_id),
            ).rowcount
            > 0
        )

    def conversations_of(self, user_id: str, limit: int | None = None) -> list[Row]:
        return self._all(
            "SELECT c.* FROM participants p JOIN conversations c ON c.id = p.conversation_id"
            " WHERE p.user_id = %s ORDER BY c.updated_at DESC, c.id DESC LIMIT %s",
            (user_id, limit),
        )

    def share_conversation(self, user_a: str, user_b: str) -> bool:
        return (
            self._one(
                "SELECT 1 AS found FROM participants a JOIN participants b"
                " ON b.conversation_id = a.conversation_id AND b.user_id = %s"
                " WHERE a.user_id = %s LIMIT 1",
                (user_b, user_a),
            )
            is not None
        )

    def insert_message(self, row: Row) -> Row:
        full = {"client_message_id": None, **row}
        pos = self._w(
            "INSERT INTO messages"
            " (id, conversation_id, sender_id, body, created_at, client_message_id)"
            " VALUES (%(id)s, %(conversation_id)s, %(sender_id)s, %(body)s, %(created_at)s,"
            " %(client_message_id)s) RETURNING pos",
            full,
        ).fetchone()
        assert pos is not None
        return {**full, "pos": pos["pos"]}

    def get_message(self, message_id: str) -> Row | None:
        return self._one("SELECT * FROM messages WHERE id = %s", (message_id,))

    def find_message_by_client_id(self, sender_id: str, client_message_id: str) -> Row | None:
        return self._one(
            "SELECT * FROM messages WHERE sender_id = %s AND client_message_id = %s",
            (sender_id, client_message_id),
        )

    def list_messages(
        self, conversation_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        if before_pos is None:
            return self._all(
                "SELECT * FROM messages WHERE conversation_id = %s ORDER BY pos DESC LIMIT %s",
                (conversation_id, limit),
            )
        return self._all(
            "SELECT * FROM messages WHERE conversation_id = %s AND pos < %s"
            " ORDER BY pos DESC LIMIT %s",
            (conversation_id, before_pos, limit),
        )

    def last_message(self, conversation_id: str) -> Row | None:
        return self._one(
            "SELECT * FROM messages WHERE conversation_id = %s ORDER BY pos DESC LIMIT 1",
            (conversation_id,),
        )

    def count_messages_after(
        self, conversation_id: str, after_pos: int, exclude_sender: str
    ) -> int:
        return self._column(
            "SELECT COUNT(*) FROM messages"
            " WHERE conversation_id = %s AND pos > %s AND sender_id <> %s",
            (conversation_id, after_pos, exclude_sender),
        )[0]

    def get_read_state(self, conversation_id: str, user_id: str) -> Row | None:
        return self._one(
            "SELECT * FROM read_states WHERE conversation_id = %s AND user_id = %s",
            (conversation_id, user_id),
        )

    def list_read_states(self, conversation_id: str) -> list[Row]:
        return self._all(
            "SELECT * FROM read_states WHERE conversation_id = %s ORDER BY user_id",
            (conversation_id,),
        )

    def put_read_state(
        self, conversation_id: str, user_id: str, message_id: str, message_pos: int, read_at: str
    ) -> None:
        self._w(
            "INSERT INTO read_states (conversation_id, user_id, message_id, message_pos, read_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (conversation_id, user_id) DO UPDATE"
            " SET message_id = EXCLUDED.message_id, message_pos = EXCLUDED.message_pos,"
            " read_at = EXCLUDED.read_at",
            (conversation_id, user_id, message_id, message_pos, read_at),
        )

    def insert_delivery(self, message_id: str, user_id: str, delivered_at: str) -> bool:
        return (
            self._w(
                "INSERT INTO deliveries (message_id, user_id, delivered_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (message_id, user_id) DO NOTHING",
                (message_id, user_id, delivered_at),
            ).rowcount
            == 1
        )

    # Batched reads of the conversation list: one query (one round trip) each.

    def last_messages(self, conversation_ids: Iterable[str]) -> dict[str, Row]:
        rows = self._all(
            "SELECT m.* FROM unnest(%s::text[]) AS w(id) CROSS JOIN LATERAL"
            " (SELECT * FROM messages WHERE conversation_id = w.id ORDER BY pos DESC LIMIT 1) m",
            (list(dict.fromkeys(conversation_ids)),),
        )
        return {row["conversation_id"]: row for row in rows}

    def participants_of(self, conversation_ids: Iterable[str]) -> dict[str, list[str]]:
        wanted = list(dict.fromkeys(conversation_ids))
        found: dict[str, list[str]] = {conversation_id: [] for conversation_id in wanted}
        for row in self._all(
            "SELECT conversation_id, user_id FROM participants WHERE conversation_id = ANY(%s)"
            " ORDER BY conversation_id, user_id",
            (wanted,),
        ):
            found[row["conversation_id"]].append(row["user_id"])
        return found

    def read_states_of(self, conversation_ids: Iterable[str]) -> dict[str, list[Row]]:
        wanted = list(dict.fromkeys(conversation_ids))
        found: dict[str, list[Row]] = {conversation_id: [] for conversation_id in wanted}
        for row in self._all(
            "SELECT * FROM read_states WHERE conversation_id = ANY(%s)"
            " ORDER BY conversation_id, user_id",
            (wanted,),
        ):
            found[row["conversation_id"]].append(row)
        return found

    def unread_counts(self, user_id: str, conversation_ids: Iterable[str]) -> dict[str, int]:
        rows = self._all(
            "SELECT w.id, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = w.id"
            " AND m.pos > COALESCE((SELECT r.message_pos FROM read_states r"
            " WHERE r.conversation_id = w.id AND r.user_id = %(user)s), 0)"
            " AND m.sender_id <> %(user)s) AS unread FROM unnest(%(ids)s::text[]) AS w(id)",
            {"user": user_id, "ids": list(dict.fromkeys(conversation_ids))},
        )
        return {row["id"]: row["unread"] for row in rows}

    def list_deliveries(self, message_ids: Iterable[str]) -> list[Row]:
        wanted = list(dict.fromkeys(message_ids))
        if not wanted:
            return []
        return self._all(
            "SELECT * FROM deliveries WHERE message_id = ANY(%s) ORDER BY message_id, user_id",
            (wanted,),
        )

    # -- follow requests ---------------------------------------------------

    def insert_follow_request(self, row: Row) -> None:
        self._w(
            "INSERT INTO follow_requests"
            " (id, from_user_id, to_user_id, status, created_at, updated_at)"
            " VALUES (%(id)s, %(from_user_id)s, %(to_user_id)s, %(status)s, %(created_at)s,"
            " %(updated_at)s)",
            row,
        )

    def get_follow_request(self, request_id: str) -> Row | None:
        return self._one("SELECT * FROM follow_requests WHERE id = %s", (request_id,))

    def find_follow_request(self, from_user_id: str, to_user_id: str) -> Row | None:
        return self._one(
            "SELECT * FROM follow_requests WHERE from_user_id = %s AND to_user_id = %s",
            (from_user_id, to_user_id),
        )

    def update_follow_request(self, request_id: str, status: str, updated_at: str) -> None:
        self._w(
            "UPDATE follow_requests SET status = %s, updated_at = %s WHERE id = %s",
            (status, updated_at, request_id),
        )

    def _follow_requests(self, column: str, user_id: str, status: str | None) -> list[Row]:
        if status is None:
            return self._all(
                f"SELECT * FROM follow_requests WHERE {column} = %s"
                " ORDER BY updated_at DESC, id DESC",
                (user_id,),
            )
        return self._all(
            f"SELECT * FROM follow_requests WHERE {column} = %s AND status = %s"
            " ORDER BY updated_at DESC, id DESC",
            (user_id, status),
        )

    def follow_requests_to(self, user_id: str, status: str | None = None) -> list[Row]:
        return self._follow_requests("to_user_id", user_id, status)

    def follow_requests_from(self, user_id: str, status: str | None = None) -> list[Row]:
        return self._follow_requests("from_user_id", user_id, status)

    # -- gatherings, rsvps, check-ins, saved -------------------------------

    def insert_gathering(self, row: Row) -> None:
        self._w(
            "INSERT INTO gatherings (id, title, host_id, starts_at, created_at)"
            " VALUES (%(id)s, %(title)s, %(host_id)s, %(starts_at)s, %(created_at)s)",
            row,
        )

    def get_gathering(self, event_id: str) -> Row | None:
        return self._one("SELECT * FROM gatherings WHERE id = %s", (event_id,))

    def get_rsvp(self, event_id: str, user_id: str) -> Row | None:
        return self._one(
            "SELECT event_id, user_id, status, updated_at FROM rsvps"
            " WHERE event_id = %s AND user_id = %s",
            (event_id, user_id),
        )

    def put_rsvp(self, row: Row) -> None:
        # A changed status moves the user to the end of that status's order.
        self._w(
            "INSERT INTO rsvps (event_id, user_id, status, updated_at, seq)"
            " VALUES (%(event_id)s, %(user_id)s, %(status)s, %(updated_at)s,"
            " nextval('rsvps_order'))"
            " ON CONFLICT (event_id, user_id) DO UPDATE SET"
            " updated_at = EXCLUDED.updated_at, status = EXCLUDED.status,"
            " seq = CASE WHEN rsvps.status = EXCLUDED.status THEN rsvps.seq ELSE EXCLUDED.seq END",
            row,
        )

    def count_rsvps(self, event_id: str) -> dict[str, int]:
        rows = self._all(
            "SELECT status, COUNT(*) AS n FROM rsvps WHERE event_id = %s GROUP BY status",
            (event_id,),
        )
        return {row["status"]: row["n"] for row in rows}

    def rsvp_user_ids(self, event_id: str, status: str, limit: int) -> list[str]:
        return self._column(
            "SELECT user_id FROM rsvps WHERE event_id = %s AND status = %s ORDER BY seq LIMIT %s",
            (event_id, status, limit),
        )

    def rsvps_of(self, user_id: str) -> list[Row]:
        return self._all(
            "SELECT event_id, user_id, status, updated_at FROM rsvps WHERE user_id = %s",
            (user_id,),
        )

    def insert_check_in(self, event_id: str, user_id: str, checked_in_at: str) -> bool:
        return (
            self._w(
                "INSERT INTO check_ins (event_id, user_id, checked_in_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (event_id, user_id) DO NOTHING",
                (event_id, user_id, checked_in_at),
            ).rowcount
            == 1
        )

    def count_check_ins(self, event_id: str) -> int:
        return self._column("SELECT COUNT(*) FROM check_ins WHERE event_id = %s", (event_id,))[0]

    def set_saved(self, event_id: str, user_id: str, saved: bool, saved_at: str) -> bool:
        if not saved:
            return (
                self._w(
                    "DELETE FROM saved_events WHERE user_id = %s AND event_id = %s",
                    (user_id, event_id),
                ).rowcount
                == 1
            )
        return (
            self._w(
                "INSERT INTO saved_events (user_id, event_id, saved_at, seq)"
                " VALUES (%s, %s, %s, nextval('saved_events_order'))"
                " ON CONFLICT (user_id, event_id) DO NOTHING",
                (user_id, event_id, saved_at),
            ).rowcount
            == 1
        )

    def is_saved(self, event_id: str, user_id: str) -> bool:
        return (
            self._one(
                "SELECT 1 AS found FROM saved_events WHERE user_id = %s AND event_id = %s",
                (user_id, event_id),
            )
            is not None
        )

    def saved_event_ids(self, user_id: str) -> list[str]:
        return self._column(
            "SELECT event_id FROM saved_events WHERE user_id = %s ORDER BY seq DESC", (user_id,)
        )

    # -- organizations, memberships, announcements ------------------------

    def insert_organization(self, row: Row) -> None:
        self._w(
            "INSERT INTO organizations (id, name, created_at)"
            " VALUES (%(id)s, %(name)s, %(created_at)s)",
            row,
        )

    def get_organization(self, org_id: str) -> Row | None:
        return self._one("SELECT * FROM organizations WHERE id = %s", (org_id,))

    def get_membership(self, org_id: str, user_id: str) -> Row | None:
        return self._one(
            "SELECT org_id, user_id, role, updated_at FROM memberships"
            " WHERE org_id = %s AND user_id = %s",
            (org_id, user_id),
        )

    def put_membership(self, org_id: str, user_id: str, role: str, updated_at: str) -> None:
        # A member keeps their place in the join order when their role changes.
        self._w(
            "INSERT INTO memberships (org_id, user_id, role, updated_at, seq)"
            " VALUES (%s, %s, %s, %s, nextval('memberships_order'))"
            " ON CONFLICT (org_id, user_id) DO UPDATE"
            " SET role = EXCLUDED.role, updated_at = EXCLUDED.updated_at",
            (org_id, user_id, role, updated_at),
        )

    def delete_membership(self, org_id: str, user_id: str) -> bool:
        return (
            self._w(
                "DELETE FROM memberships WHERE org_id = %s AND user_id = %s", (org_id, user_id)
            ).rowcount
            == 1
        )

    def list_memberships(self, org_id: str) -> list[Row]:
        return self._all(
            "SELECT org_id, user_id, role, updated_at FROM memberships"
            " WHERE org_id = %s ORDER BY seq",
            (org_id,),
        )

    def insert_announcement(self, row: Row) -> Row:
        pos = self._w(
            "INSERT INTO announcements (id, org_id, author_id, title, body, created_at)"
            " VALUES (%(id)s, %(org_id)s, %(author_id)s, %(title)s, %(body)s, %(created_at)s)"
            " RETURNING pos",
            row,
        ).fetchone()
        assert pos is not None
        return {**row, "pos": pos["pos"]}

    def list_announcements(self, org_id: str, limit: int) -> list[Row]:
        return self._all(
            "SELECT * FROM announcements WHERE org_id = %s ORDER BY pos DESC LIMIT %s",
            (org_id, limit),
        )

    # -- feed ----------------------------------------------------------------

    def insert_feed_item(self, row: Row) -> Row:
        pos = self._w(
            "INSERT INTO feed_items (id, author_id, text, created_at)"
            " VALUES (%(id)s, %(author_id)s, %(text)s, %(created_at)s) RETURNING pos",
            row,
        ).fetchone()
        assert pos is not None
        return {**row, "pos": pos["pos"]}

    def list_feed_items(self, author_ids: Iterable[str], limit: int) -> list[Row]:
        authors = list(dict.fromkeys(author_ids))
        if not authors:
            return []
        return self._all(
            "SELECT * FROM feed_items WHERE author_id = ANY(%s) ORDER BY pos DESC LIMIT %s",
            (authors, limit),
        )

    # -- presence -------------------------------------------------------------

    def put_presence(self, user_id: str, status: str, last_seen_at: str) -> None:
        self._w(
            "INSERT INTO presence (user_id, status, last_seen_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id) DO UPDATE"
            " SET status = EXCLUDED.status, last_seen_at = EXCLUDED.last_seen_at",
            (user_id, status, last_seen_at),
        )

    def get_presences(self, user_ids: Iterable[str]) -> list[Row]:
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return []
        return self._all(
            "SELECT * FROM presence WHERE user_id = ANY(%s) ORDER BY user_id", (wanted,)
        )


_compact = json.JSONEncoder(separators=(",", ":")).encode
