"""PostgreSQL's search words, written after the write lock (migrations/postgresql/0011).

A message's words (``to_tsvector('simple', text)``) go into ``message_words``, under a GIN
index. Written inside a batch, they made PostgreSQL tokenize every message and insert its
words while the batch held the ``event_ids`` lock that every process's writes wait on: about a
third of a batch's time under it (bench/README.md, "The PostgreSQL store"). So a batch of
INDEX_AFTER_FROM ids or more records its range in ``search_backlog`` with its COMMIT; right
after, outside the lock and before the batch's callers are answered, the writer writes the
words of the range's messages and deletes the range. A smaller batch (a group of POSTs) writes
its words with its COMMIT, in the same round trip: another transaction and round trip would
cost more than the lock saves.

A range left behind (a process killed in between, a statement that failed) is indexed again:
the writer's own at its next batch, any other by a process that starts, and by a running one
that sees it at the starts of two batches a minute apart (a writer is on a batch's range for
milliseconds, on a bulk fill's longer; an idle store makes an empty batch every SWEEP_EVERY_S,
chat/store/store.py). Indexing a range twice is harmless (``ON CONFLICT DO NOTHING``).

The words' writes give way to edits: an edit's trigger (under the write lock) and the words'
insert can each wait for a row the other wrote and has not committed, so the insert waits for
a lock at most LOCK_WAIT, then fails, and its range is written again with the next batch. A
deadlock or a long wait would otherwise hold the write lock, and every process's writes, for
up to PostgreSQL's ``deadlock_timeout`` (1 s).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import pq

from chat.store.dialect import RowsFailed

log = logging.getLogger(__name__)

INDEX_AFTER_FROM = 16  # a batch of this many ids has its words written after its commit
LOCK_WAIT = "20ms"  # the longest the words' insert waits for a row lock (above)
INDEX_CHUNK = 10_000  # ids per transaction of those writes (a fill takes millions)
SWEEP_EVERY_S = 60.0  # how often a writer looks for ranges that others left on the backlog
# A range's words: from the messages as they are, so an edit since the commit wins (its trigger,
# migrations/postgresql/0011, wrote the same words first; where the two race, the statement
# that read the text before the edit finds the trigger's row and keeps it).
INDEX_RANGE = (
    "INSERT INTO message_words (id, words) "
    "SELECT id, to_tsvector('simple', text) FROM messages "
    "WHERE id BETWEEN %s AND %s AND deleted_at IS NULL ON CONFLICT (id) DO NOTHING"
)
COUNTER = "UPDATE event_ids SET last_id = %s"
Statement = tuple[str, tuple[int, ...]]
Many = Sequence[tuple[str, list[tuple[Any, ...]]]]
"""Statements (psycopg's placeholders) and their rows, written before a COMMIT."""


def send(raw: psycopg.Connection[Any], *statements: Statement, rows: Many = ()) -> None:
    """``rows``, then the statements, in one round trip (a pipeline); psycopg prepares each
    statement once it has seen it a few times, so PostgreSQL no longer parses and plans it.
    After a failed statement PostgreSQL runs none of the rest."""
    with raw.pipeline(), raw.cursor() as cur:
        for sql, many in rows:
            cur.executemany(sql, many)
        for sql, params in statements:
            cur.execute(sql, params)


def commit(raw: psycopg.Connection[Any], rows: Many, *statements: Statement) -> None:
    """Write ``rows``, run the statements and COMMIT, in one round trip. ``RowsFailed`` when
    the transaction is still open after a failure (a statement failed, so the COMMIT did not
    run: ``chat.store.dialect.WriteDb.commit``); any other failure (a lost connection, the
    COMMIT's own) as it is: the COMMIT may have run."""
    try:
        send(raw, *statements, ("COMMIT", ()), rows=rows)
    except Exception as error:
        if raw.broken or raw.info.transaction_status not in _OPEN:
            raise
        raise RowsFailed(error) from error


_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


class Words:
    """The write connection's search words: ``commit`` ends a batch's transaction and writes
    its words; ``catch_up`` (before a batch's lock) indexes what was left behind. ``rollback``
    is the write connection's own (``PgWriteDb.rollback``)."""

    def __init__(self, rollback: Callable[[], None]) -> None:
        self._rollback = rollback
        self._unindexed: list[tuple[int, int]] = []  # own committed ranges still to index
        self._seen: set[tuple[int, int]] = set()  # others' ranges at the last sweep
        self._next_sweep = 0.0

    def commit(self, raw: psycopg.Connection[Any], first: int, last: int, rows: Many) -> None:
        """Write ``rows`` and commit the open transaction, which took the ids ``first`` ..
        ``last`` (``commit`` above)."""
        if last - first + 1 < INDEX_AFTER_FROM:
            commit(raw, rows, (INDEX_RANGE, (first, last)), (COUNTER, (last,)))
            return
        backlog = "INSERT INTO search_backlog (first_id, last_id) VALUES (%s, %s)"
        commit(raw, rows, (backlog, (first, last)), (COUNTER, (last,)))
        self._index(raw, (first, last))  # committed: a failure here fails no caller

    def catch_up(self, raw: psycopg.Connection[Any], *, everything: bool = False) -> None:
        """Index one range of its own that failed, and sweep when a sweep is due: every range
        of the backlog with ``everything`` (at start-up), else those seen at the last sweep."""
        if self._unindexed:
            self._index(raw, self._unindexed.pop(0))
        if not everything and time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        try:
            rows = raw.execute("SELECT first_id, last_id FROM search_backlog").fetchall()
        except psycopg.Error as error:
            log.warning("the search backlog could not be read: %s", error)
            return
        found = {(int(first), int(last)) for first, last in rows}
        stale = found if everything else found & self._seen
        self._seen = found - stale
        for ids in sorted(stale):
            self._index(raw, ids)

    def _index(self, raw: psycopg.Connection[Any], ids: tuple[int, int]) -> None:
        """Write the words of the range's messages and take the range off the backlog, each
        chunk in a transaction of its own (one round trip), outside the lock. A failure leaves
        the range to ``catch_up``: it has been committed, so nobody is told.
        These transactions do not wait for their commit to reach the disk: a crash loses the
        latest of them, never one without those after it, and the range's DELETE comes last,
        so a range whose words were lost stays on the backlog and is indexed again."""
        first, last = ids
        try:
            for low in range(first, last + 1, INDEX_CHUNK):
                high = min(low + INDEX_CHUNK - 1, last)
                done: list[Statement] = []
                if high == last:
                    done.append(("DELETE FROM search_backlog WHERE first_id = %s", (first,)))
                send(
                    raw,
                    ("BEGIN", ()),
                    ("SET LOCAL synchronous_commit = off", ()),
                    (f"SET LOCAL lock_timeout = '{LOCK_WAIT}'", ()),
                    (INDEX_RANGE, (low, high)),
                    *done,
                    ("COMMIT", ()),
                )
        except psycopg.Error as error:
            log.warning("the search words of events %d-%d wait for the next write: %s", *ids, error)
            if ids not in self._unindexed:  # a sweep may find it again meanwhile
                self._unindexed.append(ids)
            with contextlib.suppress(psycopg.Error):
                self._rollback()  # the failed chunk's transaction, if the connection lives
