"""Synthetic history for benchmarks (bench/generate.py, bench/growth.py): ``fill`` appends
``count`` events to a store as one write operation, computed by the database itself from the
event ids (SQLite: a recursive range; PostgreSQL: ``generate_series``; the same expressions
otherwise), never a row at a time from Python: a million events take
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
are written: fill a store no server is using.
"""

from __future__ import annotations

import datetime as dt

from chat.store.dialect import Kind
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

# The parameters (one row, p, given by position), then one row per id: k (its place
# in the block), s (the block's first id), room, at (its time), b (the block's number), and the
# parameters the expressions below use. SQLite counts with a recursive range, PostgreSQL with
# generate_series; its typed parameters need their casts.
_RANGE = {
    "sqlite": """
WITH RECURSIVE p AS (
    SELECT ? AS f, ? AS l, ? AS block0, ? AS rooms, ? AS users, ? AS epoch, ? AS step,
        ? AS vocabulary
),
n(i) AS (SELECT f FROM p UNION ALL SELECT i + 1 FROM n, p WHERE i < p.l),
e AS (
    SELECT i, (i - f) % 20 AS k, i - (i - f) % 20 AS s,
        'room-' || CASE WHEN ((i - f) / 20 + block0) % 2 = 0
            THEN ((i - f) / 20 + block0) / 2 % min(rooms, 10)
            ELSE ((i - f) / 20 + block0) / 2 * 7919 % rooms END AS room,
        strftime('%Y-%m-%dT%H:%M:%fZ', epoch + (i - 1) * step, 'unixepoch') AS at,
        (i - f) / 20 + block0 AS b, users, vocabulary
    FROM n, p
)""",
    "postgresql": """
WITH p AS (
    SELECT ?::bigint AS f, ?::bigint AS l, ?::bigint AS block0, ?::bigint AS rooms,
        ?::bigint AS users, ?::float8 AS epoch, ?::float8 AS step, ?::text AS vocabulary
),
e AS (
    SELECT i, (i - f) % 20 AS k, i - (i - f) % 20 AS s,
        'room-' || CASE WHEN ((i - f) / 20 + block0) % 2 = 0
            THEN ((i - f) / 20 + block0) / 2 % least(rooms, 10)
            ELSE ((i - f) / 20 + block0) / 2 * 7919 % rooms END AS room,
        to_char(to_timestamp(epoch + (i - 1) * step) AT TIME ZONE 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at,
        (i - f) / 20 + block0 AS b, users, vocabulary
    FROM p, generate_series(p.f, p.l) AS i
)""",
}


def _author(id_sql: str) -> str:
    return f"('user' || (({id_sql}) * 31 % users))"


def _word(n_sql: str) -> str:
    start = f"CAST((({n_sql}) % {len(WORDS)}) * {WIDTH} + 1 AS INTEGER)"
    return f"rtrim(substr(vocabulary, {start}, {WIDTH}))"


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

_REPLY_TO = "CASE k WHEN 12 THEN s + 1 ELSE s END"  # the replies: k 3 (to s) and 12 (to s + 1)
_REACTED = "s + (k - 13) * 2"
# Each kind of event: its condition and its JSON's fields after the head, as (key, SQL).
_HEAD = (("id", "i"), ("type", "type"), ("room", "room"), ("created_at", "at"))
_KINDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "type = 'message' AND k IN (3, 12)",
        (
            ("author", "who"),
            ("text", "text"),
            ("reply_to", _REPLY_TO),
            ("reply_to_author", _author(_REPLY_TO)),
        ),
    ),
    ("type = 'message'", (("author", "who"), ("text", "text"))),
    (
        "type = 'reaction.added'",
        (
            ("author", "who"),
            ("message_id", _REACTED),
            ("emoji", "CASE k WHEN 13 THEN ':tada:' ELSE '👍' END"),
            ("message_author", _author(_REACTED)),
        ),
    ),
    (
        "type = 'message.edited'",
        (("author", "who"), ("message_id", "s + 4"), ("text", "text || ' (edited)'")),
    ),
    ("type = 'message.deleted'", (("author", "who"), ("message_id", "s + 6"))),
    (
        "TRUE",  # activity
        (
            ("actor", "who"),
            ("verb", "CAST('deployed' AS TEXT)"),
            ("object", "'build ' || b"),
            ("summary", "who || ' deployed build ' || b"),
        ),
    ),
)


