"""Activity Streams 2.0 (https://www.w3.org/TR/activitystreams-core/): the room activity
history and the notification feed as AS2 ``OrderedCollectionPage``s, and AS2 activities as
activity items. Plain code: the routes (``chat.api.activity``) negotiate and do the IO.

A verb maps to the AS2 activity type of ``VERB_TYPES`` where one fits, and is kept as its
own name otherwise (``"built"`` stays the type ``"built"``, an IRI of this deployment's
extension namespace); the table and examples are in docs/activitystreams.md. Every
document carries ``context(base_url)``: the AS2 context, then the extension terms
(``EXTENSION_TERMS``) so that a JSON-LD expansion keeps every property."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from pydantic import ValidationError

from chat.errors import ValidationFailed
from chat.models import ActivityIn

AS2_CONTEXT = "https://www.w3.org/ns/activitystreams"
AS2_NAMESPACE = AS2_CONTEXT + "#"
AS2_MEDIA_TYPE = "application/activity+json"
# The media types a POST body may come as, besides application/json (chat.api.pipeline).
AS2_MEDIA_TYPES = frozenset({b"application/activity+json", b"application/ld+json"})

_ALIASES: dict[str, tuple[str, ...]] = {
    "Accept": ("accepted", "approve", "approved"),
    "Add": ("added",),
    "Announce": ("announced", "share", "shared", "boost", "boosted"),
    "Arrive": ("arrived",),
    "Block": ("blocked",),
    "Create": ("created", "post", "posted", "publish", "published"),
    "Delete": ("deleted",),
    "Dislike": ("disliked",),
    "Flag": ("flagged", "report", "reported"),
    "Follow": ("followed", "subscribe", "subscribed"),
    "Ignore": ("ignored", "mute", "muted"),
    "Invite": ("invited",),
    "Join": ("joined",),
    "Leave": ("left",),
    "Like": ("liked", "star", "starred", "favorite", "favorited", "favourite", "favourited"),
    "Listen": ("listened",),
    "Move": ("moved",),
    "Offer": ("offered",),
    "Question": ("ask", "asked"),
    "Read": (),
    "Reject": ("rejected", "decline", "declined"),
    "Remove": ("removed",),
    "TentativeAccept": ("tentatively-accepted",),
    "TentativeReject": ("tentatively-rejected",),
    "Travel": ("traveled", "travelled"),
    "Undo": ("undid", "undone"),
    "Update": ("updated", "edit", "edited", "change", "changed"),
    "View": ("viewed",),
}
# chat verb (case-insensitive) -> AS2 activity type: each type's own name, lower-cased, and
# its aliases. An AS2 activity POSTed with a type of this table is stored with the type's
# name lower-cased as its verb ("Like" -> "like"), unless the body says its ``verb``.
VERB_TYPES: dict[str, str] = {
    verb: kind for kind, aliases in _ALIASES.items() for verb in (kind.lower(), *aliases)
}
GENERIC_ACTIVITIES = frozenset({"Activity", "IntransitiveActivity"})
# AS2 types that are no activity: a body of one of these is refused (422).
NOT_ACTIVITIES = frozenset(
    [
        "Object",
        "Link",
        "Note",
        "Article",
        "Audio",
        "Document",
        "Event",
        "Image",
        "Page",
        "Place",
        "Profile",
        "Relationship",
        "Tombstone",
        "Video",
        "Mention",
        "Collection",
        "OrderedCollection",
        "CollectionPage",
        "OrderedCollectionPage",
        "Application",
        "Group",
        "Organization",
        "Person",
        "Service",
    ]
)

# Extension terms (compact name -> term in the ``chat:`` namespace, or a definition).
EXTENSION_TERMS: dict[str, str | dict[str, str]] = {
    "verb": "chat:verb",  # the activity's verb exactly as stored
    "eventId": "chat:eventId",  # the stored event's integer id (the JSON API's cursor)
    "data": {"@id": "chat:data", "@type": "@json"},  # the free `data` object, kept whole
    "kind": "chat:kind",  # a notification group's kind
    "actorCount": "chat:actorCount",
    "eventCount": "chat:eventCount",
    "unread": "chat:unread",
    "latestEventId": "chat:latestEventId",
}

# Characters a verb used as a type is percent-encoded for: a colon would make it a compact
# or absolute IRI ("as:Like"), "@" a keyword; the rest are not allowed in an IRI.
_NOT_IN_TYPE = re.compile(r"[\s\x00-\x1f\x7f:%@\"<>\\^`{|}#?\[\]]")


def namespace(base_url: str) -> str:
    """The extension namespace of a deployment (its terms and unmapped verbs)."""
    return f"{base_url}/ns/activitystreams#"


def context(base_url: str) -> list[Any]:
    """The ``@context`` of every document: AS2, then the extension terms. ``@vocab`` makes
    an unmapped verb, used as a type, an IRI of the namespace (AS2's own ``@vocab`` would
    make it a blank node)."""
    ns = namespace(base_url)
    return [AS2_CONTEXT, {"chat": ns, "@vocab": ns, **EXTENSION_TERMS}]


def as2_type(verb: str) -> str:
    """The AS2 type of a verb, or the verb itself (percent-encoded where an IRI needs it)."""
    kind = VERB_TYPES.get(verb.strip().lower())
    if kind is not None:
        return kind
    return _NOT_IN_TYPE.sub(lambda m: quote(m.group(), safe=""), verb)


# -- URLs -----------------------------------------------------------------------------------


def user_url(base_url: str, user: str) -> str:
    return f"{base_url}/api/users/{quote(user, safe='')}"


def room_url(base_url: str, room: str) -> str:
    return f"{base_url}/api/rooms/{room}"


def activity_url(base_url: str, room: str, event_id: int) -> str:
    return f"{room_url(base_url, room)}/activity/{event_id}"


def message_url(base_url: str, room: str, message_id: int) -> str:
    return f"{room_url(base_url, room)}/messages/{message_id}"


def page_url(collection_url: str, before: int | None, limit: int) -> str:
    """A page of a collection, by the JSON API's ``before`` cursor."""
    cursor = "" if before is None else f"before={before}&"
    return f"{collection_url}?{cursor}limit={limit}"


