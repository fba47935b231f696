"""Durable state and the per-user event streams (blocking; see `run_store`)."""

from __future__ import annotations

from gateway.store.base import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT, Append, Row, Store, Tx
from gateway.store.runner import limiter_for, run_store
from gateway.store.sqlite import SqliteStore, SqliteTx

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_COUNT",
    "Append",
    "Row",
    "SqliteStore",
    "SqliteTx",
    "Store",
    "Tx",
    "limiter_for",
    "migrate_store",
    "open_store",
    "run_store",
]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """Open the store a URL names: `sqlite:///relative.db`, `sqlite:////absolute.db`,
    or `postgresql://user@host/db` (the schema migrations it lacks are applied first).
    """
    if url.startswith(POSTGRES_PREFIXES):
        from gateway.store.postgres import PostgresStore  # psycopg only when it is used

        return PostgresStore(url)
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if not path or path == ":memory:":
            raise ValueError(f"store URL {url!r}: expected sqlite:///PATH to a file")
        return SqliteStore(path)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from gateway.store.mongo import MongoStore  # pymongo only when it is used

        return MongoStore.from_url(url)
    raise ValueError(
        f"unsupported store URL {url!r}: expected sqlite:///PATH, postgresql://USER@HOST/DB"
        " or mongodb://HOSTS/DB"
    )


def migrate_store(url: str) -> str:
    """Bring a store's schema up to date (`cutover store migrate`); says what was done."""
    if url.startswith(POSTGRES_PREFIXES):
        from gateway.store.postgres import migration_report

        return migration_report(url)
    open_store(url).close()  # SQLite and MongoDB make their tables or indexes on opening
    return "the store made its tables or indexes on opening; nothing else to apply"
