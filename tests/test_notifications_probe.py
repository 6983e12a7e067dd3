"""Probes of the notification feeds (API.md, "Notifications"; ACCESS.md): leaks of private
rooms through every notification path, the unread count against the feed, bad input on the
new endpoints, stream ids, and the mention rule. Tests that fail show a defect (see each
docstring); the others are regression tests of what held."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.access_helpers import Seed, bearer
from tests.live import LiveServer, SSEStream, open_stream
from tests.notify_helpers import Json, feed, fresh, ok, post, read_until, unread


@pytest.fixture(scope="module")
def store_kind() -> str:
    """SQLite only: the probes are about the service's rules, and the machine is small."""
    return "sqlite"


async def consistent(client: httpx.AsyncClient, user: str) -> tuple[int, int]:
    """(the unread count, the unread groups of the whole feed)."""
    groups: list[Json] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if before is not None:
            params["before"] = before
        page = await feed(client, user, **params)
        groups += page["groups"]
        if not page["has_more"]:
            break
        before = page["groups"][-1]["latest_event_id"]
    return await unread(client, user), sum(1 for g in groups if g["unread"])


async def next_of(stream: SSEStream, kind: str, timeout_s: float = 5.0) -> Json:
    """The next event of this type (presence and the like skipped)."""
    async with asyncio.timeout(timeout_s):
        while True:
            got = await stream.next(timeout_s)
            if got.event == kind:
                assert got.id is None or kind != "notify"
                return got.json()  # type: ignore[no-any-return]


@pytest.fixture
async def people(
    make_server: Callable[..., LiveServer],
) -> AsyncIterator[tuple[LiveServer, dict[str, str]]]:
    """A server in CHAT_AUTH=open (guests beside accounts) and tokens."""
    live = make_server()
    async with Seed(live.database) as seed:
        tokens = {name: await seed.token(name) for name in ("alice", "bob", "dana")}
        tokens["root"] = await seed.token("root", role="admin")
        tokens["dana-lobby"] = await seed.token("dana", rooms=["lobby"])
    yield live, tokens


def as_(live: LiveServer, token: str | None = None) -> httpx.AsyncClient:
    headers = bearer(token) if token else {}
    return httpx.AsyncClient(base_url=live.url, timeout=10, headers=headers)


# -- private rooms through the notification paths -------------------------------------------


