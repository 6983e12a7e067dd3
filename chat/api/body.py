"""The request's body, read by the pipeline (``chat.api.pipeline``, step 3) before anything
else looks at it: its framing checked, read whole within the size and time limits, its media
type checked when a route takes it, and handed to Quart again as if unread."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent

from chat.api.request import UNREAD, Request
from chat.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: a JSON number no float holds
        raise ValueError(f"{text[:40]} is too large a number")
    return value


def parse_json(raw: str | bytes) -> Any:
    """A request body's JSON, as the Quart routes (``ChatJSONProvider``) and the limits step
    (a batch's items, a sign-in's name) read it: one rule, so that no body is one thing to a
    limit and another to its route (a probe slipped ``"x": 1e400`` past the limits, which
    orjson refused while the json module read it).

    The json module, whose integers are exact (orjson, which the message POST reads with,
    reads one past 64 bits as a float; the input rules refuse such numbers rather than change
    them), but strictly: NaN, Infinity and a number past a float's range, an escaped lone
    surrogate (``"\\ud800"``, no character) and nesting deeper than the interpreter's
    recursion limit are a ValueError (400 ``invalid_json``)."""
    try:
        value = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
        escaped = (raw.find(b"\\u") if isinstance(raw, bytes) else raw.find("\\u")) >= 0
        if escaped:  # only an escape makes a lone surrogate, and it fails here:
            json.dumps(value, ensure_ascii=False).encode()
        return value
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    except UnicodeEncodeError:
        raise ValueError("the body escapes half a surrogate pair, which is no character") from None


def body_json(request: Request) -> Any:
    """The body's JSON, read once for everyone who reads it: the limits step (a batch's
    items, a sign-in's name) and the Quart routes (``ChatRequest.get_json``), so that a batch
    of 500 items is parsed once, and no body is one thing to a limit and another to its route.
    UTF-8 as Quart decodes a body, then ``parse_json``; a ValueError (UnicodeDecodeError is
    one) each time it is asked, as the body does not parse."""
    if request.parsed is UNREAD:
        request.parsed = parse_json(request.body.decode())
    return request.parsed


# After a body passes the limit, what is left of it is still received (and dropped) for at
# most this long: Hypercorn closes a connection whose request was not read to the end, and
# the kernel then resets it, which can destroy the 413 on its way to the client.
DRAIN_S = 2.0


async def read_body(request: Request, limit: int, timeout_s: float) -> bool:
    """Read the whole body into ``request.body``; False if the client went away first."""
    receive = request.receive
    length = request.header(b"content-length")
    too_large = length is not None and length.isdigit() and int(length) > limit
    chunks: list[bytes] = []
    size, more = 0, True
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    too_large = True
                if not too_large:
                    chunks.append(chunk)
                more = message.get("more_body", False)
                if not more or too_large:
                    break
    except TimeoutError:
        if not too_large:
            late = f"the body did not arrive within {timeout_s:g} s"
            raise RequestTimeout(late) from None
    if too_large:
        if more:
            await drain(receive)
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return True


def check_framing(request: Request) -> None:
    """RFC 9112 section 6.3: a message with both Content-Length and Transfer-Encoding may be an
    attempt at request smuggling; it is refused and its connection closed."""
    if (
        request.header(b"transfer-encoding") is not None
        and request.header(b"content-length") is not None
    ):
        raise BadRequest("Content-Length and Transfer-Encoding together are not accepted")


def check_media_type(request: Request, also: frozenset[bytes] = frozenset()) -> None:
    """A body is JSON (or of a media type in ``also``, the endpoint's own); only a DELETE may
    come without one."""
    has_body = bool(request.body) or request.header(b"transfer-encoding") is not None
    if not has_body and request.method == "DELETE":
        return
    content_type = request.header(b"content-type") or b""
    mimetype = content_type.split(b";", 1)[0].strip().lower()
    if mimetype != b"application/json" and mimetype not in also:
        shown = mimetype.decode("latin-1") or "nothing"
        raise UnsupportedMediaType(f"send the body as application/json, not {shown!r}")


async def drain(receive: ASGIReceiveCallable) -> None:
    """Receive and drop what is left of a body, for at most DRAIN_S."""
    try:
        async with asyncio.timeout(DRAIN_S):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def replay(request: Request) -> ASGIReceiveCallable:
    """``receive`` for Quart: the body already read, then the rest. Quart cancels a route's
    handler as soon as its ``receive`` gives ``http.disconnect``; but over HTTP/1.x a client
    that sends its request and then its end of stream (a half-close, as ``nc -N`` or an
    HTTP/1.0 client does) still reads the answer, which it would never get. There, nothing
    follows the body: every Quart route ends by itself (the endless ones, the streams, are
    not Quart's), so the handler runs to its end and Quart cancels this wait once it has.
    Over HTTP/2 a disconnect is a reset stream or a lost connection, whose answer nobody can
    read: it goes to Quart, which stops the handler (a client resetting streams as fast as
    it opens them keeps no handler running)."""
    first: list[ASGIReceiveEvent] = [
        {"type": "http.request", "body": request.body, "more_body": False}
    ]
    receive = request.receive
    multiplexed = request.scope.get("http_version") not in ("1.0", "1.1")

    async def replayed() -> ASGIReceiveEvent:
        if first:
            return first.pop()
        if multiplexed:
            return await receive()
        await asyncio.get_running_loop().create_future()  # never done: Quart cancels it
        raise AssertionError("unreachable")

    return replayed
