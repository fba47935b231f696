"""MongoDB for the store suite: a real server when `CUTOVER_TEST_MONGODB_URI` is set, mongomock otherwise.

With a URI (a replica set: the store refuses a standalone server) each test
gets a database of its own, dropped after it, and transactions are on.
Without one, each test gets a fresh mongomock client shared by the stores it
opens, and the store runs with `transactions=False`: no sessions, every
operation under one process-wide lock.

`MONGOMOCK_LIMITS` names the contract tests mongomock cannot pass, with the
limitation each meets; the suite's conftest marks them as expected failures
(strict, so a test that starts passing is noticed) on mongomock only.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import mongomock
import pymongo

from gateway.store.mongo import MongoStore

__all__ = ["MONGOMOCK_LIMITS", "URI_ENV", "drop_databases", "mongodb_store", "server_uri"]

URI_ENV = "CUTOVER_TEST_MONGODB_URI"

NO_ROLLBACK = (
    "mongomock has no sessions or transactions, so the store runs without them: "
    "writes made before an exception are not rolled back"
)

MONGOMOCK_LIMITS: dict[str, str] = {
    "test_an_exception_rolls_back_state_and_events": NO_ROLLBACK,
    "test_idempotency_record_rolls_back_with_its_transaction": NO_ROLLBACK,
    "test_an_exception_after_a_batch_rolls_it_back": NO_ROLLBACK,
    "test_a_batch_failing_midway_rolls_back_the_whole_transaction": NO_ROLLBACK,
}

_databases: dict[str, str] = {}  # test key (its tmp_path) -> database on the real server
_mocks: dict[str, mongomock.MongoClient] = {}  # test key -> its mongomock "server"


def server_uri() -> str | None:
    return os.environ.get(URI_ENV) or None


def limits() -> dict[str, str]:
    """The contract tests expected to fail where the suite runs now."""
    return {} if server_uri() else MONGOMOCK_LIMITS


def mongodb_store(tmp_path: Path, clock: Callable[[], dt.datetime]) -> MongoStore:
    """A store on the test's own database; stores opened for one test share it."""
    key = str(tmp_path)
    uri = server_uri()
    if uri is None:
        client = _mocks.setdefault(key, mongomock.MongoClient())
        return MongoStore(client, "cutover", clock=clock, transactions=False)
    database = _databases.setdefault(key, f"cutover_test_{secrets.token_hex(6)}")
    client = pymongo.MongoClient(uri)
    try:
        return MongoStore(client, database, clock=clock)
    except BaseException:
        client.close()
        raise


def drop_databases() -> None:
    """Forget every mongomock client and drop every real database made since the last call."""
    _mocks.clear()
    if not _databases:
        return
    names = list(_databases.values())
    _databases.clear()
    uri = server_uri()
    assert uri is not None
    with pymongo.MongoClient(uri) as client:
        for name in names:
            client.drop_database(name)
