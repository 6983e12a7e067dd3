"""Pydantic models of the HTTP edge: request bodies and query strings (validated), and the
response shapes (documented in /openapi.json). One definition of each field."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated, Any, Literal

import orjson
import regex
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

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
# Infinity (which the json module that parses Quart's bodies accepts) as null. So: integers
# within INT_MIN..INT_MAX, finite numbers only.
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


def _emoji(value: str) -> str:
    """One grapheme cluster that is a symbol (an emoji, with its modifiers and joiners), or a
    ``:shortcode:``; never a letter, a digit, a space or a word."""
    if _SHORTCODE.fullmatch(value):
        return value
    if _GRAPHEME.fullmatch(value) is None:
        raise ValueError("must be one emoji (a single grapheme cluster) or a :shortcode:")
    categories = {unicodedata.category(ch) for ch in value}
    symbol = bool(categories & {"So", "Sk", "Sm", "Sc"}) or value.endswith(KEYCAP)
    if not symbol or any(c[0] in "LZ" or c == "Cc" for c in categories):
        raise ValueError("must be an emoji or a :shortcode:, not a letter, digit or space")
    return value


Name = Annotated[
    str,
    BeforeValidator(_nfc),
    Field(min_length=1, max_length=MAX_NAME_CHARS),
    AfterValidator(_name),
]
Text = Annotated[
    str,
    BeforeValidator(_nfc),
    Field(min_length=1, max_length=4000),
    AfterValidator(_text),
]
MAX_ID = 2**63 - 1  # SQLite's largest integer
EventId = Annotated[int, Field(ge=1, le=MAX_ID)]
Cursor = Annotated[int, Field(ge=0, le=MAX_ID)]
SearchText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
Emoji = Annotated[
    str, BeforeValidator(_nfc), Field(min_length=1, max_length=34), AfterValidator(_emoji)
]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class RoomIn(_Body):
    title: (
        Annotated[str, BeforeValidator(_nfc), Field(max_length=200), AfterValidator(_single_line)]
        | None
    ) = None
    private: bool | None = Field(
        None, description="Only members see a private room (chosen when it is created)."
    )


MAYBE_YOU = "May be left out: the signed-in user is filled in; when given it must be that user."


class MessageIn(_Body):
    author: Name | None = Field(None, description=MAYBE_YOU)
    text: Text
    reply_to: EventId | None = None


class EditIn(_Body):
    author: Name | None = Field(None, description=MAYBE_YOU)
    text: Text


class AuthorIn(_Body):
    author: Name | None = Field(None, description=MAYBE_YOU)


class ReactionIn(_Body):
    author: Name | None = Field(None, description=MAYBE_YOU)
    emoji: Emoji


class ActivityIn(_Body):
    actor: Name | None = Field(
        None, description=MAYBE_YOU + " Bots and admins may name another actor."
    )
    verb: Annotated[
        str,
        BeforeValidator(_nfc),
        Field(min_length=1, max_length=64),
        AfterValidator(_line),
    ]
    object: Annotated[
        str,
        BeforeValidator(_nfc),
        Field(min_length=1, max_length=200),
        AfterValidator(_line),
    ]
    summary: (
        Annotated[str, BeforeValidator(_nfc), Field(max_length=1000), AfterValidator(_multi_line)]
        | None
    ) = None
    data: (
        Annotated[dict[str, Any], AfterValidator(_exact_numbers), AfterValidator(_encodable)] | None
    ) = None

    def fields(self, actor: str) -> dict[str, Any]:
        """The activity event's fields (``actor`` as decided by ``chat.access.author``),
        optional ones only when given."""
        return {"actor": actor, **self.model_dump(exclude_none=True, exclude={"actor"})}


class TypingIn(_Body):
    user: Name | None = Field(None, description=MAYBE_YOU)


class ReadIn(_Body):
    user: Name | None = Field(None, description=MAYBE_YOU)
    last_read_id: Cursor = Field(
        description="The newest id read; a larger id than the room's newest event's stores "
        "that event's. The marker never moves backwards."
    )


class IdempotencyHeaders(BaseModel):
    idempotency_key: str | None = Field(
        None,
        description="Makes retries safe: the same key in the same room returns the first "
        "answer (200, Idempotent-Replayed: true) and posts nothing; with another body, 409.",
    )


class HistoryQuery(BaseModel):
    before: EventId | None = Field(None, description="Only messages with a smaller id.")
    after: Cursor | None = Field(None, description="Only messages with a larger id.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    q: SearchText | None = Field(
        None, description="Full-text search: every word must appear; newest first."
    )


class StreamQuery(BaseModel):
    """The per-subscriber filter and resume point (all optional; lists are comma-separated)."""

    types: str | None = Field(None, description="Only these event types, e.g. message,activity")
    authors: str | None = Field(None, description="Only events by these authors (or actors)")
    exclude_authors: str | None = Field(None, description="Never events by these authors")
    mentions: str | None = Field(None, description="Only messages mentioning @name")
    user: str | None = Field(None, description="Who is connected (for presence)")
    last_event_id: str | None = Field(
        None, description="Resume after this id (the Last-Event-ID header wins)"
    )


class MultiStreamQuery(StreamQuery):
    rooms: str = Field(description="Comma-separated room names, or * for every room")


class Room(BaseModel):
    name: str
    title: str
    created_at: str
    last_event_id: int = Field(description="The newest event's id in the room, 0 if none.")
    subscribers: int = Field(description="Open streams following the room on this process.")
    private: bool = Field(False, description="Only members see it.")


class RoomList(BaseModel):
    rooms: list[Room]
    has_more: bool = Field(False, description="More rooms follow: ask again with `after=next`.")
    next: str | None = Field(
        None, description="The `after` of the next page (the page's last room), or null."
    )


def _room_cursor(value: str) -> str:
    if ROOM_NAME.fullmatch(value) is None:
        raise ValueError("must be a room name (the previous page's `next`)")
    return value


ROOM_PAGE_MAX = 1000


class RoomListQuery(BaseModel):
    after: Annotated[str, Field(max_length=64), AfterValidator(_room_cursor)] | None = Field(
        None, description="Only rooms whose name sorts after this one: the previous page's `next`."
    )
    limit: Annotated[int, Field(ge=1, le=ROOM_PAGE_MAX)] = 200


class MessageEvent(BaseModel):
    id: int
    type: Literal["message"]
    room: str
    created_at: str
    author: str
    text: str
    reply_to: int | None = None
    reply_to_author: str | None = Field(
        None, description="with reply_to: that message's author (whom the reply notifies)"
    )


class HistoryMessage(MessageEvent):
    edited_at: str | None = None
    reactions: dict[str, list[str]] = Field(description="emoji -> the authors who reacted")


class EventOut(BaseModel):
    """Any stored event: `id`, `type`, `room`, `created_at` and the type's own fields."""

    model_config = ConfigDict(extra="allow")
    id: int
    type: str
    room: str
    created_at: str


