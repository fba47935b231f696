"""The PostgreSQL schema as numbered migration steps, and the code that applies them.

Each step runs once, in its own transaction, and is recorded in
`schema_migrations` (version, name, applied_at) in the same transaction.
Steps are only ever appended: a change to the schema is a new step, never an
edit of an old one. Nodes apply what is missing when they open the store, and
`cutover store migrate --store URL` does it ahead of a deploy; a
transaction-level advisory lock makes concurrent migrators (several nodes
starting at once) take turns, each re-reading what is applied once it holds
the lock.

Every text column sorts by byte (`COLLATE "C"`), as SQLite's default does,
so ids and contract time strings order the same on both stores whatever the
database's locale.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "advisory_key",
    "applied_versions",
    "migrate",
]

log = logging.getLogger(__name__)


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


_T = 'TEXT COLLATE "C"'

_V1 = f"""
CREATE TABLE streams (
    user_id {_T} PRIMARY KEY,
    epoch {_T} NOT NULL,
    head_seq BIGINT NOT NULL,
    retained_from BIGINT NOT NULL
);
CREATE INDEX streams_backlog ON streams ((head_seq - retained_from));

CREATE TABLE stream_events (
    user_id {_T} NOT NULL,
    epoch {_T} NOT NULL,
    seq BIGINT NOT NULL,
    id {_T} NOT NULL,
    type {_T} NOT NULL,
    payload JSON NOT NULL,
    created_at {_T} NOT NULL,
    created_ts DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, epoch, seq)
);
CREATE INDEX stream_events_age ON stream_events (created_ts);

CREATE TABLE tickets (
    ticket_hash {_T} PRIMARY KEY,
    user_id {_T} NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    claims_json {_T} NOT NULL
);
CREATE INDEX tickets_expiry ON tickets (expires_at);

