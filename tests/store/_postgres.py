"""PostgreSQL for the store and domain suites: each test gets a schema of its own.

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

__all__ = ["drop_schemas", "postgresql_store", "schema_url", "server_url"]

URL_ENV = "CUTOVER_TEST_POSTGRESQL_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

_schemas: dict[str, str] = {}  # test key (its tmp_path) -> schema name


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
    """`url` with every connection's search_path set to `schema` (and a findable name)."""
    options = quote(f"-c search_path={schema}", safe="")
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


def postgresql_store(tmp_path: Path, clock: Callable[[], dt.datetime]) -> PostgresStore:
    """A store on the test's own schema; stores opened for one test share it."""
    return PostgresStore(schema_url(tmp_path), clock=clock)


def drop_schemas() -> None:
    """Drop every schema made since the last call."""
    if not _schemas:
        return
    names = list(_schemas.values())
    _schemas.clear()
    with admin() as conn:
        for name in names:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