def person(base_url: str, user: str) -> dict[str, Any]:
    return {"type": "Person", "id": user_url(base_url, user), "name": user}


def room_node(base_url: str, room: str) -> dict[str, Any]:
    return {"id": room_url(base_url, room), "name": room}


def _html(text: str) -> str:
    """AS2's ``summary`` and ``content`` are HTML; ours are plain text."""
    return html.escape(text, quote=False)


# -- stored events and notification groups, out -----------------------------------------------


def activity_to_as2(
    event: Mapping[str, Any], base_url: str, *, with_context: bool = True
) -> dict[str, Any]:
    """A stored ``activity`` event as an AS2 activity."""
    room, verb = event["room"], event["verb"]
    node: dict[str, Any] = {"@context": context(base_url)} if with_context else {}
    node |= {
        "id": activity_url(base_url, room, event["id"]),
        "type": as2_type(verb),
        "actor": person(base_url, event["actor"]),
        "object": {"type": "Object", "name": event["object"]},
        "published": event["created_at"],
        "context": room_node(base_url, room),
        "verb": verb,
        "eventId": event["id"],
    }
    if event.get("summary") is not None:
        node["summary"] = _html(event["summary"])
    if event.get("data") is not None:
        node["data"] = event["data"]
    return node


def collection_page(
    items: Sequence[Mapping[str, Any]],
    *,
    base_url: str,
    collection_url: str,
    before: int | None,
    limit: int,
    next_before: int | None,
    prev_url: str | None,
) -> dict[str, Any]:
    """An ``OrderedCollectionPage`` of AS2 items (newest first, without their own context):
    ``next`` pages to older items (``next_before``: the JSON API's ``before`` cursor), and
    ``prev`` is the newer page when there is one."""
    page: dict[str, Any] = {
        "@context": context(base_url),
        "id": page_url(collection_url, before, limit),
        "type": "OrderedCollectionPage",
        "partOf": collection_url,
        "orderedItems": list(items),
    }
    if next_before is not None:
        page["next"] = page_url(collection_url, next_before, limit)
    if prev_url is not None:
        page["prev"] = prev_url
    return page


