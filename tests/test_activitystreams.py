"""Activity Streams 2.0 (docs/activitystreams.md): room activity history and the notification
feed as AS2 pages, AS2 activities POSTed as activity items; every document checked by a
JSON-LD expansion (pyld) against the AS2 context, so that no property is lost.

The context is vendored (CI has no network): tests/data/activitystreams.jsonld is
https://www.w3.org/ns/activitystreams, the file ``ns/activitystreams.jsonld`` of
https://github.com/w3c/activitystreams at commit 81e01ff00a758d118904f7d1d4eac84a37556ce2
(2020-09-21, "Extension: alsoKnownAs", its last change; unchanged at the repository's head
of 2026-08-08), byte for byte (SHA256 below)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pyld import jsonld

from chat import activitystreams as as2
from chat.errors import ValidationFailed
from tests.live import LiveServer

Json = dict[str, Any]
CONTEXT_FILE = Path(__file__).parent / "data" / "activitystreams.jsonld"
CONTEXT_SHA256 = "a27b78b82f4980963127140d0cb74f0e8f21c0e2b8efd0368232bf9823edff5a"
AS = "https://www.w3.org/ns/activitystreams#"
AS2_ACCEPT = "application/activity+json"
LD_ACCEPT = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
AS2_TYPE = "application/activity+json"
KEYWORDS = {"id": "@id", "type": "@type"}


# -- JSON-LD: expansion against the vendored context --------------------------------------------


def load_context(url: str, options: Any = None) -> Json:
    """pyld's document loader: the AS2 context from its file; nothing else is fetched."""
    if url.rstrip("#").removesuffix(".jsonld") != as2.AS2_CONTEXT:
        raise jsonld.JsonLdError(f"no network in tests: {url}", "loading document failed")
    return {
        "contextUrl": None,
        "documentUrl": url,
        "document": orjson.loads(CONTEXT_FILE.read_bytes()),
        "contentType": "application/ld+json",
    }


def term_iris(base_url: str) -> dict[str, str]:
    """Compact term -> property IRI: the AS2 context's terms and the extension terms."""
    terms: dict[str, str] = {}
    defined = orjson.loads(CONTEXT_FILE.read_bytes())["@context"] | as2.context(base_url)[1]
    prefixes = {"as": AS, "chat": as2.namespace(base_url), "ldp": "http://www.w3.org/ns/ldp#"}
    for term, value in defined.items():
        iri = value["@id"] if isinstance(value, dict) else value
        prefix, _, rest = iri.partition(":")
        terms[term] = prefixes[prefix] + rest if prefix in prefixes else iri
    return terms


