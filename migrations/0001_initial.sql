-- Rooms, the event log and the message table history is read from.
-- events.id is the deployment-wide, strictly increasing event id (AUTOINCREMENT: never reused,
-- even after the newest rows are gone); events.data is the event JSON exactly as sent.

CREATE TABLE rooms (
    name       TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room       TEXT NOT NULL,
    type       TEXT NOT NULL,
    author     TEXT,
    created_at TEXT NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX events_room_id ON events (room, id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY REFERENCES events (id),
    room       TEXT NOT NULL,
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    reply_to   INTEGER,
    created_at TEXT NOT NULL,
    edited_at  TEXT,
    deleted_at TEXT
);
CREATE INDEX messages_room_id ON messages (room, id);
