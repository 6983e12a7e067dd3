"""The rules every input follows, as pydantic field types: room names, the one rule for user
names, the one rule for free text (README, "The API"), exact numbers, emoji. ``chat.models``
builds the request and response models from them."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated, Any

import orjson
import regex
from pydantic import AfterValidator, BeforeValidator, Field

from chat.errors import InvalidRoom

ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_room(name: str) -> str:
    """Room names: ``^[a-z0-9][a-z0-9._-]{0,63}$``; anything else is 400 invalid_room."""
    if ROOM_NAME.fullmatch(name) is None:
        raise InvalidRoom(
            f"invalid room name {name[:80]!r}: use 1-64 of a-z 0-9 . _ - "
            "(starting with a letter or digit)"
        )
    return name


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not hold control characters")
    return value


# -- the one rule for user names, and the one rule for free text (README, "The API") -------

MAX_NAME_CHARS = 64


def _nfc(value: object) -> object:
    """Unicode NFC, before anything else (lengths count composed characters); a value that
    is no string is left to the type check."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def name_problem(name: str) -> str | None:
    """What makes ``name`` (NFC already) no user name, or None. A user name is 1-64
    characters, none of them a control, format, surrogate, private-use or unassigned
    character, nor a separator other than the space (``str.isprintable``: categories Cc, Cf,
    Cs, Co, Cn, Zl, Zp, Zs but U+0020), no comma (the stream filters are comma-separated),
    no space at either end, and no ``@`` first (a mention is ``@name``)."""
    if not 0 < len(name) <= MAX_NAME_CHARS:
        return f"must be 1-{MAX_NAME_CHARS} characters"
    if not name.isprintable():
        return (
            "must not hold control, format, private-use or unassigned characters, line "
            "breaks, or spaces other than U+0020"
        )
    if "," in name:
        return "must not hold a comma"
    if name[0] == " " or name[-1] == " ":
        return "must not start or end with a space"
    if name[0] == "@":
        return "must not start with @"
    return None


