"""The shared store: PostgreSQL through psycopg 3, for several nodes on one database.

Blocking, like every store: Trio calls it from worker threads through
`run_store`, and the connection pool holds as many connections as the
workloads that call the store have threads (`pool_size_for_limiters`), so a
thread never waits for a connection while the database is up.

How writers agree across nodes. A mutation reads state (unread counts, who
takes part, the latest message) and writes events whose payloads carry what
it read, each with the recipient's next `seq`. Two mutations that overlapped
could each compute a count that misses the other's change while their events
still commit in some `seq` order, and a client applying its stream in order
would end on a stale badge that polling does not show. So write transactions
take turns, as SQLite's single writer does: the writers of a node queue on a
local lock, and each then takes a transaction-level advisory lock (one per
database schema, so deployments sharing a database do not wait on each
other) before its first read, and runs at READ COMMITTED so
every statement after the lock sees every change committed before it
(REPEATABLE READ would fix its snapshot at the lock statement, before the
previous holder's commit). Whatever a mutation reads is then exactly the state
its events follow, on every node. Under the lock `seq` is still taken by an
atomic `INSERT ... ON CONFLICT DO UPDATE SET head_seq = head_seq + 1
RETURNING` on the user's stream row, in the statement that inserts the event:
a rolled-back transaction gives its `seq` back with everything else, so
streams have no gaps and no duplicates.

The price is one writer at a time across the deployment, each commit
waiting for its WAL flush before the next writer starts (README, "The store",
has the figures); readers never wait.

Reads that need one view (a polling request, `snapshot()`) run in REPEATABLE
READ READ ONLY transactions and never wait for writers; single-statement
reads (stream heads, events after a cursor, tickets) run on their own.

Failures of the database (unreachable, restarted, a lock not granted within
`LOCK_TIMEOUT_MS`) raise `StoreUnavailable` (503); a broken uniqueness rule
raises `Conflict`. Idle pooled connections the server has closed (a restart)
are noticed before use and replaced, so only calls in flight at the moment of
a failure see it.
"""

from __future__ import annotations

import datetime as dt
import select
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from gateway.errors import HistoryExpired, StoreUnavailable
from gateway.events import Cursor, StoredEvent, utcnow
from gateway.store._postgres_schema import (
    Migration,
    advisory_key,
    applied_versions,
    migrate,
    single_row,
)
from gateway.store._postgres_tx import DictConnection, PostgresTx, detail, raise_mapped, unavailable
from gateway.store.base import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_COUNT,
    EVIDENCE_KEY,
    Row,
    Store,
    merge_evidence,
)
from gateway.store.runner import DEFAULT_LIMIT, LIMITS
from gateway.store.sqlite import new_epoch

__all__ = [
    "PostgresStore",
    "PostgresTx",
    "migrate_database",
    "migration_report",
    "pool_size_for_limiters",
]

# Workloads whose threads call the store (see gateway.store.runner.LIMITS).
STORE_WORKLOADS = ("store", "graphql")
POOL_TIMEOUT_S = 5.0  # how long a call waits for a connection before StoreUnavailable
CONNECT_TIMEOUT_S = 5
LOCK_TIMEOUT_MS = 30_000  # like SQLite's busy timeout: a writer waits this long for its turn
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000  # the server ends a transaction a stuck node left open
PRUNE_BATCH = 500  # streams cut per write transaction of a retention sweep

# Defaults for connection settings the URL does not give.
CONNECTION_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT_S),
    "application_name": "cutover",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


def pool_size_for_limiters() -> int:
    """Connections enough for every thread the store's workloads may run at once."""
    return sum(LIMITS.get(name, DEFAULT_LIMIT) for name in STORE_WORKLOADS)


