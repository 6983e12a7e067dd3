"""Notifications: whom an event concerns, the group it joins in each one's feed, and the
group's one-line summary. Plain code, no IO: the store records the groups in the event's own
transaction (chat/store/notify.py), the registry wakes the streams of the users an event
concerns (chat/registry.py), both from this one definition (API.md, "Notifications").

Who an event notifies follows from the event alone: a reply carries ``reply_to_author`` and a
reaction ``message_author``, so any process can tell without reading the store.

- ``mention``: a new message whose text mentions ``@user``; one group per message.
- ``reply``: a message replying to one of the user's messages; one group per replied message.
- ``reaction``: a reaction added to one of the user's messages; one per message and emoji.
- ``activity``: an activity whose ``object`` mentions ``@user``, or whose ``data.to`` is the
  user's name or a list holding it; one group per room, verb and object.
- ``membership``: the user added to a room by someone else; one group per room.

Nobody is notified of their own actions, and one event makes at most one notice per user
(a reply that also mentions its parent's author is a ``reply``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from chat.rules import name_problem

MENTIONS_MAX = 20  # the first names of a message that are notified (a message may hold 2,000)
ACTORS_SHOWN = 3  # the newest distinct actors a group lists
KINDS = ("mention", "reply", "reaction", "activity", "membership")
NOTIFYING_TYPES = frozenset({"message", "reaction.added", "activity", "member.added"})

# ``@name``: an ``@`` that does not follow a word character or another ``@`` (an e-mail
# address mentions nobody), then a name. A name ends where the ``mentions=`` filter says one
# ends (chat/filters.py): before a character that is not a word character, ``-``, or a ``.``
# followed by a word character. So "@alice." and "@alice," name alice, "@alice.smith" names
# alice.smith, and, as the filter would, "@o'brien" names both o and o'brien. A name may not
# end in ASCII punctuation (no "alice." from "@alice."). Names are exact, case and all; a
# name holding a space or a comma cannot be mentioned.
_AT = re.compile(r"(?<![\w@])@")
_GOES_ON = re.compile(r"[\w-]|\.\w")
_NAME_MAX = 64
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,./:;<=>?@[\\]^`{|}~")


class Notice(NamedTuple):
    """One user's share of an event: the group (``key``, unique in the user's feed) it joins.
    (A named tuple: built for every mention, it costs a third of a frozen dataclass.)"""

    user: str
    kind: str
    key: str
    actor: str
    message_id: int | None = None
    emoji: str | None = None
    verb: str | None = None
    object: str | None = None


def mentioned(text: str) -> list[str]:
    """The names ``@``-mentioned in ``text``, each once, in order, at most MENTIONS_MAX."""
    if "@" not in text:
        return []
    names: dict[str, None] = {}
    for at in _AT.finditer(text):
        start = end = at.end()
        stop = min(len(text), start + _NAME_MAX)
        while end < stop and not text[end].isspace() and text[end] not in ",@":
            end += 1
        token = text[start:end]
        if token.isascii() and token.isalnum() and _GOES_ON.match(text, end) is None:
            names[token] = None  # the common case: one plain name, nothing else to find
            continue
        for cut in range(start + 1, end + 1):
            if _GOES_ON.match(text, cut) is None and text[cut - 1] not in _ASCII_PUNCTUATION:
                names[text[start:cut]] = None
        if len(names) >= MENTIONS_MAX:
            break
    return list(names)[:MENTIONS_MAX]


def notices(event_type: str, room: str, payload: Mapping[str, Any]) -> list[Notice]:
    """Whom this persisted event notifies, and of what."""
    if event_type not in NOTIFYING_TYPES:
        return []
    if event_type == "message" and "reply_to_author" not in payload:
        text = payload.get("text")
        if isinstance(text, str) and "@" not in text:
            return []  # most messages: no reply, no mention (a batch asks 500 times)
    found: dict[str, Notice] = {}
    if event_type == "message":
        actor = str(payload.get("author"))
        parent = payload.get("reply_to")
        parent_author = payload.get("reply_to_author")
        if isinstance(parent, int) and isinstance(parent_author, str):
            found[parent_author] = Notice(
                parent_author, "reply", f"reply:{parent}", actor, message_id=parent
            )
        message_id = payload.get("id")
        for name in mentioned(str(payload.get("text", ""))):
            if name not in found:
                found[name] = Notice(
                    name, "mention", f"mention:{message_id}", actor, message_id=message_id
                )
    elif event_type == "reaction.added":
        actor = str(payload.get("author"))
        owner = payload.get("message_author")
        message_id, emoji = payload.get("message_id"), str(payload.get("emoji"))
        if isinstance(owner, str) and isinstance(message_id, int):
            found[owner] = Notice(
                owner,
                "reaction",
                f"reaction:{message_id}:{emoji}",
                actor,
                message_id=message_id,
                emoji=emoji,
            )
    elif event_type == "activity":
        actor = str(payload.get("actor"))
        verb, obj = str(payload.get("verb")), str(payload.get("object"))
        names = mentioned(obj)
        data = payload.get("data")
        names.extend(recipients(data.get("to") if isinstance(data, Mapping) else None))
        # verb and object hold no control character: U+001F cannot occur in either
        key = f"activity\x1f{room}\x1f{verb}\x1f{obj}"
        for name in names:
            found.setdefault(name, Notice(name, "activity", key, actor, verb=verb, object=obj))
    else:  # member.added
        actor, user = str(payload.get("by")), str(payload.get("user"))
        found[user] = Notice(user, "membership", f"membership:{room}", actor)
    return [notice for user, notice in found.items() if user != actor]


def recipients(to: object) -> list[str]:
    """The users an activity's ``data.to`` names (a name, or a list of up to MENTIONS_MAX):
    each taken as every user name is (NFC, ``chat.rules.name_problem``); what is no user name
    is no one's feed, and is passed over (``data`` itself is stored as it was sent)."""
    given = [to] if isinstance(to, str) else to[:MENTIONS_MAX] if isinstance(to, list) else []
    names = (unicodedata.normalize("NFC", name) for name in given if isinstance(name, str))
    return [name for name in names if name_problem(name) is None]


