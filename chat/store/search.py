"""Full-text search over messages: every word of a person's text must appear, the last one as
a prefix (search as you type) once it has PREFIX_MIN characters. No word is ever read as query
syntax.

A shorter last word is matched whole: a prefix of one or two letters matches a large part of
the index's terms, and the scan it takes grows with the history; whole, it is one term's
lookup (issue 17).

SQLite: ``messages_fts`` is an FTS5 index with ``messages`` as its external content, which
holds each message's text and its room as one token (``room_key``, migrations/0006). The write
operation that adds a message indexes it (``writes.post_message``, or ``writes.index_messages``
once for a whole batch); a trigger swaps an edited text and takes a deleted message out
(migrations/0002, 0003, 0006). A search asks the index for the room's token AND the words,
in descending rowid order, and stops at the page: FTS5 intersects the lists, seeking through
the longer one, so the cost follows the page, not the room's history nor the word's matches
across every room (issue 17: at 10 million events, bench/growth.py). The join to ``messages``
then checks the room exactly and leaves deleted messages out.

PostgreSQL: ``message_words`` holds ``to_tsvector('simple', text)`` of each message, under a
GIN index (migrations/postgresql/0011). The writer fills it right after a batch's commit,
outside the write lock, and before the batch's callers are answered (a small batch: with its
commit); a trigger follows edits and deletions (chat/store/postgres_words.py).
A search reads the index and joins the messages, which decide the room and deletion. The
``simple`` configuration lower-cases and does not stem, as FTS5's default tokenizer; unlike it,
it keeps diacritics (``café`` does not find ``cafe``).

``Reads.history`` with a query reads the store's ``matches`` under its ``match``.
"""

from __future__ import annotations

PREFIX_MIN = 3
"""The last word is a prefix from this many characters on; shorter, it must match whole."""

FTS5_MATCHES = "messages_fts f CROSS JOIN messages m ON m.id = f.rowid"
"""The messages the index finds, as ``m`` (what plain history reads as ``messages m``); the
index is the outer loop (CROSS JOIN), read in its own order (``FTS5_ID``)."""

FTS5_MATCH = "messages_fts MATCH ?"
"""The condition; its parameter is ``fts5_query(text, room)``."""

FTS5_ID = "f.rowid"
"""The id a search orders and pages by: the index's own, so that it is read in order."""


def room_key(room: str) -> str:
    """The room as the index holds it: one token (what ``'r' || hex(room)`` gives in SQL)."""
    return "r" + room.encode().hex().upper()


def fts5_query(text: str, room: str) -> str:
    """A person's search text in ``room`` as an FTS5 query: each word quoted, so no word is
    FTS5 syntax, all of them in the text column, and the room's token in its own."""
    plain = text.split()
    words = ['"' + word.replace('"', '""') + '"' for word in plain]
    if not words:
        return '""'
    if len(plain[-1]) >= PREFIX_MIN:
        words[-1] += "*"
    return f'room_key : "{room_key(room)}" AND text : ({" ".join(words)})'


PG_MATCHES = "message_words w JOIN messages m ON m.id = w.id"
PG_MATCH = "w.words @@ to_tsquery('simple', ?)"
PG_ID = "m.id"


def tsquery(text: str) -> str:
    """A person's search text as a ``to_tsquery`` text: each word a quoted lexeme (quotes
    doubled, backslashes escaped), joined by ``&``, the last one a prefix (``:*``). A word
    the parser splits (``x-ray``, ``don't``) becomes a phrase of its parts, as in FTS5. The
    last is a prefix from PREFIX_MIN characters on, as in ``fts5_query``."""
    # PostgreSQL's text cannot hold NUL: it breaks words here (FTS5 reads it so too)
    words = text.replace("\x00", " ").split()
    if not words:
        return ""  # an empty query: it finds nothing, as FTS5's empty phrase
    quoted = ["'" + word.replace("\\", "\\\\").replace("'", "''") + "'" for word in words]
    if len(words[-1]) >= PREFIX_MIN:
        quoted[-1] += ":*"
    return " & ".join(quoted)