def compact_keys(node: Any) -> Iterator[str]:
    """Every property used in a compacted document (a JSON literal's insides are data)."""
    if isinstance(node, list):
        for item in node:
            yield from compact_keys(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "@context":
                continue
            yield key
            if key != "data":
                yield from compact_keys(value)


def expanded_keys(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from expanded_keys(item)
    elif isinstance(node, dict):
        if node.get("@type") == "@json":
            return
        for key, value in node.items():
            yield key
            yield from expanded_keys(value)


def expanded_types(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from expanded_types(item)
    elif isinstance(node, dict) and "@value" not in node:  # a value's @type is a datatype
        for key, value in node.items():
            if key == "@type":
                yield from value
            else:
                yield from expanded_types(value)


def expand(document: Json, base_url: str) -> list[Json]:
    """Expand ``document`` and check that the expansion kept every property it has, each as
    an AS2 IRI or one of the extension terms (never a blank-node or ``@vocab`` catch-all),
    and that every type is an IRI of AS2 or of the extension namespace."""
    expanded: list[Json] = jsonld.expand(document, {"documentLoader": load_context})
    terms = term_iris(base_url)
    wanted = Counter(
        terms.get(key, f"undefined term {key!r}")
        for key in compact_keys(document)
        if key not in KEYWORDS
    )
    kept = Counter(key for key in expanded_keys(expanded) if not key.startswith("@"))
    assert kept == wanted
    extension = {terms[t] for t in as2.EXTENSION_TERMS}
    assert all(iri.startswith(AS) or iri in extension for iri in kept)
    ns = as2.namespace(base_url)
    assert all(t.startswith((AS, ns)) for t in expanded_types(expanded)), expanded
    return expanded


def test_the_vendored_context_is_the_w3c_file() -> None:
    assert hashlib.sha256(CONTEXT_FILE.read_bytes()).hexdigest() == CONTEXT_SHA256


# -- helpers against the live server ------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def as2_ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.headers["content-type"] == AS2_TYPE, response.headers
    return ok(response, status)


def refused(response: httpx.Response, status: int, code: str) -> set[str]:
    """Asserts the JSON error envelope; returns the fields its details name."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    return {str(d.get("field")) for d in error["details"]}


async def act(
    client: httpx.AsyncClient, room: str, verb: str = "built", obj: str = "main", **extra: Any
) -> Json:
    body = {"actor": "ci", "verb": verb, "object": obj, **extra}
    return ok(await client.post(f"/api/rooms/{room}/activity", json=body), 201)


async def as2_page(client: httpx.AsyncClient, url: str, accept: str = AS2_ACCEPT) -> Json:
    return as2_ok(await client.get(url, headers={"Accept": accept}))


def verbs_of(page: Json) -> list[str]:
    return [item["verb"] for item in page["orderedItems"]]


# -- room activity history --------------------------------------------------------------------


async def test_both_accept_forms_give_an_as2_page(
    server: LiveServer, client: httpx.AsyncClient, room: str
) -> None:
    await act(client, room, summary="tests <passed> & green", data={"run": 412})
    liked = await act(client, room, "liked", "release 1.2", actor="alice")
    url = f"/api/rooms/{room}/activity"
    page = await as2_page(client, url)
    assert page == await as2_page(client, url, LD_ACCEPT)
    base = server.url
    assert page["@context"][0] == as2.AS2_CONTEXT
    assert page["type"] == "OrderedCollectionPage"
    assert page["partOf"] == f"{base}{url}"
    assert "next" not in page and "prev" not in page
    newest, oldest = page["orderedItems"]  # newest first
    assert newest == {
        "id": f"{base}{url}/{liked['id']}",
        "type": "Like",
        "actor": {"type": "Person", "id": f"{base}/api/users/alice", "name": "alice"},
        "object": {"type": "Object", "name": "release 1.2"},
        "published": liked["created_at"],
        "context": {"id": f"{base}/api/rooms/{room}", "name": room},
        "verb": "liked",
        "eventId": liked["id"],
    }
    assert oldest["type"] == "built" and oldest["data"] == {"run": 412}
    assert oldest["summary"] == "tests &lt;passed&gt; &amp; green"  # AS2 summaries are HTML
    expanded = expand(page, base)
    items = expanded[0][AS + "items"][0]["@list"]
    assert [i["@id"] for i in items] == [newest["id"], oldest["id"]]
    assert items[1][as2.namespace(base) + "data"] == [{"@type": "@json", "@value": {"run": 412}}]
    # each id is a URL that answers with the item
    one = await as2_page(client, newest["id"])
    assert one == {"@context": page["@context"], **newest}
    assert ok(await client.get(newest["id"])) == liked


async def test_plain_json_is_unchanged_and_q_values_decide(
    client: httpx.AsyncClient, room: str
) -> None:
    items = [await act(client, room), await act(client, room, "deployed")]
    url = f"/api/rooms/{room}/activity"
    json_page = {"items": items, "has_more": False}
    for accept in (None, "application/json", "*/*", "application/*", "text/html, */*;q=0.8"):
        headers = {} if accept is None else {"Accept": accept}
        response = await client.get(url, headers=headers)
        assert response.headers["content-type"].startswith("application/json"), accept
        assert ok(response) == json_page
    for accept, as2_wanted in [
        ("application/activity+json;q=0.5, application/json", False),
        ("application/activity+json;q=0", False),
        ('application/ld+json; profile="https://example.org/other"', False),
        ("application/json;q=0.5, application/activity+json", True),
        ("application/json, application/activity+json", True),
        ("application/json;q=0, */*", True),
        ("application/ld+json", True),
        (LD_ACCEPT.replace("; ", ";") + ";q=0.9, application/json;q=0.8", True),
    ]:
        response = await client.get(url, headers={"Accept": accept})
        assert response.status_code == 200, response.text
        got = response.headers["content-type"].split(";")[0]
        assert got == (AS2_TYPE if as2_wanted else "application/json"), accept
        assert response.headers["vary"] == "Accept"


async def test_verbs_map_to_as2_types_or_keep_their_name(
    server: LiveServer, client: httpx.AsyncClient, room: str
) -> None:
    expected = {
        "created": "Create",
        "Updated": "Update",
        "delete": "Delete",
        "liked": "Like",
        "added": "Add",
        "removed": "Remove",
        "invited": "Invite",
        "joined": "Join",
        "built": "built",
        "opened PR": "opened%20PR",
        "as:Like": "as%3ALike",  # never read as AS2's Like
    }
    for verb in expected:
        await act(client, room, verb)
    page = await as2_page(client, f"/api/rooms/{room}/activity")
    got = {item["verb"]: item["type"] for item in page["orderedItems"]}
    assert got == expected
    expanded = expand(page, server.url)
    types = [i["@type"] for i in expanded[0][AS + "items"][0]["@list"]]
    ns = as2.namespace(server.url)
    assert types == [[AS + t if t[0].isupper() else ns + t] for t in reversed(expected.values())]


async def test_pages_link_next_and_prev_with_the_before_cursor(
    client: httpx.AsyncClient, room: str
) -> None:
    ids = []
    for n in range(5):
        ids.append((await act(client, room, obj=f"build {n}"))["id"])
        message = {"author": "alice", "text": f"between {n}"}  # other events in between
        ok(await client.post(f"/api/rooms/{room}/messages", json=message), 201)
    url = f"/api/rooms/{room}/activity"

    def item_ids(page: Json) -> list[int]:
        return [item["eventId"] for item in page["orderedItems"]]

    first = await as2_page(client, f"{url}?limit=2")
    assert item_ids(first) == [ids[4], ids[3]] and "prev" not in first
    second = await as2_page(client, first["next"])
    assert second["next"].endswith(f"?before={ids[1]}&limit=2")
    assert item_ids(second) == [ids[2], ids[1]]
    # the JSON API takes the same cursor
    json_second = ok(await client.get(url, params={"before": ids[3], "limit": 2}))
    assert [i["id"] for i in json_second["items"]] == [ids[1], ids[2]]
    assert json_second["has_more"] is True
    third = await as2_page(client, second["next"])
    assert item_ids(third) == [ids[0]] and "next" not in third
    assert await as2_page(client, third["prev"]) == second
    assert await as2_page(client, second["prev"]) == first


# -- POST of an AS2 activity ------------------------------------------------------------------


async def test_an_as2_activity_is_stored_as_an_activity_item(
    server: LiveServer, client: httpx.AsyncClient, room: str
) -> None:
    url, base = f"/api/rooms/{room}/activity", server.url
    create = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "type": "Create",
        "actor": {"type": "Application", "name": "ci"},
        "object": {"type": "Note", "name": "release notes 1.2"},
        "summary": "notes &amp; changes",
        "data": {"pr": 17, "labels": ["docs"]},
    }
    created = ok(await client.post(url, json=create), 201)
    assert created == {
        "id": created["id"],
        "type": "activity",
        "room": room,
        "created_at": created["created_at"],
        "actor": "ci",
        "verb": "create",
        "object": "release notes 1.2",
        "summary": "notes & changes",
        "data": {"pr": 17, "labels": ["docs"]},
    }
    # `type` alone marks AS2; the actor as this service's URL; an unmapped verb by name
    deployed = {"type": "deployed", "actor": f"{base}/api/users/ops%20bot", "object": "prod"}
    second = ok(await client.post(url, json=deployed), 201)
    assert (second["actor"], second["verb"], second["object"]) == ("ops bot", "deployed", "prod")
    # `verb` says the exact verb; the answer is AS2 when asked for
    starred = {"type": ["Like"], "verb": "starred", "actor": "bob", "object": {"id": "repo"}}
    answer = await client.post(url, json=starred, headers={"Accept": AS2_ACCEPT})
    third = as2_ok(answer, 201)
    assert (third["type"], third["verb"], third["object"]) == (
        "Like",
        "starred",
        {"type": "Object", "name": "repo"},
    )
    expand(third, base)
    # the JSON history shows today's shape
    history = ok(await client.get(url))["items"]
    assert history[:2] == [created, second]
    assert {k: history[2][k] for k in ("actor", "verb", "object")} == {
        "actor": "bob",
        "verb": "starred",
        "object": "repo",
    }
    # and the AS2 history gives back what was sent
    page = await as2_page(client, url)
    assert page["orderedItems"][2]["type"] == "Create"
    assert page["orderedItems"][2]["summary"] == "notes &amp; changes"


async def test_as2_media_types_are_accepted_on_this_route_only(
    client: httpx.AsyncClient, room: str
) -> None:
    like = {"type": "Like", "actor": "bob", "object": "the release"}
    for content_type in (AS2_TYPE, LD_ACCEPT):
        headers = {"Content-Type": content_type}
        answer = await client.post(
            f"/api/rooms/{room}/activity", content=orjson.dumps(like), headers=headers
        )
        assert ok(answer, 201)["verb"] == "like", content_type
    message = orjson.dumps({"author": "bob", "text": "hi"})
    for path in ("messages", "activity/batch"):
        answer = await client.post(
            f"/api/rooms/{room}/{path}", content=message, headers={"Content-Type": AS2_TYPE}
        )
        refused(answer, 415, "unsupported_media_type")


BAD_AS2: list[tuple[Any, set[str]]] = [
    ({"type": "Note", "actor": "bob", "object": "x"}, {"type"}),
    ({"type": "Activity", "actor": "bob", "object": "x"}, {"type"}),
    ({"type": 7, "actor": "bob", "object": "x"}, {"type"}),
    ({"type": [], "actor": "bob", "object": "x"}, {"type"}),
    ({"type": "Like", "actor": "bob"}, {"object"}),
    ({"type": "Like", "actor": "bob", "object": {"type": "Note"}}, {"object"}),
    ({"type": "Like", "actor": "bob", "object": ["a", "b"]}, {"object"}),
    ({"type": "Like", "actor": "https://elsewhere.example/u/bob", "object": "x"}, {"actor"}),
    ({"type": "Like", "actor": ["bob", "carol"], "object": "x"}, {"actor"}),
    ({"type": "Like", "actor": {"type": "Person"}, "object": "x"}, {"actor"}),
    ({"type": "Like", "actor": "@bob", "object": "x"}, {"actor"}),
    ({"type": "Like", "actor": "bob", "object": "x", "summary": 3}, {"summary"}),
    ({"type": "Like", "actor": "bob", "object": "x", "data": [1]}, {"data"}),
    ({"type": "Like", "actor": "bob", "object": "x", "data": {"n": 2**70}}, {"data"}),
    ({"type": "x" * 65, "actor": "bob", "object": "x"}, {"type"}),
    ({"type": "Like", "verb": "", "actor": "bob", "object": "x"}, {"verb"}),
    ({"type": "Like", "actor": "bob", "object": "line\nbreak"}, {"object"}),
    ({"@context": 5, "type": "Like", "actor": "bob", "object": "x"}, {"@context"}),
    ({"@context": as2.AS2_CONTEXT}, {"type", "object"}),
    ([{"type": "Like"}], {""}),
]


@pytest.mark.parametrize(("body", "fields"), BAD_AS2)
async def test_a_bad_as2_body_is_a_422_envelope(
    client: httpx.AsyncClient, room: str, body: Any, fields: set[str]
) -> None:
    url = f"/api/rooms/{room}/activity"
    assert refused(await client.post(url, json=body), 422, "validation_error") == fields
    refused(await client.get(url), 404, "not_found")  # nothing stored: no room either


async def test_a_body_that_is_no_json_is_still_a_400(client: httpx.AsyncClient, room: str) -> None:
    answer = await client.post(
        f"/api/rooms/{room}/activity",
        content=b'{"type": "Like",',
        headers={"Content-Type": "application/json"},
    )
    refused(answer, 400, "invalid_json")


# -- notification groups ------------------------------------------------------------------------

BASE = "https://chat.example"
GROUP: Json = {
    "room": "general",
    "actors": ["carol", "bob"],
    "actor_count": 4,
    "count": 6,
    "first_at": "2026-11-21T20:52:49.123Z",
    "latest_at": "2026-11-21T21:02:00.000Z",
    "unread": True,
}
GROUPS: list[Json] = [
    GROUP | {"id": 40, "kind": "reaction", "message_id": 12, "emoji": "👍", "latest_event_id": 50},
    GROUP | {"id": 31, "kind": "reply", "message_id": 12, "latest_event_id": 45},
    GROUP | {"id": 30, "kind": "mention", "message_id": 30, "latest_event_id": 30},
    GROUP
    | {"id": 20, "kind": "activity", "verb": "built", "object": "main", "latest_event_id": 25},
    GROUP
    | {"id": 21, "kind": "activity", "verb": "liked", "object": "a <b>", "latest_event_id": 24},
    GROUP | {"id": 9, "kind": "membership", "actors": ["dana"], "latest_event_id": 9},
]
for _group in GROUPS:
    _group["summary"] = f"carol, bob and 2 others: {_group['kind']} <&>"


def test_each_notification_kind_maps_to_an_as2_activity() -> None:
    nodes = [as2.notification_group_to_as2(g, BASE, "alice smith") for g in GROUPS]
    for node in nodes:
        expand(node, BASE)
    you = f"{BASE}/api/users/alice%20smith"
    message = f"{BASE}/api/rooms/general/messages"
    reaction, reply, mention, built, liked, membership = nodes
    assert {k: v for k, v in reaction.items() if k != "@context"} == {
        "id": f"{you}/notifications#40",
        "type": "Like",
        "actor": [
            {"type": "Person", "id": f"{BASE}/api/users/carol", "name": "carol"},
            {"type": "Person", "id": f"{BASE}/api/users/bob", "name": "bob"},
        ],
        "object": {"type": "Note", "id": f"{message}/12"},
        "content": "👍",
        "published": "2026-11-21T20:52:49.123Z",
        "updated": "2026-11-21T21:02:00.000Z",
        "context": {"id": f"{BASE}/api/rooms/general", "name": "general"},
        "to": you,
        "summary": "carol, bob and 2 others: reaction &lt;&amp;&gt;",
        "kind": "reaction",
        "actorCount": 4,
        "eventCount": 6,
        "unread": True,
        "latestEventId": 50,
    }
    assert reply["type"] == "Create"
    assert reply["object"] == {"type": "Note", "id": f"{message}/45", "inReplyTo": f"{message}/12"}
    assert mention["type"] == "Create"
    assert mention["object"]["tag"] == {"type": "Mention", "href": you, "name": "@alice smith"}
    assert (built["type"], built["verb"], built["object"]["name"]) == ("built", "built", "main")
    assert (liked["type"], liked["object"]["name"]) == ("Like", "a <b>")  # names are text
    assert membership["type"] == "Add" and membership["actor"]["name"] == "dana"
    assert membership["object"]["id"] == you and membership["target"] == reply["context"]


def test_a_notifications_page_links_older_and_newest() -> None:
    page = as2.notifications_page(GROUPS[:3], True, BASE, "alice", None, 3)
    feed = f"{BASE}/api/users/alice/notifications"
    assert (page["type"], page["id"], page["partOf"]) == (
        "OrderedCollectionPage",
        f"{feed}?limit=3",
        feed,
    )
    assert page["next"] == f"{feed}?before=30&limit=3" and "prev" not in page
    assert [g["latestEventId"] for g in page["orderedItems"]] == [50, 45, 30]
    expanded = expand(page, BASE)
    assert len(expanded[0][AS + "items"][0]["@list"]) == 3
    older = as2.notifications_page(GROUPS[3:], False, BASE, "alice", 30, 3)
    assert "next" not in older and older["prev"] == f"{feed}?limit=3"
    expand(older, BASE)
    empty = as2.notifications_page([], False, BASE, "alice", None, 50)
    assert empty["orderedItems"] == [] and "next" not in empty
    expand(empty, BASE)


async def test_the_notification_feed_answers_as_as2(
    server: LiveServer, client: httpx.AsyncClient, room: str
) -> None:
    message = {"author": "alice", "text": "@bob please look at the release"}
    posted = ok(await client.post(f"/api/rooms/{room}/messages", json=message), 201)
    url = "/api/users/bob/notifications"
    groups = ok(await client.get(url))["groups"]
    assert groups[0]["kind"] == "mention" and groups[0]["message_id"] == posted["id"]
    page = as2_ok(await client.get(url, headers={"Accept": AS2_ACCEPT}))
    assert page["type"] == "OrderedCollectionPage"
    mention = page["orderedItems"][0]
    assert mention["type"] == "Create" and mention["kind"] == "mention"
    assert mention["object"]["id"] == f"{server.url}/api/rooms/{room}/messages/{posted['id']}"
    assert mention["object"]["tag"]["href"] == f"{server.url}/api/users/bob"
    expand(page, server.url)


# -- as2_to_activity on its own -------------------------------------------------------------


def test_as2_to_activity_gives_todays_fields() -> None:
    body = {"type": "https://www.w3.org/ns/activitystreams#Add", "object": {"content": "a &lt; b"}}
    assert as2.as2_to_activity(body) == {"verb": "add", "object": "a < b"}
    with pytest.raises(ValidationFailed) as refused_body:
        as2.as2_to_activity({"type": "Person", "object": "x"})
    assert [d["field"] for d in refused_body.value.details] == ["type"]
