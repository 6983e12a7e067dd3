"""What the store answers without writing: rooms, history, activity, unread counts, replay.

Every read is one statement, through the store's ``ReadDb`` (chat/store/sqlite_reads.py,
chat/store/postgres_reads.py); it sees the last committed state and waits for no writer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

import orjson

from chat.errors import Unavailable
from chat.events import Event, event_from_json
from chat.store.account_reads import ACCESS_TYPES, AccountReads
from chat.store.dialect import ReadDb
from chat.store.notify import NotificationReads


class Reads(AccountReads, NotificationReads):
    """The reading half of ``Store``; the store opens and closes ``_read``."""

    _read: ReadDb | None = None

    def _db(self) -> ReadDb:
        if self._read is None:
            raise Unavailable("the store is not open")
        return self._read

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return await self._db().rows(sql, params)

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    async def pruned_through(self) -> int:
        """The newest event id retention may have deleted (0: none; chat/store/retention.py)."""
        rows = await self._rows(f"SELECT {_PRUNED}")
        return int(rows[0][0]) if rows else 0

    async def latest_id(self) -> int:
        rows = await self._rows(self._db().latest_id)
        return int(rows[0][0]) if rows else 0

    async def resume_bounds(self) -> tuple[int, int]:
        """(``latest_id``, ``pruned_through``) in one read: where a resume may start from."""
        sql = f"SELECT ({self._db().latest_id}), {_PRUNED}"
        rows = await self._rows(sql)
        return (int(rows[0][0] or 0), int(rows[0][1])) if rows else (0, 0)

    async def get_room(self, name: str) -> dict[str, Any] | None:
        rows = await self._rows(_ROOM_SQL + " WHERE r.name = ?", (name,))
        return _room(rows[0]) if rows else None

    async def list_rooms(
        self,
        after: str,
        limit: int,
        *,
        member: str | None = None,
        every_private: bool = False,
        only: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` rooms whose names sort after ``after`` ("": from the first), by
        name, each with its newest event id: the public rooms and, of the private ones, those
        ``member`` is a member of (``every_private``: all of them); with ``only``, just rooms
        of those names. A range of the rooms' primary key, one index probe a room for its
        newest event (``rooms_page``)."""
        if only is not None and not only:
            return []
        sql, params = rooms_page(after, limit, member, every_private, only)
        return [_room(row) for row in await self._rows(sql, params)]

    async def history(
        self,
        room: str,
        *,
        before: int | None,
        after: int | None,
        limit: int,
        q: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Messages of a room, edits applied, deleted ones left out, each with its reactions.
        Ascending by id, and ``has_more`` says whether more lie beyond the page (older ones
        without ``after``, newer ones with it). With ``q`` (full-text search): the matching
        messages alone, paged the same way (API.md: ascending by id; the index is walked
        newest first, docs/design/store.md)."""
        where, params = "m.room = ? AND m.deleted_at IS NULL", [cast(Any, room)]
        source, order = "messages m", "m.id"
        if q is not None:
            db = self._db()
            source, order = db.matches, db.match_id
            where += " AND " + db.match
            params.append(db.search_query(q, room))
        if before is not None:
            where += f" AND {order} < ?"
            params.append(before)
        if after is not None:
            where += f" AND {order} > ?"
            params.append(after)
        ascending = after is not None
        rows = await self._rows(
            "SELECT m.id, m.room, m.author, m.text, m.reply_to, m.created_at, m.edited_at, "
            "(SELECT p.author FROM messages p WHERE p.id = m.reply_to), "
            "(SELECT p.deleted_at IS NOT NULL FROM messages p WHERE p.id = m.reply_to) "
            f"FROM {source} WHERE {where} ORDER BY {order} {'ASC' if ascending else 'DESC'} "
            "LIMIT ?",
            (*params, limit + 1),
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        if not ascending:
            rows.reverse()
        messages = [_message(row) for row in rows]
        orphans = [m for m in messages if "reply_to" in m and m["reply_to_author"] is None]
        if orphans:
            await self._add_pruned_reply_authors(orphans)
        await self._add_reactions(messages)
        return messages, has_more

    async def _add_pruned_reply_authors(self, replies: list[dict[str, Any]]) -> None:
        """Replies whose message retention deleted: the author their stored event names (the
        reply's event keeps it, as every stream got it)."""
        by_id = {m["id"]: m for m in replies}
        rows = await self._rows(
            f"SELECT data FROM events WHERE id IN ({','.join('?' * len(by_id))})", tuple(by_id)
        )
        for event in _events(rows):
            if event.id in by_id:
                by_id[event.id]["reply_to_author"] = event.payload.get("reply_to_author")

    async def _add_reactions(self, messages: list[dict[str, Any]]) -> None:
        by_id = {m["id"]: m for m in messages}
        for message in messages:
            message["reactions"] = {}
        if not by_id:
            return
        rows = await self._rows(
            "SELECT message_id, emoji, author FROM reactions "
            f"WHERE message_id IN ({','.join('?' * len(by_id))}) "
            "ORDER BY created_at, author COLLATE BINARY",
            tuple(by_id),
        )
        for message_id, emoji, author in rows:
            by_id[message_id]["reactions"].setdefault(emoji, []).append(author)

    async def activity(
        self, room: str, *, before: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Activity items of a room: the newest page (or the page just older than
        ``before``), ascending by id, and whether older ones exist."""
        where, params = "room = ? AND type = 'activity'", [cast(Any, room)]
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        rows = await self._rows(
            f"SELECT data FROM events WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit + 1)
        )
        has_more = len(rows) > limit
        items = [orjson.loads(row[0]) for row in reversed(rows[:limit])]
        return items, has_more

    async def unread(self, user: str) -> tuple[dict[str, int], int]:
        """For each room the user has a read marker in: messages of others after it (not
        deleted; what its author wrote, elsewhere too, it has read).

        Also the newest stored event id, read in the same statement (so the same snapshot):
        a client that counted events from its stream meanwhile adds only those after it.
        """
        rows = await self._rows(
            "SELECT top.id, r.room, (SELECT count(*) FROM messages m WHERE m.room = r.room "
            'AND m.id > r.last_read_id AND m.deleted_at IS NULL AND m.author <> r."user") '
            "FROM (SELECT coalesce(max(id), 0) AS id FROM events) top "
            'LEFT JOIN read_markers r ON r."user" = ? ORDER BY r.room COLLATE BINARY',
            (user,),
        )
        rooms = {row[1]: int(row[2]) for row in rows if row[1] is not None}
        return rooms, int(rows[0][0])

    async def events_after(
        self, rooms: tuple[str, ...] | None, after: int, limit: int, user: str | None = None
    ) -> list[Event]:
        """Stored events with id > ``after`` in these rooms (None: all rooms), by id; with
        ``user``, also that user's access events of other rooms (chat/registry.py). Streams
        resuming from the same point at once may get the same list (``ReadDb.read``): it is
        not to be changed."""
        where, params = _rooms_clause(rooms)
        if user is not None and rooms is not None:
            where = f"({where.removesuffix(' AND')} OR ({ACCESS_OF_USER})) AND"
            params = (*params, user)
        return await self._db().read(
            f"SELECT data FROM events WHERE {where} id > ? ORDER BY id LIMIT ?",
            (*params, after, limit),
            _events,
        )

    async def count_after(self, rooms: tuple[str, ...] | None, after: int, cap: int) -> int:
        """How many stored events follow ``after`` in these rooms, counting at most ``cap``."""
        where, params = _rooms_clause(rooms)
        rows = await self._rows(
            f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {where} id > ? LIMIT ?) AS found",
            (*params, after, cap),
        )
        return int(rows[0][0])


# The newest event id retention may have deleted (chat/store/retention.py), as a subquery.
_PRUNED = "(SELECT coalesce(max(pruned_through), 0) FROM retention)"

# A room's newest event id: the last entry of its range of the events (room, id) index, one
# probe however many events the room holds (ORDER BY ... LIMIT 1 rather than max(): both
# stores walk the index backwards and stop at the first entry).
_ROOM_SQL = (
    "SELECT r.name, r.title, r.created_at, "
    "(SELECT e.id FROM events e WHERE e.room = r.name ORDER BY e.id DESC LIMIT 1), r.private "
    "FROM rooms r"
)
# Longer lists of names than this are left to the caller to filter (a room scope of a token).
ONLY_IN_SQL_MAX = 500


def rooms_page(
    after: str,
    limit: int,
    member: str | None = None,
    every_private: bool = False,
    only: Collection[str] | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The statement of ``Reads.list_rooms`` and its parameters (the same SQL on both stores):
    ``name > ? ORDER BY name LIMIT ?`` on the rooms' primary key (in byte order on both
    stores: ``COLLATE BINARY``, PostgreSQL's "C" by its own index, migration 0008), private
    rooms the reader may not see left out in the statement already."""
    where, params = "r.name COLLATE BINARY > ?", [cast(Any, after)]
    if not every_private:
        if member is None:
            where += " AND r.private = 0"
        else:
            where += (
                " AND (r.private = 0 OR EXISTS (SELECT 1 FROM members m "
                'WHERE m.room = r.name AND m."user" = ?))'
            )
            params.append(member)
    if only is not None and len(only) <= ONLY_IN_SQL_MAX:
        names = sorted(only)
        where += f" AND r.name IN ({','.join('?' * len(names))})"
        params.extend(names)
    return f"{_ROOM_SQL} WHERE {where} ORDER BY r.name COLLATE BINARY LIMIT ?", (*params, limit)


def _room(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "name": row[0],
        "title": row[1],
        "created_at": row[2],
        "last_event_id": row[3] or 0,
        "private": bool(row[4]),
    }


def _message(row: Sequence[Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": row[0],
        "type": "message",
        "room": row[1],
        "created_at": row[5],
        "author": row[2],
        "text": row[3],
    }
    if row[4] is not None:
        message["reply_to"] = row[4]
        message["reply_to_author"] = row[7]
        if row[8] or row[8] is None:  # the message it answers was deleted, or pruned (no row)
            message["reply_to_deleted"] = True
    if row[6] is not None:
        message["edited_at"] = row[6]
    return message


ACCESS_OF_USER = f"author = ? AND {ACCESS_TYPES}"


def _rooms_clause(rooms: tuple[str, ...] | None) -> tuple[str, tuple[str, ...]]:
    if rooms is None:
        return "", ()
    return f"room IN ({','.join('?' * len(rooms))}) AND", rooms


def _events(rows: Sequence[Sequence[Any]]) -> list[Event]:
    return [event_from_json(row[0]) for row in rows]
