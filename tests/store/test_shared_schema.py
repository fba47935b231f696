"""The PostgreSQL schema the contract suites share: each test finds it as a fresh
one would be, migrated and empty, its sequences at their start."""

from __future__ import annotations

from gateway.domain import ADMIN_SCOPE, Domain, Viewer
from gateway.store._postgres_schema import MIGRATIONS
from tests.store._postgres import admin, drop_schemas, postgresql_store
from tests.store.conftest import ManualClock


def _contents(schema: str) -> tuple[dict[str, int], dict[str, bool]]:
    """Rows per table, and whether each sequence has handed out a value."""
    with admin() as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        rows = {
            table: conn.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0]
            for (table,) in tables
        }
        names = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'S'",
            (schema,),
        ).fetchall()
        used = {
            name: conn.execute(f"SELECT is_called FROM {schema}.{name}").fetchone()[0]
            for (name,) in names
        }
    return rows, used


def test_each_test_finds_the_shared_schema_migrated_and_empty(tmp_path):
    store = postgresql_store(tmp_path, ManualClock())
    domain = Domain(store)
    domain.create_notification(Viewer("ops", frozenset({ADMIN_SCOPE})), "u", "k", "hello")
    with store.transaction() as tx:
        tx.append_event("u", "t.x.y", {})
    schema = store.schema
    rows, used = _contents(schema)
    assert rows["notifications"] == 1 and rows["stream_events"] >= 1 and any(used.values())
    store.close()

    drop_schemas()  # what the suites' fixtures do after each test

    rows, used = _contents(schema)
    assert rows.pop("schema_migrations") == len(MIGRATIONS)
    assert rows and set(rows.values()) == {0}
    assert used and not any(used.values())
    again = postgresql_store(tmp_path, ManualClock())
    try:
        assert again.schema == schema
        assert again.stream_position("u").seq == 0
    finally:
        again.close()
