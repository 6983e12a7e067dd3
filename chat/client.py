"""The command-line client: ``post`` a message, ``tail`` rooms as events arrive.

Standard library only (``urllib``, ``http.client``): the client needs nothing the service
does not already install. ``tail`` reconnects by itself after a dropped connection or a server
restart, resumes with ``Last-Event-ID``, and never prints an event twice (it skips ids it has
printed, whatever the server sends)."""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote, urlencode, urlsplit

MAX_BACKOFF_S = 10.0


class ClientError(Exception):
    """The service answered with an error (its envelope's message), or could not be reached."""


class RequestRefused(ClientError):
    """A 4xx that retrying cannot mend (a bad room name, an unknown type, a token that is
    missing, revoked or not allowed): tail stops."""


def refused(status: int) -> bool:
    """Whether retrying the same request cannot help: a 4xx other than 408 and 429."""
    return 400 <= status < 500 and status not in (408, 429)


def auth_headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _fetch_json(request: urllib.request.Request, timeout_s: float = 10) -> Any:
    """The JSON answer of a request; ClientError with the envelope's message otherwise
    (RequestRefused for an answer that retrying cannot change)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = _error_message(error.code, error.read())
        raise (RequestRefused if refused(error.code) else ClientError)(message) from error
    except (urllib.error.URLError, OSError) as error:
        raise ClientError(f"cannot reach {request.full_url}: {error}") from error


def post_message(
    url: str,
    room: str,
    author: str | None,
    text: str,
    timeout_s: float = 10,
    token: str | None = None,
) -> Any:
    """Post a message; without ``author`` the service names the token's user."""
    fields = {"text": text} if author is None else {"author": author, "text": text}
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/rooms/{quote(room, safe='')}/messages",
        data=json.dumps(fields).encode(),
        headers={"Content-Type": "application/json", **auth_headers(token)},
        method="POST",
    )
    return _fetch_json(request, timeout_s)


def _error_message(status: int, body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status}: {body[:200]!r}"


@dataclass
class SSEMessage:
    event: str
    data: str
    id: int | None


def parse_sse(lines: Iterator[str], on_retry: Callable[[int], None]) -> Iterator[SSEMessage]:
    """SSE frames from decoded lines (without line ends); comments are skipped."""
    event, data, event_id = "message", list[str](), None
    for line in lines:
        if not line:
            if data:
                yield SSEMessage(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id" and value.isdigit():
                event_id = int(value)
            elif name == "retry" and value.isdigit():
                on_retry(int(value))


def describe(event: dict[str, Any]) -> str:
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


@dataclass
class Tail:
    url: str
    rooms: list[str]
    query: dict[str, str]
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    as_json: bool = False
    idle_timeout_s: float = 60.0
    last_id: int | None = None
    retry_s: float = 1.0
    token: str | None = None

    def path(self) -> str:
        query = dict(self.query)
        if len(self.rooms) == 1 and self.rooms[0] != "*":
            base = f"/api/rooms/{quote(self.rooms[0], safe='')}/events"
        else:
            base, query["rooms"] = "/api/events", ",".join(self.rooms)
        prefix = urlsplit(self.url).path.rstrip("/")
        return prefix + base + ("?" + urlencode(query) if query else "")

    def start_position(self) -> int:
        """The newest event id now. Ids are global, so it is where following any rooms begins:
        a reconnect then resumes from here even before anything was printed."""
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/api/rooms", headers=auth_headers(self.token)
        )
        rooms = _fetch_json(request)["rooms"]
        return max((int(room["last_event_id"]) for room in rooms), default=0)

    def run(self, max_connections: int | None = None) -> None:
        """Follow the stream until interrupted, reconnecting with a growing pause. Raises
        RequestRefused when the server refuses the request itself (4xx: also a token that
        is unknown, revoked or expired, or a room it may not read)."""
        failures, connections = 0, 0
        while max_connections is None or connections < max_connections:
            connections += 1
            try:
                if self.last_id is None:
                    self.last_id = self.start_position()
                printed = self._follow_once()
                reason = "the stream ended"
            except RequestRefused:
                raise
            except (OSError, http.client.HTTPException, ClientError) as error:
                printed, reason = False, str(error) or type(error).__name__
            failures = 0 if printed else failures + 1
            pause = min(MAX_BACKOFF_S, self.retry_s * 2 ** max(0, failures - 1))
            resume = f" after #{self.last_id}" if self.last_id is not None else ""
            print(f"{reason}; reconnecting in {pause:.1f}s{resume}", file=self.err, flush=True)
            time.sleep(pause)

    def _follow_once(self) -> bool:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.idle_timeout_s
        )
        headers = {"Accept": "text/event-stream", **auth_headers(self.token)}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        try:
            conn.request("GET", self.path(), headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                why = _error_message(response.status, response.read())
                if refused(response.status):
                    raise RequestRefused(why)
                raise ClientError(why)
            lines = (raw.decode("utf-8").rstrip("\r\n") for raw in iter(response.readline, b""))
            printed = False
            for message in parse_sse(lines, self._set_retry):
                printed = self._show(message) or printed
            return printed
        finally:
            conn.close()

    def _set_retry(self, retry_ms: int) -> None:
        self.retry_s = max(0.1, retry_ms / 1000)

    def _show(self, message: SSEMessage) -> bool:
        if message.id is not None:
            if self.last_id is not None and message.id <= self.last_id:
                return False  # already printed before a reconnect
            self.last_id = message.id
        event = json.loads(message.data)
        if event.get("type") == "reset":
            self.last_id = max(self.last_id or 0, int(event["latest_id"]))
        line = json.dumps(event, ensure_ascii=False) if self.as_json else describe(event)
        print(line, file=self.out, flush=True)
        return True
