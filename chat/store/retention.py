"""Retention (``CHAT_RETENTION_DAYS``, off by default): old events deleted, oldest first, a
chunk at a time, with what they made (messages, their edits, reactions, their place in the
full-text index), and the resume guarantee kept honest.

A chunk is one write operation: the oldest ids, up to ``PRUNE_CHUNK`` of them, whose events
were made before the cutoff (ids follow time: the writer stamps each batch as it commits), so
the write lock is held for a bounded time and other writes go on between chunks. Kept
whatever their age:

- access events (``room.created``, ``member.added``, ``member.removed``): the replay's access
  rule reads who was a member as of a resume point from them (``membership_at``);
- the newest event, so that the newest id stays readable where start-up reads it;
- rooms, members, read markers and notification groups (a group may then name a message that
  history no longer holds).

``retention.pruned_through`` records the newest id deleted, in the same transaction; a stream
resuming from an older id gets ``reset`` with reason ``expired`` (chat/delivery.py): the
events after its resume point are no longer all there.
"""

from __future__ import annotations

from chat.store.account_reads import ACCESS_TYPES
from chat.store.tx import Tx, WriteOp

PRUNE_CHUNK = 5_000
"""Event ids a chunk covers at most."""


_DELETE = (
    "DELETE FROM reactions WHERE message_id BETWEEN ? AND ?",
    "DELETE FROM message_edits WHERE message_id BETWEEN ? AND ?",
    "DELETE FROM messages WHERE id BETWEEN ? AND ?",
    f"DELETE FROM events WHERE id BETWEEN ? AND ? AND NOT {ACCESS_TYPES}",  # access kept
)


def prune(cutoff: str, chunk: int = PRUNE_CHUNK) -> WriteOp[int]:
    """Delete the oldest events made before ``cutoff`` (an RFC 3339 time), at most ``chunk``
    ids' worth; returns how many ids the chunk covered (0: nothing older is left)."""

    def op(tx: Tx) -> int:
        done = tx.conn.execute("SELECT pruned_through FROM retention WHERE id = 1").fetchone()
        first = (done[0] if done else 0) + 1
        (newest,) = tx.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        row = tx.conn.execute(
            "SELECT max(id) FROM events WHERE id BETWEEN ? AND ? AND created_at < ?",
            (first, min(first + chunk - 1, newest - 1), cutoff),
        ).fetchone()
        if row is None or row[0] is None:
            return 0
        last = int(row[0])
        tx.flush()
        tx.db.unindex_range(first, last)  # before the rows it reads go
        for statement in _DELETE:
            tx.conn.execute(statement, (first, last))
        tx.conn.execute(
            "INSERT INTO retention (id, pruned_through) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET pruned_through = excluded.pruned_through",
            (last,),
        )
        return last - first + 1

    return op
