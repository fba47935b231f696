"""The MongoDB store's transaction: every record kind's queries, and driver errors mapped.

Every driver call of the store goes through `MongoTx`'s few helpers, which
pass the transaction's session (None for single operations and for a test
double without sessions), refuse writes in a snapshot, and turn driver
errors into gateway errors (`map_driver_error`). `gateway.store.mongo`
describes the store as a whole.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    WTimeoutError,
)

from gateway.errors import Conflict, StoreUnavailable
from gateway.events import Cursor, StoredEvent, iso
from gateway.store.base import Append, Row, Tx, number_appends

__all__ = [
    "TRANSIENT",
    "UNKNOWN_COMMIT",
    "MongoTx",
    "epoch_seconds",
    "fresh_stream",
    "is_transient",
    "map_driver_error",
    "mapping_driver_errors",
    "new_epoch",
    "to_date",
    "unique",
]

TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"

# -- driver errors -------------------------------------------------------------


def map_driver_error(exc: PyMongoError) -> Conflict | StoreUnavailable:
    """The gateway error a driver error stands for (the driver's text stays in the cause)."""
    if isinstance(exc, DuplicateKeyError):
        return Conflict("the record exists already")
    if exc.has_error_label(TRANSIENT):
        return StoreUnavailable("the store refused a write that conflicted with another; retry")
    if exc.has_error_label(UNKNOWN_COMMIT):
        return StoreUnavailable("the store did not confirm a commit; it may have been applied")
    if (
        isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError)
        or exc.timeout
        or exc.has_error_label("RetryableWriteError")
    ):
        return StoreUnavailable("the store is unreachable or timed out; retry")
    # Anything else the server refuses (authorization, a quota, a bad command)
    # means the store cannot serve the request, as the SQLite store has it.
    return StoreUnavailable("the store cannot serve the request")


def is_transient(exc: BaseException) -> bool:
    """Whether an error (a driver error, or the gateway error it became) is a write conflict."""
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
    return isinstance(cause, PyMongoError) and cause.has_error_label(TRANSIENT)


@contextmanager
def mapping_driver_errors() -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        raise map_driver_error(exc) from exc


# Stored payloads: compact JSON text (one encoder for every call).
_compact = json.JSONEncoder(separators=(",", ":")).encode


def new_epoch() -> str:
    return secrets.token_hex(8)


def fresh_stream(epoch: str) -> dict[str, Any]:
    # `retained` counts the events kept: head_seq - retained_from + 1.
    return {"epoch": epoch, "head_seq": 0, "retained_from": 1, "retained": 0}


def to_date(epoch_s: float) -> dt.datetime:
    """A BSON date (naive UTC, as the driver stores it) from epoch seconds."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).replace(tzinfo=None)


def epoch_seconds(date: dt.datetime) -> float:
    return date.replace(tzinfo=dt.UTC).timestamp()


@overload
def _named(doc: dict[str, Any], key: str = ...) -> Row: ...
@overload
def _named(doc: dict[str, Any] | None, key: str = ...) -> Row | None: ...
def _named(doc: dict[str, Any] | None, key: str = "id") -> Row | None:
    """A document as a row: `_id` under the record kind's own key."""
    if doc is None:
        return None
    row = dict(doc)
    row[key] = row.pop("_id")
    return row


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# Rows of these kinds leave out the store's own fields.
_NO_ID = {"_id": 0}
_NO_ID_SEQ = {"_id": 0, "seq": 0}
_NO_PARTICIPANTS = {"participants": 0}


