"""Durable state and the per-user event streams (blocking; see `run_store`)."""

from __future__ import annotations

from gateway.store.base import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT, Row, Store, Tx
from gateway.store.runner import limiter_for, run_store
from gateway.store.sqlite import SqliteStore, SqliteTx

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_COUNT",
    "Row",
    "SqliteStore",
    "SqliteTx",
    "Store",
    "Tx",
    "limiter_for",
    "open_store",
    "run_store",
]

SQLITE_PREFIX = "sqlite:///"


def open_store(url: str) -> Store:
    """Open the store a URL names: `sqlite:///relative.db` or `sqlite:////absolute.db`."""
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if not path or path == ":memory:":
            raise ValueError(f"store URL {url!r}: expected sqlite:///PATH to a file")
        return SqliteStore(path)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from gateway.store.mongo import MongoStore  # pymongo only when it is used

        return MongoStore.from_url(url)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///PATH")
