"""``python -m chat post`` and ``tail``: the client library (``chat.client``) on the command
line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from chat import client
from chat.cli import reader_gone
from chat.client import ChatClient, Event, Filters, Reconnect, Reset
from chat.config import Settings

RESET_REASONS = {
    "gap_too_large": "more missed events than the server replays (CHAT_REPLAY_LIMIT)",
    "unknown_resume_point": "the server does not know the id it was to go on from",
    "expired": "events it missed are past the server's retention",
}


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``post`` and ``tail``, written with the client library (``chat.client``)."""
    url = args.url or settings.url
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    try:
        parts = urlsplit(url)
        scheme, _ = parts.scheme, parts.port  # .port: a port that is no number, or past 65535
    except ValueError as error:  # and an unclosed [IPv6 literal
        print(f"--url (or CHAT_URL) is not a URL ({error}): {url!r}", file=sys.stderr)
        return 2
    if scheme not in ("http", "https"):
        print(f"--url must be an http:// or https:// URL, not {url!r}", file=sys.stderr)
        return 2
    if token is not None and not (token.isascii() and token.isprintable()):
        print(
            "the token (--token or CHAT_TOKEN) must be printable ASCII, as the service and "
            "JWTs make them: a header cannot carry it otherwise",
            file=sys.stderr,
        )
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request on stderr
    if args.command == "post":
        if args.author is None and token is None:
            print("post needs --author, or a token (--token or CHAT_TOKEN)", file=sys.stderr)
            return 2
        try:
            message = asyncio.run(_post(url, token, args.room, args.text, args.author))
        except client.ClientError as error:
            print(f"error: {error}{_details(error)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C while the POST was on its way
            print("\nstopped: the message may or may not have been posted", file=sys.stderr)
            return 130
        print(json.dumps(message.model_dump(mode="json", exclude_unset=True), ensure_ascii=False))
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        try:
            asyncio.run(_tail(args, url, token))
        except client.RequestRefused as error:
            print(f"error: {error}{_details(error)}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # `tail ... | head -1`: the reader has what it wanted
            return reader_gone()
    return 0


def _details(error: client.ClientError) -> str:
    """What a 422's details say, field by field (``text: ...``), after its message."""
    details = getattr(error, "details", None) or []
    said = [
        f"{d.get('field') or '.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
        for d in details
        if isinstance(d, dict) and d.get("msg")
    ]
    return "".join(f"\n  {line}" for line in said)


async def _post(
    url: str, token: str | None, room: str, text: str, author: str | None
) -> client.Message:
    async with ChatClient(url, token=token) as chat:
        return await chat.post(room, text, author=author)


async def _tail(args: argparse.Namespace, url: str, token: str | None) -> None:
    """Follow the rooms until interrupted: every event once, in order, across reconnections
    (``ChatClient.events``); a reset is printed as a line. Raises RequestRefused when the
    server refuses the request itself (a 4xx: a bad room name or filter; a token unknown,
    revoked or expired; a room it may not read)."""

    def show(payload: Mapping[str, Any]) -> None:
        line = json.dumps(payload, ensure_ascii=False) if args.json else describe(payload)
        print(line, flush=True)

    def on_reset(reset: Reset) -> None:
        show(reset.payload)

    def on_reconnect(pause: Reconnect) -> None:
        resume = f" after #{pause.last_id}" if pause.last_id is not None else ""
        print(
            f"{pause.reason}; reconnecting in {pause.delay_s:.1f}s{resume}",
            file=sys.stderr,
            flush=True,
        )

    filters = Filters(types=args.types, authors=args.authors, mentions=args.mentions)
    async with ChatClient(url, token=token) as chat:
        stream = chat.events(
            args.rooms, filters, since=args.since, on_reset=on_reset, on_reconnect=on_reconnect
        )
        async with stream:
            event: Event
            async for event in stream:
                show(event.payload)


# What a terminal would act on rather than show: controls (a line break would start a line
# that looks like another event: "#999 general root: ..."), and bidirectional overrides
# and isolates (which reorder what follows them on the line).
_UNSHOWN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)  # not \t, and not \n or \r: line breaks, shown as such


def shown(text: object) -> str:
    """``text`` as tail prints it: a line break starts an indented line, which no event line
    does; any other control or bidirectional control character is written as an escape."""
    safe = _UNSHOWN.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))
    return safe.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n    ")


def describe(event: Mapping[str, Any]) -> str:
    """One line for a person: ``#12 general alice: hello`` (what the event's sender wrote
    made safe to show, ``shown``)."""
    return shown(_describe(event))


def _describe(event: Mapping[str, Any]) -> str:
    kind, room = event.get("type"), event.get("room")
    head = f"#{event['id']} {room}" if "id" in event else f"{room}"
    if kind == "message":
        return f"{head} {event['author']}: {event['text']}"
    if kind == "activity":
        # "* ci built main"; a summary is shown as it is when it names the actor first
        actor, summary = str(event["actor"]), event.get("summary")
        told = summary or f"{event['verb']} {event['object']}"
        return f"{head} * {told if summary and summary.startswith(actor) else f'{actor} {told}'}"
    if kind == "message.edited":
        return f"{head} {event['author']} edited #{event['message_id']}: {event['text']}"
    if kind == "message.deleted":
        return f"{head} {event['author']} deleted #{event['message_id']}"
    if kind in ("reaction.added", "reaction.removed"):
        verb = "reacted" if kind == "reaction.added" else "took back"
        return f"{head} {event['author']} {verb} {event['emoji']} on #{event['message_id']}"
    if kind == "typing":
        return f"{head} {event['user']} is typing"
    if kind == "presence":
        return f"{head} {event['user']} {'joined' if event['state'] == 'join' else 'left'}"
    if kind == "reset":
        why = RESET_REASONS.get(str(event.get("reason")), str(event.get("reason")))
        return f"{head} (history reset, {why}: going on after #{event['latest_id']})"
    return f"{head} {json.dumps(event, ensure_ascii=False)}"