CREATE TABLE idempotency (
    scope {_T} NOT NULL,
    key {_T} NOT NULL,
    result_json {_T} NOT NULL,
    created_ts DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_age ON idempotency (created_ts);

CREATE TABLE users (
    id {_T} PRIMARY KEY,
    name {_T}
);

CREATE TABLE notifications (
    pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id {_T} NOT NULL UNIQUE,
    user_id {_T} NOT NULL,
    kind {_T} NOT NULL,
    text {_T} NOT NULL,
    data {_T},
    created_at {_T} NOT NULL,
    read_at {_T}
);
CREATE INDEX notifications_by_user ON notifications (user_id, pos);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

CREATE TABLE conversations (
    id {_T} PRIMARY KEY,
    created_at {_T} NOT NULL,
    updated_at {_T} NOT NULL,
    last_message_id {_T}
);

CREATE TABLE participants (
    conversation_id {_T} NOT NULL,
    user_id {_T} NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX participants_by_user ON participants (user_id, conversation_id);

CREATE TABLE messages (
    pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id {_T} NOT NULL UNIQUE,
    conversation_id {_T} NOT NULL,
    sender_id {_T} NOT NULL,
    body {_T} NOT NULL,
    created_at {_T} NOT NULL,
    client_message_id {_T}
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, pos);
CREATE UNIQUE INDEX messages_by_client_id
    ON messages (sender_id, client_message_id) WHERE client_message_id IS NOT NULL;

CREATE TABLE read_states (
    conversation_id {_T} NOT NULL,
    user_id {_T} NOT NULL,
    message_id {_T} NOT NULL,
    message_pos BIGINT NOT NULL,
    read_at {_T} NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE TABLE deliveries (
    message_id {_T} NOT NULL,
    user_id {_T} NOT NULL,
    delivered_at {_T} NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

CREATE TABLE follow_requests (
    id {_T} PRIMARY KEY,
    from_user_id {_T} NOT NULL,
    to_user_id {_T} NOT NULL,
    status {_T} NOT NULL,
    created_at {_T} NOT NULL,
    updated_at {_T} NOT NULL
);
CREATE UNIQUE INDEX follow_requests_pair ON follow_requests (from_user_id, to_user_id);
CREATE INDEX follow_requests_to ON follow_requests (to_user_id, status, updated_at);
CREATE INDEX follow_requests_from ON follow_requests (from_user_id, status, updated_at);

CREATE TABLE gatherings (
    id {_T} PRIMARY KEY,
    title {_T} NOT NULL,
    host_id {_T} NOT NULL,
    starts_at {_T} NOT NULL,
    created_at {_T} NOT NULL
);

CREATE SEQUENCE rsvps_order;
CREATE TABLE rsvps (
    event_id {_T} NOT NULL,
    user_id {_T} NOT NULL,
    status {_T} NOT NULL,
    updated_at {_T} NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX rsvps_by_status ON rsvps (event_id, status, seq);
CREATE INDEX rsvps_by_user ON rsvps (user_id);

CREATE TABLE check_ins (
    event_id {_T} NOT NULL,
    user_id {_T} NOT NULL,
    checked_in_at {_T} NOT NULL,
    PRIMARY KEY (event_id, user_id)
);

CREATE SEQUENCE saved_events_order;
CREATE TABLE saved_events (
    user_id {_T} NOT NULL,
    event_id {_T} NOT NULL,
    saved_at {_T} NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX saved_events_by_user ON saved_events (user_id, seq);

CREATE TABLE organizations (
    id {_T} PRIMARY KEY,
    name {_T} NOT NULL,
    created_at {_T} NOT NULL
);

CREATE SEQUENCE memberships_order;
CREATE TABLE memberships (
    org_id {_T} NOT NULL,
    user_id {_T} NOT NULL,
    role {_T} NOT NULL,
    updated_at {_T} NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_org ON memberships (org_id, seq);

CREATE TABLE announcements (
    pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id {_T} NOT NULL UNIQUE,
    org_id {_T} NOT NULL,
    author_id {_T} NOT NULL,
    title {_T} NOT NULL,
    body {_T} NOT NULL,
    created_at {_T} NOT NULL
);
CREATE INDEX announcements_by_org ON announcements (org_id, pos);

CREATE TABLE feed_items (
    pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id {_T} NOT NULL UNIQUE,
    author_id {_T} NOT NULL,
    text {_T} NOT NULL,
    created_at {_T} NOT NULL
);
CREATE INDEX feed_items_by_author ON feed_items (author_id, pos);

CREATE TABLE presence (
    user_id {_T} PRIMARY KEY,
    status {_T} NOT NULL,
    last_seen_at {_T} NOT NULL
);
"""

# Parity evidence per hour, domain, source and stage (`Store.add_evidence`).
_V2 = f"""
CREATE TABLE parity_evidence (
    hour {_T} NOT NULL,
    domain {_T} NOT NULL,
    source {_T} NOT NULL,
    stage {_T} NOT NULL,
    counts JSON NOT NULL,
    samples JSON NOT NULL,
    first_at {_T} NOT NULL,
    last_at {_T} NOT NULL,
    PRIMARY KEY (hour, domain, source, stage)
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "parity evidence", _V2),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


def advisory_key(purpose: str, scope: str) -> int:
    """A stable signed 64-bit advisory lock key for one purpose within one schema."""
    digest = hashlib.blake2b(f"cutover:{purpose}:{scope}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def single_row(conn: psycopg.Connection[Any], sql: str) -> Any:
    """The row of a query that always returns exactly one (a SELECT without FROM, SHOW)."""
    row = conn.execute(sql).fetchone()
    assert row is not None, sql
    return row


def _applied(conn: psycopg.Connection) -> set[int]:
    (exists,) = single_row(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {version for (version,) in conn.execute("SELECT version FROM schema_migrations")}


def migrate(
    conn: psycopg.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[Migration]:
    """Apply the steps `conn`'s schema lacks, in order; returns those applied here.

    `conn` must be in autocommit mode with tuple rows: each step is its own transaction.
    """
    (schema,) = single_row(conn, "SELECT current_schema()")
    if schema is None:
        (path,) = single_row(conn, "SHOW search_path")
        raise ValueError(
            f"no schema to migrate: search_path {path!r} names no schema that exists"
            " (create it first, or leave search_path unset for the public schema)"
        )
    key = advisory_key("migrate", str(schema))
    done: list[Migration] = []
    for step in sorted(migrations, key=lambda m: m.version):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            if step.version in _applied(conn):
                continue
            conn.execute(_LEDGER)
            conn.execute(step.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (step.version, step.name),
            )
        log.info("schema %s: applied migration %d (%s)", schema, step.version, step.name)
        done.append(step)
    newer = {v for v in _applied(conn) if v > SCHEMA_VERSION}
    if newer:
        log.warning(
            "schema %s has migrations this build does not know (%s); a newer build applied them",
            schema,
            ", ".join(map(str, sorted(newer))),
        )
    return done


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """The versions recorded in `schema_migrations`, in order."""
    return sorted(_applied(conn))
