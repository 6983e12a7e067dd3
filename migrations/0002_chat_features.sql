-- Chat features: edit history, reactions, read markers, idempotency keys, full-text search.

CREATE TABLE message_edits (
    event_id   INTEGER PRIMARY KEY,               -- the message.edited event
    message_id INTEGER NOT NULL REFERENCES messages (id),
    author     TEXT NOT NULL,
    old_text   TEXT NOT NULL,
    text       TEXT NOT NULL,
    edited_at  TEXT NOT NULL
);
CREATE INDEX message_edits_message ON message_edits (message_id);

CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id),
    author     TEXT NOT NULL,
    emoji      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, author, emoji)
) WITHOUT ROWID;

CREATE TABLE read_markers (
    user         TEXT NOT NULL,
    room         TEXT NOT NULL,
    last_read_id INTEGER NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (user, room)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    room        TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (room, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- External-content FTS5 index over messages.text; deleted messages are taken out.
CREATE VIRTUAL TABLE messages_fts USING fts5 (text, content = 'messages', content_rowid = 'id');
INSERT INTO messages_fts (rowid, text) SELECT id, text FROM messages WHERE deleted_at IS NULL;

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, deleted_at ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
        SELECT 'delete', old.id, old.text WHERE old.deleted_at IS NULL;
    INSERT INTO messages_fts (rowid, text)
        SELECT new.id, new.text WHERE new.deleted_at IS NULL;
END;
