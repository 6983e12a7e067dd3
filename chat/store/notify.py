"""The notification feeds in the store: each batch's notices (chat/notifications.py) become
groups in the same transaction as their events, so every process and every restart sees the
same feeds; and the reads of a feed. The tables are migrations/*/0005_notifications.sql.

A group's row holds what a page shows (its three newest actors, the counts, the newest event)
and each user's ``notification_marks`` row the read mark and the exact number of unread
groups, kept by the writer: a feed's first page, its unread count and a stream's replay cost
the same however long the feed is (bench/notifications.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from chat.notifications import Notice, newest_actors, summary

if TYPE_CHECKING:
    from chat.store.tx import Tx, WriteOp

GROUP_ROW = (
    'INSERT INTO notifications ("user", key, id, kind, room, message_id, emoji, verb, object, '
    "actors, actor_count, count, first_at, latest_at, latest_event_id) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
ACTOR_ROW = 'INSERT INTO notification_actors ("user", key, actor) VALUES (?,?,?)'
# A group by its key: through the index of the groups that grow (mention groups never do)
BY_KEY = "\"user\" = ? AND key = ? AND kind <> 'mention'"
GROUP_COLUMNS = (
    "id, kind, room, message_id, emoji, verb, object, actors, actor_count, count, first_at, "
    "latest_at, latest_event_id"
)


def record(tx: Tx) -> None:
    """Turn the batch's notices into groups, in event order, at the end of the batch (after
    its rows are written): a user who may not read the room (a private room they are not a
    member of, as of this commit) is not notified."""
    pending = tx.notices
    if not pending:
        return
    tx.notices = []
    tx.flush()
    conn = tx.conn
    readers: dict[tuple[str, str], bool] = {}
    unread: dict[str, int] = {}
    for event_id, room, created_at, n in pending:
        if not _may_read(tx, readers, room, n.user):
            continue
        actors = orjson.dumps([n.actor]).decode()
        if n.kind == "mention":  # a group of its own message: always new, never grows
            tx.insert(GROUP_ROW, _group_row(n, event_id, room, created_at, actors))
            unread[n.user] = unread.get(n.user, 0) + 1
            continue
        row = conn.execute(
            "SELECT latest_event_id, actors, (SELECT read_until FROM notification_marks "
            f'WHERE "user" = ?) FROM notifications WHERE {BY_KEY}',
            (n.user, n.user, n.key),
        ).fetchone()
        if row is None:
            tx.insert(GROUP_ROW, _group_row(n, event_id, room, created_at, actors))
            tx.insert(ACTOR_ROW, (n.user, n.key, n.actor))
            unread[n.user] = unread.get(n.user, 0) + 1
            continue
        fresh = conn.execute(
            ACTOR_ROW + " ON CONFLICT DO NOTHING", (n.user, n.key, n.actor)
        ).rowcount
        shown = newest_actors(orjson.loads(row[1]), n.actor)
        conn.execute(
            "UPDATE notifications SET actors = ?, actor_count = actor_count + ?, "
            f"count = count + 1, latest_at = ?, latest_event_id = ? WHERE {BY_KEY}",
            (orjson.dumps(shown).decode(), 1 if fresh else 0, created_at, event_id, n.user, n.key),
        )
        if row[0] <= (row[2] or 0):  # it was read: unread again
            unread[n.user] = unread.get(n.user, 0) + 1
    tx.flush()
    for user, more in unread.items():
        conn.execute(
            'INSERT INTO notification_marks ("user", read_until, unread) VALUES (?, 0, ?) '
            'ON CONFLICT ("user") DO UPDATE SET unread = notification_marks.unread + ?',
            (user, more, more),
        )


def _group_row(n: Notice, event_id: int, room: str, at: str, actors: str) -> tuple[Any, ...]:
    return (
        n.user,
        n.key,
        event_id,
        n.kind,
        room,
        n.message_id,
        n.emoji,
        n.verb,
        n.object,
        actors,
        1,
        1,
        at,
        at,
        event_id,
    )


def _may_read(tx: Tx, known: dict[tuple[str, str], bool], room: str, user: str) -> bool:
    """Whether ``user`` may read ``room`` as of this commit (asked after the batch's
    operations, not from ``Tx.may_write``'s answers of earlier in the batch: a member removed
    meanwhile reads no more). A public room is remembered once seen: privacy never changes."""
    if room in tx.db.public_rooms:
        return True
    found = known.get((room, user))
    if found is None:
        seen = tx.room_access(room, user)
        if seen == "public":
            tx.public.add(room)
        found = known[(room, user)] = seen != "closed"
    return found


def forget_room(tx: Tx, user: str, room: str) -> None:
    """``user`` left (or was removed from) the private ``room``: its groups leave their feed,
    and the unread count loses those that were unread."""
    tx.flush()
    conn = tx.conn
    (gone,) = conn.execute(
        'SELECT count(*) FROM notifications WHERE "user" = ? AND room = ? AND latest_event_id > '
        'coalesce((SELECT read_until FROM notification_marks WHERE "user" = ?), 0)',
        (user, room, user),
    ).fetchone()
    conn.execute(
        'DELETE FROM notification_actors WHERE "user" = ? AND key IN '
        '(SELECT key FROM notifications WHERE "user" = ? AND room = ?)',
        (user, user, room),
    )
    conn.execute('DELETE FROM notifications WHERE "user" = ? AND room = ?', (user, room))
    if gone:
        conn.execute(
            'UPDATE notification_marks SET unread = unread - ? WHERE "user" = ?', (gone, user)
        )


def mark_read(user: str, until: int) -> WriteOp[tuple[int, int]]:
    """The write operation: groups with ``latest_event_id`` up to ``until`` become read (the
    mark never moves back, nor past the newest event committed before this batch: the
    batch's own events have no groups yet, they are recorded at its end). Returns
    (read_until, unread)."""

    def op(tx: Tx) -> tuple[int, int]:
        conn = tx.conn
        newest = tx.committed_id
        row = conn.execute(
            'SELECT read_until, unread FROM notification_marks WHERE "user" = ?', (user,)
        ).fetchone()
        mark, count = (int(row[0]), int(row[1])) if row is not None else (0, 0)
        target = min(until, int(newest))
        if target <= mark:
            return mark, count
        (passed,) = conn.execute(
            'SELECT count(*) FROM notifications WHERE "user" = ? AND latest_event_id > ? '
            "AND latest_event_id <= ?",
            (user, mark, target),
        ).fetchone()
        count = max(count - int(passed), 0)
        conn.execute(
            'INSERT INTO notification_marks ("user", read_until, unread) VALUES (?, ?, ?) '
            'ON CONFLICT ("user") DO UPDATE SET read_until = excluded.read_until, '
            "unread = excluded.unread",
            (user, target, count),
        )
        return target, count

    return op


def group(row: Sequence[Any], read_until: int) -> dict[str, Any]:
    """A group as the API shows it, from a row of GROUP_COLUMNS."""
    found: dict[str, Any] = {"id": int(row[0]), "kind": row[1], "room": row[2]}
    for name, value in (("message_id", row[3]), ("emoji", row[4]), ("verb", row[5])):
        if value is not None:
            found[name] = int(value) if name == "message_id" else value
    if row[6] is not None:
        found["object"] = row[6]
    latest = int(row[12])
    found.update(
        actors=orjson.loads(row[7]),
        actor_count=int(row[8]),
        count=int(row[9]),
        first_at=row[10],
        latest_at=row[11],
        latest_event_id=latest,
        unread=latest > read_until,
    )
    found["summary"] = summary(found)
    return found


class NotificationReads:
    """The reads of the feeds; ``Reads._rows`` runs them. ``hidden``: rooms whose groups the
    asker may not be shown (chat/access.py decides which)."""

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def notifications(
        self, user: str, *, before: int | None, limit: int, hidden: Sequence[str] = ()
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the user's feed, newest ``latest_event_id`` first, and whether older
        groups remain."""
        where, params = _feed_where(user, hidden)
        if before is not None:
            where += " AND latest_event_id < ?"
            params.append(before)
        rows = await self._rows(
            f"SELECT {GROUP_COLUMNS}, (SELECT read_until FROM notification_marks "
            f'WHERE "user" = ?) FROM notifications WHERE {where} '
            "ORDER BY latest_event_id DESC LIMIT ?",
            (user, *params, limit + 1),
        )
        return [group(row, int(row[13] or 0)) for row in rows[:limit]], len(rows) > limit

    async def notifications_unread(self, user: str, hidden: Sequence[str] = ()) -> int:
        """How many of the user's groups are unread (one row; counted when rooms are hidden)."""
        if not hidden:
            rows = await self._rows(
                'SELECT unread FROM notification_marks WHERE "user" = ?', (user,)
            )
            return int(rows[0][0]) if rows else 0
        where, params = _feed_where(user, hidden)
        rows = await self._rows(
            f"SELECT count(*) FROM notifications WHERE {where} AND latest_event_id > "
            'coalesce((SELECT read_until FROM notification_marks WHERE "user" = ?), 0)',
            (*params, user),
        )
        return int(rows[0][0])

    async def notifications_after(
        self, user: str, after: int, limit: int, hidden: Sequence[str] = ()
    ) -> list[tuple[int, dict[str, Any]]]:
        """(latest_event_id, group) of the groups updated after ``after``, oldest first: a
        notification stream's replay."""
        where, params = _feed_where(user, hidden)
        rows = await self._rows(
            f"SELECT {GROUP_COLUMNS}, (SELECT read_until FROM notification_marks "
            f'WHERE "user" = ?) FROM notifications WHERE {where} AND latest_event_id > ? '
            "ORDER BY latest_event_id LIMIT ?",
            (user, *params, after, limit),
        )
        return [(int(row[12]), group(row, int(row[13] or 0))) for row in rows]

    async def count_notifications_after(self, user: str, after: int, cap: int) -> int:
        rows = await self._rows(
            "SELECT count(*) FROM (SELECT 1 FROM notifications "
            'WHERE "user" = ? AND latest_event_id > ? LIMIT ?) AS found',
            (user, after, cap),
        )
        return int(rows[0][0])


def _feed_where(user: str, hidden: Sequence[str]) -> tuple[str, list[Any]]:
    where, params = '"user" = ?', [user]
    if hidden:
        where += f" AND room NOT IN ({','.join('?' * len(hidden))})"
        params.extend(hidden)
    return where, params