def activity_page(
    events: Sequence[Mapping[str, Any]],
    has_more: bool,
    base_url: str,
    room: str,
    before: int | None,
    limit: int,
    newer_before: int | None = None,
) -> dict[str, Any]:
    """A page of a room's activity history (``events`` ascending, as the store gives them).
    ``newer_before``: the cursor of the page just newer, when ``before`` is given (None:
    the newest page)."""
    collection = f"{room_url(base_url, room)}/activity"
    items = [activity_to_as2(e, base_url, with_context=False) for e in reversed(events)]
    prev = None if before is None else page_url(collection, newer_before, limit)
    oldest = events[0]["id"] if has_more and events else None
    return collection_page(
        items,
        base_url=base_url,
        collection_url=collection,
        before=before,
        limit=limit,
        next_before=oldest,
        prev_url=prev,
    )


def notification_group_to_as2(
    group: Mapping[str, Any], base_url: str, user: str, *, with_context: bool = True
) -> dict[str, Any]:
    """A notification group (API.md, Notifications) as the AS2 activity it stands for."""
    kind, room = group["kind"], group["room"]
    you = user_url(base_url, user)
    node: dict[str, Any] = {"@context": context(base_url)} if with_context else {}
    actors = [person(base_url, a) for a in group.get("actors", [])]
    node |= {
        "id": f"{you}/notifications#{group['id']}",
        "type": "Activity",
        "actor": actors[0] if len(actors) == 1 else actors,
        "published": group["first_at"],
        "updated": group["latest_at"],
        "context": room_node(base_url, room),
        "to": you,
        "kind": kind,
        "actorCount": group["actor_count"],
        "eventCount": group["count"],
        "unread": group["unread"],
        "latestEventId": group["latest_event_id"],
    }
    if group.get("summary") is not None:
        node["summary"] = _html(group["summary"])
    if kind == "mention":
        mention = {"type": "Mention", "href": you, "name": f"@{user}"}
        note = {"type": "Note", "id": message_url(base_url, room, group["message_id"])}
        node |= {"type": "Create", "object": note | {"tag": mention}}
    elif kind == "reply":
        replied = message_url(base_url, room, group["message_id"])
        note = {"type": "Note", "id": message_url(base_url, room, group["latest_event_id"])}
        node |= {"type": "Create", "object": note | {"inReplyTo": replied}}
    elif kind == "reaction":
        note = {"type": "Note", "id": message_url(base_url, room, group["message_id"])}
        node |= {"type": "Like", "object": note, "content": _html(group["emoji"])}
    elif kind == "activity":
        node |= {
            "type": as2_type(group["verb"]),
            "object": {"type": "Object", "name": group["object"]},
            "verb": group["verb"],
        }
    elif kind == "membership":
        node |= {"type": "Add", "object": person(base_url, user), "target": node["context"]}
    return node


