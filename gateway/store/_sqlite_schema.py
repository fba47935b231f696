"""The SQLite schema: one table per record kind, an index for every query."""

from __future__ import annotations

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    user_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    retained_from INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS streams_backlog ON streams (head_seq - retained_from);

CREATE TABLE IF NOT EXISTS stream_events (
    user_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_ts REAL NOT NULL,
    PRIMARY KEY (user_id, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stream_events_age ON stream_events (created_ts);

CREATE TABLE IF NOT EXISTS tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    claims_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_expiry ON tickets (expires_at);

CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    result_json TEXT NOT NULL,
    created_ts REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_ts);

CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT
);

CREATE TABLE IF NOT EXISTS notifications (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT,
    created_at TEXT NOT NULL,
    read_at TEXT
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, pos);
CREATE INDEX IF NOT EXISTS notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_message_id TEXT
);

CREATE TABLE IF NOT EXISTS participants (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS participants_by_user ON participants (user_id, conversation_id);

CREATE TABLE IF NOT EXISTS messages (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    client_message_id TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, pos);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_client_id
    ON messages (sender_id, client_message_id) WHERE client_message_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS read_states (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message_pos INTEGER NOT NULL,
    read_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS deliveries (
    message_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    delivered_at TEXT NOT NULL,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS follow_requests (
    id TEXT PRIMARY KEY,
    from_user_id TEXT NOT NULL,
    to_user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS follow_requests_pair ON follow_requests (from_user_id, to_user_id);
CREATE INDEX IF NOT EXISTS follow_requests_to ON follow_requests (to_user_id, status, updated_at);
CREATE INDEX IF NOT EXISTS follow_requests_from ON follow_requests (from_user_id, status, updated_at);

CREATE TABLE IF NOT EXISTS gatherings (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    host_id TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS rsvps (
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (event_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rsvps_by_status ON rsvps (event_id, status, seq);
CREATE INDEX IF NOT EXISTS rsvps_by_user ON rsvps (user_id);

CREATE TABLE IF NOT EXISTS check_ins (
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    checked_in_at TEXT NOT NULL,
    PRIMARY KEY (event_id, user_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS saved_events (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS saved_events_by_user ON saved_events (user_id, seq);

CREATE TABLE IF NOT EXISTS organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS memberships (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_by_org ON memberships (org_id, seq);

CREATE TABLE IF NOT EXISTS announcements (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    author_id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS announcements_by_org ON announcements (org_id, pos);

CREATE TABLE IF NOT EXISTS feed_items (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    author_id TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feed_items_by_author ON feed_items (author_id, pos);

CREATE TABLE IF NOT EXISTS presence (
    user_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS parity_evidence (
    hour TEXT NOT NULL,
    domain TEXT NOT NULL,
    source TEXT NOT NULL,
    stage TEXT NOT NULL,
    counts TEXT NOT NULL,
    samples TEXT NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (hour, domain, source, stage)
) WITHOUT ROWID;
"""
