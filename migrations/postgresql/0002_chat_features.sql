-- Chat features: edit history, reactions, read markers, idempotency keys, full-text search.

CREATE TABLE message_edits (
    event_id   BIGINT PRIMARY KEY,                -- the message.edited event
    message_id BIGINT NOT NULL REFERENCES messages (id),
    author     TEXT NOT NULL,
    old_text   TEXT NOT NULL,
    text       TEXT NOT NULL,
    edited_at  TEXT NOT NULL
);
CREATE INDEX message_edits_message ON message_edits (message_id);

CREATE TABLE reactions (
    message_id BIGINT NOT NULL REFERENCES messages (id),
    author     TEXT NOT NULL,
    emoji      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, author, emoji)
);

CREATE TABLE read_markers (
    "user"       TEXT NOT NULL,
    room         TEXT NOT NULL,
    last_read_id BIGINT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY ("user", room)
);

CREATE TABLE idempotency_keys (
    room        TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    BYTEA NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (room, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Full-text search (chat/store/search.py): the messages not deleted, by the 'simple'
-- configuration (lower case, no stemming). The index follows inserts, edits and deletes by
-- itself; SQLite's FTS5 table needs the writer and a trigger for that.
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', text))
    WHERE deleted_at IS NULL;