async def test_a_guest_feed_stream_opened_before_an_invitation_never_shows_the_private_room(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect the probe found, fixed: A guest may follow a name's feed stream when that name is
    in no private room (the check is made once, at opening); the stream's reads
    (``notifications_after``) hide nothing, so when the name is then invited to a private room,
    the guest receives the ``membership`` group naming the private room (and every later group
    of it)."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live) as guest:
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        async with open_stream(guest, "/api/users/bob/notifications/events") as stream:
            ok(await alice.put("/api/rooms/hush", json={"private": True}), 201)
            ok(await alice.put("/api/rooms/hush/members/bob", json={}), 201)
            ok(await alice.post("/api/rooms/hush/messages", json={"text": "@bob in hush"}), 201)
            public = ok(await alice.post("/api/rooms/lobby/messages", json={"text": "@bob"}), 201)
            got = await next_of(stream, "notification")
            assert got["room"] == "lobby", f"the guest was shown {got}"
            assert got["latest_event_id"] == public["id"]
        # the pages, for comparison, hide it
        assert "hush" not in (await guest.get("/api/users/bob/notifications")).text


async def test_a_guest_notify_hint_never_names_a_private_room(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect the probe found, fixed: A guest's room stream with ``notify=1&user=bob`` receives
    the hint of bob's invitation to a private room: ``{"type": "notify", "room": "<private
    room>", "kind": "membership"}``. chat/registry.py ``_notify`` lets every ``member.added``
    through (``invited``) without asking whether the stream's identity may read the room: a
    guest never may."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live) as guest:
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        params = {"user": "bob", "notify": "1"}
        async with open_stream(guest, "/api/rooms/lobby/events", params=params) as stream:
            ok(await alice.put("/api/rooms/hush2", json={"private": True}), 201)
            ok(await alice.put("/api/rooms/hush2/members/bob", json={}), 201)
            ok(await alice.post("/api/rooms/hush2/messages", json={"text": "@bob here"}), 201)
            public = ok(await alice.post("/api/rooms/lobby/messages", json={"text": "@bob"}), 201)
            hint = await next_of(stream, "notify")
            assert hint["room"] == "lobby", f"the guest was told of {hint}"
            assert hint["event_id"] == public["id"]


async def test_a_guest_every_room_stream_with_notify_gets_no_private_hint(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect the probe found, fixed (the same cause on ``rooms=*``): the invitation's hint
    reaches the guest."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live) as guest:
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        params = {"rooms": "*", "user": "bob", "notify": "1", "types": "message"}
        async with open_stream(guest, "/api/events", params=params) as stream:
            ok(await alice.put("/api/rooms/hush3", json={"private": True}), 201)
            ok(await alice.put("/api/rooms/hush3/members/bob", json={}), 201)
            public = ok(await alice.post("/api/rooms/lobby/messages", json={"text": "@bob"}), 201)
            hint = await next_of(stream, "notify")
            assert hint["room"] == "lobby", f"the guest was told of {hint}"
            assert hint["event_id"] == public["id"]


async def test_a_scoped_credential_gets_no_hint_from_rooms_outside_its_scope(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect the probe found, fixed: A credential scoped to ``lobby`` reads no feed (403: "its
    feed would span every room"), yet its ``notify=1`` stream of ``lobby`` gets hints naming any
    room its user may read, private ones included: room names, kinds and event ids outside its
    scope. The registry checks ``reads`` (membership) but never ``identity.reaches``."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live, tokens["dana-lobby"]) as scoped:
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        ok(await alice.put("/api/rooms/vault", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/vault/members/dana", json={}), 201)
        assert (await scoped.get("/api/users/dana/notifications")).status_code == 403
        params = {"notify": "1"}
        async with asyncio.timeout(10):
            probe = await scoped.head("/api/rooms/lobby/events", params=params)
        if probe.status_code in (400, 403):
            return  # refusing notify=1 to a scoped credential would do too
        async with open_stream(scoped, "/api/rooms/lobby/events", params=params) as stream:
            ok(await alice.post("/api/rooms/vault/messages", json={"text": "@dana v"}), 201)
            ok(await alice.post("/api/rooms/elsewhere/messages", json={"text": "@dana"}), 201)
            mine = ok(await alice.post("/api/rooms/lobby/messages", json={"text": "@dana"}), 201)
            hint = await next_of(stream, "notify")
            assert hint["room"] == "lobby", f"a lobby-only credential was told of {hint}"
            assert hint["event_id"] == mine["id"]


async def test_an_admin_hint_only_for_what_notifies_the_admin(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect the probe found, fixed: "an admin is notified only from rooms they are a member of
    or that are public": the store records no group for a mention of the admin in a private room
    it is not a member of, but the admin's ``notify=1`` stream gets a hint for it (the
    registry's ``reads`` lets admins read every room): the bell refreshes for a group that is
    not there."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live, tokens["root"]) as root:
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        ok(await alice.put("/api/rooms/attic", json={"private": True}), 201)
        async with open_stream(root, "/api/rooms/lobby/events", params={"notify": "1"}) as stream:
            ok(await alice.post("/api/rooms/attic/messages", json={"text": "@root hi"}), 201)
            public = ok(await alice.post("/api/rooms/lobby/messages", json={"text": "@root"}), 201)
            hint = await next_of(stream, "notify")
            groups = (await feed(root, "root"))["groups"]
            assert [g["room"] for g in groups] == ["lobby"]
            assert hint["event_id"] == public["id"], f"a hint without a group: {hint}"


async def test_a_removed_member_open_streams_learn_nothing_more_and_a_reinvite_starts_fresh(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """Held: bob's feed stream and notify=1 stream, open across his removal from a private
    room, get nothing of it after the removal; his pages and count lose its groups; when he
    is invited again, only the new membership group appears (a new id)."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live, tokens["bob"]) as bob:
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        ok(await alice.put("/api/rooms/den", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/den/members/bob", json={}), 201)
        ok(await alice.post("/api/rooms/den/messages", json={"text": "@bob one"}), 201)
        first_id = (await feed(bob, "bob"))["groups"][-1]["id"]
        assert await unread(bob, "bob") == 2
        path = "/api/users/bob/notifications/events"
        params = {"notify": "1"}
        async with (
            open_stream(bob, path) as feed_stream,
            open_stream(bob, "/api/rooms/lobby/events", params=params) as room_stream,
        ):
            assert (await alice.delete("/api/rooms/den/members/bob")).status_code == 204
            ok(await alice.post("/api/rooms/den/messages", json={"text": "@bob two"}), 201)
            mine = ok(await bob.post("/api/rooms/lobby/messages", json={"text": "mine"}), 201)
            r = ok(
                await alice.post(
                    f"/api/rooms/lobby/messages/{mine['id']}/reactions", json={"emoji": "👍"}
                ),
                201,
            )
            got = await next_of(feed_stream, "notification")
            assert (got["room"], got["latest_event_id"]) == ("lobby", r["id"])
            hint = await next_of(room_stream, "notify")
            assert (hint["room"], hint["event_id"]) == ("lobby", r["id"])
        assert [g["room"] for g in (await feed(bob, "bob"))["groups"]] == ["lobby"]
        assert await consistent(bob, "bob") == (1, 1)
        # resume from before the removal: the den is not replayed
        async with open_stream(bob, path, headers={"Last-Event-ID": "0"}) as again:
            got = await next_of(again, "notification")
            assert got["room"] == "lobby"
        ok(await alice.put("/api/rooms/den/members/bob", json={}), 201)
        groups = (await feed(bob, "bob"))["groups"]
        assert [(g["kind"], g["room"]) for g in groups] == [
            ("membership", "den"),
            ("reaction", "lobby"),
        ]
        assert groups[0]["id"] == groups[0]["latest_event_id"] > first_id
        assert await consistent(bob, "bob") == (2, 2)


async def test_a_guest_and_a_guest_session_see_only_public_groups(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """Held: a guest (with or without a guest session) reading bob's pages, count and feed
    stream sees only public rooms; a guest session's notify=1 stream can only be for its own
    name."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live) as guest, as_(live) as session:
        ok(await alice.put("/api/rooms/crypt", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/crypt/members/bob", json={}), 201)
        ok(await alice.post("/api/rooms/crypt/messages", json={"text": "@bob"}), 201)
        ok(await alice.post("/api/rooms/square/messages", json={"text": "@bob"}), 201)
        ok(await session.post("/api/session", json={"user": "gus"}), 201)
        for who in (guest, session):
            assert "crypt" not in (await who.get("/api/users/bob/notifications")).text
            assert await unread(who, "bob") == 1
            path = "/api/users/bob/notifications/events"
            async with open_stream(who, path, headers={"Last-Event-ID": "0"}) as stream:
                first = await stream.next()
                assert (first.event, first.json()["room"]) == ("notification", "square")
                with pytest.raises(TimeoutError):
                    await stream.next(timeout_s=1)  # nothing of crypt follows
        answer = await session.get(
            "/api/rooms/square/events", params={"notify": "1", "user": "bob"}
        )
        assert answer.status_code == 403


async def test_a_guest_cannot_mark_an_accounts_feed_nor_learn_its_private_count(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect the probe found, fixed: ``PUT /api/users/bob/notifications/read`` by a guest (no
    credential) of an account's name: (1) its answer's ``unread`` is bob's whole count, private
    rooms included, while the guest's ``GET .../unread`` hides them (the route ignores
    ``hidden_rooms``); (2) it moves bob's read mark, over bob's private groups too: a guest
    writes under a name an account holds (ACCESS.md: a guest must not write under a reserved
    name; "public rooms only")."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live, tokens["bob"]) as bob:
        ok(await alice.put("/api/rooms/cellar", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/cellar/members/bob", json={}), 201)
        ok(await alice.post("/api/rooms/cellar/messages", json={"text": "@bob"}), 201)
        ok(await alice.post("/api/rooms/porch/messages", json={"text": "@bob"}), 201)
        assert await unread(bob, "bob") == 3
        async with as_(live) as guest:
            assert await unread(guest, "bob") == 1
            answer = await guest.put("/api/users/bob/notifications/read", json={"until": 0})
            shown = answer.json().get("unread") if answer.status_code == 200 else None
            answer = await guest.put("/api/users/bob/notifications/read", json={"until": 2**62})
            changed = answer.status_code == 200
        after = await unread(bob, "bob")
        assert (shown in (None, 1), after) == (True, 3), (
            f"a guest saw bob's whole count ({shown}) and brought it to {after}"
            if changed
            else shown
        )


async def test_a_guest_cannot_mark_the_feed_of_a_name_only_a_token_holds(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """A defect a probe found, fixed: a guest moved the read mark of a name that only a service
    token holds (a bot's: no account, no private room). The mark asked whether the name had an
    account; a guest's posts and room read markers refuse every name an account or a token
    holds (ACCESS.md), and so does the mark now."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live, tokens["dana"]) as dana:
        ok(await alice.post("/api/rooms/porch/messages", json={"text": "@dana hello"}), 201)
        assert await unread(dana, "dana") == 1
        async with as_(live) as guest:
            answer = await guest.put("/api/users/dana/notifications/read", json={"until": 2**62})
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["code"] == "forbidden"
            assert "belongs to an account or a token" in answer.json()["error"]["message"]
            assert await unread(guest, "dana") == 1
        assert await unread(dana, "dana") == 1
        # a name nobody holds stays the guests' to mark
        ok(await alice.post("/api/rooms/porch/messages", json={"text": "@nobody hello"}), 201)
        async with as_(live) as guest:
            assert await unread(guest, "nobody") == 1
            answer = await guest.put("/api/users/nobody/notifications/read", json={"until": 2**62})
            assert answer.status_code == 200, answer.text
            assert answer.json()["unread"] == 0


# -- the unread count against the feed ------------------------------------------------------


async def test_the_count_agrees_with_the_feed_when_marks_race_with_mentions(
    client: httpx.AsyncClient, room: str
) -> None:
    """A defect the probe found, fixed: A ``PUT .../notifications/read`` committed in the same
    write batch as a mention (concurrent requests share a transaction): ``mark_read`` clamps the
    mark to the newest event, which is already the mention's, but the mention's group is only
    written at the end of the batch (``notify.record``), so the mark passes it uncounted; then
    ``record`` adds it to the unread count although its ``latest_event_id`` is at or below the
    mark. The count says 1 or more, the feed shows every group read, for good."""
    bad = []
    for _ in range(8):
        bob = fresh("bob")
        jobs = []
        for n in range(12):
            jobs.append(
                client.post(
                    f"/api/rooms/{room}/messages", json={"author": "ann", "text": f"@{bob} {n}"}
                )
            )
            jobs.append(client.put(f"/api/users/{bob}/notifications/read", json={"until": 2**62}))
        async with asyncio.timeout(30):
            answers = await asyncio.gather(*jobs)
        assert all(a.status_code in (200, 201) for a in answers)
        count, groups = await consistent(client, bob)
        if count != groups:
            bad.append((bob, count, groups))
    assert bad == [], f"unread count != unread groups: {bad}"


async def test_reactions_added_removed_and_added_again_keep_count_and_feed_together(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    mine = await post(client, room, bob, "hello")
    url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
    for who in ("ann", "cy"):
        ok(await client.post(url, json={"author": who, "emoji": "🎉"}), 201)
    assert await consistent(client, bob) == (1, 1)
    state = await read_until(client, bob, 2**62)
    assert state["unread"] == 0
    async with asyncio.timeout(10):
        removed = await client.request("DELETE", url, json={"author": "ann", "emoji": "🎉"})
    assert removed.status_code == 200
    assert await consistent(client, bob) == (0, 0)  # a removal leaves the group as it was
    again = ok(await client.post(url, json={"author": "ann", "emoji": "🎉"}), 201)
    groups = (await feed(client, bob))["groups"]
    assert len(groups) == 1
    g = groups[0]
    assert (g["count"], g["actor_count"], g["actors"], g["latest_event_id"]) == (
        3,
        2,
        ["ann", "cy"],
        again["id"],
    )
    assert await consistent(client, bob) == (1, 1)


async def test_replies_and_mentions_in_batches_and_idempotent_replays(
    client: httpx.AsyncClient, room: str
) -> None:
    """Held: two replies to one message in one batch are one group (count 2); a reply that
    mentions its parent's author is a reply; an idempotent replay (same key) notifies once;
    a batch with a failing item notifies nobody."""
    bob, cy = fresh("bob"), fresh("cy")
    mine = await post(client, room, bob, "q")
    items = [
        {"author": "ann", "text": f"a @{bob} @{cy}", "reply_to": mine["id"]},
        {"author": "dee", "text": "b", "reply_to": mine["id"]},
        {"author": "ann", "text": f"@{cy} again"},
    ]
    url = f"/api/rooms/{room}/messages/batch"
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    async with asyncio.timeout(10):
        first = await client.post(url, json={"messages": items}, headers=headers)
        replay = await client.post(url, json={"messages": items}, headers=headers)
    assert first.status_code == 201, first.text
    assert replay.status_code == 200 and replay.headers.get("idempotent-replayed") == "true"
    groups = (await feed(client, bob))["groups"]
    assert [(g["kind"], g["count"], g["actor_count"]) for g in groups] == [("reply", 2, 2)]
    assert [g["kind"] for g in (await feed(client, cy))["groups"]] == ["mention", "mention"]
    assert await consistent(client, bob) == (1, 1)
    assert await consistent(client, cy) == (2, 2)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"author": "ann", "text": f"@{bob} once"}
    async with asyncio.timeout(10):
        for _ in range(3):
            answer = await client.post(f"/api/rooms/{room}/messages", json=body, headers=key)
            assert answer.status_code in (200, 201)
    assert await consistent(client, bob) == (2, 2)
    bad = [
        {"author": "ann", "text": f"@{bob} x"},
        {"author": "ann", "text": "y", "reply_to": 10**15},
    ]
    async with asyncio.timeout(10):
        assert (await client.post(url, json={"messages": bad})).status_code == 422
    assert await consistent(client, bob) == (2, 2)


async def test_activity_batches_group_per_verb_and_object(
    client: httpx.AsyncClient, room: str
) -> None:
    """Held: one activity batch naming bob twice for one verb and object is one group of 2."""
    bob = fresh("bob")
    items = [
        {"actor": "ci", "verb": "built", "object": f"@{bob} main"},
        {"actor": "cd", "verb": "built", "object": f"@{bob} main", "data": {"to": bob}},
        {"actor": "ci", "verb": "failed", "object": "x", "data": {"to": [bob, bob, 7]}},
    ]
    async with asyncio.timeout(10):
        answer = await client.post(f"/api/rooms/{room}/activity/batch", json={"items": items})
    assert answer.status_code == 201, answer.text
    groups = (await feed(client, bob))["groups"]
    assert [(g["verb"], g["count"], g["actor_count"]) for g in groups] == [
        ("failed", 1, 1),
        ("built", 2, 2),
    ]
    assert await consistent(client, bob) == (2, 2)


async def test_activity_groups_of_different_verbs_and_objects_never_merge(
    client: httpx.AsyncClient, room: str
) -> None:
    """A defect the probe found, fixed: "one group per room, verb and object", but the group key is
    the string ``f"activity:{room}:{verb}:{obj}"`` (chat/notifications.py): verb ``"a:b"`` with
    object ``"@bob"`` and verb ``"a"`` with object ``"b:@bob"`` make the same key, so the second
    activity joins the first's group (count 2, shown as verb "a:b", object "@bob") instead of
    making a group of its own."""
    bob = fresh("bob")
    url = f"/api/rooms/{room}/activity"
    ok(await client.post(url, json={"actor": "ci", "verb": "a:b", "object": f"@{bob}"}), 201)
    ok(await client.post(url, json={"actor": "cd", "verb": "a", "object": f"b:@{bob}"}), 201)
    groups = (await feed(client, bob))["groups"]
    assert sorted((g["verb"], g["object"], g["count"]) for g in groups) == [
        ("a", f"b:@{bob}", 1),
        ("a:b", f"@{bob}", 1),
    ]


async def test_marks_past_the_newest_event_and_backwards_keep_count_and_feed_together(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    first = await post(client, room, "ann", f"@{bob} 1")
    top = await read_until(client, bob, 2**63 - 1)
    assert top["unread"] == 0 and top["read_until"] >= first["id"]
    second = await post(client, room, "ann", f"@{bob} 2")
    assert await consistent(client, bob) == (1, 1)
    back = await read_until(client, bob, first["id"])
    assert back == {"read_until": top["read_until"], "unread": 1}
    assert (await read_until(client, bob, 0))["unread"] == 1
    assert (await read_until(client, bob, second["id"]))["unread"] == 0
    assert await consistent(client, bob) == (0, 0)


# -- own actions, ids on the stream, stable groups ------------------------------------------


async def test_no_notification_for_ones_own_action_of_any_kind(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    mine = await post(client, room, bob, f"@{bob} note to self")
    await post(client, room, bob, f"me again @{bob}", reply_to=mine["id"])
    url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
    ok(await client.post(url, json={"author": bob, "emoji": "✅"}), 201)
    act = {"actor": bob, "verb": "did", "object": f"@{bob} thing", "data": {"to": [bob]}}
    ok(await client.post(f"/api/rooms/{room}/activity", json=act), 201)
    assert (await feed(client, bob))["groups"] == []
    assert await unread(client, bob) == 0


async def test_the_feed_stream_ids_increase_with_no_duplicate_and_groups_keep_their_id(
    client: httpx.AsyncClient, room: str
) -> None:
    """Held: a burst of concurrent reactions, replies and mentions: the feed stream's ids
    only increase, each group's id stays the same, and the stream's last state of each
    group is the feed's."""
    bob = fresh("bob")
    mine = await post(client, room, bob, "go")
    url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
    path = f"/api/users/{bob}/notifications/events"
    async with open_stream(client, path) as stream:
        jobs = []
        for n in range(15):
            jobs.append(client.post(url, json={"author": f"f{n}", "emoji": "👍"}))
            jobs.append(
                client.post(
                    f"/api/rooms/{room}/messages",
                    json={"author": f"r{n}", "text": f"@{bob}", "reply_to": mine["id"]},
                )
            )
            jobs.append(
                client.post(f"/api/rooms/{room}/messages", json={"author": "m", "text": f"@{bob}"})
            )
        async with asyncio.timeout(30):
            answers = await asyncio.gather(*jobs)
        newest = max(a.json()["id"] for a in answers)
        seen: list[tuple[int, Json]] = []
        async with asyncio.timeout(15):
            while not seen or seen[-1][0] < newest:
                got = await stream.next()
                assert got.event == "notification"
                seen.append((int(got.id or 0), got.json()))
    ids = [i for i, _ in seen]
    assert ids == sorted(set(ids)), ids
    assert all(i == g["latest_event_id"] for i, g in seen)
    by_key: dict[tuple[Any, ...], set[int]] = {}
    last: dict[int, Json] = {}
    for _, g in seen:
        by_key.setdefault((g["kind"], g.get("message_id"), g.get("emoji")), set()).add(g["id"])
        last[g["id"]] = g
    assert all(len(v) == 1 for v in by_key.values()), by_key
    page = (await feed(client, bob, limit=200))["groups"]
    streamed = {g["id"]: {"type": "notification", **g, "created_at": g["latest_at"]} for g in page}
    assert streamed == last  # each group last streamed as the page has it (and type, created_at)
    assert await consistent(client, bob) == (17, 17)


async def test_a_feed_stream_resume_sends_each_group_once_in_order(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    mine = await post(client, room, bob, "x")
    start = mine["id"]
    url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
    for n in range(4):
        ok(await client.post(url, json={"author": f"a{n}", "emoji": "👀"}), 201)
        await post(client, room, "ann", f"@{bob} {n}")
    path = f"/api/users/{bob}/notifications/events"
    async with open_stream(client, path, params={"last_event_id": str(start)}) as stream:
        got = await stream.take(5)
    ids = [int(e.id or 0) for e in got]
    assert ids == sorted(set(ids))
    assert [e.json()["kind"] for e in got].count("reaction") == 1


# -- bad input on the new endpoints ---------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=1e2",
        "limit=",
        "before=0",
        "before=-5",
        "before=9223372036854775808",
        "before=99999999999999999999999999999999",
        "before=1.5",
        "before=%00",
        "before=%EF%BC%91",  # a full-width digit
        "limit=%D9%A3",  # an Arabic-Indic digit
    ],
)
async def test_bad_feed_queries_are_400(client: httpx.AsyncClient, query: str) -> None:
    async with asyncio.timeout(10):
        answer = await client.get(f"/api/users/bob/notifications?{query}")
    assert answer.status_code == 400, (query, answer.text)
    assert answer.json()["error"]["code"] == "invalid_query"


@pytest.mark.parametrize(
    "name",
    ["%20bob", "bob%20", "%40bob", "a%2Cb", "x" * 65, "%00", "a%0Ab", "%E2%80%8B"],
)
async def test_bad_user_names_are_400_on_every_feed_endpoint(
    client: httpx.AsyncClient, name: str
) -> None:
    async with asyncio.timeout(15):
        for method, suffix, body in (
            ("GET", "", None),
            ("GET", "/unread", None),
            ("PUT", "/read", {"until": 1}),
            ("GET", "/events", None),
        ):
            answer = await client.request(
                method, f"/api/users/{name}/notifications{suffix}", json=body
            )
            assert answer.status_code in (400, 404), (name, suffix, answer.status_code)
            assert answer.headers["content-type"].startswith("application/json")
            assert answer.json()["error"]["code"] in ("invalid_query", "not_found")


async def test_bad_read_bodies_are_refused_and_change_nothing(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    await post(client, room, "ann", f"@{bob}")
    url = f"/api/users/{bob}/notifications/read"
    for body in (
        {"until": 1.0},
        {"until": True},
        {"until": None},
        {"until": "5"},
        {"until": [5]},
        {"until": 2**63},
        {"until": -(2**70)},
        [],
        "x",
        5,
        {"Until": 5},
    ):
        async with asyncio.timeout(10):
            answer = await client.put(url, json=body)
        assert answer.status_code == 422, (body, answer.text)
    async with asyncio.timeout(10):
        answer = await client.put(
            url, content=b'{"until": 5', headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400
        answer = await client.put(url, content=b"until=5")
        assert answer.status_code in (400, 415)
        answer = await client.put(
            url, content=b"\xff\xfe", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400
        answer = await client.post(url, json={"until": 5})
        assert answer.status_code == 405
    assert await consistent(client, bob) == (1, 1)
    assert (await read_until(client, bob, 2**63 - 1))["unread"] == 0


@pytest.mark.parametrize(
    "resume",
    [
        "-1",
        "1e3",
        "٣",
        "²",
        "0x10",
        "+5",
        "99999999999999999999999999999",
        "9223372036854775808",
        "1 2",
    ],
)
async def test_odd_resume_points_on_a_feed_stream_reset_or_replay_never_fail(
    client: httpx.AsyncClient, resume: str
) -> None:
    bob = fresh("bob")
    await post(client, "probe-resume", "ann", f"@{bob}")
    path = f"/api/users/{bob}/notifications/events"
    for how in ("header", "query"):
        headers = {"Last-Event-ID": resume.encode()} if how == "header" else None
        params = {"last_event_id": resume} if how == "query" else None
        async with open_stream(client, path, headers=headers, params=params) as stream:
            got = await stream.next(5)
            assert got.event == "reset", (resume, got)


async def test_a_blank_resume_point_is_live_only(client: httpx.AsyncClient) -> None:
    bob = fresh("bob")
    await post(client, "probe-resume", "ann", f"@{bob} old")
    path = f"/api/users/{bob}/notifications/events"
    async with open_stream(client, path, params={"last_event_id": " "}) as stream:
        new = await post(client, "probe-resume", "ann", f"@{bob} new")
        got = await stream.next(5)
        assert (got.event, got.id) == ("notification", str(new["id"]))


async def test_unicode_names_in_paths_are_normalised(client: httpx.AsyncClient, room: str) -> None:
    """Held: the NFD spelling of a name reads the NFC name's feed."""
    await post(client, room, "ann", "@\u00e9mile-x salut")
    async with asyncio.timeout(10):
        nfd = await client.get("/api/users/e\u0301mile-x/notifications/unread")
    assert nfd.status_code == 200 and nfd.json() == {"unread": 1}


# -- the mention rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named", "not_named"),
    [
        ("hi @NAME.", "NAME", []),
        ("hi @NAME, you", "NAME", []),
        ("(@NAME)", "NAME", []),
        ("`@NAME`", "NAME", []),
        ("@NAME's idea", "NAME", []),
        ("@NAME.smith is someone else", None, ["NAME"]),
        ("@NAME-x is someone else", None, ["NAME"]),
        ("mail me: x@NAME.com", None, ["NAME"]),
        ("@@NAME", None, ["NAME"]),
        ("@NAMEx", None, ["NAME"]),
    ],
)
async def test_a_mention_ends_where_the_filter_says(
    client: httpx.AsyncClient, room: str, text: str, named: str | None, not_named: list[str]
) -> None:
    name = fresh("u")
    body = text.replace("NAME", name)
    if named is not None:
        await post(client, room, "ann", body)
        assert [g["kind"] for g in (await feed(client, name))["groups"]] == ["mention"]
    else:
        await post(client, room, "ann", body)
        assert (await feed(client, name))["groups"] == []


async def test_mentions_are_case_sensitive_as_documented(
    client: httpx.AsyncClient, room: str
) -> None:
    low = fresh("bob")
    await post(client, room, "ann", f"@{low.upper()} hey")
    assert (await feed(client, low))["groups"] == []
    assert len((await feed(client, low.upper()))["groups"]) == 1


async def test_only_the_first_twenty_names_are_notified(
    client: httpx.AsyncClient, room: str
) -> None:
    names = [fresh(f"n{i}") for i in range(22)]
    await post(client, room, "ann", " ".join(f"@{n}" for n in [names[0], *names]))
    counts = [len((await feed(client, n))["groups"]) for n in names]
    assert counts == [1] * 20 + [0, 0]


@pytest.mark.parametrize(
    "name",
    [
        "émile",  # precomposed
        "日本語",
        "देव",  # Devanagari: a vowel sign (Mn) inside the name
        "o'brien",
        "a+b",
        "x̃y",  # a combining mark with no precomposed form
    ],
)
async def test_a_user_name_as_written_is_mentioned(
    client: httpx.AsyncClient, room: str, name: str
) -> None:
    """A defect the probe found, fixed, for some names. A user name may hold any printable
    character but the comma (chat.rules.name_problem), and the ``mentions=`` filter matches
    ``@<name>`` for such a name; the notification's own pattern (chat/notifications.py
    ``_MENTION``: ``\\w(?:[\\w-]|\\.(?=\\w))*``) stops at the first non-word character, so
    ``@देव`` notifies ``द``, ``@o'brien`` notifies ``o``, ``@a+b`` notifies ``a``, and the named
    user nothing."""
    user = f"{name}{uuid.uuid4().hex[:6]}" if name.isascii() else f"{uuid.uuid4().hex[:6]}{name}"
    # the filter's view of the same text, on a stream
    text = f"hello @{user} there"
    params = {"mentions": user, "types": "message"}
    async with open_stream(client, f"/api/rooms/{room}/events", params=params) as stream:
        sent = await post(client, room, "ann", text)
        got = await stream.next(5)
        assert got.json()["id"] == sent["id"]  # the filter says: a mention of the user
    groups = (await feed(client, user))["groups"]
    assert [g["message_id"] for g in groups] == [sent["id"]], f"{user!r} not notified"


async def test_removal_after_partial_reads_and_a_role_change_keeps_count_and_feed_together(
    people: tuple[LiveServer, dict[str, str]],
) -> None:
    """Held: groups of a private room, some read, one read and then grown again, a role
    change (a second ``member.added``): the removal takes exactly the unread ones off the
    count; an edit that adds a mention notifies nobody."""
    live, tokens = people
    async with as_(live, tokens["alice"]) as alice, as_(live, tokens["bob"]) as bob:
        ok(await alice.put("/api/rooms/study", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/study/members/bob", json={}), 201)
        mine = ok(await bob.post("/api/rooms/study/messages", json={"text": "mine"}), 201)
        said = ok(await alice.post("/api/rooms/study/messages", json={"text": "@bob a"}), 201)
        url = f"/api/rooms/study/messages/{mine['id']}/reactions"
        ok(await alice.post(url, json={"emoji": "👍"}), 201)
        await read_until(bob, "bob", said["id"])
        ok(await alice.put("/api/rooms/study/members/bob", json={"role": "owner"}), 200)
        ok(await alice.post("/api/rooms/porch2/messages", json={"text": "@bob p"}), 201)
        plain = ok(await alice.post("/api/rooms/porch2/messages", json={"text": "plain"}), 201)
        edit = {"text": "now @bob"}
        ok(await alice.patch(f"/api/rooms/porch2/messages/{plain['id']}", json=edit), 200)
        assert await consistent(bob, "bob") == (3, 3)
        assert (await alice.delete("/api/rooms/study/members/bob")).status_code == 204
        assert [g["room"] for g in (await feed(bob, "bob"))["groups"]] == ["porch2"]
        assert await consistent(bob, "bob") == (1, 1)