def _json(kind: Kind, fields: tuple[tuple[str, str], ...]) -> str:
    """The event's JSON as the service writes it (compact, keys in this order), as bytes."""
    if kind == "sqlite":
        pairs = ", ".join(f"'{key}', {sql}" for key, sql in fields)
        return f"CAST(json_object({pairs}) AS BLOB)"
    # PostgreSQL's json_build_object puts spaces around its colons: joined by hand instead
    parts = " || ',' || ".join(f"'\"{key}\":' || to_json({sql})::text" for key, sql in fields)
    return f"convert_to('{{' || {parts} || '}}', 'UTF8')"


def _events(kind: Kind) -> str:
    cases = " ".join(f"WHEN {cond} THEN {_json(kind, _HEAD + fields)}" for cond, fields in _KINDS)
    return f"""{_RANGE[kind]},
t AS (SELECT i, k, s, room, at, b, users, vocabulary, {_TYPE} AS type FROM e),
u AS (SELECT t.*, {_WHO} AS who FROM t),
v AS (SELECT u.*, {_TEXT} AS text FROM u)
INSERT INTO events (id, room, type, author, created_at, data)
SELECT i, room, type, who, at, CASE {cases} END FROM v"""


def _statements(kind: Kind) -> tuple[str, ...]:
    """What the events make in the other tables, for the ids in [first, last]."""
    in_range = "e.id BETWEEN ? AND ?"  # each statement's parameters: (first, last)
    if kind == "sqlite":
        field = "CAST(e.data AS TEXT) ->> "
    else:
        field = "convert_from(e.data, 'UTF8')::jsonb ->> "
    index = (
        # the full-text index here, before the edits and deletions whose trigger changes it
        "INSERT INTO messages_fts (rowid, text, room_key) SELECT id, text, 'r' || hex(room) "
        "FROM messages WHERE id BETWEEN ? AND ?",
    )

    def number(key: str) -> str:
        return f"CAST({field}'{key}' AS BIGINT)"

    return (
        "INSERT INTO messages (id, room, author, text, reply_to, created_at) "
        f"SELECT e.id, e.room, e.author, {field}'text', {number('reply_to')}, e.created_at "
        f"FROM events e WHERE {in_range} AND e.type = 'message'",
        *(index if kind == "sqlite" else ()),  # PostgreSQL's: postgres_words.py
        "INSERT INTO message_edits (event_id, message_id, author, old_text, text, edited_at) "
        f"SELECT e.id, m.id, e.author, m.text, {field}'text', e.created_at "
        f"FROM events e JOIN messages m ON m.id = {number('message_id')} "
        f"WHERE {in_range} AND e.type = 'message.edited'",
        "UPDATE messages SET text = x.text, edited_at = x.edited_at FROM message_edits x "
        f"WHERE x.message_id = messages.id AND {in_range.replace('e.id', 'x.event_id')}",
        "UPDATE messages SET deleted_at = e.created_at FROM events e "
        f"WHERE {in_range} AND e.type = 'message.deleted' AND messages.id = {number('message_id')}",
        "INSERT INTO reactions (message_id, author, emoji, created_at) "
        f"SELECT {number('message_id')}, e.author, {field}'emoji', e.created_at "
        f"FROM events e WHERE {in_range} AND e.type = 'reaction.added'",
    )


_SQL = {kind: (_events(kind), _statements(kind)) for kind in ("sqlite", "postgresql")}


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
        events, statements = _SQL[tx.db.kind]
        # _RANGE's parameters, in order: f, l, block0, rooms, users, epoch, step, vocabulary
        params = (first, last, first // BLOCK, rooms, users, start.timestamp(), step_s, _VOCABULARY)
        tx.conn.execute(events, params)
        for statement in statements:
            tx.conn.execute(statement, (first, last))
        tx.next_id = last + 1
        return first, last

    return op


def _at(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
