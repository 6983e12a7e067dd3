-- Search by room (issue 17): the full-text index holds each message's room too, as one token
-- in a column of its own (room_key: 'r' and the name's bytes in hex, so that a name like
-- "team-backend" is not two words). A search then asks the index for the room's messages that
-- hold the words, newest first, and stops at the page: the index intersects the room's list
-- with each word's, skipping through the longer one, so neither a common word in a quiet room
-- nor a rare word in a busy one reads the room's history or every match (chat/store/search.py).
-- Prefixes of 3 to 6 characters get an index of their own (prefix = '3 4 5 6'): a search's
-- last word is a prefix (search as you type), and without it FTS5 merges the lists of every
-- word the prefix starts, in every room, before anything else: 336 ms for a common word at
-- 10 million events (bench/growth.py), against under a millisecond with it. It costs about 60
-- bytes an event and 8% of the batch path's messages/s (bench/README.md, "Growth").
-- The writer adds new messages (chat/store/sqlite.py); the trigger swaps an edited text and
-- takes a deleted message out, as before (migrations/0002).

DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;

CREATE VIRTUAL TABLE messages_fts USING fts5 (
    text, room_key, content = 'messages', content_rowid = 'id', prefix = '3 4 5 6'
);
INSERT INTO messages_fts (rowid, text, room_key)
    SELECT id, text, 'r' || hex(room) FROM messages WHERE deleted_at IS NULL;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, deleted_at ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text, room_key)
        SELECT 'delete', old.id, old.text, 'r' || hex(old.room) WHERE old.deleted_at IS NULL;
    INSERT INTO messages_fts (rowid, text, room_key)
        SELECT new.id, new.text, 'r' || hex(new.room) WHERE new.deleted_at IS NULL;
END;
