"""``POST /api/rooms/{room}/messages``, the request publishers send in a loop: a plain route
of the pipeline.

Quart's share of such a POST is about a third of its CPU (a request object and its
contexts, signals, quart-schema building a TypeAdapter each time; the profile is in
docs/design/performance.md). Here the body the pipeline read is parsed with orjson,
validated with ``MessageIn`` and committed with ``commit_idempotent``, as the other event
routes do; errors are raised as ChatErrors and the pipeline answers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from chat import access
from chat.api.deps import Services, commit_idempotent
from chat.api.envelope import JSON_BYTES, field_errors
from chat.api.request import Request
from chat.errors import InvalidJSON, ValidationFailed
from chat.models import MessageIn
from chat.rules import check_room
from chat.store import writes

REPLAYED = (b"idempotent-replayed", b"true")


class PostMessage:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, request: Request, args: Mapping[str, Any]) -> None:
        svc = self.services
        room: str = args["room"]
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError as error:
            raise InvalidJSON(f"the body is not valid JSON: {error}") from None
        try:
            model = MessageIn.model_validate(data)
        except ValidationError as error:
            message = "the body does not match the schema"
            raise ValidationFailed(message, field_errors(error)) from None
        check_room(room)
        author = access.author(request.identity, model.author, "author", svc.auth.reserved)
        key = request.header(b"idempotency-key")
        op = writes.post_message(
            room,
            author,
            model.text,
            model.reply_to,
            create_room=svc.settings.auto_create_rooms,
        )
        answer, replayed = await commit_idempotent(
            svc,
            room,
            None if key is None else key.decode("latin-1"),
            ("POST", request.path),
            lambda: {**model.model_dump(), "author": author},
            writes.event_json(op),
            request.identity,
        )
        headers = [(b"content-type", JSON_BYTES)]
        if replayed:
            headers.append(REPLAYED)
        writer = await request.answer(200 if replayed else 201, headers, answer)
        svc.metrics.answer_written(writer)
