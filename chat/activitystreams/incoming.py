"""AS2 activities, in (checked by the rules of an activity item), and the content negotiation
that tells whether a client asks for AS2."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from chat.activitystreams.vocabulary import (
    ACTIVITY_TYPES,
    AS2_CONTEXT,
    AS2_MEDIA_TYPES,
    AS2_NAMESPACE,
    GENERIC_ACTIVITIES,
    NOT_ACTIVITIES,
    user_url,
)
from chat.errors import ValidationFailed
from chat.models import ActivityIn


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
        known = [k for k in map(_short_type, kinds) if k in ACTIVITY_TYPES]
        kinds = known[0] if known else kinds[0]
    if not isinstance(kinds, str):
        return _Problem("an activity needs a type (a string): its verb", "type")
    kind = _short_type(kinds)
    if kind in NOT_ACTIVITIES:
        return _Problem(f"must be an activity type, not the object type {kind!r}", "type")
    if kind in GENERIC_ACTIVITIES:
        return _Problem(f"a generic {kind!r} needs its verb in `verb`", "type")
    return kind.lower() if kind in ACTIVITY_TYPES else unquote(kind)


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
