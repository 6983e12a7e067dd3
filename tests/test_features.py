"""Chat features as a client sees them, against a live server: the REST answer, what a live
stream receives, and what a stream resumed with Last-Event-ID replays. Edits, deletes,
replies, reactions, activity, mentions, search, idempotent posts, read markers, ephemeral
events."""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest

from tests.live import LiveServer, SSEEvent, SSEStream, open_stream

Json = dict[str, Any]
EPHEMERAL = {"typing", "presence"}


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def err(response: httpx.Response, status: int, code: str) -> set[str]:
    """Asserts the error envelope; returns the fields its ``details`` name."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return {str(d.get("field")) for d in error["details"]}


def event(body: Json, kind: str, room: str, **fields: Any) -> Json:
    """Asserts an event has exactly these fields, besides created_at (and a stored one's id)."""
    own = {"created_at": body["created_at"]} | ({} if kind in EPHEMERAL else {"id": body["id"]})
    assert body == {"type": kind, "room": room, **fields, **own}
    return body


async def until(stream: SSEStream, last_id: int, timeout_s: float = 10.0) -> list[Json]:
    """Every event the stream receives up to and including the one with id ``last_id``; each
    frame's ``id:`` and ``event:`` lines agree with its JSON."""
    got: list[SSEEvent] = []
    async with asyncio.timeout(timeout_s):
        while not got or got[-1].id != str(last_id):
            got.append(await stream.next(timeout_s))
    for e in got:
        assert (e.event, e.id) == (e.json()["type"], str(e.json().get("id", "")) or None)
    return [e.json() for e in got]


class Room:
    """One room as a client sees it over REST and SSE."""

    def __init__(self, client: httpx.AsyncClient, name: str) -> None:
        self.c, self.name, self.url = client, name, f"/api/rooms/{name}"

    def msg(self, message_id: int, tail: str = "") -> str:
        return f"{self.url}/messages/{message_id}{tail}"

    async def post(self, text: str, author: str = "alice", **extra: Any) -> Json:
        body = {"author": author, "text": text, **extra}
        return ok(await self.c.post(f"{self.url}/messages", json=body), 201)

    async def act(self, actor: str = "ci", verb: str = "built", obj: str = "main") -> Json:
        body = {"actor": actor, "verb": verb, "object": obj}
        return ok(await self.c.post(f"{self.url}/activity", json=body), 201)

    async def call(self, method: str, url: str, body: Json, status: int = 200) -> Json:
        return ok(await self.c.request(method, url, json=body), status)

    async def history(self) -> list[Json]:
        messages: list[Json] = ok(await self.c.get(f"{self.url}/messages"))["messages"]
        return messages

    async def search(self, q: str, **params: int) -> tuple[list[int], bool]:
        body = ok(await self.c.get(f"{self.url}/messages", params={"q": q, **params}))
        return [m["id"] for m in body["messages"]], body["has_more"]

    def stream(
        self, params: Mapping[str, str] | None = None, after: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[SSEStream]:
        resume = {"Last-Event-ID": str(after)} if after is not None else None
        return open_stream(self.c, f"{self.url}/events", params=params, headers=resume)

    async def replayed(self, after: int) -> list[Json]:
        """What a stream resuming after ``after`` replays, up to a marker posted once it is
        open: nothing is missed and nothing extra slips in."""
        async with self.stream(after=after) as stream:
            marker = await self.post("marker", author="marker")
            got = await until(stream, marker["id"])
        assert got.pop() == marker
        return got


@pytest.fixture
async def r(client: httpx.AsyncClient, room: str) -> AsyncIterator[Room]:
    yield Room(client, room)


# -- 1. edits and deletes ------------------------------------------------------------------
async def test_edit_and_delete_answer_stream_and_replay(r: Room) -> None:
    async with r.stream() as stream:
        mine, kept = await r.post("first draft"), await r.post("kept", author="bob")
        edited = await r.call("PATCH", r.msg(mine["id"]), {"author": "alice", "text": "final"})
        event(edited, "message.edited", r.name, author="alice", message_id=mine["id"], text="final")
        shown = await r.history()
        assert [m["text"] for m in shown] == ["final", "kept"] and "edited_at" not in shown[1]
        assert shown[0]["edited_at"] >= shown[0]["created_at"] == mine["created_at"]
        deleted = await r.call("DELETE", r.msg(mine["id"]), {"author": "alice"})
        event(deleted, "message.deleted", r.name, author="alice", message_id=mine["id"])
        assert [m["id"] for m in await r.history()] == [kept["id"]]
        assert await until(stream, deleted["id"]) == [mine, kept, edited, deleted]
    assert await r.replayed(kept["id"]) == [edited, deleted]


async def test_refused_edits_and_deletes_change_nothing(r: Room) -> None:
    mine, gone = await r.post("mine"), await r.post("to delete")
    await r.call("DELETE", r.msg(gone["id"]), {"author": "alice"})
    elsewhere = await Room(r.c, f"{r.name}-x").post("another room's")
    before, shown = ok(await r.c.get(r.url))["last_event_id"], await r.history()
    for message_id, author, status, code in [
        (mine["id"], "mallory", 403, "forbidden"),
        (gone["id"], "alice", 404, "not_found"),
        (elsewhere["id"], "alice", 404, "not_found"),
        (999_999_999, "alice", 404, "not_found"),
    ]:
        body = {"author": author, "text": "changed"}
        err(await r.c.patch(r.msg(message_id), json=body), status, code)
        err(await r.c.request("DELETE", r.msg(message_id), json=body), status, code)
    assert ok(await r.c.get(r.url))["last_event_id"] == before
    assert await r.history() == shown
    assert await r.replayed(before) == []


# -- 2. replies ----------------------------------------------------------------------------
async def test_replies(r: Room) -> None:
    parent, activity = await r.post("question?"), await r.act()
    elsewhere = await Room(r.c, f"{r.name}-x").post("other room")
    async with r.stream() as stream:
        reply = await r.post("answer", author="bob", reply_to=parent["id"])
        fields = {"author": "bob", "text": "answer", "reply_to": parent["id"]}
        event(reply, "message", r.name, **fields, reply_to_author=parent["author"])
        assert await until(stream, reply["id"]) == [reply]
    for bad in (elsewhere["id"], activity["id"], 999_999_999, 0):
        body = {"author": "bob", "text": "x", "reply_to": bad}
        response = await r.c.post(f"{r.url}/messages", json=body)
        assert err(response, 422, "validation_error") == {"reply_to"}, bad
    shown = [(m["id"], m.get("reply_to")) for m in await r.history()]
    assert shown == [(parent["id"], None), (reply["id"], parent["id"])]
    assert "reply_to_deleted" not in (await r.history())[-1]
    await r.call("DELETE", r.msg(parent["id"]), {"author": parent["author"]})
    (kept,) = await r.history()  # the reply, which says its message was deleted since
    assert (kept["id"], kept["reply_to_deleted"]) == (reply["id"], True)


# -- 3. reactions --------------------------------------------------------------------------
async def test_reactions_answer_stream_history_and_replay(r: Room) -> None:
    target, plain = await r.post("react to me"), await r.post("no reactions")
    tid, url = target["id"], r.msg(target["id"], "/reactions")
    async with r.stream() as stream:
        added = []
        for who, emoji in [("alice", "👍"), ("bob", "👍"), ("bob", "🎉"), ("carol", "👍")]:
            body = await r.call("POST", url, {"author": who, "emoji": emoji}, 201)
            added.append(body)
            fields = {"author": who, "message_id": tid, "emoji": emoji}
            event(body, "reaction.added", r.name, **fields, message_author=target["author"])
        err(await r.c.post(url, json={"author": "bob", "emoji": "🎉"}), 409, "conflict")
        removed = await r.call("DELETE", url, {"author": "carol", "emoji": "👍"})
        fields = {"author": "carol", "message_id": tid, "emoji": "👍"}
        event(removed, "reaction.removed", r.name, **fields, message_author=target["author"])
        for emoji in ("👍", "🎉"):  # gone already, never there
            again = await r.c.request("DELETE", url, json={"author": "carol", "emoji": emoji})
            err(again, 404, "not_found")
        assert await until(stream, removed["id"]) == [*added, removed]
    shown = {m["id"]: m["reactions"] for m in await r.history()}
    reactions = {emoji: sorted(who) for emoji, who in shown[target["id"]].items()}
    assert reactions == {"👍": ["alice", "bob"], "🎉": ["bob"]} and shown[plain["id"]] == {}
    assert await r.replayed(plain["id"]) == [*added, removed]


async def react_status(r: Room, message_id: int, emoji: str) -> int:
    body = {"author": "alice", "emoji": emoji}
    return (await r.c.post(r.msg(message_id, "/reactions"), json=body)).status_code


async def test_reaction_emoji_validation_and_deleted_messages(r: Room) -> None:
    target = (await r.post("react to me"))["id"]
    accepted = ["👍", "👍🏽", "👨\u200d👩\u200d👧", ":thumbsup:", "🇺🇸", "1\ufe0f\u20e3"]
    assert [await react_status(r, target, e) for e in accepted] == [201] * len(accepted)
    look_alike = "👍\u200d"  # a joiner that joins nothing: another reaction that looks alike
    for emoji in ["a", "hello", "👍👍", " ", "", "1", "é", "\u200d", ":no spaces:", look_alike]:
        response = await r.c.post(r.msg(target, "/reactions"), json={"author": "a", "emoji": emoji})
        assert err(response, 422, "validation_error") == {"emoji"}, emoji
    assert set((await r.history())[0]["reactions"]) == set(accepted)
    await r.call("DELETE", r.msg(target), {"author": "alice"})
    assert await react_status(r, target, "🎉") == 404
    body = {"author": "alice", "emoji": "👍"}
    err(await r.c.request("DELETE", r.msg(target, "/reactions"), json=body), 404, "not_found")


async def test_a_letter_with_a_combining_mark_is_no_emoji(r: Room) -> None:
    target = (await r.post("react to me"))["id"]
    statuses = [await react_status(r, target, e) for e in ("e\u0301", "a\u200d", "x\ufe0f")]
    assert statuses == [422, 422, 422]


# -- 4. activity ---------------------------------------------------------------------------
async def test_activity_fields_stream_and_replay(r: Room) -> None:
    data = {"sha": "abc123", "ok": True, "steps": [1, 2], "none": None, "n": {"x": 1.5}}
    full_in = {"actor": "ci", "verb": "built", "object": "main #412", "summary": "ok", "data": data}
    bare_in = {"actor": "deploy", "verb": "shipped", "object": "v1.2"}
    async with r.stream() as stream:
        full = await r.call("POST", f"{r.url}/activity", full_in, 201)
        bare = await r.call("POST", f"{r.url}/activity", bare_in, 201)
        assert await until(stream, bare["id"]) == [full, bare]
    event(full, "activity", r.name, **full_in)
    event(bare, "activity", r.name, **bare_in)  # the optional fields absent
    assert await r.replayed(full["id"] - 1) == [full, bare]


async def test_activity_filters_live_and_replayed(r: Room) -> None:
    seed = await r.post("before")
    filters = [{"types": "activity"}, {"authors": "ci"}, {"exclude_authors": "ci"}]
    async with (
        r.stream(filters[0]) as acts,
        r.stream(filters[1]) as by_ci,
        r.stream(filters[2]) as not_ci,
    ):
        a1, ci_message = await r.act("ci"), await r.post("a message by ci", author="ci")
        a2, a3 = await r.act("bot"), await r.act("ci", "tested")
        m2 = await r.post("by bob", author="bob")
        expected = [[a1, a2, a3], [a1, ci_message, a3], [a2, m2]]
        for stream, want in zip((acts, by_ci, not_ci), expected, strict=True):
            assert await until(stream, want[-1]["id"]) == want
    for params, want in zip(filters, expected, strict=True):  # resumed, by the same filter
        async with r.stream(params, after=seed["id"]) as stream:
            assert await until(stream, want[-1]["id"]) == want


async def test_global_feed_follows_every_room(r: Room) -> None:
    old, new = Room(r.c, f"{r.name}-old"), Room(r.c, f"{r.name}-new")
    await old.act()
    err(await r.c.get(new.url), 404, "not_found")  # created only after the feed opens
    async with open_stream(r.c, "/api/events", params={"rooms": "*"}) as feed:
        posted = [await old.act(), await new.post("first"), await new.act(), await r.post("x")]
        got = await until(feed, posted[-1]["id"])
    assert [e for e in got if e["room"].startswith(r.name)] == posted


async def test_activity_validation(r: Room) -> None:
    good: Json = {"actor": "ci", "verb": "built", "object": "main"}
    cases = [({k: v for k, v in good.items() if k != gone}, gone) for gone in good]
    cases += [({**good, "data": bad}, "data") for bad in ([1, 2], "text", 3, True)]
    cases += [({**good, "verb": " "}, "verb"), ({**good, "summary": 5}, "summary")]
    for body, field in cases:
        response = await r.c.post(f"{r.url}/activity", json=body)
        assert err(response, 422, "validation_error") == {field}, body
    err(await r.c.get(r.url), 404, "not_found")  # nothing was created


# -- 5. mentions ---------------------------------------------------------------------------
async def test_mentions_feed_across_rooms(r: Room) -> None:
    a, b = Room(r.c, f"{r.name}-a"), Room(r.c, f"{r.name}-b")
    params = {"rooms": "*", "mentions": "alice"}
    async with open_stream(r.c, "/api/events", params=params) as feed:
        wanted = [await a.post("hi @alice", author="bob")]
        noise = [(a, "hi @alicex"), (b, "mail bob@alice.com"), (b, "bob@alice or x@alice")]
        for where, text in [*noise, (b, "alice, no at"), (a, "@bob"), (a, "@alice-bob")]:
            await where.post(text, author="bob")
        await a.act("bot", "pinged", "@alice")
        wanted += [await b.post("@alice, see this", author="bob"), await a.post("thanks @alice.")]
        got = await until(feed, wanted[-1]["id"])
    assert [e for e in got if e["room"].startswith(r.name)] == wanted


# -- 6. search -----------------------------------------------------------------------------
async def test_search_words_prefix_order_and_paging(r: Room) -> None:
    texts = ["hello world", "nothing here", "say hello again", "help wanted", "Hello there"]
    hello_world, _, say_hello, help_wanted, hello_there = [(await r.post(t))["id"] for t in texts]
    await Room(r.c, f"{r.name}-x").post("hello from another room")
    # ascending by id, as every page of messages (API.md); no cursor: the newest matches
    assert await r.search("hello") == ([hello_world, say_hello, hello_there], False)
    assert await r.search("hel") == ([hello_world, say_hello, help_wanted, hello_there], False)
    assert await r.search("hello wor") == ([hello_world], False)
    assert await r.search("again hello") == ([say_hello], False)
    assert await r.search("zebra") == ([], False)
    assert await r.search("hel", limit=2) == ([help_wanted, hello_there], True)
    assert await r.search("hel", limit=2, before=help_wanted) == ([hello_world, say_hello], False)
    assert await r.search("hel", limit=1, before=say_hello) == ([hello_world], False)
    assert await r.search("hel", limit=2, after=hello_world) == ([say_hello, help_wanted], True)
    assert await r.search("hel", after=help_wanted) == ([hello_there], False)


async def test_search_follows_edits_and_deletes(r: Room) -> None:
    fox, doomed = (await r.post("the quick fox"))["id"], (await r.post("quick deletion"))["id"]
    assert await r.search("quick") == ([fox, doomed], False)
    await r.call("PATCH", r.msg(fox), {"author": "alice", "text": "the slow turtle"})
    assert await r.search("quick") == ([doomed], False)
    assert await r.search("fox") == ([], False)
    assert await r.search("slow turtle") == ([fox], False)
    await r.call("DELETE", r.msg(doomed), {"author": "alice"})
    for q in ("quick", "deletion", "quick deletion", "del"):
        assert await r.search(q) == ([], False), q


async def test_search_with_fts_syntax_never_fails(r: Room) -> None:
    target = (await r.post('x-ray AND (test) "quoted" star* col:umn'))["id"]
    odd = [*"\"()*-^+{}':\\", "AND", "OR", "NOT", "a AND", "AND OR NOT", "NEAR(a b)", "x OR y"]
    odd += ['"open', "col:", "a*b", "-x", "a:b:c", "  ", "x -y", '"a b" OR c', "*a", "a NOT b"]
    for q in odd:
        response = await r.c.get(f"{r.url}/messages", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        assert set(response.json()) == {"messages", "has_more"}
    for q in ("x-ray", "(test)", '"quoted"', "AND", "star*", "col:umn"):
        assert await r.search(q) == ([target], False), q


async def test_search_with_a_nul_character_is_no_server_error(r: Room) -> None:
    target = (await r.post("hello there"))["id"]
    for q, found in (("\x00", []), ("hel\x00", [target]), ("hello\x00there", [target])):
        response = await r.c.get(f"{r.url}/messages", params={"q": q})
        if response.status_code == 200:  # the NUL read as a word break
            assert [m["id"] for m in response.json()["messages"]] == found, q
        else:  # or refused as a bad query parameter
            err(response, 400, "invalid_query")


async def test_search_takes_the_query_in_the_form_the_text_is_stored_in(r: Room) -> None:
    """Defects a probe found, fixed: the query was not NFC-normalised while every stored text
    is, so a decomposed "café" (typed on some keyboards, or pasted) found nothing on
    PostgreSQL and a decomposed Hangul word on neither store; and a no-break or ideographic
    space (a Japanese keyboard's) in the query was 400 "control characters". Such a space
    separates words, as U+0020 does."""
    cafe = (await r.post("caf\u00e9 au lait"))["id"]
    korean = (await r.post("\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"))["id"]
    hello = (await r.post("hello there"))["id"]
    for q, found in (
        (unicodedata.normalize("NFD", "caf\u00e9"), cafe),
        (unicodedata.normalize("NFD", "\ud55c\uad6d\uc5b4"), korean),
        ("hello\u00a0there", hello),
        ("hello\u3000there", hello),
        ("hello\u2003the", hello),
    ):
        assert await r.search(q) == ([found], False), q


# -- 7. idempotent posts -------------------------------------------------------------------
async def twice(c: httpx.AsyncClient, url: str, body: Json, key: str) -> httpx.Response:
    """Post, then retry with the same key: 201, then 200 replayed with the same bytes."""
    first = await c.post(url, json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers, first.text
    again = await c.post(url, json=body, headers={"Idempotency-Key": key})
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true")
    assert again.content == first.content
    return first


async def test_idempotent_posts_broadcast_once(r: Room) -> None:
    target = await r.post("react")
    cases = [
        (f"{r.url}/messages", {"author": "alice", "text": "once"}, {"text": "other"}),
        (f"{r.url}/activity", {"actor": "ci", "verb": "built", "object": "x"}, {"verb": "b"}),
        (r.msg(target["id"], "/reactions"), {"author": "bob", "emoji": "👍"}, {"emoji": "🎉"}),
    ]
    async with r.stream() as stream:
        firsts = []
        for n, (url, body, change) in enumerate(cases):
            firsts.append((await twice(r.c, url, body, f"key-{n}")).json())
            key = {"Idempotency-Key": f"key-{n}"}
            err(await r.c.post(url, json={**body, **change}, headers=key), 409, "conflict")
        racing = {"author": "bob", "text": "racing"}, {"Idempotency-Key": "race"}
        raced = await asyncio.gather(
            *(r.c.post(cases[0][0], json=racing[0], headers=racing[1]) for _ in range(6))
        )  # retries in flight together: one is the post, the others its replays
        assert sorted(x.status_code for x in raced) == [200] * 5 + [201]
        assert len({x.content for x in raced}) == 1
        firsts.append(raced[0].json())
        other = f"{r.name}-b"  # the same key in another room is another key
        again = await twice(r.c, f"/api/rooms/{other}/messages", cases[0][1], "key-0")
        assert again.json()["room"] == other
        marker = await r.post("marker")
        assert await until(stream, marker["id"]) == [*firsts, marker]  # each once
    shown = await r.history()
    assert [m["id"] for m in shown] == [
        target["id"],
        firsts[0]["id"],
        firsts[3]["id"],
        marker["id"],
    ]
    assert shown[0]["reactions"] == {"👍": ["bob"]}


async def test_idempotency_keys_survive_a_restart(make_server: Callable[..., LiveServer]) -> None:
    live = make_server()
    body, url = {"author": "alice", "text": "durable"}, "/api/rooms/r/messages"
    key = {"Idempotency-Key": "restart-key"}
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        first = await twice(c, url, body, "restart-key")
    assert live.terminate() == 0
    live.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        again = await c.post(url, json=body, headers=key)
        assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true")
        assert again.content == first.content
        err(await c.post(url, json={**body, "text": "x"}, headers=key), 409, "conflict")
        assert [m["id"] for m in await Room(c, "r").history()] == [first.json()["id"]]


# -- 8. read markers and unread ------------------------------------------------------------
async def test_read_markers_and_unread(r: Room) -> None:
    user, a, b = f"reader-{r.name}"[:64], Room(r.c, f"{r.name}-a"), Room(r.c, f"{r.name}-b")
    ids_a = [(await a.post(f"a{i}"))["id"] for i in range(5)]
    ids_b = [(await b.post(f"b{i}"))["id"] for i in range(3)]

    async def mark(where: Room, last_read_id: int) -> httpx.Response:
        body = {"user": user, "last_read_id": last_read_id}
        return await r.c.put(f"{where.url}/read", json=body)

    async def unread() -> Json:
        rooms: Json = ok(await r.c.get(f"/api/users/{user}/unread"))["rooms"]
        return rooms

    assert await unread() == {}
    for where, last in ((a, ids_a[1]), (b, ids_b[0]), (a, ids_a[0])):  # the last one: backwards
        response = await mark(where, last)
        assert (response.status_code, response.content) == (204, b""), response.text
    assert await unread() == {a.name: 3, b.name: 2}
    await a.call("DELETE", a.msg(ids_a[3]), {"author": "alice"})
    await a.act()  # not a message
    assert await unread() == {a.name: 2, b.name: 2}
    await a.post("my own, from another device", author=user)  # read by its author
    assert await unread() == {a.name: 2, b.name: 2}
    newest = await a.post("new")
    assert await unread() == {a.name: 3, b.name: 2}
    # The newest event id the counts include, so a client can merge what its stream delivered.
    body = ok(await r.c.get(f"/api/users/{user}/unread"))
    assert body["last_id"] == newest["id"]
    stranger = f"nobody-{r.name}"[:64]
    nobody = ok(await r.c.get(f"/api/users/{stranger}/unread"))
    assert nobody == {"rooms": {}, "last_id": newest["id"]}
    await mark(a, ids_a[-1])
    await mark(b, ids_b[-1])
    assert await unread() == {a.name: 1, b.name: 0}
    await mark(a, newest["id"])
    err(await mark(Room(r.c, f"{r.name}-nope"), 1), 404, "not_found")
    assert await unread() == {a.name: 0, b.name: 0}


# -- 9. ephemeral events -------------------------------------------------------------------
async def test_ephemeral_events_carry_no_id_and_are_not_replayed(r: Room) -> None:
    seed = await r.post("seed")
    async with r.stream() as observer:
        m1 = await r.post("one")
        assert (await r.c.post(f"{r.url}/typing", json={"user": "bob"})).status_code == 202
        async with r.stream({"user": "carol"}):
            m2 = await r.post("two")
            got = await until(observer, m2["id"])  # checks: no id line, no "id" in the JSON
    typing = event(got[1], "typing", r.name, user="bob")
    presence = event(got[2], "presence", r.name, user="carol", state="join")
    assert got == [m1, typing, presence, m2]
    assert await r.replayed(seed["id"]) == [m1, m2]


async def test_activity_history_pages_backwards(client: httpx.AsyncClient, room: str) -> None:
    posted = []
    for i in range(5):
        body = {"actor": "ci", "verb": "built", "object": f"#{i}"}
        response = await client.post(f"/api/rooms/{room}/activity", json=body)
        assert response.status_code == 201
        posted.append(response.json())
    await client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": "not activity"})
    newest = (await client.get(f"/api/rooms/{room}/activity", params={"limit": 3})).json()
    assert newest == {"items": posted[2:], "has_more": True}
    older = await client.get(
        f"/api/rooms/{room}/activity", params={"limit": 3, "before": posted[2]["id"]}
    )
    assert older.json() == {"items": posted[:2], "has_more": False}
    missing = await client.get(f"/api/rooms/{room}-none/activity")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_a_last_word_shorter_than_three_characters_is_matched_whole(r: Room) -> None:
    """Search as you type starts at three characters: a shorter last word is a whole word (a
    one-letter prefix would scan most of the index)."""
    a, apple, ab, abc = [(await r.post(t))["id"] for t in ("a b", "apple", "ab", "abc abd")]
    assert await r.search("a") == ([a], False)
    assert await r.search("ab") == ([ab], False)
    assert await r.search("abc") == ([abc], False)
    assert await r.search("app") == ([apple], False)
    assert await r.search("apple a") == ([], False)
    assert await r.search("b a") == ([a], False)
