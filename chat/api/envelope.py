"""Every error, on every route, as the JSON envelope of API.md:
``{"error": {"code", "message", "details"}}``.

This module is the one place that makes it. Two callers use it: the request pipeline, for
whatever it or a plain route raises (``chat.api.pipeline``), and Quart's one error handler,
for the Quart routes (``register``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from quart import Quart, Request, Response, request
from quart_schema import RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed

from chat.api.body import body_json
from chat.api.request import SCOPE_KEY
from chat.api.request import Request as Recorded
from chat.errors import ChatError, InvalidJSON, InvalidQuery, MethodNotAllowed, ValidationFailed

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"
JSON_BYTES = JSON.encode()

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An error's whole answer: status, headers (content type and length included), body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def as_response(self) -> Response:
        response = Response(self.body, status=self.status)
        for name, value in self.headers:
            response.headers[name.decode()] = value.decode()
        return response


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


Parts = tuple[int, str, str, list[Any], list[tuple[bytes, bytes]]]


def _parts(error: BaseException) -> Parts:
    """(status, code, message, details, extra headers) of any exception."""
    if isinstance(error, RequestSchemaValidationError):
        cause = error.validation_error
        details = field_errors(cause) if isinstance(cause, ValidationError) else [str(cause)]
        if isinstance(error, QuerystringValidationError):
            error = InvalidQuery("invalid query parameters", details)
        else:
            error = ValidationFailed("the body does not match the schema", details)
    elif isinstance(error, WerkzeugMethodNotAllowed):
        error = MethodNotAllowed(error.description or error.name, list(error.valid_methods or []))
    if isinstance(error, ChatError):
        return error.status, error.code, error.message, error.details, error.headers()
    if isinstance(error, HTTPException) and error.code is not None:
        code = _HTTP_CODES.get(error.code, "http_error")
        return error.code, code, error.description or error.name, [], []
    return 500, "internal_error", "an unexpected error occurred; it has been logged", [], []


def answer_for(error: BaseException, request_id: bytes | None = None) -> ErrorAnswer:
    """The envelope for any exception; an unexpected one is a 500 (its caller logs it). With
    the request's id, the envelope carries it too (``error.request_id``): what a user quotes
    to the operator, who finds the request's log line by it."""
    status, code, message, details, extra = _parts(error)
    fields: dict[str, Any] = {"code": code, "message": message, "details": details}
    if request_id is not None:
        fields["request_id"] = request_id.decode()
    body = orjson.dumps({"error": fields})
    headers = [(b"content-type", JSON_BYTES), (b"content-length", b"%d" % len(body)), *extra]
    return ErrorAnswer(status, headers, body)


class ChatRequest(Request):
    """Quart's request, with JSON that does not parse as the envelope's 400."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The pipeline's reading of the body (``body_json``: the limits step's too), for a
        JSON request or with ``force``; Quart's own outside the pipeline."""
        recorded = self.scope.get(SCOPE_KEY)
        if isinstance(recorded, Recorded):
            if not (force or self.is_json):
                return None
            try:
                return body_json(recorded)
            except ValueError as error:
                return None if silent else self.on_json_loading_failed(error)
        try:
            return await super().get_json(force, silent, cache)
        except UnicodeDecodeError as error:  # Quart decodes outside its JSON error handling
            raise InvalidJSON(f"the body is not valid JSON: {error}") from error

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise InvalidJSON(f"the body is not valid JSON: {error}")


async def _quart_error(error: Exception) -> Response:
    pipeline_request = request.scope.get(SCOPE_KEY)
    request_id = pipeline_request.request_id() if isinstance(pipeline_request, Recorded) else None
    answer = answer_for(error, request_id)
    if answer.status == 500:
        log.error(
            "unhandled error on %s %s",
            request.method,
            request.path,
            exc_info=error,
            extra={"request_id": request_id.decode() if request_id else None},
        )
    return answer.as_response()


def register(app: Quart) -> None:
    app.request_class = ChatRequest
    app.register_error_handler(Exception, _quart_error)
