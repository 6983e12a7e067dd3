"""Search by room (issue 17, migrations/0006, chat/store/search.py): the full-text index holds
each message's room as one token, and a search reads only the room's matches, walking the
index newest first to its page (which it answers ascending by id, as every page).

What a user sees: a search answers the messages of its own room only, whatever the rooms'
names look like as words; edits and deletions keep the index right; a database made before
migration 0006 keeps every message findable after it; and synthetic history
(chat/store/fill.py) reads back as the service itself would have stored it."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from chat.config import Settings
from chat.migrations import apply_pending
from chat.store import Store, fill, writes

WAIT_S = 30.0
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


async def post(store: Store, room: str, author: str, text: str) -> int:
    event = await store.write(writes.post_message(room, author, text, None, create_room=True))
    assert event.id is not None
    return event.id


async def found(store: Store, room: str, q: str, **cursor: int) -> list[int]:
    page, _ = await store.history(
        room, before=cursor.get("before"), after=cursor.get("after"), limit=50, q=q
    )
    return [m["id"] for m in page]


@pytest.fixture
async def store(database: str) -> Store:
    """A new store, on each store in turn."""
    s = Store(Settings(database=database), lambda events: None)
    async with asyncio.timeout(WAIT_S):
        await s.open()
    yield s  # type: ignore[misc]
    async with asyncio.timeout(WAIT_S):
        await s.close()


async def test_a_search_answers_its_own_rooms_messages_only(store: Store) -> None:
    """Rooms whose names are the same words to the tokenizer ("team-a", "team.a", "team_a"
    is not a room name, "a-team") do not see each other's matches; nor does a room whose
    name is a word of the text."""
    async with asyncio.timeout(WAIT_S):
        ids = {
            room: [await post(store, room, "ann", f"deploy notes {n} {room}") for n in range(3)]
            for room in ("team-a", "team.a", "a-team", "notes", "deploy")
        }
        for room, mine in ids.items():
            assert await found(store, room, "deploy notes") == mine, room
            assert await found(store, room, "deploy not") == mine, room  # a prefix
            assert await found(store, room, "team") == (mine if "team" in room else [])
        # a room's token is not a word a text can match
        assert await found(store, "notes", "r6E6F746573") == []


async def test_edits_and_deletions_keep_the_index_right(store: Store) -> None:
    async with asyncio.timeout(WAIT_S):
        first = await post(store, "r", "ann", "lunch at noon")
        second = await post(store, "r", "ann", "lunch at one")
        await store.write(writes.edit_message("r", first, "ann", "coffee at noon"))
        await store.write(writes.delete_message("r", second, "ann"))
        assert await found(store, "r", "lunch") == []
        assert await found(store, "r", "coffee") == [first]
        assert await found(store, "r", "noon") == [first]


async def test_search_pages_by_id_as_history_does(store: Store) -> None:
    """The newest matches first, each page ascending by id (API.md), ``before`` paging to
    older ones and ``after`` to newer ones."""
    async with asyncio.timeout(WAIT_S):
        ids = [await post(store, "r", "ann", f"standup {n}") for n in range(120)]
        await post(store, "other", "ann", "standup elsewhere")
        page, more = await store.history("r", before=None, after=None, limit=50, q="standup")
        assert [m["id"] for m in page] == ids[70:] and more
        older = await found(store, "r", "standup", before=page[0]["id"])
        assert older == ids[20:70]
        assert await found(store, "r", "standup", before=ids[5]) == ids[:5]
        assert await found(store, "r", "standup", after=ids[9]) == ids[10:60]
        assert await found(store, "r", "standup", after=ids[100]) == ids[101:]


def test_a_database_made_before_migration_0006_keeps_every_message_findable(
    tmp_path: Path,
) -> None:
    """Messages stored (and edited, and deleted) under migrations 0001-0005 are in the index
    that 0006 builds, each under its room."""
    old = tmp_path / "old-migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS.glob("000[1-5]_*.sql")):
        shutil.copy(path, old / path.name)
    database = tmp_path / "chat.db"
    conn = sqlite3.connect(database, isolation_level=None)
    apply_pending(conn, old)
    now = "2026-12-03T10:00:00.000Z"
    rows = [(1, "a", "ann", "alpha one"), (2, "b", "bob", "alpha two"), (3, "a", "ann", "gone")]
    for id_, room, author, text in rows:
        conn.execute("INSERT OR IGNORE INTO rooms VALUES (?, ?, ?, 0)", (room, room, now))
        conn.execute(
            "INSERT INTO events (id, room, type, author, created_at, data) "
            "VALUES (?, ?, 'message', ?, ?, '{}')",
            (id_, room, author, now),
        )
        conn.execute(
            "INSERT INTO messages (id, room, author, text, created_at) VALUES (?, ?, ?, ?, ?)",
            (id_, room, author, text, now),
        )
        conn.execute("INSERT INTO messages_fts (rowid, text) VALUES (?, ?)", (id_, text))
    conn.execute("UPDATE messages SET deleted_at = ? WHERE id = 3", (now,))
    conn.close()

    async def check() -> None:
        store = Store(Settings(database=str(database)), lambda events: None)
        async with asyncio.timeout(WAIT_S):
            await store.open()  # applies 0006
            try:
                assert await found(store, "a", "alpha") == [1]
                assert await found(store, "b", "alpha") == [2]
                assert await found(store, "a", "gone") == []
                new = await post(store, "a", "ann", "alpha three")
                assert await found(store, "a", "alpha") == [1, new]
            finally:
                await store.close()

    asyncio.run(check())


async def test_synthetic_history_reads_back_as_the_service_stores_it(store: Store) -> None:
    """Two fills, one after another: ids go on, each room's history holds what the mix says
    (replies with their parent's author, edits applied, deletions left out, reactions), each
    event's JSON is byte for byte what the service writes (compact, in its key order), a
    stream's replay gives the same events, and a search finds the rare word. On both stores:
    the same SQL, in each one's dialect (chat/store/fill.py)."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    async with asyncio.timeout(WAIT_S):
        a = await store.write(fill.fill(400, rooms=30, users=50, start=start, step_s=1.0))
        b = await store.write(fill.fill(100, rooms=30, users=50, start=start, step_s=1.0))
        assert a == (1, 400) and b == (401, 500)
        events = await store.events_after(None, 0, 1000)
        assert [e.id for e in events] == list(range(1, 501))
        assert [e.json for e in events] == [orjson.dumps(e.payload) for e in events]
        assert await store.latest_id() == 500  # the next write goes on from there
        kinds = [e.type for e in events]
        assert kinds.count("message") == 25 * 16 - 3  # 3 of 25 blocks delete instead
        assert kinds.count("reaction.added") == 50 and kinds.count("activity") == 25
        assert kinds.count("message.edited") == 25 and kinds.count("message.deleted") == 3
        assert events[0].payload["created_at"] == "2026-01-01T00:00:00.000Z"
        assert events[499].payload["created_at"] == "2026-01-01T00:08:19.000Z"

        room = events[0].room
        history, _ = await store.history(room, before=None, after=None, limit=200)
        by_id = {m["id"]: m for m in history}
        first = by_id[1]  # the first block's first message
        assert first["text"].startswith(fill.COMMON_WORD + " ") and fill.RARE_WORD in first["text"]
        assert first["reactions"] == {":tada:": [events[13].payload["author"]]}
        assert by_id[4]["reply_to"] == 1 and by_id[4]["reply_to_author"] == first["author"]
        assert by_id[5]["text"].endswith(" (edited)") and "edited_at" in by_id[5]
        assert 7 not in by_id  # deleted by the first block's 17th event
        edit = events[15].payload
        assert edit["type"] == "message.edited" and edit["author"] == by_id[5]["author"]
        assert await found(store, room, fill.RARE_WORD) == [1]
        mention = events[5].payload["text"]
        assert "@user" in mention
