"""A subscriber's filter: parsed once from the stream's query string, tested against each event.

All parameters are optional; each is a comma-separated list:
``types`` (only these event types), ``authors`` (only these authors, actors or users),
``exclude_authors`` (never these: no echo of one's own posts), ``mentions`` (only messages
(new ones, not edits) whose text mentions ``@name`` as a whole word, case-insensitively).

``authors``, ``exclude_authors`` and ``mentions`` name users: each item (trimmed of the
whitespace around it) must be a user name (``chat.rules.user_name``: NFC-normalised, then
checked), or the query is 400 invalid_query. Names compare as exact NFC strings: "alice" and
"\u0430lice" (its first letter Cyrillic) are two names; "e\u0301" and "\u00e9" are one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from chat import rules
from chat.errors import InvalidQuery
from chat.events import EVENT_TYPES, Event
from chat.rules import MAX_NAME_CHARS as MAX_NAME_CHARS  # the stream's `user` checks it

MAX_LIST_ITEMS = 100


@dataclass(frozen=True, slots=True)
class Filter:
    types: frozenset[str] | None = None
    authors: frozenset[str] | None = None
    exclude_authors: frozenset[str] = frozenset()
    mentions: re.Pattern[str] | None = None

    def matches(self, event: Event) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        if self.authors is not None or self.exclude_authors:
            author = event.author
            if self.authors is not None and author not in self.authors:
                return False
            if author in self.exclude_authors:
                return False
        if self.mentions is not None:
            text = event.payload.get("text")
            if event.type != "message" or not isinstance(text, str):
                return False
            if self.mentions.search(text) is None:
                return False
        return True


def split_list(raw: str | None, name: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; an absent parameter is an empty list."""
    if raw is None:
        return []
    items = [item.strip() for item in raw.split(",")]
    items = [item for item in items if item]
    if len(items) > MAX_LIST_ITEMS:
        raise InvalidQuery(f"`{name}` lists more than {MAX_LIST_ITEMS} values")
    return items


def user_name(value: str, field: str, where: str = "query") -> str:
    """``value`` of the query parameter (``where="query"``) or path segment (``"path"``)
    ``field`` as a user name (``chat.rules.user_name``): NFC-normalised; 400 invalid_query,
    its ``details`` naming ``field``, when it is none."""
    try:
        return rules.user_name(value)
    except ValueError as error:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise InvalidQuery(
            f"`{field}` is not a user name ({shown!r}): {error}",
            [{"loc": [where, field], "field": field, "msg": str(error), "type": "user_name"}],
        ) from None


def _types(query: Mapping[str, str]) -> frozenset[str] | None:
    items = split_list(query.get("types"), "types")
    for item in items:
        if len(item) > MAX_NAME_CHARS:
            raise InvalidQuery(f"`types` has a value longer than {MAX_NAME_CHARS} characters")
    return frozenset(items) if items else None


def _names(query: Mapping[str, str], name: str) -> frozenset[str] | None:
    items = [user_name(item, name) for item in split_list(query.get(name), name)]
    return frozenset(items) if items else None


def mention_pattern(names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(names))
    # A name ends where no name character follows: "@alice." and "@alice," mention alice,
    # "@alice-bob", "@alice.smith" and "@alicex" do not (names may hold "-" and ".").
    return re.compile(rf"(?<![\w@])@(?:{alternatives})(?![\w-]|\.\w)", re.IGNORECASE)


def parse_filter(query: Mapping[str, str]) -> Filter | None:
    """The filter a stream's query asks for, or None when it asks for everything.
    Raises InvalidQuery (400) for unknown event types, oversized lists or a name that is no
    user name."""
    types = _types(query)
    if types is not None:
        unknown = sorted(types - EVENT_TYPES)
        if unknown:
            raise InvalidQuery(
                f"unknown event type(s) in `types`: {', '.join(unknown)}",
                [{"param": "types", "unknown": unknown, "allowed": sorted(EVENT_TYPES)}],
            )
    authors = _names(query, "authors")
    exclude = _names(query, "exclude_authors") or frozenset()
    mentions = _names(query, "mentions")
    if types is None and authors is None and not exclude and mentions is None:
        return None
    return Filter(
        types=types,
        authors=authors,
        exclude_authors=exclude,
        mentions=mention_pattern(mentions) if mentions else None,
    )
