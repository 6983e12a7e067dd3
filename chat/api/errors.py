"""Every error, on every route, as the JSON envelope of API.md:
``{"error": {"code", "message", "details"}}``. This module is the one place that makes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from pydantic import ValidationError
from quart import Quart, Request, Response, request
from quart_schema import RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from chat.api.deps import JSON, services
from chat.api.limits import TOO_LARGE
from chat.errors import ChatError, InvalidJSON, PayloadTooLarge, UnsupportedMediaType

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DRAIN_S = 2.0


class ChatRequest(Request):
    async def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> str | bytes:
        data = await super().get_data(cache, as_text, parse_form_data)
        if TOO_LARGE in self.scope:
            limit = services().settings.max_body_bytes
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        return data

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return await super().get_json(force, silent, cache)
        except UnicodeDecodeError as error:  # Quart decodes outside its JSON error handling
            raise InvalidJSON(f"the body is not UTF-8: {error}") from error

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise InvalidJSON(f"the body is not valid JSON: {error}")


async def discard_unread_body() -> None:
    """Let Quart receive (and drop) what is left of a request body we answer without reading.
    Hypercorn closes a connection whose request was not read to the end, and the kernel then
    resets it, which can destroy the error response on its way to the client. Bounded: a
    client that keeps sending gets its answer after DRAIN_S all the same."""
    complete = getattr(request.body, "_complete", None)  # Quart's Body has no public flag
    if isinstance(complete, asyncio.Event) and not complete.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), DRAIN_S)


def envelope(status: int, code: str, message: str, details: list[Any] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return Response(orjson.dumps(body), status=status, content_type=JSON)


def field_errors(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors, one entry per field: where, what, and the error type."""
    return [
        {
            "loc": list(e["loc"]),
            "field": ".".join(str(part) for part in e["loc"]),
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]


async def check_body() -> None:
    """Before a body is read: its size (Content-Length) and its media type."""
    if request.method not in _BODY_METHODS or request.routing_exception is not None:
        return  # an unknown path or method is a 404 or 405, whatever the body
    length = request.content_length
    limit = services().settings.max_body_bytes
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
    has_body = bool(length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if (has_body or request.method != "DELETE") and request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.mimetype or 'nothing'!r}"
        )


def _chat_error(error: ChatError) -> Response:
    response = envelope(error.status, error.code, error.message, error.details)
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(error.retry_after_s)
    return response


def _schema_error(error: RequestSchemaValidationError) -> Response:
    cause = error.validation_error
    details = field_errors(cause) if isinstance(cause, ValidationError) else [str(cause)]
    if isinstance(error, QuerystringValidationError):
        return envelope(400, "invalid_query", "invalid query parameters", details)
    return envelope(422, "validation_error", "the body does not match the schema", details)


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    response = envelope(status, code, error.description or error.name)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _unexpected(error: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return envelope(500, "internal_error", "an unexpected error occurred; it has been logged")


def register(app: Quart) -> None:
    app.request_class = ChatRequest
    app.before_request(check_body)

    @app.after_request
    async def after_error(response: Response) -> Response:
        if response.status_code >= 400:
            services().metrics.requests_rejected.labels(str(response.status_code)).inc()
            if request.method in _BODY_METHODS:
                await discard_unread_body()
        return response

    app.register_error_handler(ChatError, _chat_error)
    app.register_error_handler(RequestSchemaValidationError, _schema_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
