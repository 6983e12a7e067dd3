"""Private rooms on a live server: owners and members, a private room that does not exist for
anyone else (every path, lists, rooms=*, unread), moderation, and access that follows the
event order exactly, also while messages pour in and across processes (ACCESS.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.access_helpers import Seed, bearer
from tests.live import LiveServer, open_stream
from tests.redis_server import RedisServer
from tests.scaleout_helpers import Cluster, Follower

SECRET_TEXT = "the launch is on friday"


class People:
    """Tokens of alice (who owns room `secret`), bob, carl and an admin, on one server."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url = url
        self.tokens = tokens

    def client(self, who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10, headers=bearer(self.tokens[who]))


async def seed_people(database: Path) -> dict[str, str]:
    async with Seed(database) as seed:
        tokens = {name: await seed.token(name) for name in ("alice", "bob", "carl")}
        tokens["root"] = await seed.token("root", role="admin")
    return tokens


@pytest.fixture
async def people(make_server: Callable[..., LiveServer]) -> People:
    live = make_server(CHAT_AUTH="required")
    found = People(live.url, await seed_people(live.database))
    async with found.client("alice") as alice:
        made = await alice.put("/api/rooms/secret", json={"private": True, "title": "Secret"})
        assert made.status_code == 201 and made.json()["private"] is True
        posted = await alice.post("/api/rooms/secret/messages", json={"text": SECRET_TEXT})
        assert posted.status_code == 201
        assert (await alice.put("/api/rooms/lobby", json={})).status_code == 201
    return found


def never_shows_the_secret(response: httpx.Response) -> None:
    assert SECRET_TEXT not in response.text
    assert '"secret"' not in response.text


async def test_a_private_room_does_not_exist_for_a_non_member(people: People) -> None:
    """Every path under it is 404, as for a room that does not exist, and it is in no list."""
    paths: list[tuple[str, str, Any]] = [
        ("GET", "/api/rooms/secret", None),
        ("PUT", "/api/rooms/secret", {"title": "mine now"}),
        ("GET", "/api/rooms/secret/messages", None),
        ("GET", "/api/rooms/secret/messages?q=launch", None),
        ("POST", "/api/rooms/secret/messages", {"text": "let me in"}),
        ("POST", "/api/rooms/secret/messages/batch", {"messages": [{"text": "x"}]}),
        ("PATCH", "/api/rooms/secret/messages/1", {"text": "x"}),
        ("DELETE", "/api/rooms/secret/messages/1", None),
        ("POST", "/api/rooms/secret/messages/1/reactions", {"emoji": "👍"}),
        ("GET", "/api/rooms/secret/activity", None),
        ("POST", "/api/rooms/secret/activity", {"verb": "v", "object": "o"}),
        ("POST", "/api/rooms/secret/typing", {}),
        ("GET", "/api/rooms/secret/presence", None),
        ("PUT", "/api/rooms/secret/read", {"last_read_id": 1}),
        ("GET", "/api/rooms/secret/members", None),
        ("PUT", "/api/rooms/secret/members/bob", {"role": "member"}),
        ("DELETE", "/api/rooms/secret/members/alice", None),
        ("GET", "/api/rooms/secret/events", None),
        ("GET", "/api/events?rooms=lobby,secret", None),
    ]
    async with people.client("bob") as bob:
        for method, path, body in paths:
            answer = await bob.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
            never_shows_the_secret(answer)
        listed = await bob.get("/api/rooms")
        assert [room["name"] for room in listed.json()["rooms"]] == ["lobby"]
    async with people.client("alice") as alice:
        history = (await alice.get("/api/rooms/secret/messages")).json()["messages"]
        assert [m["text"] for m in history] == [SECRET_TEXT]  # nothing bob tried got in


