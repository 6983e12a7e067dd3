"""Full-text search over messages.

``messages_fts`` is an FTS5 index with ``messages`` as its external content. The write
operation that adds a message indexes it (``writes.post_message``, or ``writes.index_messages``
once for a whole batch); a trigger swaps an edited text and takes a deleted message out
(migrations/0002, 0003). ``Reads.history`` with a query reads ``MATCHES`` under ``MATCH``.
"""

from __future__ import annotations

MATCHES = "messages_fts f JOIN messages m ON m.id = f.rowid"
"""The messages the index finds, as ``m`` (what plain history reads as ``messages m``)."""

MATCH = "messages_fts MATCH ?"
"""The condition; its parameter is ``fts_query(text)``."""


def fts_query(text: str) -> str:
    """A person's search text as an FTS5 query: every word must appear (each quoted, so no
    word is read as FTS5 syntax), the last one as a prefix (search as you type)."""
    words = ['"' + word.replace('"', '""') + '"' for word in text.split()]
    if not words:
        return '""'
    words[-1] += "*"
    return " ".join(words)
