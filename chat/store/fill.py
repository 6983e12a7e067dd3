"""Synthetic history for benchmarks (bench/generate.py, bench/growth.py): ``fill`` appends
``count`` events to a SQLite store as one write operation, computed by SQLite itself from
the event ids (a recursive range), never a row at a time from Python: a million events take
about ten seconds (bench/README.md, "Growth").

The events are what the service itself would have stored for the same requests, in blocks of
20 consecutive ids, each block in one room: every other block in one of ten busy rooms
(``room-0`` .. ``room-9``, in turn), the others spread over all ``rooms`` rooms (``room-0`` ..),
authors drawn from ``users`` users (``user0`` ..). Of each block's 20 events: 15 messages (one
of them mentions a user, two are replies), two reactions (one of them ``:tada:``), an edit, an
activity item, and either a deletion (every tenth block) or one more message. The history's
first message (in ``room-0``) carries the word ``RARE_WORD``, and no other; every message
carries ``COMMON_WORD``.

Each id's event follows from the id alone (and the fill's first id), so that a benchmark knows
what it will find without reading it. The history notifies nobody (no notification groups are
written, as for events stored before migration 0005), and no server sees the events as they
are written: fill a store no server is using. SQLite only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from chat.store.tx import Tx, WriteOp

BLOCK = 20
"""Events per block; ``fill`` appends whole blocks."""

COMMON_WORD = "hello"
RARE_WORD = "quokka"
"""In the history's first message only: a search for it must find the oldest message."""

WORDS = tuple(
    " ".join(
        (
            "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike",
            "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee",
            "zulu apple banana cherry grape lemon mango melon orange peach pear plum berry river",
            "ocean forest desert meadow canyon valley summit harbor island glacier prairie deploy",
            "review merge build release ticket sprint standup lunch coffee meeting launch",
        )
    ).split()
)
WIDTH = 10  # WORDS as one string of fixed-width slots: the SQL picks the n-th by substr
_VOCABULARY = "".join(word.ljust(WIDTH) for word in WORDS)

# One row per id: j (the id's offset from the fill's first id), k (its place in the block),
# s (the block's first id), a (its author, unless a CASE below picks another).
_RANGE = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last),
e AS (
    SELECT i, (i - :first) % 20 AS k, i - (i - :first) % 20 AS s,
        'room-' || CASE WHEN ((i - :first) / 20 + :block0) % 2 = 0
            THEN ((i - :first) / 20 + :block0) / 2 % min(:rooms, 10)
            ELSE ((i - :first) / 20 + :block0) / 2 * 7919 % :rooms END AS room,
        strftime('%Y-%m-%dT%H:%M:%fZ', :epoch + (i - 1) * :step, 'unixepoch') AS at,
        ((i - :first) / 20 + :block0) AS b
    FROM n
)
"""


def _author(id_sql: str) -> str:
    return f"('user' || (({id_sql}) * 31 % :users))"


def _word(n_sql: str) -> str:
    return f"rtrim(substr(:vocabulary, (({n_sql}) % {len(WORDS)}) * {WIDTH} + 1, {WIDTH}))"


_TEXT = (
    f"'{COMMON_WORD} ' || {_word('i * 7')} || ' ' || {_word('i * 13 + 5')} || ' ' || "
    f"{_word('i / 3')} || CASE WHEN k = 5 THEN ' @' || {_author('i * 17')} "
    f"WHEN i = 1 THEN ' {RARE_WORD}' ELSE '' END"
)

# The author of each event: a message's own; an edit's or a deletion's, the edited or deleted
# message's author (only authors change their messages).
_WHO = (
    f"CASE k WHEN 15 THEN {_author('s + 4')} WHEN 16 THEN CASE WHEN b % 10 = 0 THEN "
    f"{_author('s + 6')} ELSE {_author('i')} END ELSE {_author('i')} END"
)

_TYPE = (
    "CASE WHEN k IN (13, 14) THEN 'reaction.added' WHEN k = 15 THEN 'message.edited' "
    "WHEN k = 16 AND b % 10 = 0 THEN 'message.deleted' WHEN k = 17 THEN 'activity' "
    "ELSE 'message' END"
)

_HEAD = "'id', i, 'type', type, 'room', room, 'created_at', at"
_DATA = f"""CASE
    WHEN type = 'message' AND k IN (3, 12) THEN json_object({_HEAD}, 'author', who,
        'text', text, 'reply_to', s + k - 3 + (k = 12) * -8, 'reply_to_author',
        {_author("s + k - 3 + (k = 12) * -8")})
    WHEN type = 'message' THEN json_object({_HEAD}, 'author', who, 'text', text)
    WHEN type = 'reaction.added' THEN json_object({_HEAD}, 'author', who,
        'message_id', s + (k - 13) * 2, 'emoji', CASE k WHEN 13 THEN ':tada:' ELSE '👍' END,
        'message_author', {_author("s + (k - 13) * 2")})
    WHEN type = 'message.edited' THEN json_object({_HEAD}, 'author', who, 'message_id', s + 4,
        'text', text || ' (edited)')
    WHEN type = 'message.deleted' THEN json_object({_HEAD}, 'author', who, 'message_id', s + 6)
    ELSE json_object({_HEAD}, 'actor', who, 'verb', 'deployed', 'object',
        'build ' || b, 'summary', who || ' deployed build ' || b)
