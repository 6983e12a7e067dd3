"""What the client library raises (``chat.client``'s errors), and the exception for an error
answer of the service."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from chat.client.types import Reset


class ClientError(Exception):
    """Anything this library raises: the service refused, failed, or could not be reached."""


class Unreachable(ClientError):
    """The request did not get an answer: connection refused or reset, DNS, TLS, timeout."""


class ClientClosed(ClientError):
    """A request of a ``ChatClient`` that was closed (``aclose``, or its ``async with``)."""


class ResponseError(ClientError):
    """The service answered with an error status and (normally) its JSON error envelope
    ``{"error": {"code", "message", "details", "request_id"}}``. ``str()`` is
    ``"<status> <code>: <message>"``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after  # seconds, from a Retry-After header
        self.request_id = request_id
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (408, 429, 5xx)."""
        return not refused(self.status)


class RequestRefused(ResponseError):
    """A 4xx other than 408 and 429: the request itself is refused (a bad room name or
    filter, a body that breaks the schema, missing rights); repeating it cannot help."""


class Unauthorized(RequestRefused):
    """401: no credentials where the service requires them, or a token that is unknown,
    revoked or expired."""


class Forbidden(RequestRefused):
    """403: the identity may not do this (e.g. post under another author's name)."""


class NotFound(RequestRefused):
    """404: an unknown room, message or path (a private room is one, to a non-member)."""


class StreamReset(ClientError):
    """The server could not replay the gap since the stream's resume point (``reason``:
    ``gap_too_large``, ``unknown_resume_point`` or ``expired``): events up to ``latest_id``
    were skipped. Reload over REST what you show; iterating the same stream again carries on
    live from ``latest_id``."""

    def __init__(self, reset: Reset) -> None:
        self.reset = reset
        self.latest_id = reset.latest_id
        self.reason = reset.reason
        self.room = reset.room
        super().__init__(
            f"stream reset ({reset.reason}): events up to #{reset.latest_id} were skipped; "
            "reload the history"
        )


def refused(status: int) -> bool:
    """Whether retrying the same request cannot help: a 4xx other than 408 and 429."""
    return 400 <= status < 500 and status not in (408, 429)


_REFUSALS: dict[int, type[RequestRefused]] = {401: Unauthorized, 403: Forbidden, 404: NotFound}


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_for(response: httpx.Response) -> ResponseError:
    """The exception for an error answer (its body read already)."""
    status = response.status_code
    code, message, details, request_id = "", "", list[Any](), None
    try:
        envelope = response.json()["error"]
        code, message = str(envelope["code"]), str(envelope["message"])
        details = list(envelope.get("details") or [])
        request_id = envelope.get("request_id")
    except (ValueError, KeyError, TypeError):
        message = repr(response.content[:200])
    kind = _REFUSALS.get(status, RequestRefused) if refused(status) else ResponseError
    return kind(
        status,
        code,
        message,
        details,
        retry_after=_retry_after(response.headers.get("Retry-After")),
        request_id=request_id if isinstance(request_id, str) else None,
    )


def describe(error: BaseException) -> str:
    """An exception in words, its type when it has none."""
    return str(error) or type(error).__name__
