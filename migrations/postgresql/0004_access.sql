-- Identity and private rooms (ACCESS.md): accounts, service-issued tokens, room members.
-- (There is no 0003 here: SQLite's 0003 changes how FTS5 is fed, which PostgreSQL's index
-- does by itself.)

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,               -- Argon2id, in its own encoded form
    role          TEXT NOT NULL CHECK (role IN ('admin', 'member', 'bot')),
    created_at    TEXT NOT NULL
);

-- Tokens are stored only as the SHA-256 of the token; `id` is the public handle.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL UNIQUE,
    "user"     TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member', 'bot')),
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'guest', 'api')),
    rooms      TEXT,                           -- JSON list of room names; NULL: every room
    created_at TEXT NOT NULL,
    expires_at TEXT,                           -- RFC 3339; NULL: never
    revoked_at TEXT
);
CREATE INDEX tokens_user ON tokens ("user");
CREATE INDEX tokens_revoked ON tokens (revoked_at) WHERE revoked_at IS NOT NULL;

ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;

CREATE TABLE members (
    room     TEXT NOT NULL,
    "user"   TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('member', 'owner')),
    added_at TEXT NOT NULL,
    PRIMARY KEY (room, "user")
);
CREATE INDEX members_user ON members ("user");

-- A user's access events, read when a stream replays: membership as of its resume point.
CREATE INDEX events_access ON events (author, id)
    WHERE type IN ('room.created', 'member.added', 'member.removed');