async def test_unread_counts_leave_out_rooms_the_user_may_not_read(people: People) -> None:
    async with people.client("alice") as alice, people.client("bob") as bob:
        assert (await alice.put("/api/rooms/secret/members/bob", json={})).status_code == 201
        seen = (await bob.get("/api/rooms/secret/messages")).json()["messages"][-1]["id"]
        read = await bob.put("/api/rooms/secret/read", json={"last_read_id": seen})
        assert read.status_code == 204
        assert (await bob.put("/api/rooms/lobby/read", json={"last_read_id": 1})).status_code == 204
        await alice.post("/api/rooms/secret/messages", json={"text": "news"})
        assert (await bob.get("/api/users/bob/unread")).json()["rooms"] == {"lobby": 0, "secret": 1}
        assert (await alice.delete("/api/rooms/secret/members/bob")).status_code == 204
        unread = await bob.get("/api/users/bob/unread")
        assert unread.json()["rooms"] == {"lobby": 0}
        never_shows_the_secret(unread)


async def test_owners_invite_and_remove_members_leave_and_events_say_so(people: People) -> None:
    async with (
        people.client("alice") as alice,
        people.client("bob") as bob,
        people.client("carl") as carl,
    ):
        invite = await alice.put("/api/rooms/secret/members/bob", json={"role": "member"})
        assert invite.status_code == 201 and invite.json() == {"user": "bob", "role": "member"}
        assert (await alice.put("/api/rooms/secret/members/bob", json={})).status_code == 200
        members = (await bob.get("/api/rooms/secret/members")).json()["members"]
        assert members == [{"user": "alice", "role": "owner"}, {"user": "bob", "role": "member"}]
        refused = await bob.put("/api/rooms/secret/members/carl", json={})
        assert refused.status_code == 403  # a member does not invite
        kick = await bob.delete("/api/rooms/secret/members/alice")
        assert kick.status_code == 403
        assert (await carl.get("/api/rooms/secret")).status_code == 404
        assert (
            await alice.put("/api/rooms/secret/members/bob", json={"role": "owner"})
        ).status_code == 200
        assert (await bob.put("/api/rooms/secret/members/carl", json={})).status_code == 201
        assert (await carl.delete("/api/rooms/secret/members/carl")).status_code == 204  # leaves
        assert (await carl.get("/api/rooms/secret")).status_code == 404
        params = {"last_event_id": "0", "types": "room.created,member.added,member.removed"}
        async with open_stream(alice, "/api/rooms/secret/events", params=params) as stream:
            events = [event.json() for event in await stream.take(6)]
        lobby = events.pop(1)  # alice's own access event of a room the stream does not list
        assert (lobby["type"], lobby["room"]) == ("room.created", "lobby")
        assert [(e["type"], e["user"], e.get("by")) for e in events] == [
            ("room.created", "alice", None),
            ("member.added", "bob", "alice"),
            ("member.added", "bob", "alice"),  # made an owner
            ("member.added", "carl", "bob"),
            ("member.removed", "carl", "carl"),
        ]
        again = await alice.put("/api/rooms/secret", json={"private": False})
        assert again.status_code == 409  # privacy is chosen at creation