def _conninfo(url: str) -> str:
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"store URL: {exc}") from exc
    extra = {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in given}
    return make_conninfo(url, **extra)


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _looks_dead(conn: psycopg.Connection[Any]) -> bool:
    """True when an idle connection was closed by the server (it has data or EOF waiting)."""
    if conn.closed or conn.broken:
        return True
    poller = select.poll()  # not select(): a busy node's descriptors pass FD_SETSIZE
    try:
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _open_direct(conninfo: str, url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(
            f"PostgreSQL at {describe(url)} is unreachable: {detail(exc)}"
        ) from exc


def migrate_database(url: str) -> tuple[list[Migration], list[int]]:
    """Apply the schema steps the database at `url` lacks: (applied now, all applied)."""
    with _open_direct(_conninfo(url), url) as conn:
        try:
            return migrate(conn), applied_versions(conn)
        except psycopg.OperationalError as exc:
            raise unavailable("migrating the schema", exc) from exc


def migration_report(url: str) -> str:
    """Migrate the database at `url` and say what was done (`cutover store migrate`)."""
    applied, versions = migrate_database(url)
    done = "; ".join(f"applied {step.version} ({step.name})" for step in applied)
    current = max(versions, default=0)
    return f"{describe(url)}: {done or 'up to date'}; schema version {current}"


class PostgresStore(Store):
    """The store in one PostgreSQL schema, shared by every node that names it."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        pool_size: int | None = None,
    ) -> None:
        self.url = describe(url)
        self._clock = clock
        self._local = threading.local()
        self._write_turn = threading.Lock()
        self._closed = False
        conninfo = _conninfo(url)
        with _open_direct(conninfo, url) as conn:
            try:
                migrate(conn)
                database, schema = single_row(conn, "SELECT current_database(), current_schema()")
            except psycopg.OperationalError as exc:
                raise unavailable("migrating the schema", exc) from exc
        self.schema = schema
        self._write_lock_key = advisory_key("write", f"{database}.{schema}")
        self._begin_write = (
            "BEGIN ISOLATION LEVEL READ COMMITTED;"
            f" SELECT pg_advisory_xact_lock({self._write_lock_key})"
        )
        size = pool_size or pool_size_for_limiters()
        self._pool: ConnectionPool[DictConnection] = ConnectionPool(
            conninfo,
            min_size=min(2, size),
            max_size=size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=self._configure,
            timeout=POOL_TIMEOUT_S,
            name=f"cutover-{schema}",
            open=True,
        )

    @staticmethod
    def _configure(conn: DictConnection) -> None:
        conn.execute(
            f"SET lock_timeout = {LOCK_TIMEOUT_MS};"
            f" SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        )

    # -- connections -------------------------------------------------------------

    def _checkout(self) -> DictConnection:
        if self._closed:
            raise RuntimeError("the store is closed")
        for _ in range(self._pool.max_size + 1):
            try:
                conn = self._pool.getconn()
            except psycopg.OperationalError as exc:
                if self._closed:
                    raise RuntimeError("the store is closed") from exc
                raise unavailable("connecting", exc) from exc
            if not _looks_dead(conn):
                return conn
            conn.close()  # the server went away since this connection was last used
            self._pool.putconn(conn)
        raise StoreUnavailable("the store is unavailable: every pooled connection was closed")

    def _release(self, conn: DictConnection) -> None:
        if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()
        self._pool.putconn(conn)

    def _connect(self, begin: str | None) -> DictConnection:
        """A pooled connection, `begin` run on it (once more on another if the server closed it)."""
        for attempt in range(2):
            conn = self._checkout()
            if begin is None:
                return conn
            try:
                conn.execute(begin)
                return conn
            except psycopg.OperationalError as exc:
                broken = conn.broken
                self._release(conn)
                if not broken or attempt:  # a live refusal, or a second broken connection
                    raise unavailable("beginning a transaction", exc) from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _session(self, begin: str | None, *, write: bool = False) -> Iterator[DictConnection]:
        """A pooled connection, its transaction begun with `begin` (None: autocommit).

        Writers of this process queue on a local lock first, so each node has
        at most one connection waiting for the database-wide write lock.
        """
        if getattr(self._local, "busy", False):
            raise RuntimeError("transactions do not nest")
        self._local.busy = True
        queued = False
        try:
            if write:
                if not self._write_turn.acquire(timeout=LOCK_TIMEOUT_MS / 1000):
                    raise StoreUnavailable(
                        f"the store is busy: a write waited {LOCK_TIMEOUT_MS} ms for its turn"
                    )
                queued = True
            conn = self._connect(begin)
            try:
                yield conn
            finally:
                self._release(conn)
        finally:
            if queued:
                self._write_turn.release()
            self._local.busy = False

    @contextmanager
    def _begin(self, writable: bool) -> Iterator[PostgresTx]:
        begin = self._begin_write if writable else BEGIN_READ
        with self._session(begin, write=writable) as conn:
            yield PostgresTx(conn, self._clock, writable=writable)
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) and writable:
                    raise StoreUnavailable(
                        "the store failed while committing; the change may or may not be stored"
                    ) from exc
                raise_mapped("a commit", exc)

    def _statement(self, sql: str, params: Any = ()) -> list[Row]:
        """One statement on its own (autocommit): its rows."""
        with self._session(None) as conn:
            try:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
            except psycopg.Error as exc:
                raise_mapped("a statement", exc)

    @contextmanager
    def transaction(self) -> Iterator[PostgresTx]:
        with self._begin(writable=True) as tx:
            yield tx

    def snapshot(self) -> AbstractContextManager[PostgresTx]:
        return self._begin(writable=False)

    # -- streams ---------------------------------------------------------------

    def stream_position(self, user_id: str) -> Cursor:
        rows = self._statement("SELECT epoch, head_seq FROM streams WHERE user_id = %s", (user_id,))
        if not rows:
            # Made outside the write lock: creating a stream conflicts with nothing.
            rows = self._statement(
                "WITH made AS (INSERT INTO streams (user_id, epoch, head_seq, retained_from)"
                " VALUES (%s, %s, 0, 1) ON CONFLICT (user_id) DO NOTHING"
                " RETURNING epoch, head_seq)"
                " SELECT epoch, head_seq FROM made",
                (user_id, new_epoch()),
            ) or self._statement(
                "SELECT epoch, head_seq FROM streams WHERE user_id = %s", (user_id,)
            )
        return Cursor(rows[0]["epoch"], rows[0]["head_seq"])

    def stream_heads(self, user_ids: Sequence[str]) -> dict[str, Cursor]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        rows = self._statement(
            "SELECT user_id, epoch, head_seq FROM streams WHERE user_id = ANY(%s)", (ids,)
        )
        return {row["user_id"]: Cursor(row["epoch"], row["head_seq"]) for row in rows}

    def events_after(self, user_id: str, after_seq: int, limit: int = 1000) -> list[StoredEvent]:
        # One statement reads the stream and its events from the same snapshot.
        rows = self._statement(
            "SELECT s.epoch, s.head_seq, s.retained_from,"
            " e.seq, e.id, e.type, e.payload, e.created_at"
            " FROM streams s LEFT JOIN LATERAL ("
            "  SELECT seq, id, type, payload, created_at FROM stream_events"
            "  WHERE user_id = s.user_id AND epoch = s.epoch AND seq > %(after)s"
            "  ORDER BY seq LIMIT %(limit)s) e ON true"
            " WHERE s.user_id = %(user_id)s ORDER BY e.seq",
            {"user_id": user_id, "after": after_seq, "limit": max(limit, 0)},
        )
        if not rows or after_seq >= rows[0]["head_seq"]:
            return []
        retained_from = rows[0]["retained_from"]
        if after_seq + 1 < retained_from:
            raise HistoryExpired(
                f"events after seq {after_seq} are no longer retained "
                f"(the oldest kept is {retained_from})"
            )
        return [
            StoredEvent(
                user_id=user_id,
                epoch=row["epoch"],
                seq=row["seq"],
                id=row["id"],
                type=row["type"],
                payload=row["payload"],
                created_at=row["created_at"],
            )
            for row in rows
            if row["id"] is not None
        ]

    def reset_stream(self, user_id: str) -> Cursor:
        epoch = new_epoch()
        with self.transaction() as tx:
            tx._w(
                "INSERT INTO streams (user_id, epoch, head_seq, retained_from)"
                " VALUES (%s, %s, 0, 1) ON CONFLICT (user_id) DO UPDATE"
                " SET epoch = EXCLUDED.epoch, head_seq = 0, retained_from = 1",
                (user_id, epoch),
            )
            tx._w("DELETE FROM stream_events WHERE user_id = %s", (user_id,))
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
        candidates = [
            row["user_id"]
            for row in self._statement(
                "SELECT DISTINCT user_id FROM stream_events WHERE created_ts < %s"
                " UNION SELECT user_id FROM streams WHERE head_seq - retained_from >= %s",
                (cutoff, max_count),
            )
        ]
        removed = 0
        # Short write transactions, so a large sweep never holds writers up for long.
        # Each cuts a stream at its newest too-old event or below its newest
        # max_count events, whichever is later, so what remains stays contiguous.
        for start in range(0, len(candidates), PRUNE_BATCH):
            with self.transaction() as tx:
                removed += tx._w(
                    "WITH aged AS ("
                    "  SELECT e.user_id, MAX(e.seq) AS upto FROM stream_events e"
                    "  JOIN streams s ON s.user_id = e.user_id AND s.epoch = e.epoch"
                    "  WHERE e.user_id = ANY(%(users)s) AND e.created_ts < %(cutoff)s"
                    "  GROUP BY e.user_id),"
                    " counted AS ("
                    "  SELECT user_id, head_seq - %(max_count)s AS upto FROM streams"
                    "  WHERE user_id = ANY(%(users)s)"
                    "  AND head_seq - retained_from >= %(max_count)s),"
                    " cut AS ("
                    "  SELECT user_id, MAX(upto) AS upto"
                    "  FROM (SELECT * FROM aged UNION ALL SELECT * FROM counted) c"
                    "  GROUP BY user_id),"
                    " moved AS ("
                    "  UPDATE streams s SET retained_from = cut.upto + 1 FROM cut"
                    "  WHERE s.user_id = cut.user_id AND cut.upto >= s.retained_from"
                    "  RETURNING s.user_id, s.epoch, cut.upto)"
                    " DELETE FROM stream_events e USING moved"
                    " WHERE e.user_id = moved.user_id AND e.epoch = moved.epoch"
                    " AND e.seq <= moved.upto",
                    {
                        "users": candidates[start : start + PRUNE_BATCH],
                        "cutoff": cutoff,
                        "max_count": max_count,
                    },
                ).rowcount
        self._statement("DELETE FROM idempotency WHERE created_ts < %s", (cutoff,))
        self._statement("DELETE FROM tickets WHERE expires_at < %s", (now.timestamp(),))
        return removed

    # -- tickets ---------------------------------------------------------------

    def put_ticket(
        self, ticket_hash: str, user_id: str, expires_at: float, claims_json: str
    ) -> None:
        self._statement(
            "INSERT INTO tickets (ticket_hash, user_id, expires_at, claims_json)"
            " VALUES (%s, %s, %s, %s)",
            (ticket_hash, user_id, expires_at, claims_json),
        )

    def peek_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        rows = self._statement(
            "SELECT user_id, claims_json FROM tickets WHERE ticket_hash = %s AND expires_at > %s",
            (ticket_hash, now),
        )
        return (rows[0]["user_id"], rows[0]["claims_json"]) if rows else None

    def take_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        # One DELETE ... RETURNING: of concurrent takes on any nodes, one gets the row.
        rows = self._statement(
            "DELETE FROM tickets WHERE ticket_hash = %s RETURNING user_id, expires_at, claims_json",
            (ticket_hash,),
        )
        if not rows or rows[0]["expires_at"] <= now:
            return None
        return rows[0]["user_id"], rows[0]["claims_json"]

    # -- parity evidence -----------------------------------------------------------

    def add_evidence(self, rows: Sequence[Row]) -> None:
        # Row locks, not the writers' turn: evidence never touches what mutations do.
        # Each row is made if missing, then locked, merged and written back.
        where = "hour = %s AND domain = %s AND source = %s AND stage = %s"
        with self._session("BEGIN ISOLATION LEVEL READ COMMITTED") as conn:
            try:
                for row in rows:
                    key = tuple(row[k] for k in EVIDENCE_KEY)
                    conn.execute(
                        "INSERT INTO parity_evidence"
                        " (hour, domain, source, stage, counts, samples, first_at, last_at)"
                        " VALUES (%s, %s, %s, %s, '{}', '[]', %s, %s)"
                        " ON CONFLICT DO NOTHING",
                        (*key, row["first_at"], row["last_at"]),
                    )
                    found = conn.execute(
                        f"SELECT * FROM parity_evidence WHERE {where} FOR UPDATE", key
                    ).fetchone()
                    assert found is not None  # inserted above when missing, now locked
                    merged = merge_evidence(dict(found), row)
                    conn.execute(
                        "UPDATE parity_evidence SET counts = %s, samples = %s,"
                        f" first_at = %s, last_at = %s WHERE {where}",
                        (
                            Json(merged["counts"]),
                            Json(merged["samples"]),
                            merged["first_at"],
                            merged["last_at"],
                            *key,
                        ),
                    )
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                raise_mapped("adding parity evidence", exc)

    def evidence_since(self, since: str) -> list[Row]:
        rows = self._statement(
            "SELECT * FROM parity_evidence WHERE hour >= %s ORDER BY hour, domain, source, stage",
            (since,),
        )
        return [dict(row) for row in rows]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
