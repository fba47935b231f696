"""PostgreSQL for the store and domain suites.

The contract suites (`postgresql_store`) share one schema per test session,
migrated once and emptied after each test that used it (every table but the
migration ledger, every sequence restarted): a test starts from the same
empty, migrated schema as a fresh one, without paying for a migration. Tests
of the schema itself (`schema_url`) get a fresh schema of their own. The
tests' connections commit without waiting for the WAL flush
(`synchronous_commit=off`): what a commit makes visible, and when, is the
same; only a crash of the server could lose the last commits, which no test
needs.

The server is the one at `CUTOVER_TEST_POSTGRESQL_URL` (default: the local
server every development and CI machine runs). When it cannot be reached the
tests that need it fail and say so; they never skip.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from gateway.store.postgres import PostgresStore

__all__ = [
    "drop_schemas",
    "drop_shared_schema",
    "postgresql_store",
    "schema_url",
    "server_url",
    "shared_schema_url",
]

URL_ENV = "CUTOVER_TEST_POSTGRESQL_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

_schemas: dict[str, str] = {}  # test key (its tmp_path) -> schema name


class _Shared:
    """The session's shared schema: its name once made, and whether a test used it."""

    name: str | None = None
    used = False
    emptying: str | None = None  # the statements that empty it, once read
    conn: psycopg.Connection | None = None  # the connection that empties it


LEDGER = "schema_migrations"
#: How long emptying the shared schema waits for a lock a test left held.
EMPTY_LOCK_TIMEOUT = "5s"


def server_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def admin() -> psycopg.Connection:
    """A connection to the test server, or a failed test that says how to get one."""
    url = server_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"the PostgreSQL store tests need a server at {url} ({str(exc).strip()}); start it"
            " (pg_ctlcluster --skip-systemctl-redirect 15 main start) or point"
            f" {URL_ENV} at one",
            pytrace=False,
        )


def with_schema(url: str, schema: str) -> str:
    """`url` with every connection's search_path set to `schema` (and a findable name),
    committing without waiting for the WAL flush."""
    options = quote(f"-c search_path={schema} -c synchronous_commit=off", safe="")
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={options}&application_name=cutover-{schema}"


def schema_url(key: str | Path | None = None) -> str:
    """The URL of a fresh schema (the same one for the same key until `drop_schemas`)."""
    name = _schemas.get(str(key)) if key is not None else None
    if name is None:
        name = f"t_{secrets.token_hex(6)}"
        with admin() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        _schemas[str(key) if key is not None else name] = name
    return with_schema(server_url(), name)


def shared_schema_url() -> str:
    """The URL of the session's shared schema (made on first use; the first store
    opened on it migrates it); emptied by the next `drop_schemas`."""
    if _Shared.name is None:
        name = f"t_{secrets.token_hex(6)}_shared"
        with admin() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        _Shared.name, _Shared.emptying = name, None
    _Shared.used = True
    return with_schema(server_url(), _Shared.name)


def postgresql_store(tmp_path: Path, clock: Callable[[], dt.datetime]) -> PostgresStore:
    """A store on the shared schema, empty when the test began; the stores opened
    for one test share its data."""
    return PostgresStore(shared_schema_url(), clock=clock)


def _emptying(conn: psycopg.Connection, name: str) -> str:
    """The statements that empty schema `name`: every table but the ledger deleted
    from (cheaper than TRUNCATE on small tables), every sequence restarted (those of
    identity columns too)."""
    tables = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> %s ORDER BY 1",
        (name, LEDGER),
    ).fetchall()
    sequences = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'S' ORDER BY 1",
        (name,),
    ).fetchall()
    return "; ".join(
        [f"DELETE FROM {name}.{table}" for (table,) in tables]
        + [f"ALTER SEQUENCE {name}.{sequence} RESTART" for (sequence,) in sequences]
    )


def _cleaner() -> psycopg.Connection:
    """The connection that empties the shared schema, kept for the session."""
    conn = _Shared.conn
    if conn is None or conn.closed or conn.broken:
        conn = _Shared.conn = admin()
        conn.execute(f"SET lock_timeout = '{EMPTY_LOCK_TIMEOUT}'; SET synchronous_commit = off")
    return conn


def _empty_shared() -> None:
    """Empty the shared schema after a test; if that fails (a lock a test left
    held), drop it instead and let the next test make a new one."""
    name = _Shared.name
    _Shared.used = False
    if name is None:
        return
    conn = _cleaner()
    try:
        if _Shared.emptying is None:
            _Shared.emptying = _emptying(conn, name)
        with conn.transaction():
            conn.execute(_Shared.emptying)
    except psycopg.Error:
        drop_shared_schema()


def drop_schemas() -> None:
    """Drop every schema made since the last call, and empty the shared one if used."""
    if _Shared.used:
        _empty_shared()
    if not _schemas:
        return
    names = list(_schemas.values())
    _schemas.clear()
    with admin() as conn:
        for name in names:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def drop_shared_schema() -> None:
    """Drop the session's shared schema (at the end of the session, or when it
    could not be emptied)."""
    name, conn = _Shared.name, _Shared.conn
    _Shared.name = _Shared.emptying = _Shared.conn = None
    _Shared.used = False
    if conn is not None:
        conn.close()
    if name is not None:
        with admin() as fresh:
            fresh.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
