-- A message's row no longer has PostgreSQL check its event's row (the foreign key of
-- messages.id to events.id, which SQLite declares and never enforces: no PRAGMA foreign_keys).
-- PostgreSQL checks a foreign key with a query per inserted row, 5-6 us of a batch's message
-- (bench/README.md, "The PostgreSQL store"), and the check can never fail here: the writer
-- inserts a message's event in the same transaction before it, and retention deletes the
-- messages before their events (chat/store/retention.py). The foreign keys to messages (edits,
-- reactions) stay: those rows are written one at a time, after their message.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_id_fkey;
