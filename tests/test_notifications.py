"""Notification feeds on a live server (API.md, "Notifications"), on both stores: each kind of
group forming, growing, being read and coming back unread; the feed's stream live and
resumed; the `notify` hint on a room stream; the same groups after a restart and across two
processes; and never a notification from a room the user cannot read."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.access_helpers import Seed, bearer
from tests.live import LiveServer, open_stream
from tests.notify_helpers import feed, fresh, ok, post, read_until, unread
from tests.redis_server import RedisServer
from tests.scaleout_helpers import Cluster


async def test_a_mention_makes_one_group_per_message_and_is_read_by_the_mark(
    client: httpx.AsyncClient, room: str
) -> None:
    bob, alice = fresh("bob"), fresh("alice")
    first = await post(client, room, alice, f"hi @{bob}, see this")
    second = await post(client, room, alice, f"@{bob}: and this")
    await post(client, room, alice, f"no mention of {bob} here")
    await post(client, room, bob, f"talking to myself @{bob}")  # one's own: nothing
    page = await feed(client, bob)
    assert page["has_more"] is False
    assert [g["kind"] for g in page["groups"]] == ["mention", "mention"]
    newest = page["groups"][0]
    assert newest == {
        "id": second["id"],
        "kind": "mention",
        "room": room,
        "message_id": second["id"],
        "actors": [alice],
        "actor_count": 1,
        "count": 1,
        "first_at": second["created_at"],
        "latest_at": second["created_at"],
        "latest_event_id": second["id"],
        "unread": True,
        "summary": f"{alice} mentioned you in #{room}",
    }
    assert page["groups"][1]["message_id"] == first["id"]
    assert await unread(client, bob) == 2
    assert await read_until(client, bob, first["id"]) == {"read_until": first["id"], "unread": 1}
    assert [g["unread"] for g in (await feed(client, bob))["groups"]] == [True, False]
    assert await unread(client, bob) == 1
    # the mark never moves back
    assert (await read_until(client, bob, 1))["read_until"] == first["id"]
    assert await unread(client, alice) == 0
    assert (await feed(client, alice))["groups"] == []


async def test_reactions_group_per_message_and_emoji_and_come_back_unread(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    mine = await post(client, room, bob, "ship it?")
    url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
    fans = [fresh(f"fan{n}") for n in range(5)]
    for fan in fans[:2]:
        added = ok(await client.post(url, json={"author": fan, "emoji": "👍"}), 201)
        assert added["message_author"] == bob
    ok(await client.post(url, json={"author": bob, "emoji": "👍"}), 201)  # his own: nothing
    ok(await client.post(url, json={"author": fans[0], "emoji": "🎉"}), 201)
    groups = (await feed(client, bob))["groups"]
    assert [(g["kind"], g["emoji"], g["count"]) for g in groups] == [
        ("reaction", "🎉", 1),
        ("reaction", "👍", 2),
    ]
    thumbs = groups[1]
    assert thumbs["message_id"] == mine["id"]
    assert thumbs["actors"] == [fans[1], fans[0]]
    assert thumbs["summary"] == f"{fans[1]} and {fans[0]} reacted 👍 to your message in #{room}"
    state = await read_until(client, bob, groups[0]["latest_event_id"])
    assert state["unread"] == 0
    # three more people: the read group is unread again, on top, with every actor counted
    for fan in fans[2:]:
        last = ok(await client.post(url, json={"author": fan, "emoji": "👍"}), 201)
    groups = (await feed(client, bob))["groups"]
    top = groups[0]
    assert (top["emoji"], top["unread"], top["latest_event_id"]) == ("👍", True, last["id"])
    assert (top["actor_count"], top["count"], top["id"]) == (5, 5, thumbs["id"])
    assert top["actors"] == [fans[4], fans[3], fans[2]]
    assert (
        top["summary"] == f"{fans[4]}, {fans[3]} and 3 others reacted 👍 to your message in #{room}"
    )
    assert groups[1]["unread"] is False
    assert await unread(client, bob) == 1


async def test_replies_group_per_replied_message_and_a_reply_that_mentions_is_one_reply(
    client: httpx.AsyncClient, room: str
) -> None:
    bob, ann, cy = fresh("bob"), fresh("ann"), fresh("cy")
    mine = await post(client, room, bob, "lunch?")
    first = await post(client, room, ann, f"yes @{bob}", reply_to=mine["id"])
    assert first["reply_to_author"] == bob
    await post(client, room, cy, "me too", reply_to=mine["id"])
    await post(client, room, ann, "and again", reply_to=mine["id"])
    groups = (await feed(client, bob))["groups"]
    assert len(groups) == 1, groups
    reply = groups[0]
    assert (reply["kind"], reply["message_id"], reply["count"], reply["actor_count"]) == (
        "reply",
        mine["id"],
        3,
        2,
    )
    assert reply["actors"] == [ann, cy]
    assert reply["summary"] == f"{ann} and {cy} replied 3 times to your message in #{room}"
    # ann's reply to her own message notifies nobody; cy replying to ann notifies ann
    await post(client, room, ann, "myself", reply_to=first["id"])
    assert (await feed(client, ann))["groups"] == []
    await post(client, room, cy, "to ann", reply_to=first["id"])
    assert [g["kind"] for g in (await feed(client, ann))["groups"]] == ["reply"]


async def test_activity_naming_a_user_groups_per_verb_and_object(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    url = f"/api/rooms/{room}/activity"
    obj = f"@{bob}'s pull request #7"
    ok(await client.post(url, json={"actor": "ci", "verb": "approved", "object": obj}), 201)
    ok(await client.post(url, json={"actor": "reviewer", "verb": "approved", "object": obj}), 201)
    item = {"actor": "deploy", "verb": "shipped", "object": "v2", "data": {"to": [bob, "x"]}}
    ok(await client.post(url, json=item), 201)
    ok(await client.post(url, json={"actor": "ci", "verb": "built", "object": "main"}), 201)
    groups = (await feed(client, bob))["groups"]
    assert [(g["kind"], g["verb"], g["object"], g["count"]) for g in groups] == [
        ("activity", "shipped", "v2", 1),
        ("activity", "approved", obj, 2),
    ]
    assert groups[1]["summary"] == f"reviewer and ci approved {obj} in #{room}"


async def test_an_activity_notifies_only_the_user_names_in_its_data_to(
    client: httpx.AsyncClient, room: str
) -> None:
    """A defect a probe found, fixed: `data.to` went into the store as given, so on PostgreSQL
    a NUL in a name, or a name of 3,000 characters (over the b-tree's row limit), made the
    activity a 503 that no retry could pass (201 on SQLite), and a name in another Unicode
    form notified nobody. Each name is now taken as every user name is (NFC, the one rule);
    what is no user name notifies nobody, and the activity is stored on both stores."""
    zoe = fresh("zo\u00eb")
    decomposed = unicodedata.normalize("NFD", zoe)
    url = f"/api/rooms/{room}/activity"
    for to in (["a\u0000b", "x" * 3000, decomposed, "", " sp ", "@zed"], "a\u0000b", "y" * 3000):
        item = {"actor": "ci", "verb": "shipped", "object": "v3", "data": {"to": to}}
        stored = ok(await client.post(url, json=item), 201)
        assert stored["data"] == {"to": to}  # kept as sent
    groups = (await feed(client, zoe))["groups"]
    assert [(g["kind"], g["count"]) for g in groups] == [("activity", 1)]


async def test_the_feed_pages_with_before(client: httpx.AsyncClient, room: str) -> None:
    bob = fresh("bob")
    posted = [await post(client, room, "ann", f"@{bob} {n}") for n in range(5)]
    first = await feed(client, bob, limit=2)
    assert [g["message_id"] for g in first["groups"]] == [posted[4]["id"], posted[3]["id"]]
    assert first["has_more"] is True
    second = await feed(client, bob, limit=2, before=first["groups"][-1]["latest_event_id"])
    assert [g["message_id"] for g in second["groups"]] == [posted[2]["id"], posted[1]["id"]]
    last = await feed(client, bob, limit=2, before=second["groups"][-1]["latest_event_id"])
    assert ([g["message_id"] for g in last["groups"]], last["has_more"]) == (
        [posted[0]["id"]],
        False,
    )


async def test_bad_requests_get_the_json_errors_and_change_nothing(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    await post(client, room, "ann", f"@{bob}")
    for path, code in (
        ("/api/users/%20bob/notifications", "invalid_query"),
        ("/api/users/bob/notifications?limit=0", "invalid_query"),
        ("/api/users/bob/notifications?before=x", "invalid_query"),
    ):
        answer = await client.get(path)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["code"] == code
    url = f"/api/users/{bob}/notifications/read"
    for body in ({"until": -1}, {"until": "x"}, {}, {"until": 2**70}):
        answer = await client.put(url, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] == "validation_error"
    assert (await client.put(url, content=b"{")).status_code in (400, 415)
    assert await unread(client, bob) == 1
    # a mark far past the newest event stops at the newest event: later ones still count
    state = await read_until(client, bob, 2**62)
    assert state["unread"] == 0
    await post(client, room, "ann", f"@{bob} later")
    assert await unread(client, bob) == 1


async def test_the_feed_stream_sends_each_updated_group_live_and_on_resume(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    mine = await post(client, room, bob, "vote")
    url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
    path = f"/api/users/{bob}/notifications/events"
    async with open_stream(client, path) as stream:
        one = ok(await client.post(url, json={"author": "ann", "emoji": "👍"}), 201)
        got = await stream.next()
        assert (got.event, got.id) == ("notification", str(one["id"]))
        assert got.json()["count"] == 1
        # the group as the REST page has it, with the type and time every event carries
        (page,) = ok(await client.get(f"/api/users/{bob}/notifications"))["groups"]
        assert got.json() == {"type": "notification", **page, "created_at": page["latest_at"]}
        two = ok(await client.post(url, json={"author": "cy", "emoji": "👍"}), 201)
        got = await stream.next()
        assert (got.id, got.json()["count"], got.json()["actors"]) == (
            str(two["id"]),
            2,
            ["cy", "ann"],
        )
        mention = await post(client, room, "dee", f"@{bob} look")
    # resumed from the first update: the reaction group once (as it is now), then the mention
    headers = {"Last-Event-ID": str(one["id"])}
    async with open_stream(client, path, headers=headers) as stream:
        replayed = await stream.take(2)
    assert [(e.id, e.json()["kind"]) for e in replayed] == [
        (str(two["id"]), "reaction"),
        (str(mention["id"]), "mention"),
    ]
    # a resume point the server cannot place: one reset, then live
    async with open_stream(client, path, headers={"Last-Event-ID": "nope"}) as stream:
        reset = await stream.next()
        assert reset.event == "reset" and reset.json()["reason"] == "unknown_resume_point"


async def test_a_room_stream_with_notify_gets_a_hint_for_its_user(
    client: httpx.AsyncClient, room: str
) -> None:
    bob = fresh("bob")
    elsewhere = f"{room}-other"
    params = {"rooms": room, "user": bob, "notify": "1"}
    async with open_stream(client, "/api/events", params=params) as stream:
        mention = await post(client, elsewhere, "ann", f"@{bob} over here")
        hint = await stream.next()
        if hint.event == "presence":  # bob's own arrival in the room comes first
            hint = await stream.next()
        assert hint.event == "notify" and hint.id is None
        body = hint.json()
        assert {k: body[k] for k in ("type", "room", "user", "kind", "event_id")} == {
            "type": "notify",
            "room": elsewhere,
            "user": bob,
            "kind": "mention",
            "event_id": mention["id"],
        }
    answer = await client.get("/api/events", params={"rooms": room, "notify": "1"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_query"


async def test_groups_are_the_same_after_a_restart(
    make_server: Callable[..., LiveServer], room: str
) -> None:
    live = make_server()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        mine = await post(c, room, "bob", "hello")
        await post(c, room, "ann", "hi", reply_to=mine["id"])
        url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
        ok(await c.post(url, json={"author": "ann", "emoji": "👋"}), 201)
        await post(c, room, "cy", "@bob hey")
        before = await feed(c, "bob")
        count = await unread(c, "bob")
    live.terminate()
    live.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        assert await feed(c, "bob") == before
        assert await unread(c, "bob") == count == 3
        await post(c, room, "dee", "me too", reply_to=mine["id"])
        groups = (await feed(c, "bob"))["groups"]
        assert (groups[0]["kind"], groups[0]["id"], groups[0]["count"]) == (
            "reply",
            before["groups"][-1]["id"],
            2,
        )


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    made = Cluster(tmp_path, redis_server.url)
    yield made
    made.close()


async def test_two_processes_make_the_same_groups_and_wake_each_others_streams(
    cluster: Cluster, room: str
) -> None:
    """Writes on both processes, a feed stream on one: one group, counted across both, and
    each update reaches the stream on the other process."""
    first, second = cluster.start(2)
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.url, timeout=10) as two,
    ):
        mine = await post(one, room, "bob", "poll")
        url = f"/api/rooms/{room}/messages/{mine['id']}/reactions"
        async with open_stream(two, "/api/users/bob/notifications/events") as stream:
            ids = []
            for n, side in enumerate((one, two, one, two)):
                added = ok(await side.post(url, json={"author": f"v{n}", "emoji": "✅"}), 201)
                ids.append(added["id"])
                got = await stream.next()
                assert (got.id, got.json()["count"]) == (str(added["id"]), n + 1)
        assert await feed(one, "bob") == await feed(two, "bob")
        group = (await feed(one, "bob"))["groups"][0]
        assert (group["actor_count"], group["latest_event_id"]) == (4, ids[-1])


@pytest.fixture
async def people(make_server: Callable[..., LiveServer]) -> tuple[str, dict[str, str]]:
    live = make_server(CHAT_AUTH="required")
    async with Seed(live.database) as seed:
        tokens = {name: await seed.token(name) for name in ("alice", "bob", "carl")}
        tokens["root"] = await seed.token("root", role="admin")
        tokens["scoped"] = await seed.token("dana", rooms=["lobby"])
    return live.url, tokens


async def test_no_notification_from_a_room_the_user_cannot_read(
    people: tuple[str, dict[str, str]],
) -> None:
    url, tokens = people

    def as_(who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, timeout=10, headers=bearer(tokens[who]))

    async with as_("alice") as alice, as_("bob") as bob, as_("carl") as carl, as_("root") as root:
        ok(await alice.put("/api/rooms/secret", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/lobby", json={}), 201)
        await alice.post("/api/rooms/secret/messages", json={"text": "@bob @carl secret plan"})
        assert (await feed(bob, "bob"))["groups"] == []  # not a member: nothing at all
        ok(await alice.put("/api/rooms/secret/members/bob", json={}), 201)
        groups = (await feed(bob, "bob"))["groups"]
        assert [(g["kind"], g["room"], g["actors"]) for g in groups] == [
            ("membership", "secret", ["alice"])
        ]
        assert groups[0]["summary"] == "alice added you to #secret"
        said = ok(await alice.post("/api/rooms/secret/messages", json={"text": "@bob now"}), 201)
        await alice.post("/api/rooms/lobby/messages", json={"text": "@bob lobby"})
        assert await unread(bob, "bob") == 3
        # others' feeds: 403; an admin reads anyone's; a credential scoped to rooms none
        assert (await carl.get("/api/users/bob/notifications")).status_code == 403
        assert (await carl.get("/api/users/bob/notifications/unread")).status_code == 403
        answer = await carl.put("/api/users/bob/notifications/read", json={"until": 1})
        assert answer.status_code == 403
        assert (await carl.get("/api/users/bob/notifications/events")).status_code == 403
        assert len((await feed(root, "bob"))["groups"]) == 3
        async with as_("scoped") as scoped:
            assert (await scoped.get("/api/users/dana/notifications")).status_code == 403
        assert (await feed(carl, "carl"))["groups"] == []
        # removed: the room's groups leave his feed and his count
        assert (await alice.delete("/api/rooms/secret/members/bob")).status_code == 204
        groups = (await feed(bob, "bob"))["groups"]
        assert [(g["kind"], g["room"]) for g in groups] == [("mention", "lobby")]
        assert await unread(bob, "bob") == 1
        assert said["id"] not in [g.get("message_id") for g in groups]
        await alice.post("/api/rooms/secret/messages", json={"text": "@bob gone?"})
        assert await unread(bob, "bob") == 1
    # a guest (no credential) reading a name's feed sees no private room: here, none at all
    async with httpx.AsyncClient(base_url=url, timeout=10) as guest:
        assert (await guest.get("/api/users/bob/notifications")).status_code == 401


async def test_a_guest_reads_a_names_feed_without_its_private_rooms(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()  # CHAT_AUTH=open: guests next to accounts
    async with Seed(live.database) as seed:
        tokens = {name: await seed.token(name) for name in ("alice", "bob")}
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10, headers=bearer(tokens["alice"])) as alice,
        httpx.AsyncClient(base_url=live.url, timeout=10) as guest,
    ):
        ok(await alice.put("/api/rooms/secret", json={"private": True}), 201)
        ok(await alice.put("/api/rooms/secret/members/bob", json={}), 201)
        await alice.post("/api/rooms/secret/messages", json={"text": "@bob private"})
        await alice.post("/api/rooms/open-room/messages", json={"text": "@bob public"})
        groups = (await feed(guest, "bob"))["groups"]
        assert [(g["kind"], g["room"]) for g in groups] == [("mention", "open-room")]
        assert await unread(guest, "bob") == 1
        path = "/api/users/bob/notifications/events"
        async with open_stream(guest, path, headers={"Last-Event-ID": "0"}) as stream:
            first = await stream.next()
            assert (first.event, first.json()["room"]) == ("notification", "open-room")
            with pytest.raises(TimeoutError):
                await stream.next(timeout_s=1)  # nothing of the private room follows
        assert "secret" not in (await guest.get("/api/users/bob/notifications")).text


async def test_a_batch_notifies_all_or_nothing_and_wakes_the_feed_once_in_order(
    client: httpx.AsyncClient, room: str
) -> None:
    """20 mentions in one batch (a COPY on PostgreSQL): 20 groups; a batch with a bad item:
    none at all."""
    bob = fresh("bob")
    url = f"/api/rooms/{room}/messages/batch"
    bad = [{"author": "ann", "text": f"@{bob} {n}"} for n in range(3)]
    bad.append({"author": "ann", "text": "x", "reply_to": 10**12})
    assert (await client.post(url, json={"messages": bad})).status_code == 422
    assert await unread(client, bob) == 0
    items = [{"author": "ann", "text": f"@{bob} number {n}"} for n in range(20)]
    path = f"/api/users/{bob}/notifications/events"
    async with open_stream(client, path) as stream:
        events = ok(await client.post(url, json={"messages": items}), 201)["events"]
        got = await stream.take(20)
    assert [int(e.id or 0) for e in got] == [e["id"] for e in events]
    assert [e.json()["message_id"] for e in got] == [e["id"] for e in events]
    assert await unread(client, bob) == 20
    page = await feed(client, bob, limit=200)
    assert [g["message_id"] for g in page["groups"]] == [e["id"] for e in reversed(events)]


async def test_replies_activity_and_membership_come_back_unread_when_they_grow(
    make_server: Callable[..., LiveServer],
) -> None:
    """Each kind that can grow: read it, let it gain an event, and it is unread again, on top."""
    live = make_server(CHAT_AUTH="required")
    async with Seed(live.database) as seed:
        tokens = {name: await seed.token(name) for name in ("alice", "bob", "carl")}
        tokens["ci"] = await seed.token("ci", role="bot")

    def as_(who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=live.url, timeout=10, headers=bearer(tokens[who]))

    async with as_("alice") as alice, as_("bob") as bob, as_("carl") as carl, as_("ci") as ci:
        ok(await alice.put("/api/rooms/team", json={}), 201)
        ok(await carl.put("/api/rooms/other", json={}), 201)
        mine = ok(await bob.post("/api/rooms/team/messages", json={"text": "plan?"}), 201)
        reply = {"text": "yes", "reply_to": mine["id"]}
        ok(await alice.post("/api/rooms/team/messages", json=reply), 201)
        act = {"verb": "reviewed", "object": "@bob's draft"}
        ok(await ci.post("/api/rooms/team/activity", json=act), 201)
        ok(await carl.put("/api/rooms/other/members/bob", json={}), 201)
        kinds = {g["kind"]: g for g in (await feed(bob, "bob"))["groups"]}
        assert set(kinds) == {"reply", "activity", "membership"}
        newest = max(g["latest_event_id"] for g in kinds.values())
        assert (await read_until(bob, "bob", newest))["unread"] == 0

        async def grows(kind: str, step: Any) -> None:
            answer = await step()
            assert answer.status_code in (200, 201), answer.text
            groups = (await feed(bob, "bob"))["groups"]
            top = groups[0]
            assert (top["kind"], top["id"], top["unread"]) == (kind, kinds[kind]["id"], True)
            assert top["count"] == kinds[kind]["count"] + 1
            assert [g["unread"] for g in groups[1:]] == [False] * (len(groups) - 1)
            assert await unread(bob, "bob") == 1
            await read_until(bob, "bob", top["latest_event_id"])

        await grows("reply", lambda: carl.post("/api/rooms/team/messages", json=reply))
        await grows("activity", lambda: alice.post("/api/rooms/team/activity", json=act))
        assert (
            await carl.delete("/api/rooms/other/members/bob")
        ).status_code == 204  # a public room: nothing gone
        assert len((await feed(bob, "bob"))["groups"]) == 3
        await grows("membership", lambda: carl.put("/api/rooms/other/members/bob", json={}))
