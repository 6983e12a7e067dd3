"""The JSON error envelope for requests that h11 cannot parse.

A request whose request line or headers break HTTP/1.1 (a raw non-ASCII byte in the target,
a malformed request line, headers over Hypercorn's ``h11_max_incomplete_size``, a
Transfer-Encoding other than chunked) never reaches the application: h11 raises
``RemoteProtocolError`` and Hypercorn answers by itself, in
``hypercorn.protocol.h11.H11Protocol._send_error_response(status_code)``, with the status h11
hints and an empty body. API.md wants every error as the JSON envelope, so ``install()``
replaces that method with one that sends the envelope of ``chat.api.envelope.answer_for``
(``content-type: application/json; charset=utf-8``, ``x-content-type-options: nosniff``, an
``x-request-id`` made here and echoed in the body, ``connection: close``); Hypercorn closes the
connection after it, as before.

**This relies on a private method of Hypercorn** (docs/design/private-access.md): its name,
its one argument (the status) and its being awaited, with the connection in h11's
``SEND_RESPONSE`` or ``IDLE`` state, where a response may still be sent. If Hypercorn renames
it, ``install()`` logs a warning and changes nothing (the answers are Hypercorn's empty ones
again); if it changes how it is called, the answer may break. Either way
tests/test_serve_protocol_errors.py fails: it sends such requests over a raw socket and
requires a 400 (or 431) with the JSON body, and the connection closed after it.

HTTP/2 has no such answer: a frame h2 cannot parse ends the connection with GOAWAY.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from itertools import chain
from typing import Any

import h11

from chat.api.envelope import answer_for
from chat.api.request import ID_PREFIX, NOSNIFF
from chat.errors import BadRequest, ChatError, HeadersTooLarge, TransferCodingNotImplemented
from chat.logs import access_log

log = logging.getLogger(__name__)

# Told of each such answer's status, to count it (``install``): chat_errors_total and
# chat_requests_total{endpoint="unparsable"}, as the pipeline counts the requests it answers.
_counted: list[Callable[[int], None]] = []

__all__ = [
    "error_for",
    "install",
    "installed",
]


def error_for(status_hint: int, max_head_bytes: int) -> ChatError:
    """The error for the status h11 hints (400 for any it does not)."""
    if status_hint == 431:
        return HeadersTooLarge(
            f"the request line and headers are over the limit of {max_head_bytes} bytes"
        )
    if status_hint == 501:
        return TransferCodingNotImplemented("only Transfer-Encoding: chunked is supported")
    return BadRequest(
        "the request is not valid HTTP/1.1: its request line or headers cannot be parsed "
        "(a request target must be ASCII, with anything else percent-encoded)"
    )


def _made_request_id() -> bytes:
    return ID_PREFIX + secrets.token_hex(4).encode()


async def _send_error_response(self: Any, status_code: int) -> None:
    """The replacement of ``H11Protocol._send_error_response``: the JSON envelope."""
    request_id = _made_request_id()
    error = error_for(status_code, self.config.h11_max_incomplete_size)
    answer = answer_for(error, request_id)
    headers = list(
        chain(
            [h for h in answer.headers if h[0] != b"connection"],  # BadRequest's: once, below
            [NOSNIFF, (b"x-request-id", request_id), (b"connection", b"close")],
            self.config.response_headers("h11"),
        )
    )
    await self._send_h11_event(h11.Response(status_code=answer.status, headers=headers))
    await self._send_h11_event(h11.Data(data=answer.body))
    await self._send_h11_event(h11.EndOfMessage())
    for count in _counted:
        count(answer.status)
    # Its line in the access log, as every request has (ACCESS.md, Logs): the id the body
    # names, so that the operator finds it. Nothing of the request is known but its peer.
    peer = getattr(self, "client", None)
    access_log.info(
        "%s ? ? -> %d (unparsable) %s",
        request_id.decode(),
        answer.status,
        error.message,
        extra={
            "event": "request",
            "request_id": request_id.decode(),
            "method": None,
            "path": None,
            "status": answer.status,
            "bytes": len(answer.body),
            "client": peer[0] if isinstance(peer, tuple) and peer else None,
            "endpoint": "unparsable",
        },
    )


def install(count: Callable[[int], None] | None = None) -> bool:
    """Replace Hypercorn's empty error answer with the envelope (idempotent); ``count`` is
    told of each answer's status (the process's metrics). False, with a warning, when
    Hypercorn no longer has the method."""
    _counted[:] = [count] if count is not None else []
    try:
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:
        log.warning("hypercorn.protocol.h11 has moved: protocol errors get Hypercorn's answer")
        return False
    current = getattr(H11Protocol, "_send_error_response", None)
    if current is None:
        log.warning(
            "H11Protocol._send_error_response is gone: protocol errors get Hypercorn's answer"
        )
        return False
    if current is not _send_error_response:
        H11Protocol._send_error_response = _send_error_response  # type: ignore[method-assign]
    return True


def installed() -> bool:
    """Whether the envelope answers protocol errors in this process."""
    from hypercorn.protocol.h11 import H11Protocol

    return getattr(H11Protocol, "_send_error_response", None) is _send_error_response