def newest_actors(actors: Sequence[str], actor: str) -> list[str]:
    """A group's shown actors after ``actor`` acted: it first, each once, ACTORS_SHOWN."""
    return [actor, *(a for a in actors if a != actor)][:ACTORS_SHOWN]


def _who(actors: Sequence[str], actor_count: int) -> str:
    """ "alice", "alice and bob", "alice, bob and carol", "alice, bob and 3 others"."""
    shown = list(actors)
    if actor_count <= 1 or len(shown) == 1:
        return shown[0] if shown else "someone"
    if actor_count == 2:
        return f"{shown[0]} and {shown[1]}"
    if actor_count == 3 and len(shown) >= 3:
        return f"{shown[0]}, {shown[1]} and {shown[2]}"
    others = actor_count - 2
    return f"{shown[0]}, {shown[1]} and {others} other{'s' if others != 1 else ''}"


def summary(group: Mapping[str, Any]) -> str:
    """The group in one line: "alice, bob and 3 others reacted 👍 to your message"."""
    who = _who(group["actors"], group["actor_count"])
    kind, room = group["kind"], group["room"]
    if kind == "mention":
        return f"{who} mentioned you in #{room}"
    if kind == "reply":
        replies = group["count"]
        what = "replied" if replies == 1 else f"replied {replies} times"
        return f"{who} {what} to your message in #{room}"
    if kind == "reaction":
        return f"{who} reacted {group['emoji']} to your message in #{room}"
    if kind == "activity":
        return f"{who} {group['verb']} {group['object']} in #{room}"
    return f"{who} added you to #{room}"