END"""

_EVENTS = f"""{_RANGE},
t AS (SELECT i, k, s, room, at, b, {_TYPE} AS type, {_WHO} AS who, {_TEXT} AS text FROM e)
INSERT INTO events (id, room, type, author, created_at, data)
SELECT i, room, type, who, at, CAST({_DATA} AS BLOB) FROM t"""

_IN_RANGE = "e.id BETWEEN :first AND :last"
J = "CAST(e.data AS TEXT) ->> "  # a field of the event's JSON (stored as a BLOB)

_STATEMENTS = (
    "INSERT INTO messages (id, room, author, text, reply_to, created_at) "
    f"SELECT e.id, e.room, e.author, {J}'text', {J}'reply_to', e.created_at "
    f"FROM events e WHERE {_IN_RANGE} AND e.type = 'message'",
    # the full-text index here, before the edits and deletions whose trigger changes it
    "INSERT INTO messages_fts (rowid, text, room_key) SELECT id, text, 'r' || hex(room) "
    "FROM messages "
    "WHERE id BETWEEN :first AND :last",
    "INSERT INTO message_edits (event_id, message_id, author, old_text, text, edited_at) "
    f"SELECT e.id, m.id, e.author, m.text, {J}'text', e.created_at "
    f"FROM events e JOIN messages m ON m.id = {J}'message_id' "
    f"WHERE {_IN_RANGE} AND e.type = 'message.edited'",
    "UPDATE messages SET text = x.text, edited_at = x.edited_at FROM message_edits x "
    "WHERE x.message_id = messages.id AND x.event_id BETWEEN :first AND :last",
    "UPDATE messages SET deleted_at = e.created_at FROM events e "
    f"WHERE {_IN_RANGE} AND e.type = 'message.deleted' AND messages.id = {J}'message_id'",
    "INSERT INTO reactions (message_id, author, emoji, created_at) "
    f"SELECT {J}'message_id', e.author, {J}'emoji', e.created_at "
    f"FROM events e WHERE {_IN_RANGE} AND e.type = 'reaction.added'",
)


def fill(
    count: int, *, rooms: int, users: int, start: dt.datetime, step_s: float
) -> WriteOp[tuple[int, int]]:
    """Append ``count`` (rounded up to whole blocks) events, the event of id ``n`` made at
    ``start`` + (n - 1) * ``step_s`` (so that fills one after another go on in time).
    Returns (the first id, the last id)."""
    if rooms < 1 or users < 2:
        raise ValueError("at least one room and two users")
    blocks = max(1, -(-count // BLOCK))

    def op(tx: Tx) -> tuple[int, int]:
        tx.flush()
        first = tx.next_id
        last = first + blocks * BLOCK - 1
        tx.conn.executemany(
            "INSERT INTO rooms (name, title, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(f"room-{r}", f"room-{r}", _at(start)) for r in range(rooms)],
        )
        params = {
            "first": first,
            "last": last,
            "block0": first // BLOCK,
            "rooms": rooms,
            "users": users,
            "epoch": start.timestamp(),
            "step": step_s,
            "vocabulary": _VOCABULARY,
        }
        tx.conn.execute(_EVENTS, cast(Any, params))  # named parameters
        for statement in _STATEMENTS:
            tx.conn.execute(statement, cast(Any, {"first": first, "last": last}))
        tx.next_id = last + 1
        return first, last

    return op


def _at(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
