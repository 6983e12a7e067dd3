"""The AS2 vocabulary of this service: the context and extension terms, verbs as AS2 types,
and the URLs of its users, rooms, activities and messages."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

AS2_CONTEXT = "https://www.w3.org/ns/activitystreams"
AS2_NAMESPACE = AS2_CONTEXT + "#"
AS2_MEDIA_TYPE = "application/activity+json"
# The media types a POST body may come as, besides application/json (chat.api.pipeline).
AS2_MEDIA_TYPES = frozenset({b"application/activity+json", b"application/ld+json"})

# AS2's activity types, each with the chat verbs (besides its own name) that mean it.
ACTIVITY_TYPES: dict[str, tuple[str, ...]] = {
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
    verb: kind for kind, aliases in ACTIVITY_TYPES.items() for verb in (kind.lower(), *aliases)
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


def html_text(text: str) -> str:
    """AS2's ``summary`` and ``content`` are HTML; ours are plain text."""
    return html.escape(text, quote=False)
