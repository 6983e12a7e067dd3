"""``POST /api/rooms/{room}/messages``, the request publishers send in a loop, served
straight on ASGI in front of Quart when it is well-formed.

Quart's share of such a POST is about a third of its CPU (a request object and its
contexts, signals, before/after hooks, quart-schema building a TypeAdapter each time);
docs/design/performance.md has the profile. Here the body is read, parsed with orjson,
validated with the same model, and committed with the same function as the Quart route
(``commit_idempotent``), and the answer is the same bytes with the same headers.

Anything this does not take as it is (another media type, a chunked or oversized body,
JSON or fields that do not validate, a bad room name or Idempotency-Key) goes to the Quart
route with the body it has read handed on unchanged, so every error is the one the Quart
route gives, from the one place that makes it. The Quart route also stays what /docs shows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    HTTPScope,
    Scope,
)
from pydantic import ValidationError

from chat.api.asgi import send_error, send_json
from chat.api.deps import Services, check_idempotency_key, commit_idempotent
from chat.errors import ChatError, RequestTimeout
from chat.models import MessageIn, check_room
from chat.store import writes

log = logging.getLogger(__name__)

PREFIX = "/api/rooms/"
SUFFIX = "/messages"
REPLAYED = [(b"idempotent-replayed", b"true")]


def message_room(path: str) -> str | None:
    """The room of ``/api/rooms/{room}/messages``, or None for any other path."""
    if path.startswith(PREFIX) and path.endswith(SUFFIX):
        room = path[len(PREFIX) : -len(SUFFIX)]
        if room and "/" not in room:
            return room
    return None


class FastPost:
    def __init__(self, app: Any, services: Services, body_timeout_s: float) -> None:
        self.app = app
        self.services = services
        self.body_timeout_s = body_timeout_s

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            room = message_room(scope["path"])
            if room is not None:
                await self._post(scope, room, receive, send)
                return
        await self.app(scope, receive, send)

    async def _post(
        self, scope: HTTPScope, room: str, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        svc = self.services
        limit = svc.settings.max_body_bytes
        length = mimetype = key = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value
            elif name == b"content-type" and mimetype is None:
                mimetype = value.split(b";", 1)[0].strip().lower()
            elif name == b"idempotency-key" and key is None:
                key = value.decode("latin-1")
            elif name == b"transfer-encoding":
                length = b"-"  # chunked: Quart's
        if (
            mimetype != b"application/json"
            or length is None
            or not length.isdigit()
            or int(length) > limit
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):  # as Quart's BODY_TIMEOUT
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away before its body was complete
                    chunk = message.get("body", b"")
                    chunks.append(chunk)
                    size += len(chunk)
                    more = message.get("more_body", False)
                    if size > limit:  # past its Content-Length? h11 stops it; Quart: 413
                        await self.app(scope, _replay(b"".join(chunks), more, receive), send)
                        return
                    if not more:
                        break
        except TimeoutError:
            error = RequestTimeout(f"the body did not arrive within {self.body_timeout_s:g} s")
            await send_error(svc, send, error)
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            data = orjson.loads(body)
            if type(data) is not dict:
                raise ValueError("not an object")
            model = MessageIn.model_validate(data)
            check_room(room)
            check_idempotency_key(key)
        except (ValueError, ValidationError, ChatError):  # orjson's error is a ValueError
            await self.app(scope, _replay(body, False, receive), send)
            return
        try:
            op = writes.post_message(
                room,
                model.author,
                model.text,
                model.reply_to,
                create_room=svc.settings.auto_create_rooms,
            )
            answer, replayed = await commit_idempotent(
                svc, room, key, ("POST", scope["path"]), model.model_dump, writes.event_json(op)
            )
        except ChatError as error:
            await send_error(svc, send, error)
            return
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            await send_error(svc, send, None)
            return
        if replayed:
            await send_json(send, 200, answer, REPLAYED)
        else:
            await send_json(send, 201, answer)


def _replay(body: bytes, more: bool, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """``receive`` that first gives back the body already read, then the rest."""
    first: list[ASGIReceiveEvent] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replayed() -> ASGIReceiveEvent:
        return first.pop() if first else await receive()

    return replayed