def user_name(value: str) -> str:
    """``value`` as a user name: NFC-normalised and checked (``name_problem``); ValueError
    says what is wrong. Every user name that enters the service passes here (``Name`` in
    bodies, ``chat.filters.user_name`` for query parameters and paths, ``chat.admin``)."""
    return _name(unicodedata.normalize("NFC", value))


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Free text is NFC too, and holds no control character (Cc): multi-line text (a message's
# text, an activity's summary) but newline and tab; single-line text (a room's title, an
# activity's verb and object) none at all, nor a line or paragraph separator.
_MULTI_LINE_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SINGLE_LINE_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _multi_line(value: str) -> str:
    # isprintable() first: far faster than the search, and true for most texts
    if not value.isprintable() and _MULTI_LINE_BAD.search(value) is not None:
        raise ValueError("must not hold control characters other than newline and tab")
    return value


def _single_line(value: str) -> str:
    if not value.isprintable() and _SINGLE_LINE_BAD.search(value) is not None:
        raise ValueError("must be one line without control characters")
    return value


def _text(value: str) -> str:
    """Multi-line text that is not blank."""
    return _multi_line(_not_blank(value))


def _line(value: str) -> str:
    """Single-line text that is not blank."""
    return _single_line(_not_blank(value))


def _encodable(value: dict[str, Any]) -> dict[str, Any]:
    """``data`` must be storable as it came: JSON that orjson can write back (nesting depth)."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        raise ValueError(f"cannot be stored: {error}") from error
    return value


# Numbers in an activity's free ``data`` come back exactly as they were sent, in the answer,
# in history and on streams, or are refused (422). The store writes ``data`` with orjson,
# which writes integers of 64 bits exactly, fails on larger ones, and writes NaN and
# Infinity as null. Quart's bodies are read by the json module (chat.app.ChatJSONProvider):
# integers exact at any size, NaN and Infinity refused as not JSON, but 1e400 read as
# Infinity. So: integers within INT_MIN..INT_MAX, finite numbers only.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
INT_RANGE = f"integers must lie within {INT_MIN}..{INT_MAX} (64 bits): send larger ones as strings"
Loc = tuple[str | int, ...]


def _number_problem(item: Any) -> str | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return None if INT_MIN <= item <= INT_MAX else INT_RANGE
    if isinstance(item, float) and not math.isfinite(item):
        return "NaN and Infinity are no JSON numbers"
    return None


def inexact_number(value: Any) -> tuple[Loc, str] | None:
    """Where in ``value`` the first number lies that cannot come back as it was sent (its
    path, in document order), and why; None if there is none."""
    stack: list[tuple[Loc, Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(((*loc, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(item))))
        else:
            problem = _number_problem(item)
            if problem is not None:
                return loc, problem
    return None


def _where(loc: Loc) -> str:
    return ".".join(str(part) for part in loc) or "the top"


def _exact_numbers(value: dict[str, Any]) -> dict[str, Any]:
    found = inexact_number(value)
    if found is not None:
        loc, problem = found
        raise ValueError(f"{problem} (at {_where(loc)})")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


_GRAPHEME = regex.compile(r"\X")
KEYCAP = "\u20e3"  # 1️⃣: a digit made an emoji by the combining keycap
_SHORTCODE = re.compile(r":[a-z0-9_+-]{1,32}:")


ZWJ = "\u200d"


def _emoji(value: str) -> str:
    """One grapheme cluster that is a symbol (an emoji, with its modifiers and joiners), or a
    ``:shortcode:``; never a letter, a digit, a space or a word."""
    if _SHORTCODE.fullmatch(value):
        return value
    if _GRAPHEME.fullmatch(value) is None:
        raise ValueError("must be one emoji (a single grapheme cluster) or a :shortcode:")
    if value.endswith(ZWJ):  # joins nothing (UTS #51): a look-alike of the emoji before it
        raise ValueError("must not end with a zero-width joiner")
    categories = {unicodedata.category(ch) for ch in value}
    symbol = bool(categories & {"So", "Sk", "Sm", "Sc"}) or value.endswith(KEYCAP)
    if not symbol or any(c[0] in "LZ" or c == "Cc" for c in categories):
        raise ValueError("must be an emoji or a :shortcode:, not a letter, digit or space")
    return value


# The order of each Annotated below matters. A BeforeValidator wraps what precedes it, so
# NFC runs first and the lengths then count composed characters. The length constraints come
# before it because pydantic-core checks them itself there, as a string's: `string_too_long`
# and `string_too_short` (static/composer.js tells a text too long by the first). Placed after
# a BeforeValidator they were a Python call per bound (a batch of 500 messages took 2.4 ms to
# validate instead of 1.3 ms: docs/design/performance.md) and said `too_long`.
Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_CHARS),
    BeforeValidator(_nfc),
    AfterValidator(_name),
]
Text = Annotated[
    str,
    Field(min_length=1, max_length=4000),
    BeforeValidator(_nfc),
    AfterValidator(_text),
]
MAX_ID = 2**63 - 1  # SQLite's largest integer
EventId = Annotated[int, Field(ge=1, le=MAX_ID)]
Cursor = Annotated[int, Field(ge=0, le=MAX_ID)]


def _spaces(value: object) -> object:
    """A search query's words as the stored text has them: NFC (``_nfc``), and every space
    separator (U+00A0, U+3000, ...) a plain space, which separates words as they do."""
    value = _nfc(value)
    if not isinstance(value, str):
        return value
    return "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in value)


SearchText = Annotated[
    str, Field(min_length=1, max_length=200), BeforeValidator(_spaces), AfterValidator(_printable)
]
Emoji = Annotated[
    str, Field(min_length=1, max_length=34), BeforeValidator(_nfc), AfterValidator(_emoji)
]
Title = Annotated[str, Field(max_length=200), BeforeValidator(_nfc), AfterValidator(_single_line)]
Verb = Annotated[
    str, Field(min_length=1, max_length=64), BeforeValidator(_nfc), AfterValidator(_line)
]
ObjectText = Annotated[
    str, Field(min_length=1, max_length=200), BeforeValidator(_nfc), AfterValidator(_line)
]
Summary = Annotated[str, Field(max_length=1000), BeforeValidator(_nfc), AfterValidator(_multi_line)]
ActivityData = Annotated[dict[str, Any], AfterValidator(_exact_numbers), AfterValidator(_encodable)]


def room_cursor(value: str) -> str:
    """A room list's ``after``: a room name (the previous page's ``next``)."""
    if ROOM_NAME.fullmatch(value) is None:
        raise ValueError("must be a room name (the previous page's `next`)")
    return value
