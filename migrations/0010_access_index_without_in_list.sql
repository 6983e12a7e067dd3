-- The partial index of a user's access events (migrations/0004) said which types it holds as
-- `type IN ('room.created', 'member.added', 'member.removed')`. SQLite evaluates that for every
-- row inserted into events, and an IN list of more than two constants it looks up in a
-- temporary b-tree, which it builds anew each time the statement runs: once per event, as the
-- writer inserts events one row at a time (executemany). That was about 2 µs of an event's
-- ~5 µs insert, and ~10% of the batch path's CPU (docs/design/performance.md). The same set as
-- comparisons costs nothing measurable. Queries name the set with the same expression
-- (chat/store/reads.py, ACCESS_TYPES), which is what lets SQLite use the index.
-- SQLite only: PostgreSQL tests an IN list without building anything (its index is unchanged).
DROP INDEX events_access;
CREATE INDEX events_access ON events (author, id)
    WHERE (type = 'room.created' OR type = 'member.added' OR type = 'member.removed');
