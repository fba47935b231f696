"""The MongoDB store (pymongo), for nodes sharing one replica set.

Transactions. `store.transaction()` is one multi-document transaction (read
concern "snapshot", write concern "majority"): the state change and the
durable events it appends commit together or not at all (the outbox).
`store.snapshot()` is a read-only transaction at read concern "snapshot".
Transactions need a replica set or a sharded cluster; the store checks when
it opens and refuses a standalone server.

Streams. A user's stream is one `streams` document (`_id` the user id):
`append_event` takes the next `seq` with `$inc` on it inside the
transaction, so an aborted transaction gives its `seq` back and two
committed events never share one.

Write conflicts. The server does not make a transaction wait for another
that wrote the same document first: it aborts it (TransientTransactionError).
The body of a `with store.transaction()` block cannot be re-run from here,
so writers of one process take turns on a lock (one per database) before
they begin, as the SQLite store's writers do, and never conflict with each
other. A conflict with another process ends the block with `StoreUnavailable`
(503, worth retrying); `run_transaction(fn)` re-runs a repeatable `fn` after
such a conflict, with jittered exponential backoff. A commit whose outcome is
unknown (a failover) is retried as a commit first.

Order. `pos` (and the order of RSVPs, saved events and memberships) comes
from a counter per scope a list is read in: a user's notifications, a
conversation's messages, an organization's announcements and memberships, an
event's RSVPs, a user's saved events; feed items, listed across authors,
share one counter.

Connection records (`put_connection`) carry an `expire_on` date under a TTL
index, so the server removes a dead node's records by itself.

The one seam for a test double is the transaction wrapper: with
`transactions=False` (mongomock, which has no sessions) every operation runs
without a session under one process-wide lock. That keeps the contract
within one process except for rollback: an exception leaves the writes made
before it in place.

Every driver call goes through `MongoTx` (in `_mongo_tx`), where driver
errors become gateway errors (`map_driver_error`): `Conflict` for a broken
uniqueness rule, `StoreUnavailable` (503) for anything else, with its own
message for an unreachable server or a timeout, a write conflict, and a
commit whose outcome is unknown.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import pymongo
from pymongo.errors import CollectionInvalid, ConfigurationError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from gateway.errors import HistoryExpired, StoreUnavailable
from gateway.events import Cursor, StoredEvent, utcnow
from gateway.store._mongo_schema import INDEXES
from gateway.store._mongo_tx import (
    UNKNOWN_COMMIT,
    MongoTx,
    epoch_seconds,
    fresh_stream,
    is_transient,
    map_driver_error,
    mapping_driver_errors,
    new_epoch,
    to_date,
    unique,
)
from gateway.store.base import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_COUNT,
    EVIDENCE_KEY,
    EVIDENCE_SAMPLES,
    Row,
    Store,
)

__all__ = ["MongoStore", "MongoTx", "is_transient", "map_driver_error"]

T = TypeVar("T")

DEFAULT_DATABASE = "cutover"
SERVER_SELECTION_TIMEOUT_MS = 5_000  # unless the URL sets serverSelectionTimeoutMS
HEADS_CHUNK = 1_000  # users per query of a node-wide tail
FIRST_BACKOFF_S = 0.005
MAX_BACKOFF_S = 0.5
RETRY_BUDGET_S = 10.0  # how long run_transaction (and an unknown commit) keep retrying
NAMESPACE_EXISTS = 48  # server error code: a collection created by another node meanwhile

_sleep = time.sleep  # the backoff's sleep (tests replace it)

# A test double's operations, all of them, take turns on this lock.
_LOCAL_LOCK = threading.RLock()
# Write transactions of one process take turns, per database, on these.
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(database: str) -> threading.RLock:
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(database, threading.RLock())


class MongoStore(Store):
    """The store in one MongoDB database; the store owns (and closes) its client.

    `transactions=False` is for a test double without sessions (mongomock):
    see the module's docstring for what it keeps and what it cannot.
    """

    def __init__(
        self,
        client: Any,
        database: str = DEFAULT_DATABASE,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        transactions: bool = True,
    ) -> None:
        self._client = client
        self._db = client[database]
        self._clock = clock
        self._transactions = transactions
        self._local_lock = None if transactions else _LOCAL_LOCK
        self._writers = _writer_lock(database)
        self._in_tx = threading.local()
        self._closed = False
        if transactions:
            self._require_transactions()
        self._create_collections()

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], dt.datetime] = utcnow) -> MongoStore:
        """Open `mongodb://HOSTS/DATABASE?replicaSet=NAME` or `mongodb+srv://HOST/DATABASE`.

        DATABASE defaults to `cutover`; a URL without serverSelectionTimeoutMS
        gets 5 s, so an unreachable server is reported (`StoreUnavailable`)
        instead of waited for.
        """
        options: dict[str, Any] = {"appname": "cutover"}
        if "serverselectiontimeoutms" not in url.lower():
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        try:
            client = pymongo.MongoClient(url, **options)
        except ConfigurationError as exc:  # InvalidURI too
            raise ValueError(f"MongoDB store URL: {exc}") from exc
        try:
            database = client.get_default_database(DEFAULT_DATABASE).name
            return cls(client, database, clock=clock)
        except BaseException:
            client.close()
            raise

    def _require_transactions(self) -> None:
        with mapping_driver_errors():
            hello = self._client.admin.command("hello")
        if "setName" not in hello and hello.get("msg") != "isdbgrid":
            raise ValueError(
                "the MongoDB store needs a replica set or a sharded cluster (its transactions "
                "need one); this server is standalone: start mongod with --replSet NAME and "
                "run rs.initiate() once"
            )

    def _create_collections(self) -> None:
        # Every collection exists before any transaction writes to it (a
        # transaction may not create one at read concern "snapshot").
        with mapping_driver_errors():
            existing = set(self._db.list_collection_names())
            for name, indexes in INDEXES.items():
                if name not in existing:
                    try:
                        self._db.create_collection(name)
                    except CollectionInvalid:
                        pass  # created by another node meanwhile
                    except OperationFailure as exc:
                        if exc.code != NAMESPACE_EXISTS:
                            raise
                # One create_index per index: mongomock's create_indexes drops
                # partialFilterExpression (a server builds the same index either way).
                for index in indexes:
                    options = {k: v for k, v in index.document.items() if k != "key"}
                    self._db[name].create_index(list(index.document["key"].items()), **options)

    # -- the transaction wrapper (the seam) -----------------------------------

    @contextmanager
    def _begin(self, *, writable: bool) -> Iterator[MongoTx]:
        if self._closed:
            raise RuntimeError("the store is closed")
        if getattr(self._in_tx, "active", False):
            raise RuntimeError("transactions do not nest")
        self._in_tx.active = True
        try:
            with mapping_driver_errors():
                if self._local_lock is not None:
                    with self._local_lock:
                        yield MongoTx(self._db, None, self._clock, writable=writable)
                    return
                with (
                    self._writers if writable else nullcontext(),
                    self._client.start_session(causal_consistency=False) as session,
                ):
                    session.start_transaction(
                        read_concern=ReadConcern("snapshot"),
                        write_concern=WriteConcern("majority"),
                        read_preference=ReadPreference.PRIMARY,
                    )
                    try:
                        yield MongoTx(self._db, session, self._clock, writable=writable)
                        if writable:
                            _commit(session)
                    finally:
                        _abort(session)  # a snapshot, a failure (after a commit: nothing)
        finally:
            self._in_tx.active = False

    @contextmanager
    def _single(self, *, writer: bool = False) -> Iterator[MongoTx]:
        """Operations each atomic on its own, outside any transaction.

        `writer`: in the writers' turn, for deletes a transaction may also touch.
        """
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._local_lock is not None:
            turn: Any = self._local_lock
        else:
            turn = self._writers if writer else nullcontext()
        with mapping_driver_errors(), turn:
            yield MongoTx(self._db, None, self._clock, writable=True)

    def transaction(self) -> AbstractContextManager[MongoTx]:
        return self._begin(writable=True)

    def snapshot(self) -> AbstractContextManager[MongoTx]:
        return self._begin(writable=False)

    def run_transaction(self, fn: Callable[[MongoTx], T], *, budget_s: float = RETRY_BUDGET_S) -> T:
        """`fn(tx)` in a write transaction, run again from the start after a write conflict.

        `fn` must be repeatable: only its last run commits. The waits between
        runs grow exponentially (jittered) until `budget_s` is spent; then the
        conflict is raised as `StoreUnavailable`.
        """
        deadline = time.monotonic() + budget_s
        delay = FIRST_BACKOFF_S
        while True:
            try:
                with self.transaction() as tx:
                    return fn(tx)
            except StoreUnavailable as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
            _sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, MAX_BACKOFF_S)

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
        ids = unique(user_ids)
        with self.snapshot() as tx:
            for start in range(0, len(ids), HEADS_CHUNK):
                chunk = ids[start : start + HEADS_CHUNK]
                for doc in tx._find(
                    "streams", {"_id": {"$in": chunk}}, {"epoch": 1, "head_seq": 1}
                ):
                    heads[doc["_id"]] = Cursor(doc["epoch"], doc["head_seq"])
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
            docs = tx._find(
                "stream_events",
                {"user_id": user_id, "epoch": stream["epoch"], "seq": {"$gt": after_seq}},
                sort=[("seq", 1)],
                limit=limit,
            )
        return [
            StoredEvent(
                user_id=doc["user_id"],
                epoch=doc["epoch"],
                seq=doc["seq"],
                id=doc["id"],
                type=doc["type"],
                payload=json.loads(doc["payload"]),
                created_at=doc["created_at"],
            )
            for doc in docs
        ]

    def reset_stream(self, user_id: str) -> Cursor:
        epoch = new_epoch()
        with self.transaction() as tx:
            tx._write("stream_events", "delete_many", {"user_id": user_id})
            tx._write("streams", "replace_one", {"_id": user_id}, fresh_stream(epoch), upsert=True)
        return Cursor(epoch, 0)

    def prune(
        self,
        now: dt.datetime,
        max_age: dt.timedelta = DEFAULT_MAX_AGE,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> int:
        """Cut each stream in a short transaction of its own, so writers never wait long."""
        if max_count < 0:
            raise ValueError("max_count must not be negative")
        cutoff = (now - max_age).timestamp()
        with self.snapshot() as tx:
            # Each stream is cut at its newest too-old event, so what remains stays contiguous.
            aged = {
                (group["_id"]["user_id"], group["_id"]["epoch"]): group["seq"]
                for group in tx._aggregate(
                    "stream_events",
                    [
                        {"$match": {"created_ts": {"$lt": cutoff}}},
                        {
                            "$group": {
                                "_id": {"user_id": "$user_id", "epoch": "$epoch"},
                                "seq": {"$max": "$seq"},
                            }
                        },
                    ],
                )
            }
            too_long = tx._find("streams", {"retained": {"$gt": max_count}}, {"_id": 1})
        removed = 0
        for user_id in unique([user for user, _ in aged] + [doc["_id"] for doc in too_long]):
            with self.transaction() as tx:
                removed += tx._cut_stream(user_id, aged, max_count)
        with self._single(writer=True) as tx:
            tx._write("idempotency", "delete_many", {"created_ts": {"$lt": cutoff}})
            tx._write("tickets", "delete_many", {"expires_at": {"$lt": now.timestamp()}})
        return removed

    # -- tickets ---------------------------------------------------------------

    def put_ticket(
        self, ticket_hash: str, user_id: str, expires_at: float, claims_json: str
    ) -> None:
        doc = {
            "_id": ticket_hash,
            "user_id": user_id,
            "expires_at": expires_at,
            "claims_json": claims_json,
        }
        with self._single() as tx:
            tx._write("tickets", "insert_one", doc)

    def peek_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        with self._single() as tx:
            doc = tx._find_one("tickets", {"_id": ticket_hash, "expires_at": {"$gt": now}})
        return None if doc is None else (doc["user_id"], doc["claims_json"])

    def take_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        with self._single() as tx:
            doc = tx._write("tickets", "find_one_and_delete", {"_id": ticket_hash})
        if doc is None or doc["expires_at"] <= now:
            return None
        return doc["user_id"], doc["claims_json"]

    # -- parity evidence -----------------------------------------------------------

    def add_evidence(self, rows: Sequence[Row]) -> None:
        # One update per row, atomic on its own: counts are $inc'ed, never rewritten.
        with self._single() as tx:
            for row in rows:
                key = {k: row[k] for k in EVIDENCE_KEY}
                update: dict[str, Any] = {
                    "$setOnInsert": key,
                    "$min": {"first_at": row["first_at"]},
                    "$max": {"last_at": row["last_at"]},
                    "$push": {
                        "samples": {
                            "$each": list(row.get("samples", ())),
                            "$slice": -EVIDENCE_SAMPLES,
                        }
                    },
                }
                if row["counts"]:
                    update["$inc"] = {
                        f"counts.{name}": int(value) for name, value in row["counts"].items()
                    }
                tx._write(
                    "parity_evidence",
                    "update_one",
                    {"_id": "|".join(str(row[k]) for k in EVIDENCE_KEY)},
                    update,
                    upsert=True,
                )

    def evidence_since(self, since: str) -> list[Row]:
        with self._single() as tx:
            docs = tx._find("parity_evidence", {"hour": {"$gte": since}})
        rows = [
            {
                **{k: doc[k] for k in EVIDENCE_KEY},
                "counts": dict(doc.get("counts") or {}),
                "samples": list(doc.get("samples") or []),
                "first_at": doc["first_at"],
                "last_at": doc["last_at"],
            }
            for doc in docs
        ]
        return sorted(rows, key=lambda r: tuple(r[k] for k in EVIDENCE_KEY))

    # -- connection records (not part of the Store interface) --------------------

    def put_connection(
        self, connection_id: str, user_id: str, node_id: str, expires_at: float
    ) -> None:
        """Record (or refresh) a live connection; the server removes it once `expires_at` passes."""
        doc = {"user_id": user_id, "node_id": node_id, "expire_on": to_date(expires_at)}
        with self._single() as tx:
            tx._write("connections", "replace_one", {"_id": connection_id}, doc, upsert=True)

    def drop_connection(self, connection_id: str) -> bool:
        with self._single() as tx:
            return tx._write("connections", "delete_one", {"_id": connection_id}).deleted_count == 1

    def connections_of(self, user_id: str, now: float) -> list[Row]:
        """The user's unexpired connection records (the TTL monitor runs once a minute)."""
        with self._single() as tx:
            docs = tx._find(
                "connections",
                {"user_id": user_id, "expire_on": {"$gt": to_date(now)}},
                sort=[("expire_on", 1)],
            )
        return [
            {
                "id": doc["_id"],
                "user_id": doc["user_id"],
                "node_id": doc["node_id"],
                "expires_at": epoch_seconds(doc["expire_on"]),
            }
            for doc in docs
        ]

    def close(self) -> None:
        self._closed = True
        self._client.close()


def _abort(session: Any) -> None:
    if session.in_transaction:
        try:
            session.abort_transaction()
        except PyMongoError:
            pass  # the server ends an abandoned transaction by itself


def _commit(session: Any) -> None:
    """Commit, retrying while the outcome is unknown (a retried commit is applied once)."""
    deadline = time.monotonic() + RETRY_BUDGET_S
    delay = FIRST_BACKOFF_S
    while True:
        try:
            session.commit_transaction()
            return
        except PyMongoError as exc:
            if not exc.has_error_label(UNKNOWN_COMMIT) or time.monotonic() + delay > deadline:
                raise
        _sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, MAX_BACKOFF_S)