class PresentUsers(BaseModel):
    """Who is in a room now (the answer of GET /api/rooms/{room}/presence)."""

    users: list[str]


class Unread(BaseModel):
    rooms: dict[str, int] = Field(description="room -> messages after the user's read marker")
    last_id: int = Field(
        description="the newest event id these counts include: of the messages a stream "
        "delivers meanwhile, add only those with a larger id"
    )


class History(BaseModel):
    messages: list[HistoryMessage]
    has_more: bool


class Status(BaseModel):
    status: str


class ActivityQuery(BaseModel):
    before: EventId | None = Field(None, description="Only items with a smaller id.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class ActivityPage(BaseModel):
    items: list[EventOut]
    has_more: bool


BATCH_MAX = 500


class MessageBatchIn(_Body):
    messages: Annotated[list[MessageIn], Field(min_length=1, max_length=BATCH_MAX)]


class ActivityBatchIn(_Body):
    items: Annotated[list[ActivityIn], Field(min_length=1, max_length=BATCH_MAX)]


class EventBatch(BaseModel):
    events: list[EventOut]


class MemberIn(_Body):
    role: Literal["member", "owner"] = "member"


class Member(BaseModel):
    user: str
    role: Literal["member", "owner"]


class MemberList(BaseModel):
    members: list[Member]


class SessionIn(_Body):
    user: Name
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="The account's password; left out in `open` mode: a guest name."
    )


class Session(BaseModel):
    user: str
    role: Literal["admin", "member", "bot"]
    guest: bool = Field(
        False,
        description="A guest name (signed in without a password, `open` mode): it writes "
        "under the name, and is a guest for private rooms.",
    )


class SessionOut(Session):
    token: str = Field(description="Also set as the HttpOnly `chat_session` cookie.")
    expires_at: str


class SessionOptions(BaseModel):
    auth: Literal["open", "required"] = Field(
        description="`open`: guests may read and post under a name; `required`: sign in first."
    )


# -- notifications (API.md, "Notifications") -------------------------------------------------


class NotificationGroup(BaseModel):
    id: int = Field(description="the id of the group's first event: stable, unique in the feed")
    kind: Literal["mention", "reply", "reaction", "activity", "membership"]
    room: str
    message_id: int | None = Field(
        None, description="mention: the mentioning message; reply, reaction: the user's message"
    )
    emoji: str | None = Field(None, description="reaction: the emoji")
    verb: str | None = Field(None, description="activity: its verb")
    object: str | None = Field(None, description="activity: its object")
    actors: list[str] = Field(description="the three newest distinct actors, newest first")
    actor_count: int = Field(description="distinct actors")
    count: int = Field(description="events in the group")
    first_at: str
    latest_at: str
    latest_event_id: int = Field(description="the group's newest event: its place in the feed")
    unread: bool = Field(description="latest_event_id is above the user's read mark")
    summary: str = Field(description='"alice, bob and 3 others reacted 👍 to your message"')


class NotificationPage(BaseModel):
    groups: list[NotificationGroup]
    has_more: bool


class NotificationQuery(BaseModel):
    before: EventId | None = Field(None, description="Only groups whose latest_event_id is below.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class NotificationsUnread(BaseModel):
    unread: int = Field(description="unread groups")


class NotificationsReadIn(_Body):
    until: Cursor = Field(
        description="Groups whose latest_event_id is at most this are read; the mark never "
        "moves backwards, nor past the newest event."
    )


class NotificationsRead(BaseModel):
    read_until: int
    unread: int