class MongoTx(Tx):
    """One transaction (or, with no session, operations under the test double's lock)."""

    def __init__(
        self,
        db: Any,
        session: Any,
        clock: Callable[[], dt.datetime],
        *,
        writable: bool,
    ) -> None:
        self._db = db
        self._session = session
        self._clock = clock
        self._writable = writable

    # -- every driver call goes through these ---------------------------------

    def _find(
        self,
        name: str,
        query: dict[str, Any],
        projection: dict[str, Any] | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        if limit == 0:
            return []
        with mapping_driver_errors():
            cursor = self._db[name].find(
                query,
                projection,
                sort=sort,
                limit=limit if limit is not None and limit > 0 else 0,  # negative: no limit
                session=self._session,
            )
            return list(cursor)

    def _find_one(
        self,
        name: str,
        query: dict[str, Any],
        projection: dict[str, Any] | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
    ) -> dict[str, Any] | None:
        rows = self._find(name, query, projection, sort=sort, limit=1)
        return rows[0] if rows else None

    def _count(self, name: str, query: dict[str, Any]) -> int:
        with mapping_driver_errors():
            return self._db[name].count_documents(query, session=self._session)

    def _aggregate(self, name: str, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with mapping_driver_errors():
            return list(self._db[name].aggregate(pipeline, session=self._session))

    def _write(self, name: str, operation: str, *args: Any, **kwargs: Any) -> Any:
        if not self._writable:
            raise RuntimeError("a snapshot is read-only; use store.transaction()")
        with mapping_driver_errors():
            return getattr(self._db[name], operation)(*args, session=self._session, **kwargs)

    def _next(self, counter: str) -> int:
        doc = self._write(
            "counters",
            "find_one_and_update",
            {"_id": counter},
            {"$inc": {"value": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(doc["value"])

    # -- the per-user stream ---------------------------------------------

    def _stream(self, user_id: str) -> dict[str, Any] | None:
        return self._find_one("streams", {"_id": user_id})

    def _ensure_stream(self, user_id: str) -> dict[str, Any]:
        stream = self._stream(user_id)
        if stream is None:
            stream = self._write(
                "streams",
                "find_one_and_update",
                {"_id": user_id},
                {"$setOnInsert": fresh_stream(new_epoch())},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        return stream

    def append_event(self, user_id: str, type: str, payload: dict[str, Any]) -> StoredEvent:
        return self.append_events([(user_id, type, payload)])[0]

    def append_events(self, appends: Sequence[Append]) -> list[StoredEvent]:
        """Each user's head moved once by its count of events, then every event
        in one `insert_many`."""
        if not appends:
            return []
        counts: dict[str, int] = {}
        for user_id, _, _ in sorted(appends, key=lambda append: append[0]):
            counts[user_id] = counts.get(user_id, 0) + 1  # streams taken in one order
        heads: dict[str, tuple[str, int]] = {}  # the epoch and the seq before the batch
        for user_id, count in counts.items():
            stream = self._write(
                "streams",
                "find_one_and_update",
                {"_id": user_id},
                {
                    "$inc": {"head_seq": count, "retained": count},
                    "$setOnInsert": {"epoch": new_epoch(), "retained_from": 1},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            heads[user_id] = (stream["epoch"], stream["head_seq"] - count)
        now = self._clock()
        created_at, created_ts = iso(now), now.timestamp()
        events = number_appends(appends, heads, created_at)
        documents = [
            {
                "user_id": e.user_id,
                "epoch": e.epoch,
                "seq": e.seq,
                "id": e.id,
                "type": e.type,
                # JSON text, as SQLite keeps it: any key and any integer round-trip exactly.
                "payload": _compact(e.payload),
                "created_at": created_at,
                "created_ts": created_ts,
            }
            for e in events
        ]
        self._write("stream_events", "insert_many", documents)
        return events

    def stream_position(self, user_id: str) -> Cursor:
        stream = self._ensure_stream(user_id) if self._writable else self._stream(user_id)
        if stream is None:
            raise LookupError(f"{user_id} has no stream yet; read its position outside a snapshot")
        return Cursor(stream["epoch"], stream["head_seq"])

    def _cut_stream(self, user_id: str, aged: dict[tuple[str, str], int], max_count: int) -> int:
        """Drop the stream's events up to its age cut or count cut; how many went."""
        stream = self._stream(user_id)
        if stream is None:
            return 0
        upto = aged.get((user_id, stream["epoch"]), 0)
        if stream["retained"] > max_count:
            upto = max(upto, stream["head_seq"] - max_count)
        if upto < stream["retained_from"]:
            return 0
        removed = self._write(
            "stream_events",
            "delete_many",
            {"user_id": user_id, "epoch": stream["epoch"], "seq": {"$lte": upto}},
        ).deleted_count
        self._write(
            "streams",
            "update_one",
            {"_id": user_id},
            {"$set": {"retained_from": upto + 1, "retained": stream["head_seq"] - upto}},
        )
        return removed

    # -- idempotency records ---------------------------------------------

    def remember_idempotency(self, scope: str, key: str, result_json: str, now: float) -> None:
        self._write(
            "idempotency",
            "replace_one",
            {"scope": scope, "key": key},
            {"scope": scope, "key": key, "result_json": result_json, "created_ts": now},
            upsert=True,
        )

    def recall_idempotency(self, scope: str, key: str, since: float) -> str | None:
        doc = self._find_one(
            "idempotency", {"scope": scope, "key": key, "created_ts": {"$gte": since}}
        )
        return doc["result_json"] if doc is not None else None

    # -- users -------------------------------------------------------------

    def get_user(self, user_id: str) -> Row | None:
        return _named(self._find_one("users", {"_id": user_id}))

    def upsert_user(self, user_id: str, name: str | None) -> Row:
        change = {"$setOnInsert": {"name": None}} if name is None else {"$set": {"name": name}}
        self._write("users", "update_one", {"_id": user_id}, change, upsert=True)
        user = self.get_user(user_id)
        assert user is not None
        return user

    # -- notifications -----------------------------------------------------

    def insert_notification(self, row: Row) -> Row:
        full = {"read_at": None, "data": None, **row}
        full["pos"] = self._next(f"notifications:{full['user_id']}")
        doc = dict(full)
        doc["_id"] = doc.pop("id")
        self._write("notifications", "insert_one", doc)
        return full

    def list_notifications(
        self, user_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        query: dict[str, Any] = {"user_id": user_id}
        if before_pos is not None:
            query["pos"] = {"$lt": before_pos}
        rows = self._find("notifications", query, sort=[("pos", -1)], limit=limit)
        return [_named(doc) for doc in rows]

    def count_unread_notifications(self, user_id: str) -> int:
        return self._count("notifications", {"user_id": user_id, "read_at": None})

    def mark_notifications_read(self, user_id: str, ids: Iterable[str] | None, read_at: str) -> int:
        query: dict[str, Any] = {"user_id": user_id, "read_at": None}
        if ids is not None:
            wanted = unique(ids)
            if not wanted:
                return 0
            query["_id"] = {"$in": wanted}
        return self._write(
            "notifications", "update_many", query, {"$set": {"read_at": read_at}}
        ).modified_count

    # -- conversations, participants, messages -----------------------------

    def insert_conversation(self, row: Row, participant_ids: Iterable[str]) -> None:
        self._write(
            "conversations",
            "insert_one",
            {
                "_id": row["id"],
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
                "last_message_id": row.get("last_message_id"),
                "participants": sorted(set(participant_ids)),
            },
        )

    def get_conversation(self, conversation_id: str) -> Row | None:
        return _named(self._find_one("conversations", {"_id": conversation_id}, _NO_PARTICIPANTS))

    def touch_conversation(
        self, conversation_id: str, updated_at: str, last_message_id: str
    ) -> None:
        self._write(
            "conversations",
            "update_one",
            {"_id": conversation_id},
            {"$set": {"updated_at": updated_at, "last_message_id": last_message_id}},
        )

    def list_participants(self, conversation_id: str) -> list[str]:
        doc = self._find_one("conversations", {"_id": conversation_id}, {"participants": 1})
        return sorted(doc["participants"]) if doc is not None else []

    def is_participant(self, conversation_id: str, user_id: str) -> bool:
        query = {"_id": conversation_id, "participants": user_id}
        return self._find_one("conversations", query, {"_id": 1}) is not None

    def remove_participant(self, conversation_id: str, user_id: str) -> bool:
        return (
            self._write(
                "conversations",
                "update_one",
                {"_id": conversation_id, "participants": user_id},
                {"$pull": {"participants": user_id}},
            ).modified_count
            > 0
        )

    def conversations_of(self, user_id: str, limit: int | None = None) -> list[Row]:
        rows = self._find(
            "conversations",
            {"participants": user_id},
            _NO_PARTICIPANTS,
            sort=[("updated_at", -1), ("_id", -1)],
            limit=limit,
        )
        return [_named(doc) for doc in rows]

    def share_conversation(self, user_a: str, user_b: str) -> bool:
        query = {"participants": {"$all": [user_a, user_b]}}
        return self._find_one("conversations", query, {"_id": 1}) is not None

    def insert_message(self, row: Row) -> Row:
        full = {"client_message_id": None, **row}
        full["pos"] = self._next(f"messages:{full['conversation_id']}")
        doc = dict(full)
        doc["_id"] = doc.pop("id")
        self._write("messages", "insert_one", doc)
        return full

    def get_message(self, message_id: str) -> Row | None:
        return _named(self._find_one("messages", {"_id": message_id}))

    def find_message_by_client_id(self, sender_id: str, client_message_id: str) -> Row | None:
        # The `$type` repeats the partial index's condition, so the server can use that index.
        query = {
            "sender_id": sender_id,
            "client_message_id": {"$eq": client_message_id, "$type": "string"},
        }
        return _named(self._find_one("messages", query))

    def list_messages(
        self, conversation_id: str, limit: int, before_pos: int | None = None
    ) -> list[Row]:
        query: dict[str, Any] = {"conversation_id": conversation_id}
        if before_pos is not None:
            query["pos"] = {"$lt": before_pos}
        rows = self._find("messages", query, sort=[("pos", -1)], limit=limit)
        return [_named(doc) for doc in rows]

    def last_message(self, conversation_id: str) -> Row | None:
        rows = self.list_messages(conversation_id, 1)
        return rows[0] if rows else None

    def count_messages_after(
        self, conversation_id: str, after_pos: int, exclude_sender: str
    ) -> int:
        return self._count(
            "messages",
            {
                "conversation_id": conversation_id,
                "pos": {"$gt": after_pos},
                "sender_id": {"$ne": exclude_sender},
            },
        )

    def get_read_state(self, conversation_id: str, user_id: str) -> Row | None:
        query = {"conversation_id": conversation_id, "user_id": user_id}
        return self._find_one("read_states", query, _NO_ID)

    def list_read_states(self, conversation_id: str) -> list[Row]:
        query = {"conversation_id": conversation_id}
        return self._find("read_states", query, _NO_ID, sort=[("user_id", 1)])

    def put_read_state(
        self, conversation_id: str, user_id: str, message_id: str, message_pos: int, read_at: str
    ) -> None:
        key = {"conversation_id": conversation_id, "user_id": user_id}
        state = {"message_id": message_id, "message_pos": message_pos, "read_at": read_at}
        self._write("read_states", "replace_one", key, {**key, **state}, upsert=True)

    def insert_delivery(self, message_id: str, user_id: str, delivered_at: str) -> bool:
        result = self._write(
            "deliveries",
            "update_one",
            {"message_id": message_id, "user_id": user_id},
            {"$setOnInsert": {"delivered_at": delivered_at}},
            upsert=True,
        )
        return result.upserted_id is not None

    def list_deliveries(self, message_ids: Iterable[str]) -> list[Row]:
        wanted = unique(message_ids)
        if not wanted:
            return []
        return self._find(
            "deliveries",
            {"message_id": {"$in": wanted}},
            _NO_ID,
            sort=[("message_id", 1), ("user_id", 1)],
        )

    # -- follow requests ---------------------------------------------------

    def insert_follow_request(self, row: Row) -> None:
        doc = dict(row)
        doc["_id"] = doc.pop("id")
        self._write("follow_requests", "insert_one", doc)

    def get_follow_request(self, request_id: str) -> Row | None:
        return _named(self._find_one("follow_requests", {"_id": request_id}))

    def find_follow_request(self, from_user_id: str, to_user_id: str) -> Row | None:
        query = {"from_user_id": from_user_id, "to_user_id": to_user_id}
        return _named(self._find_one("follow_requests", query))

    def update_follow_request(self, request_id: str, status: str, updated_at: str) -> None:
        self._write(
            "follow_requests",
            "update_one",
            {"_id": request_id},
            {"$set": {"status": status, "updated_at": updated_at}},
        )

    def _follow_requests(self, field: str, user_id: str, status: str | None) -> list[Row]:
        query = {field: user_id} if status is None else {field: user_id, "status": status}
        rows = self._find("follow_requests", query, sort=[("updated_at", -1), ("_id", -1)])
        return [_named(doc) for doc in rows]

    def follow_requests_to(self, user_id: str, status: str | None = None) -> list[Row]:
        return self._follow_requests("to_user_id", user_id, status)

    def follow_requests_from(self, user_id: str, status: str | None = None) -> list[Row]:
        return self._follow_requests("from_user_id", user_id, status)

    # -- gatherings, rsvps, check-ins, saved -------------------------------

    def insert_gathering(self, row: Row) -> None:
        doc = dict(row)
        doc["_id"] = doc.pop("id")
        self._write("gatherings", "insert_one", doc)

    def get_gathering(self, event_id: str) -> Row | None:
        return _named(self._find_one("gatherings", {"_id": event_id}))

    def get_rsvp(self, event_id: str, user_id: str) -> Row | None:
        return self._find_one("rsvps", {"event_id": event_id, "user_id": user_id}, _NO_ID_SEQ)

    def put_rsvp(self, row: Row) -> None:
        key = {"event_id": row["event_id"], "user_id": row["user_id"]}
        existing = self.get_rsvp(row["event_id"], row["user_id"])
        if existing is not None and existing["status"] == row["status"]:
            self._write("rsvps", "update_one", key, {"$set": {"updated_at": row["updated_at"]}})
            return
        # A new status goes to the end of that status's list, as a new RSVP does.
        doc = {
            **key,
            "status": row["status"],
            "updated_at": row["updated_at"],
            "seq": self._next(f"rsvps:{row['event_id']}"),
        }
        self._write("rsvps", "replace_one", key, doc, upsert=True)

    def count_rsvps(self, event_id: str) -> dict[str, int]:
        groups = self._aggregate(
            "rsvps",
            [
                {"$match": {"event_id": event_id}},
                {"$group": {"_id": "$status", "n": {"$sum": 1}}},
            ],
        )
        return {group["_id"]: group["n"] for group in groups}

    def rsvp_user_ids(self, event_id: str, status: str, limit: int) -> list[str]:
        rows = self._find(
            "rsvps",
            {"event_id": event_id, "status": status},
            {"_id": 0, "user_id": 1},
            sort=[("seq", 1)],
            limit=limit,
        )
        return [doc["user_id"] for doc in rows]

    def rsvps_of(self, user_id: str) -> list[Row]:
        return self._find("rsvps", {"user_id": user_id}, _NO_ID_SEQ, sort=[("event_id", 1)])

    def insert_check_in(self, event_id: str, user_id: str, checked_in_at: str) -> bool:
        result = self._write(
            "check_ins",
            "update_one",
            {"event_id": event_id, "user_id": user_id},
            {"$setOnInsert": {"checked_in_at": checked_in_at}},
            upsert=True,
        )
        return result.upserted_id is not None

    def count_check_ins(self, event_id: str) -> int:
        return self._count("check_ins", {"event_id": event_id})

    def set_saved(self, event_id: str, user_id: str, saved: bool, saved_at: str) -> bool:
        key = {"user_id": user_id, "event_id": event_id}
        if not saved:
            return self._write("saved_events", "delete_one", key).deleted_count == 1
        if self.is_saved(event_id, user_id):
            return False
        doc = {**key, "saved_at": saved_at, "seq": self._next(f"saved_events:{user_id}")}
        self._write("saved_events", "insert_one", doc)
        return True

    def is_saved(self, event_id: str, user_id: str) -> bool:
        query = {"user_id": user_id, "event_id": event_id}
        return self._find_one("saved_events", query, {"_id": 1}) is not None

    def saved_event_ids(self, user_id: str) -> list[str]:
        rows = self._find(
            "saved_events", {"user_id": user_id}, {"_id": 0, "event_id": 1}, sort=[("seq", -1)]
        )
        return [doc["event_id"] for doc in rows]

    # -- organizations, memberships, announcements ------------------------

    def insert_organization(self, row: Row) -> None:
        doc = dict(row)
        doc["_id"] = doc.pop("id")
        self._write("organizations", "insert_one", doc)

    def get_organization(self, org_id: str) -> Row | None:
        return _named(self._find_one("organizations", {"_id": org_id}))

    def get_membership(self, org_id: str, user_id: str) -> Row | None:
        return self._find_one("memberships", {"org_id": org_id, "user_id": user_id}, _NO_ID_SEQ)

    def put_membership(self, org_id: str, user_id: str, role: str, updated_at: str) -> None:
        key = {"org_id": org_id, "user_id": user_id}
        if self.get_membership(org_id, user_id) is not None:
            change = {"$set": {"role": role, "updated_at": updated_at}}
            self._write("memberships", "update_one", key, change)
            return
        doc = {
            **key,
            "role": role,
            "updated_at": updated_at,
            "seq": self._next(f"memberships:{org_id}"),
        }
        self._write("memberships", "insert_one", doc)

    def delete_membership(self, org_id: str, user_id: str) -> bool:
        key = {"org_id": org_id, "user_id": user_id}
        return self._write("memberships", "delete_one", key).deleted_count == 1

    def list_memberships(self, org_id: str) -> list[Row]:
        return self._find("memberships", {"org_id": org_id}, _NO_ID_SEQ, sort=[("seq", 1)])

    def insert_announcement(self, row: Row) -> Row:
        full = {**row, "pos": self._next(f"announcements:{row['org_id']}")}
        doc = dict(full)
        doc["_id"] = doc.pop("id")
        self._write("announcements", "insert_one", doc)
        return full

    def list_announcements(self, org_id: str, limit: int) -> list[Row]:
        rows = self._find("announcements", {"org_id": org_id}, sort=[("pos", -1)], limit=limit)
        return [_named(doc) for doc in rows]

    # -- feed ----------------------------------------------------------------

    def insert_feed_item(self, row: Row) -> Row:
        full = {**row, "pos": self._next("feed_items")}
        doc = dict(full)
        doc["_id"] = doc.pop("id")
        self._write("feed_items", "insert_one", doc)
        return full

    def list_feed_items(self, author_ids: Iterable[str], limit: int) -> list[Row]:
        authors = unique(author_ids)
        if not authors:
            return []
        query = {"author_id": {"$in": authors}}
        rows = self._find("feed_items", query, sort=[("pos", -1)], limit=limit)
        return [_named(doc) for doc in rows]

    # -- presence -------------------------------------------------------------

    def put_presence(self, user_id: str, status: str, last_seen_at: str) -> None:
        doc = {"status": status, "last_seen_at": last_seen_at}
        self._write("presence", "replace_one", {"_id": user_id}, doc, upsert=True)

    def get_presences(self, user_ids: Iterable[str]) -> list[Row]:
        wanted = unique(user_ids)
        if not wanted:
            return []
        rows = self._find("presence", {"_id": {"$in": wanted}}, sort=[("_id", 1)])
        return [_named(doc, "user_id") for doc in rows]
