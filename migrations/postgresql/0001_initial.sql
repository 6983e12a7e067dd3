-- PostgreSQL's schema is SQLite's (migrations/*.sql), version for version, with these types:
-- ids BIGINT, byte strings (the event JSON as sent, stored responses, token hashes) BYTEA,
-- times TEXT in RFC 3339 like SQLite's. tests/test_store_schema.py holds the two equal.

-- Rooms, the event log and the message table history is read from.
CREATE TABLE rooms (
    name       TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- The newest event id taken: one row, locked by every batch for its whole transaction
-- (SELECT ... FOR UPDATE), so ids follow commit order across processes (chat/store/postgres.py).
-- SQLite's counterpart is sqlite_sequence (AUTOINCREMENT).
CREATE TABLE event_ids (
    one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last_id BIGINT NOT NULL
);
INSERT INTO event_ids (one, last_id) VALUES (TRUE, 0);

CREATE TABLE events (
    id         BIGINT PRIMARY KEY,
    room       TEXT NOT NULL,
    type       TEXT NOT NULL,
    author     TEXT,
    created_at TEXT NOT NULL,
    data       BYTEA NOT NULL
);
CREATE INDEX events_room_id ON events (room, id);

CREATE TABLE messages (
    id         BIGINT PRIMARY KEY REFERENCES events (id),
    room       TEXT NOT NULL,
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    reply_to   BIGINT,
    created_at TEXT NOT NULL,
    edited_at  TEXT,
    deleted_at TEXT
);
CREATE INDEX messages_room_id ON messages (room, id);