async def test_private_rooms_need_an_identity_and_only_owners_rename(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()
    tokens = await seed_people(live.database)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as guest:
        answer = await guest.put("/api/rooms/hidden", json={"private": True})
        assert answer.status_code == 401
        assert (await guest.get("/api/rooms/hidden")).status_code == 404
        alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
        assert (await guest.put("/api/rooms/club", json={}, headers=alice)).status_code == 201
        assert (
            await guest.put("/api/rooms/club", json={"title": "x"}, headers=bob)
        ).status_code == 403
        renamed = await guest.put("/api/rooms/club", json={"title": "Club"}, headers=alice)
        assert renamed.status_code == 200 and renamed.json()["title"] == "Club"


async def test_owners_and_admins_delete_others_messages_members_only_their_own(
    people: People,
) -> None:
    async with (
        people.client("alice") as alice,
        people.client("bob") as bob,
        people.client("root") as root,
    ):
        await alice.put("/api/rooms/secret/members/bob", json={})
        first = (await bob.post("/api/rooms/secret/messages", json={"text": "1"})).json()
        second = (await bob.post("/api/rooms/secret/messages", json={"text": "2"})).json()
        own = (await alice.post("/api/rooms/secret/messages", json={"text": "3"})).json()
        assert (await bob.delete(f"/api/rooms/secret/messages/{own['id']}")).status_code == 403
        assert (
            await bob.patch(f"/api/rooms/secret/messages/{own['id']}", json={"text": "x"})
        ).status_code == 403
        by_owner = await alice.delete(f"/api/rooms/secret/messages/{first['id']}")
        assert by_owner.status_code == 200 and by_owner.json()["author"] == "alice"
        by_admin = await root.delete(f"/api/rooms/secret/messages/{second['id']}")
        assert by_admin.status_code == 200
        edit = await alice.patch(f"/api/rooms/secret/messages/{second['id']}", json={"text": "x"})
        assert edit.status_code == 404  # deleted; and editing is the author's alone anyway
        texts = [
            m["text"] for m in (await root.get("/api/rooms/secret/messages")).json()["messages"]
        ]
        assert texts == [SECRET_TEXT, "3"]


@pytest.fixture
async def quick(people: People) -> AsyncIterator[People]:
    async with people.client("alice") as alice:
        assert (await alice.put("/api/rooms/secret/members/bob", json={})).status_code == 201
    yield people


async def _pour(client: httpx.AsyncClient, room: str, stop: asyncio.Event) -> list[int]:
    """Post into the room as fast as one connection can until ``stop``; returns the ids."""
    ids = []
    async with asyncio.timeout(60):
        while not stop.is_set():
            answer = await client.post(f"/api/rooms/{room}/messages", json={"text": "pour"})
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
    return ids


@pytest.mark.parametrize("path", ["/api/events?rooms=secret,lobby", "/api/events?rooms=*"])
async def test_a_member_removed_while_messages_pour_in_gets_nothing_after_the_removal(
    quick: People, path: str
) -> None:
    """Bob's open stream (of listed rooms, or rooms=*) gets the room's events up to and
    including his `member.removed`, and not one after it, though two publishers post as fast
    as they can before, during and after the removal; a replay from the start applies the
    same rule; public rooms keep flowing."""
    stop = asyncio.Event()
    async with (
        quick.client("alice") as alice,
        quick.client("root") as root,
        quick.client("bob") as bob,
        httpx.AsyncClient(base_url=quick.url, timeout=httpx.Timeout(10, read=None)) as reader,
    ):
        headers = bearer(quick.tokens["bob"])
        async with open_stream(reader, path, headers=headers) as stream:
            pourers = [asyncio.create_task(_pour(c, "secret", stop)) for c in (alice, root)]
            await asyncio.sleep(0.5)
            removal = await alice.delete("/api/rooms/secret/members/bob")
            assert removal.status_code == 204
            await asyncio.sleep(0.5)
            stop.set()
            poured = sorted(i for ids in await asyncio.gather(*pourers) for i in ids)
            public = await alice.post("/api/rooms/lobby/messages", json={"text": "still live"})
            got = []  # the persisted events, up to the public message, posted after every other
            async with asyncio.timeout(20):
                while not got or got[-1]["id"] != public.json()["id"]:
                    event = (await stream.next()).json()
                    if "id" in event:  # not presence
                        got.append(event)
        secret = [e for e in got if e["room"] == "secret"]
        removed = [e for e in secret if e["type"] == "member.removed"]
        assert len(removed) == 1 and removed[0]["user"] == "bob"
        assert secret[-1] is removed[0]  # nothing of the room after the removal
        before = [i for i in poured if i < removed[0]["id"]]
        after = [i for i in poured if i > removed[0]["id"]]
        assert before and after  # messages really poured on both sides of the removal
        assert [e["id"] for e in secret[:-1]] == before  # and everything before it
        assert got[-1]["id"] == public.json()["id"]
        # replay from the very start: the same rule, event by event
        async with open_stream(
            reader, "/api/events?rooms=*", headers={**headers, "Last-Event-ID": "0"}
        ) as replay:
            replayed = []
            async with asyncio.timeout(20):
                while not replayed or replayed[-1]["id"] != public.json()["id"]:
                    event = (await replay.next()).json()
                    if "id" in event:
                        replayed.append(event)
        secret_replayed = [e for e in replayed if e["room"] == "secret"]
        assert secret_replayed[0]["type"] == "member.added"  # nothing before bob joined
        assert secret_replayed[-1]["id"] == removed[0]["id"]
        assert SECRET_TEXT not in str(secret_replayed)
        assert (await bob.get("/api/rooms/secret/messages")).status_code == 404


async def test_an_added_member_gets_the_room_live_on_a_stream_opened_before(
    people: People,
) -> None:
    async with (
        people.client("alice") as alice,
        httpx.AsyncClient(base_url=people.url, timeout=httpx.Timeout(10, read=None)) as reader,
    ):
        headers = bearer(people.tokens["bob"])
        async with open_stream(reader, "/api/events?rooms=*", headers=headers) as stream:
            hidden = await alice.post("/api/rooms/secret/messages", json={"text": "not yet"})
            assert (await alice.put("/api/rooms/secret/members/bob", json={})).status_code == 201
            shown = await alice.post("/api/rooms/secret/messages", json={"text": "welcome"})
            first, second = (event.json() for event in await stream.take(2))
        assert first["type"] == "member.added" and first["user"] == "bob"
        assert first["id"] > hidden.json()["id"]
        assert second["id"] == shown.json()["id"]


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    made = Cluster(tmp_path, redis_server.url)
    yield made
    made.close()


async def test_removal_follows_event_order_across_processes(cluster: Cluster) -> None:
    """Two processes sharing the store and Redis: bob follows rooms=* on one, alice removes
    him on the other while posting; bob's stream gets nothing of the room after the removal,
    and an added member's stream on the other process gets the room from the addition on."""
    first, second = cluster.start(2, CHAT_AUTH="required")
    tokens = await seed_people(cluster.database)
    head = bearer(tokens["alice"])
    async with httpx.AsyncClient(base_url=first.url, timeout=10, headers=head) as alice:
        assert (await alice.put("/api/rooms/secret", json={"private": True})).status_code == 201
        await alice.put("/api/rooms/secret/members/bob", json={})
        params = {"rooms": "*", "access_token": tokens["bob"]}
        carl_params = {"rooms": "*", "access_token": tokens["carl"]}
        async with (
            Follower(second.url, "/api/events", params, name="bob") as bob,
            Follower(second.url, "/api/events", carl_params, name="carl") as carl,
        ):
            ids = []
            for n in range(30):
                if n == 10:
                    await alice.delete("/api/rooms/secret/members/bob")
                if n == 20:
                    await alice.put("/api/rooms/secret/members/carl", json={})
                answer = await alice.post("/api/rooms/secret/messages", json={"text": str(n)})
                ids.append(answer.json()["id"])
            end = (await alice.post("/api/rooms/lobby/messages", json={"text": "end"})).json()
            await bob.wait_for_id(end["id"])
            await carl.wait_for_id(end["id"])
    bob_secret = [e.json() for e in bob.events if e.id and e.json()["room"] == "secret"]
    carl_secret = [e.json() for e in carl.events if e.id and e.json()["room"] == "secret"]
    assert [e["text"] for e in bob_secret if e["type"] == "message"] == [str(n) for n in range(10)]
    assert bob_secret[-1]["type"] == "member.removed"
    assert carl_secret[0]["type"] == "member.added"
    assert [e["text"] for e in carl_secret[1:]] == [str(n) for n in range(20, 30)]


async def test_a_write_is_checked_against_the_store_not_a_book_that_lags(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Two processes on one store, each with its own (local) broker, so the second never
    hears of the first's events: the longest a broker can lag. Alice creates a private room
    on the first; a guest's writes into it on the second, whose book does not know the room,
    are refused (404) and leave nothing behind. Before, the second process checked at commit
    only rooms its book knew to be private, and committed the guest's message (a probe found
    it with two processes and Redis: the window was the broker's latency)."""
    first = make_server()
    tokens = await seed_people(first.database)
    later = LiveServer(tmp_path / "second", database=first.database)
    (tmp_path / "second").mkdir()
    later.start()
    try:
        async with (
            httpx.AsyncClient(
                base_url=first.url, timeout=10, headers=bearer(tokens["alice"])
            ) as alice,
            httpx.AsyncClient(base_url=later.url, timeout=10) as guest,
        ):
            made = await alice.put("/api/rooms/hidden", json={"private": True})
            assert made.status_code == 201, made.text
            for path, body in (
                ("/api/rooms/hidden/messages", {"author": "guest", "text": "intruder"}),
                ("/api/rooms/hidden/messages/batch", {"messages": [{"author": "g", "text": "x"}]}),
                ("/api/rooms/hidden/activity", {"actor": "g", "verb": "v", "object": "o"}),
            ):
                refused = await guest.post(path, json=body)
                assert refused.status_code == 404, (path, refused.text)
            history = await alice.get("/api/rooms/hidden/messages")
            assert history.status_code == 200 and history.json()["messages"] == []
    finally:
        later.terminate()


async def test_joining_an_existing_room_by_put_changes_nothing_and_needs_no_ownership(
    people: People,
) -> None:
    async with people.client("bob") as bob:
        joined = await bob.put("/api/rooms/lobby", json={})
        assert joined.status_code == 200 and joined.json()["title"] == "lobby"
        renamed = await bob.put("/api/rooms/lobby", json={"title": "mine"})
        assert renamed.status_code == 403


async def test_a_guest_session_with_the_owners_name_sees_nothing_private(
    make_server: Callable[..., LiveServer],
) -> None:
    """In open mode a guest name is free for anyone to take, a JWT user's too (the service
    learns a JWT's ``sub`` only when it is used, so it reserves no name): taking the name of
    a private room's owner must not open the room. (A token's or an account's name cannot be
    taken: 409, and tokens create ends a guest session of the name.)"""
    secret = "a shared secret of the host application, 32+ bytes"
    live = make_server(CHAT_JWT_SECRET=secret)
    claims = {"sub": "bot1", "role": "bot", "exp": int(time.time()) + 600}
    bot = jwt.encode(claims, secret, algorithm="HS256")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        made = await client.put("/api/rooms/ops", json={"private": True}, headers=bearer(bot))
        assert made.status_code == 201
        await client.post(
            "/api/rooms/ops/messages", json={"text": SECRET_TEXT}, headers=bearer(bot)
        )
        taken = await client.post("/api/session", json={"user": "bot1"})
        assert taken.status_code == 201
        for path in ("/api/rooms/ops", "/api/rooms/ops/messages", "/api/rooms/ops/members"):
            assert (await client.get(path)).status_code == 404
        listed = await client.get("/api/rooms")
        never_shows_the_secret(listed)
        assert "ops" not in {room["name"] for room in listed.json()["rooms"]}
        made = await client.put(
            "/api/rooms/mine", json={"private": True}, headers={"Origin": live.url}
        )
        assert made.status_code == 401
        public = await client.put("/api/rooms/guests", json={}, headers={"Origin": live.url})
        assert public.status_code == 201
        members = await client.get("/api/rooms/guests/members")
        assert members.json() == {"members": []}  # a guest owns nothing


async def test_a_stream_of_listed_rooms_learns_its_user_was_invited_also_on_resume(
    people: People,
) -> None:
    """Bob's page follows `lobby` only; the invitation to `secret` reaches that stream live,
    and again when the stream resumes from before it."""
    async with (
        people.client("alice") as alice,
        httpx.AsyncClient(base_url=people.url, timeout=httpx.Timeout(10, read=None)) as reader,
    ):
        headers = bearer(people.tokens["bob"])
        start = (await alice.get("/api/rooms/lobby")).json()["last_event_id"]
        path = "/api/events?rooms=lobby&types=member.added,member.removed,message"
        async with open_stream(reader, path, headers=headers) as stream:
            invite = await alice.put("/api/rooms/secret/members/bob", json={})
            assert invite.status_code == 201
            await alice.post("/api/rooms/secret/messages", json={"text": "not on this stream"})
            marker = await alice.post("/api/rooms/lobby/messages", json={"text": "marker"})
            first, second = (event.json() for event in await stream.take(2))
        assert (first["type"], first["room"], first["user"]) == ("member.added", "secret", "bob")
        assert second["id"] == marker.json()["id"]
        resumed_headers = {**headers, "Last-Event-ID": str(start)}
        async with open_stream(reader, path, headers=resumed_headers) as stream:
            replayed = [event.json() for event in await stream.take(2)]
        assert [e["id"] for e in replayed] == [first["id"], second["id"]]
