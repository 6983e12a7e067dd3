"""Answers written straight on ASGI, for the paths served in front of Quart
(``fast_streams``, ``fast_post``): the same JSON and the same error envelope Quart gives."""

from __future__ import annotations

import orjson
from hypercorn.typing import ASGISendCallable

from chat.api.deps import JSON, Services
from chat.errors import ChatError


async def send_json(
    send: ASGISendCallable,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", JSON.encode()), (b"content-length", b"%d" % len(body))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(svc: Services, send: ASGISendCallable, error: ChatError | None) -> None:
    """The JSON envelope of a ChatError, or of an unexpected error (None: 500, logged by the
    caller), counted like Quart's answers."""
    if error is None:
        status, code = 500, "internal_error"
        message, details = "an unexpected error occurred; it has been logged", []
    else:
        status, code, message = error.status, error.code, error.message
        details = error.details or []
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details}})
    extra = []
    if error is not None and error.retry_after_s is not None:
        extra.append((b"retry-after", str(error.retry_after_s).encode()))
    svc.metrics.requests_rejected.labels(str(status)).inc()
    await send_json(send, status, body, extra)
