"""Paging of GET /api/rooms on a live server, on both stores: `after` and `limit`, `has_more`
and `next`, every room once and in order, bad input, private rooms left out without short
pages, the old shape kept; and the statement's plan on SQLite (an index, never a scan)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.config import Settings
from chat.store import Store
from chat.store.reads import ONLY_IN_SQL_MAX, rooms_page
from tests.access_helpers import Seed, bearer
from tests.live import LiveServer
from tests.test_rooms import assert_room

PAGE_FIELDS = {"rooms", "has_more", "next"}


async def make_rooms(
    client: httpx.AsyncClient, names: Iterable[str], body: dict[str, Any] | None = None
) -> None:
    """PUT each room (201), a few at a time."""
    gate = asyncio.Semaphore(8)

    async def one(name: str) -> None:
        async with gate:
            answer = await client.put(f"/api/rooms/{name}", json=body or {})
            assert answer.status_code == 201, answer.text

    async with asyncio.timeout(120):
        await asyncio.gather(*(one(name) for name in names))


async def get_page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    async with asyncio.timeout(20):
        answer = await client.get("/api/rooms", params=params)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    assert set(page) == PAGE_FIELDS, page
    names = [room["name"] for room in page["rooms"]]
    assert names == sorted(names) and len(set(names)) == len(names)
    if page["has_more"]:
        assert isinstance(page["next"], str)
        if names:  # the last room's name, or past it when the rooms read after it were hidden
            assert page["next"] >= names[-1]
    else:
        assert page["next"] is None
    return page


async def walk(client: httpx.AsyncClient, limit: int | None, after: str | None = None) -> list[Any]:
    """Every page from ``after`` on, following ``next`` until ``has_more`` is false."""
    pages: list[Any] = []
    while True:
        params: dict[str, Any] = {} if limit is None else {"limit": limit}
        if after is not None:
            params["after"] = after
        page = await get_page(client, **params)
        pages.append(page)
        if not page["has_more"]:
            return pages
        assert len(pages) < 1000, "paging does not end"
        after = page["next"]


def names_of(pages: list[Any]) -> list[str]:
    return [room["name"] for page in pages for room in page["rooms"]]


async def test_paging_through_450_rooms_gives_every_room_once_in_order(
    client: httpx.AsyncClient, room: str
) -> None:
    mine = [f"{room}-{i:03d}" for i in range(450)]
    await make_rooms(client, reversed(mine))
    posted = {}
    async with asyncio.timeout(30):
        for name in (mine[0], mine[199], mine[200], mine[449]):
            answer = await client.post(
                f"/api/rooms/{name}/messages", json={"author": "a", "text": "hi"}
            )
            assert answer.status_code == 201, answer.text
            posted[name] = answer.json()["id"]

    for limit in (100, 7, 1000, None):
        pages = await walk(client, limit)
        listed = names_of(pages)
        assert listed == sorted(set(listed))  # each room once, in order
        assert [name for name in listed if name.startswith(f"{room}-")] == mine
        size = 200 if limit is None else limit
        assert all(len(page["rooms"]) == size for page in pages[:-1])  # no short page
        assert len(pages[-1]["rooms"]) <= size

    pages = await walk(client, 100, after=mine[149])  # a room name as the cursor
    assert names_of(pages)[:3] == mine[150:153]
    between = await walk(client, 50, after=f"{room}-149x")  # any name will do: no such room
    assert names_of(between)[0] == mine[150]

    by_name = {r["name"]: r for page in await walk(client, 1000) for r in page["rooms"]}
    for name in mine:
        assert_room(by_name[name], name)
        assert by_name[name]["last_event_id"] == posted.get(name, 0)


async def test_the_old_shape_is_still_there(client: httpx.AsyncClient, room: str) -> None:
    """A client that knows nothing of paging gets `rooms` sorted by name (the first page);
    the first pages of the default size hold them all."""
    mine = [f"{room}-b", f"{room}-a", f"{room}.c"]
    await make_rooms(client, mine, {"title": "t"})
    async with asyncio.timeout(20):
        answer = await client.get("/api/rooms")
    assert answer.status_code == 200, answer.text
    rooms = answer.json()["rooms"]
    assert 3 <= len(rooms) <= 200
    for entry in rooms:
        assert_room(entry, entry["name"])
    assert [r["name"] for r in rooms] == sorted(r["name"] for r in rooms)
    listed = names_of(await walk(client, None))
    assert [name for name in listed if name.startswith(room)] == sorted(mine)


async def test_limit_bounds(client: httpx.AsyncClient, room: str) -> None:
    await make_rooms(client, [f"{room}-{i}" for i in range(3)])
    one = await get_page(client, limit=1, after=room)
    assert [r["name"] for r in one["rooms"]] == [f"{room}-0"]
    assert one["has_more"] is True and one["next"] == f"{room}-0"
    two = await get_page(client, limit=2, after=one["next"])
    assert [r["name"] for r in two["rooms"]] == [f"{room}-1", f"{room}-2"]
    most = await get_page(client, limit=1000, after=room)
    assert [r["name"] for r in most["rooms"]][:3] == [f"{room}-{i}" for i in range(3)]
    assert len(most["rooms"]) <= 1000
    end = await get_page(client, after="zzzz")  # nothing after it
    assert end == {"rooms": [], "has_more": False, "next": None}


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=2.5",
        "after=",
        "after=Upper",
        "after=-dash-first",
        "after=a%20b",
        "after=" + "x" * 65,
        "after=a%00",
    ],
)
async def test_bad_after_or_limit_is_400_invalid_query(
    client: httpx.AsyncClient, query: str
) -> None:
    async with asyncio.timeout(20):
        answer = await client.get(f"/api/rooms?{query}")
    assert answer.status_code == 400, (query, answer.text)
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == "invalid_query"
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list) and error["details"]


async def test_private_rooms_are_left_out_without_short_pages(
    make_server: Callable[..., LiveServer],
) -> None:
    """alice owns 30 public and 60 private rooms, interleaved by name; bob is a member of
    every third private room. Pages of 7 are full for each of them, hold only what each may
    see, and never name a room of others, also not as `next`."""
    live = make_server(CHAT_AUTH="required")
    async with Seed(live.database) as seed:
        tokens = {name: await seed.token(name) for name in ("alice", "bob", "carl")}
        tokens["root"] = await seed.token("root", role="admin")
    public = [f"r{i:02d}-b-public" for i in range(30)]
    private = [f"r{i:02d}-{part}-secret" for i in range(30) for part in ("a", "c")]
    bobs = private[::3]
    for_bob = sorted(public + bobs)

    def client(who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=live.url, timeout=10, headers=bearer(tokens[who]))

    async with client("alice") as alice:
        await make_rooms(alice, public)
        await make_rooms(alice, private, {"private": True})
        async with asyncio.timeout(60):
            for name in bobs:
                added = await alice.put(f"/api/rooms/{name}/members/bob", json={})
                assert added.status_code == 201, added.text
        pages = await walk(alice, 7)
        assert names_of(pages) == sorted(public + private)

    expected = {"bob": for_bob, "carl": public, "root": sorted(public + private)}
    for who, visible in expected.items():
        async with client(who) as viewer:
            pages = await walk(viewer, 7)
        assert names_of(pages) == visible, who
        assert all(len(page["rooms"]) == 7 for page in pages[:-1]), who
        hidden = set(private) - set(visible)
        for page in pages:
            assert page["next"] not in hidden
            assert all(r["private"] == (r["name"] in private) for r in page["rooms"])

    # bob removed from a room: it leaves his list at once
    async with client("alice") as alice:
        async with asyncio.timeout(20):
            gone = await alice.delete(f"/api/rooms/{bobs[0]}/members/bob")
        assert gone.status_code == 204
    async with client("bob") as bob:
        assert names_of(await walk(bob, 7)) == [n for n in for_bob if n != bobs[0]]


async def test_a_token_scoped_to_rooms_pages_through_its_rooms_only(
    make_server: Callable[..., LiveServer],
) -> None:
    """A room scope too long for the statement (more than ONLY_IN_SQL_MAX names) is applied
    after it: the page reads the store again until it is full, a bounded number of times; the
    walk still gives each room of the scope once, in order, and ends."""
    live = make_server(CHAT_AUTH="required")
    names = [f"s{i:03d}" for i in range(120)]
    scoped = names[::9]  # sparse: most rooms the statement reads are out of scope
    scope = scoped + [f"gone-{i}" for i in range(ONLY_IN_SQL_MAX)]
    small = names[5:9]
    async with Seed(live.database) as seed:
        owner = await seed.token("alice")
        wide = await seed.token("bob", rooms=scope)
        narrow = await seed.token("bob", rooms=small)
    async with httpx.AsyncClient(base_url=live.url, timeout=10, headers=bearer(owner)) as alice:
        await make_rooms(alice, names)
    for token, expected in ((wide, scoped), (narrow, small)):
        async with httpx.AsyncClient(base_url=live.url, timeout=10, headers=bearer(token)) as c:
            for limit in (1, 2, 5, 200):
                pages = await walk(c, limit)
                assert names_of(pages) == expected, limit
    async with httpx.AsyncClient(base_url=live.url, timeout=10, headers=bearer(narrow)) as c:
        pages = await walk(c, 1)
        assert all(len(page["rooms"]) == 1 for page in pages[:-1])


def plan(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]


async def test_the_statement_reads_a_key_range_and_one_index_entry_a_room(tmp_path: Path) -> None:
    """On SQLite: the rooms by their primary key (`name > ?`), each room's newest event from
    the events (room, id) index, members by their key; no scan, no sort."""
    path = tmp_path / "chat.db"
    store = Store(Settings(database=str(path)), lambda events: None)
    async with asyncio.timeout(20):
        await store.open()
        await store.close()
    db = sqlite3.connect(path)
    try:
        for args in (
            ("", 200, None, False, None),
            ("a", 200, "bob", False, None),
            ("a", 200, None, True, None),
            ("a", 5, "bob", False, frozenset({"a1", "b2"})),
        ):
            after, limit, member, every_private, only = args
            steps = plan(db, *rooms_page(after, limit, member, every_private, only))
            text = "\n".join(steps)
            assert not any(step.startswith("SCAN") for step in steps), text
            assert "TEMP B-TREE" not in text, text
            assert "SEARCH r USING PRIMARY KEY (name" in text, text
            assert "SEARCH e USING COVERING INDEX events_room_id (room=?)" in text, text
            if args[2] is not None:
                assert "SEARCH m USING PRIMARY KEY (room=? AND user=?)" in text, text
        assert "SEARCH r USING PRIMARY KEY (name>?)" in "\n".join(plan(db, *rooms_page("a", 5)))
    finally:
        db.close()
