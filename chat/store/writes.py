"""Write operations: plain functions of a ``Tx``, run on the store's write thread inside a
batch's transaction (chat/store/tx.py). Each returns its result; the events it appends are
published after the commit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from chat.errors import ChatError, Conflict, Forbidden, NotFound, ValidationFailed, in_batch
from chat.events import Event
from chat.store.tx import Tx, WriteOp


def _field_error(field: str, msg: str, kind: str) -> ValidationFailed:
    return ValidationFailed(msg, [{"loc": [field], "field": field, "msg": msg, "type": kind}])


MESSAGE_ROW = "INSERT INTO messages (id, room, author, text, created_at) VALUES (?,?,?,?,?)"
REPLY_ROW = (
    "INSERT INTO messages (id, room, author, text, reply_to, created_at) VALUES (?,?,?,?,?,?)"
)
"""A message that is no reply leaves ``reply_to`` out rather than binding None: the sqlite3
module binds None only after looking for an adapter (chat/store/sqlite.py)."""


def post_message(
    room: str,
    author: str,
    text: str,
    reply_to: int | None,
    *,
    create_room: bool,
    index: bool = True,
) -> WriteOp[Event]:
    """``index=False``: the caller adds the message to the full-text index itself
    (``index_messages``, once for a whole batch)."""

    def op(tx: Tx) -> Event:
        tx.ensure_room(room, create=create_room)
        fields: dict[str, Any] = {"author": author, "text": text}
        if reply_to is not None:
            tx.flush()  # it may reply to an earlier message of its own batch
            found = tx.conn.execute(
                "SELECT author FROM messages WHERE id = ? AND room = ? AND deleted_at IS NULL",
                (reply_to, room),
            ).fetchone()
            if found is None:
                raise _field_error(
                    "reply_to",
                    f"reply_to must name a message of room {room!r}; {reply_to} is not one",
                    "reply_to_not_found",
                )
            fields["reply_to"] = reply_to
            fields["reply_to_author"] = found[0]  # whom it notifies (chat/notifications.py)
        event = tx.append(room, "message", fields)
        if reply_to is None:
            tx.insert(MESSAGE_ROW, (event.id, room, author, text, tx.now))
        else:
            tx.insert(REPLY_ROW, (event.id, room, author, text, reply_to, tx.now))
        if index and tx.db.index_row is not None:
            tx.insert(tx.db.index_row, (event.id, text, room))
        return event

    return op


def index_messages(tx: Tx, events: list[Event]) -> None:
    """Add these new messages (consecutive ids) to the full-text index in one statement
    (chat/store/sqlite.py; PostgreSQL writes every batch's words itself:
    chat/store/postgres_words.py)."""
    if events and tx.db.index_row is not None:
        tx.flush()  # the messages' rows, read here
        first, last = events[0].id, events[-1].id
        assert first is not None and last is not None  # appended events have ids
        tx.db.index_range(first, last)


def _message(tx: Tx, room: str, message_id: int) -> tuple[str, str]:
    """(author, text) of a message of the room that is not deleted, or 404."""
    row = tx.conn.execute(
        "SELECT author, text FROM messages WHERE id = ? AND room = ? AND deleted_at IS NULL",
        (message_id, room),
    ).fetchone()
    if row is None:
        raise NotFound(f"no message {message_id} in room {room!r}")
    return str(row[0]), str(row[1])


def _own_message(tx: Tx, room: str, message_id: int, author: str) -> str:
    """The text of the author's own message, 404 if there is none, 403 if it is not theirs."""
    owner, text = _message(tx, room, message_id)
    if owner != author:
        raise Forbidden(f"only {owner!r}, the message's author, may change it")
    return text


def edit_message(room: str, message_id: int, author: str, text: str) -> WriteOp[Event]:
    def op(tx: Tx) -> Event:
        old_text = _own_message(tx, room, message_id, author)
        event = tx.append(
            room, "message.edited", {"author": author, "message_id": message_id, "text": text}
        )
        tx.conn.execute(
            "UPDATE messages SET text = ?, edited_at = ? WHERE id = ?", (text, tx.now, message_id)
        )
        tx.conn.execute(
            "INSERT INTO message_edits (event_id, message_id, author, old_text, text, edited_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (event.id, message_id, author, old_text, text, tx.now),
        )
        return event

    return op


def delete_message(
    room: str, message_id: int, author: str, *, moderator: bool = False
) -> WriteOp[Event]:
    """Delete one's own message, or (``moderator``: an owner of the room or an admin) anyone's;
    the event's ``author`` is who deleted it."""

    def op(tx: Tx) -> Event:
        if moderator:
            _message(tx, room, message_id)
        else:
            _own_message(tx, room, message_id, author)
        event = tx.append(room, "message.deleted", {"author": author, "message_id": message_id})
        tx.conn.execute("UPDATE messages SET deleted_at = ? WHERE id = ?", (tx.now, message_id))
        return event

    return op


def add_reaction(room: str, message_id: int, author: str, emoji: str) -> WriteOp[Event]:
    def op(tx: Tx) -> Event:
        owner, _ = _message(tx, room, message_id)
        cur = tx.conn.execute(
            "INSERT INTO reactions (message_id, author, emoji, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (message_id, author, emoji, tx.now),
        )
        if cur.rowcount == 0:
            raise Conflict(f"{author!r} already reacted with {emoji} to message {message_id}")
        fields = {"author": author, "message_id": message_id, "emoji": emoji}
        fields["message_author"] = owner  # whom it notifies (chat/notifications.py)
        return tx.append(room, "reaction.added", fields)

    return op