def notifications_page(
    groups: Sequence[Mapping[str, Any]],
    has_more: bool,
    base_url: str,
    user: str,
    before: int | None,
    limit: int,
) -> dict[str, Any]:
    """A page of a user's notification feed (``groups`` newest first, as the JSON API gives
    them). ``next``: the older groups (``before`` = the page's smallest
    ``latest_event_id``); ``prev``, on every page but the newest: the newest page (a group
    moves to the top when it gains an event, so a page just newer has no fixed cursor)."""
    collection = f"{user_url(base_url, user)}/notifications"
    items = [notification_group_to_as2(g, base_url, user, with_context=False) for g in groups]
    oldest = min(g["latest_event_id"] for g in groups) if has_more and groups else None
    return collection_page(
        items,
        base_url=base_url,
        collection_url=collection,
        before=before,
        limit=limit,
        next_before=oldest,
        prev_url=None if before is None else page_url(collection, None, limit),
    )


# -- AS2 activities, in ---------------------------------------------------------------------


def is_as2(body: object, content_type: str | None = None) -> bool:
    """Whether a POSTed body is an AS2 activity rather than an activity item: sent as an AS2
    media type, or holding ``@context`` or ``type``."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower().encode()
    if mimetype in AS2_MEDIA_TYPES:
        return True
    return isinstance(body, dict) and ("@context" in body or "type" in body)


def as2_to_activity(body: object, base_url: str | None = None) -> dict[str, Any]:
    """The fields of an activity item (``actor`` when given, ``verb``, ``object``,
    ``summary``, ``data``: ``ActivityIn``'s) of an AS2 activity, checked by the rules of
    ``ActivityIn``; anything wrong is a 422 whose ``details`` name the AS2 property.

    ``actor``: a name, a ``Person`` (its ``preferredUsername`` or ``name``) or this service's
    user URL; ``object``: text, or an object's ``name`` (else ``content``, else ``id``); the
    verb: ``verb`` when given, else the type (``Like`` -> ``like``; another name as it is)."""
    if not isinstance(body, dict):
        raise _invalid([], "must be an AS2 activity: a JSON object")
    problems: list[dict[str, Any]] = []
    item: dict[str, Any] = {}
    for key, value in (("actor", _actor(body, base_url)), ("object", _object(body))):
        if isinstance(value, _Problem):
            problems.append(_detail([key], value.message))
        elif value is not None:
            item[key] = value
    verb = _verb(body)
    if isinstance(verb, _Problem):
        problems.append(_detail([verb.where], verb.message))
    else:
        item["verb"] = verb
    if isinstance(body.get("summary"), str):
        item["summary"] = html.unescape(body["summary"])
    elif body.get("summary") is not None:
        problems.append(_detail(["summary"], "must be a string"))
    if body.get("data") is not None:
        item["data"] = body["data"]
    context_value = body.get("@context", AS2_CONTEXT)
    if not isinstance(context_value, str | list | dict):
        problems.append(_detail(["@context"], "must be an IRI, a context or a list of them"))
    if problems:
        raise ValidationFailed("the body is not an activity this service takes", problems)
    try:
        checked = ActivityIn.model_validate(item)
    except ValidationError as error:
        raise ValidationFailed(
            "the body does not match the schema", _as2_errors(error, body)
        ) from None
    return checked.model_dump(exclude_none=True)


class _Problem:
    def __init__(self, message: str, where: str = "") -> None:
        self.message, self.where = message, where


def _actor(body: Mapping[str, Any], base_url: str | None) -> str | _Problem | None:
    actor = body.get("actor")
    if isinstance(actor, dict):
        names = [actor.get(k) for k in ("preferredUsername", "name", "id")]
        actor = next((name for name in names if isinstance(name, str)), None)
        if actor is None:
            return _Problem("an actor object needs a preferredUsername, a name or an id")
    if actor is None or not isinstance(actor, str):
        return None if actor is None else _Problem("must be a name, a Person or a user's URL")
    yours = None if base_url is None else user_url(base_url, "")
    if yours is not None and actor.startswith(yours):
        return unquote(actor.removeprefix(yours))
    if re.match(r"^[a-z][a-z0-9+.-]*://", actor, re.IGNORECASE):
        return _Problem("must be a user of this service: a name, or its URL /api/users/{name}")
    return actor


def _object(body: Mapping[str, Any]) -> str | _Problem:
    if "object" not in body:
        return _Problem("an activity needs an object")
    value = body["object"]
    if isinstance(value, dict):
        node = value
        if isinstance(node.get("name"), str):
            value = node["name"]
        elif isinstance(node.get("content"), str):
            value = html.unescape(node["content"])
        else:
            value = node.get("id")
    if not isinstance(value, str):
        return _Problem("must be text, or an object with a name, content or id")
    return value


def _verb(body: Mapping[str, Any]) -> str | _Problem:
    if "verb" in body:
        verb = body["verb"]
        return verb if isinstance(verb, str) else _Problem("must be a string", "verb")
    kinds = body.get("type")
    if isinstance(kinds, list) and kinds and all(isinstance(k, str) for k in kinds):
        known = [k for k in map(_short_type, kinds) if k in _ALIASES]
        kinds = known[0] if known else kinds[0]
    if not isinstance(kinds, str):
        return _Problem("an activity needs a type (a string): its verb", "type")
    kind = _short_type(kinds)
    if kind in NOT_ACTIVITIES:
        return _Problem(f"must be an activity type, not the object type {kind!r}", "type")
    if kind in GENERIC_ACTIVITIES:
        return _Problem(f"a generic {kind!r} needs its verb in `verb`", "type")
    return kind.lower() if kind in _ALIASES else unquote(kind)


def _short_type(kind: str) -> str:
    for prefix in (AS2_NAMESPACE, "as:"):
        if kind.startswith(prefix):
            return kind.removeprefix(prefix)
    return kind


def _detail(loc: list[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "field": ".".join(str(part) for part in loc), "msg": msg, "type": kind}


def _invalid(loc: list[str | int], msg: str) -> ValidationFailed:
    return ValidationFailed("the body is not an activity this service takes", [_detail(loc, msg)])


def _as2_errors(error: ValidationError, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pydantic's errors, each located at the AS2 property the field came from."""
    verb_at = "verb" if "verb" in body else "type"
    details = []
    for e in error.errors(include_url=False, include_context=False, include_input=False):
        first, *rest = e["loc"]
        name = verb_at if first == "verb" else str(first)
        details.append(_detail([name, *rest], e["msg"], e["type"]))
    return details


# -- content negotiation --------------------------------------------------------------------


def wants_as2(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for AS2 (``application/activity+json``, or
    ``application/ld+json`` with no profile or the AS2 one) over JSON: by q-value; at equal
    q, AS2 only when it is named (not reached by a wildcard)."""
    if not accept:
        return False
    as2 = json = (-1, 0.0)  # (specificity, q) of the most specific range matching each
    for media_range in accept.split(","):
        kind, q, profiles = _media_range(media_range)
        if kind is None:
            continue
        spec = 0 if kind == "*/*" else 1 if kind == "application/*" else 2
        if kind in ("*/*", "application/*", "application/json") and spec > json[0]:
            json = (spec, q)
        as2_range = kind == "application/activity+json" or (
            kind == "application/ld+json" and (not profiles or AS2_CONTEXT in profiles)
        )
        if (spec < 2 or as2_range) and spec > as2[0]:
            as2 = (spec, q)
    if as2[1] <= 0:
        return False
    return as2[1] > json[1] or (as2[1] == json[1] and as2[0] == 2)


def _media_range(text: str) -> tuple[str | None, float, list[str]]:
    """(type, q, profiles) of one media range; type None when it is malformed."""
    kind, *params = (part.strip() for part in text.split(";"))
    q, profiles = 1.0, []
    for param in params:
        name, _, value = param.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            try:
                q = min(max(float(value), 0.0), 1.0)
            except ValueError:
                return None, 0.0, []
        elif name == "profile":
            profiles = [p.rstrip("#") for p in value.split()]
    kind = kind.lower()
    return (kind if "/" in kind else None), q, profiles
