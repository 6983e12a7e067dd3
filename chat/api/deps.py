"""What the blueprints share: the parts ``create_app`` built, found on the current app."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

import orjson
from pydantic import BaseModel, ValidationError
from quart import Response, current_app, request

from chat.access import AccessBook, author
from chat.api.auth import Authenticator
from chat.api.envelope import JSON, field_errors
from chat.api.pipeline import SCOPE_KEY
from chat.api.request import Request
from chat.broker import Broker
from chat.config import Settings
from chat.delivery import Delivery
from chat.errors import ChatError, InvalidJSON, NotFound, ValidationFailed, in_batch
from chat.identity import Identity
from chat.limits import Buckets, Rate, StreamCounts
from chat.metrics import Metrics
from chat.presence import Presence
from chat.registry import Registry
from chat.store import Store, WriteOp, accounts, writes

IDEMPOTENCY_KEY_CHARS = 200
B = TypeVar("B", bound=BaseModel)
T = TypeVar("T")


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    registry: Registry
    broker: Broker
    metrics: Metrics
    delivery: Delivery
    presence: Presence
    auth: Authenticator
    buckets: Buckets  # every token bucket: the per-client limits (chat.api.limiting), typing
    streams_per_client: StreamCounts
    shutting_down: bool = False

    @property
    def typing(self) -> Rate:
        """At most one typing event per user and room per CHAT_TYPING_INTERVAL_SECONDS."""
        interval = self.settings.typing_interval_seconds
        return Rate("typing", 1 / interval if interval > 0 else 0, 1)

    def begin_shutdown(self) -> None:
        """Stop taking streams, report not ready, and end every open stream."""
        self.shutting_down = True
        self.registry.close_all()

    @property
    def book(self) -> AccessBook:
        return self.registry.access


async def optional_body(model: type[B]) -> B:
    """The request's body validated as ``model``; an empty body (a DELETE sent without one)
    is ``model()``, all defaults."""
    raw = await request.get_data()
    if not raw:
        return model()
    try:
        return model.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as error:
        raise InvalidJSON(f"the body is not valid JSON: {error}") from None
    except ValidationError as error:
        raise ValidationFailed("the body does not match the schema", field_errors(error)) from None


def services() -> Services:
    return cast(Services, current_app.extensions["chat"])


def write_as(given: str | None, name: str = "author") -> str:
    """The name this request writes under (``chat.access.author``)."""
    return author(identity(), given, name, services().auth.reserved)


def writes_as(given: Iterable[str | None], kind: str, name: str = "author") -> list[str]:
    """``write_as`` for each item of a batch (``kind``: the body's list, ``messages`` or
    ``items``), a refusal naming the item as the store's batch does (``in_batch``). Who asks
    and the reserved names are looked up once (two context lookups an item were a sixth of a
    500-item batch's time in the loop)."""
    who, reserved = identity(), services().auth.reserved
    names = []
    for index, one in enumerate(given):
        try:
            names.append(author(who, one, name, reserved))
        except ChatError as error:
            raise in_batch(error, kind, index) from None
    return names


def identity() -> Identity | None:
    """Who asks (None: a guest), as the pipeline's identity step found it."""
    pipeline_request = cast(Request, request.scope[SCOPE_KEY])  # type: ignore[literal-required]
    return pipeline_request.identity


async def require_room(room: str, svc: Services | None = None) -> None:
    """404 for a room that does not exist, unless rooms are created on first use."""
    svc = svc or services()
    if not svc.settings.auto_create_rooms and await svc.store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")


def no_content() -> Response:
    """204: no body, so no ``Content-Type`` either (Quart would name text/html)."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def event_response(body: bytes, status: int) -> Response:
    """The stored event's JSON, byte for byte what subscribers receive."""
    return Response(body, status=status, content_type=JSON)


async def commit_event(
    room: str, body: object | Callable[[], object], op: WriteOp[bytes]
) -> Response:
    """Commit a write that creates events and answer 201 with its body, honouring the
    ``Idempotency-Key`` header: a retry gets the first answer (200, ``Idempotent-Replayed:
    true``) and nothing is written or broadcast again; the key with another body is 409."""
    key = request.headers.get("Idempotency-Key")
    data, replayed = await commit_idempotent(
        services(), room, key, (request.method, request.path), body, op, identity()
    )
    if replayed:
        response = event_response(data, 200)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    return event_response(data, 201)


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_CHARS and key.isprintable()):
        raise ValidationFailed(
            "Idempotency-Key must be 1-200 printable characters",
            [{"loc": ["header", "Idempotency-Key"], "field": "Idempotency-Key"}],
        )


async def commit_idempotent(
    svc: Services,
    room: str,
    key: str | None,
    request_line: tuple[str, str],
    body: object | Callable[[], object],
    op: WriteOp[bytes],
    who: Identity | None,
) -> tuple[bytes, bool]:
    """``commit_event`` without Quart: (the answer's body, whether it is a replay). ``body``
    (or what calling it gives, only when there is a key) identifies the request's content."""
    check_idempotency_key(key)
    if key is None:
        fingerprint = ""
    else:
        fingerprint = writes.fingerprint(*request_line, body() if callable(body) else body)
    return await svc.store.write(
        writes.idempotent(room, key, fingerprint, accounts.guarded(room, who, op))
    )


async def write_in(room: str, op: WriteOp[T]) -> T:
    """Commit a write into a room if the asker may write there as the store has it at the
    commit (``accounts.guarded``)."""
    svc = services()
    return await svc.store.write(accounts.guarded(room, identity(), op))
