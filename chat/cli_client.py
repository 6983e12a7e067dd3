"""``python -m chat post`` and ``tail``: the client library (``chat.client``) on the command
line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from chat import client
from chat.client import ChatClient, Event, Filters, Reconnect, Reset
from chat.config import Settings


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
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(json.dumps(message.model_dump(mode="json", exclude_unset=True), ensure_ascii=False))
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        try:
            asyncio.run(_tail(args, url, token))
        except client.RequestRefused as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


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


def describe(event: Mapping[str, Any]) -> str:
    """One line for a person: ``#12 general alice: hello``."""
    kind, room = event.get("type"), event.get("room")
    head = f"#{event['id']} {room}" if "id" in event else f"{room}"
    if kind == "message":
        return f"{head} {event['author']}: {event['text']}"
    if kind == "activity":
        summary = event.get("summary") or f"{event['verb']} {event['object']}"
        return f"{head} * {event['actor']} {summary}"
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
        return f"{head} (history reset: events up to #{event['latest_id']} were skipped)"
    return f"{head} {json.dumps(event, ensure_ascii=False)}"
