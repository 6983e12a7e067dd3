-- The partial index of a user's access events (migrations/0004) said which types it holds as
-- `type IN ('room.created', 'member.added', 'member.removed')`. SQLite evaluates that for every
-- row inserted into events, and an IN list of more than two constants it looks up in a
-- temporary b-tree, built anew for each event the writer inserted. That was about 2 µs of an
-- event's ~5 µs insert, and ~18% of the batch path's instructions (docs/design/performance.md).
-- The same set as comparisons costs nothing measurable. Queries name the set with the same
-- expression (chat/store/account_reads.py, ACCESS_TYPES), which is what lets SQLite use the
-- index. A version from before this migration still runs on the migrated file (a rolling
-- upgrade, a downgrade), with the same answers, but its `IN` spelling no longer uses the index:
-- its replays of private rooms' streams scan the events up to the resume point.
-- SQLite only: PostgreSQL tests an IN list without building anything (its index is unchanged).
DROP INDEX events_access;
CREATE INDEX events_access ON events (author, id)
    WHERE (type = 'room.created' OR type = 'member.added' OR type = 'member.removed');