def remove_reaction(room: str, message_id: int, author: str, emoji: str) -> WriteOp[Event]:
    def op(tx: Tx) -> Event:
        owner, _ = _message(tx, room, message_id)
        cur = tx.conn.execute(
            "DELETE FROM reactions WHERE message_id = ? AND author = ? AND emoji = ?",
            (message_id, author, emoji),
        )
        if cur.rowcount == 0:
            raise NotFound(f"{author!r} has no {emoji} reaction on message {message_id}")
        fields = {"author": author, "message_id": message_id, "emoji": emoji}
        fields["message_author"] = owner
        return tx.append(room, "reaction.removed", fields)

    return op


def post_activity(room: str, fields: dict[str, Any], *, create_room: bool) -> WriteOp[Event]:
    def op(tx: Tx) -> Event:
        tx.ensure_room(room, create=create_room)
        return tx.append(room, "activity", fields)

    return op


def event_json(op: WriteOp[Event]) -> WriteOp[bytes]:
    """The JSON of the one event ``op`` appends: the answer to a POST."""
    return lambda tx: op(tx).json


def batch(
    kind: str,
    ops: list[WriteOp[Event]],
    finish: Callable[[Tx, list[Event]], None] | None = None,
) -> WriteOp[bytes]:
    """Every operation or none (one savepoint), consecutive ids in the given order; answers
    ``{"events": [...]}``. A failing item's error names its index (``details[].loc``).
    ``finish`` runs after the last item, inside the same savepoint."""

    def op(tx: Tx) -> bytes:
        events = []
        for index, item in enumerate(ops):
            try:
                events.append(item(tx))
            except ChatError as error:
                raise in_batch(error, kind, index) from None
        if finish is not None:
            finish(tx, events)
        return b'{"events":[' + b",".join(e.json for e in events) + b"]}"

    return op


def mark_read(room: str, user: str, last_read_id: int) -> WriteOp[int]:
    """Move the user's read marker forward (never backwards), never past the room's newest
    event: an id beyond it stores the newest event's id (0 in a room without events), so a
    marker cannot silence the messages still to come. Read in the same transaction as the
    write, so it is exact. Returns the marker as stored. A marker stored past the newest event
    before this rule is brought back to it by the user's next one."""

    def op(tx: Tx) -> int:
        tx.ensure_room(room, create=False)
        (newest,) = tx.conn.execute(
            "SELECT coalesce(max(id), 0) FROM events WHERE room = ?", (room,)
        ).fetchone()
        [(marker,)] = tx.conn.execute(
            'INSERT INTO read_markers ("user", room, last_read_id, updated_at) '
            "VALUES (?, ?, ?, ?) "
            'ON CONFLICT ("user", room) DO UPDATE SET last_read_id = CASE '
            "WHEN read_markers.last_read_id > ? THEN ? "  # stored too high before the clamp
            "WHEN read_markers.last_read_id > excluded.last_read_id "
            "THEN read_markers.last_read_id ELSE excluded.last_read_id END, "
            "updated_at = excluded.updated_at "
            "RETURNING last_read_id",
            (user, room, min(last_read_id, newest), tx.now, newest, newest),
        ).fetchall()
        return int(marker)

    return op


def idempotent(
    room: str, key: str | None, fingerprint: str, op: WriteOp[bytes]
) -> WriteOp[tuple[bytes, bool]]:
    """Run ``op`` (which returns the response body) once per (room, key): returns (the body,
    replayed). A retry with the same key and the same request returns the first answer and
    appends nothing; the same key with a different request is 409."""

    def run(tx: Tx) -> tuple[bytes, bool]:
        if key is None:
            return op(tx), False
        row = tx.conn.execute(
            "SELECT fingerprint, response FROM idempotency_keys WHERE room = ? AND key = ?",
            (room, key),
        ).fetchone()
        if row is not None:
            if row[0] != fingerprint:
                raise Conflict("this Idempotency-Key was used for a different request in this room")
            return bytes(row[1]), True
        body = op(tx)
        tx.conn.execute(
            "INSERT INTO idempotency_keys (room, key, fingerprint, response, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (room, key, fingerprint, body, tx.now),
        )
        return body, False

    return run


def probe(tx: Tx) -> None:
    """A write that changes no value but rewrites a row, so that it needs what any write
    needs (a writable file, room on the disk): ``/readyz`` asks it while the database takes
    no writes, to see whether it does again. (An UPDATE that matches no row needs no room:
    a full disk would have passed it.) The newest migration's record is always there."""
    tx.conn.execute(
        "UPDATE schema_migrations SET name = name "
        "WHERE version = (SELECT max(version) FROM schema_migrations)"
    )


def purge_idempotency_keys(older_than: str) -> WriteOp[int]:
    """Forget keys created before ``older_than`` (an RFC 3339 time); returns how many."""

    def op(tx: Tx) -> int:
        cur = tx.conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (older_than,))
        return int(cur.rowcount)

    return op


def fingerprint(method: str, path: str, body: Any) -> str:
    """What identifies a request for idempotency: method, path and the validated body."""
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()
