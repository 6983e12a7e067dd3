"""The one exception tree. Each class carries its HTTP status and the ``code`` of API.md;
``chat.api.envelope`` turns any of them into the JSON envelope, in one place.

* ChatError
  * InvalidJSON (400 invalid_json)
  * InvalidRoom (400 invalid_room)
  * InvalidQuery (400 invalid_query)
  * Unauthorized (401 unauthorized)
    * SessionEnded (401 unauthorized, and the answer clears the session cookie)
  * Forbidden (403 forbidden)
  * NotFound (404 not_found)
  * MethodNotAllowed (405 method_not_allowed)
  * RequestTimeout (408 request_timeout)
  * Conflict (409 conflict)
  * PayloadTooLarge (413 payload_too_large)
  * UnsupportedMediaType (415 unsupported_media_type)
  * ValidationFailed (422 validation_error)
  * RateLimited (429 rate_limited)
  * Unavailable (503 unavailable)
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChatError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retry_after_s: int | None = None

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[Any] = details or []

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers the answer carries besides the envelope's own."""
        if self.retry_after_s is None:
            return []
        return [(b"retry-after", b"%d" % self.retry_after_s)]


def in_batch(error: ChatError, kind: str, index: int) -> ChatError:
    """The error of a batch's item, made to name it: each detail's ``loc`` starts with
    ``[kind, index]`` and carries ``index``, and the message starts with ``kind[index]: ``."""
    error.details = [
        {**d, "loc": [kind, index, *d.get("loc", [])], "index": index}
        if isinstance(d, dict)
        else {"loc": [kind, index], "index": index, "msg": str(d)}
        for d in error.details
    ] or [{"loc": [kind, index], "index": index, "msg": error.message}]
    error.message = f"{kind}[{index}]: {error.message}"
    return error


class InvalidJSON(ChatError):
    status, code = 400, "invalid_json"


class BadRequest(ChatError):
    """A request whose framing cannot be trusted (``Content-Length`` and ``Transfer-Encoding``
    together: RFC 9112 section 6.3): answered, and the connection closed, so that nothing
    hidden in its body is read as a next request."""

    status, code = 400, "bad_request"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"connection", b"close")]


class HeadersTooLarge(ChatError):
    """The request line and headers are over the size Hypercorn buffers."""

    status, code = 431, "headers_too_large"


class TransferCodingNotImplemented(ChatError):
    """A Transfer-Encoding other than ``chunked``."""

    status, code = 501, "not_implemented"


class InvalidRoom(ChatError):
    status, code = 400, "invalid_room"


class InvalidQuery(ChatError):
    status, code = 400, "invalid_query"


class Unauthorized(ChatError):
    """No identity where one is needed, or a credential that is invalid, expired or revoked."""

    status, code = 401, "unauthorized"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b"Bearer")]


class SessionEnded(Unauthorized):
    """The ``chat_session`` cookie names a session that expired or was revoked: the answer
    also clears the cookie, so that the browser is a guest again (or signs in again)."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        clear = b"chat_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        return [*super().headers(), (b"set-cookie", clear)]


class Forbidden(ChatError):
    status, code = 403, "forbidden"


class NotFound(ChatError):
    status, code = 404, "not_found"


class MethodNotAllowed(ChatError):
    status, code = 405, "method_not_allowed"

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.allowed).encode())]


class Conflict(ChatError):
    status, code = 409, "conflict"


class RequestTimeout(ChatError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(ChatError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ChatError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(ChatError):
    status, code = 422, "validation_error"


class RateLimited(ChatError):
    status, code = 429, "rate_limited"

    def __init__(
        self, message: str, retry_after_s: int, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.extra = extra or []  # RateLimit-Policy and RateLimit (chat.limits)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), *self.extra]


class Unavailable(ChatError):
    status, code = 503, "unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unwritable(Unavailable):
    """The database refuses writes for a reason of its own (read-only, full, an I/O error):
    the operator's to fix, not a defect of the request, and nothing of the batch is
    committed. Reads still work."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database cannot be written now ({reason})", retry_after_s=5)
        self.reason = reason
