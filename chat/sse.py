"""Server-Sent Events wire format: an event becomes its bytes once, here, and every
subscriber is handed the same bytes object.

Only ``data`` may carry line breaks (each line becomes its own ``data:`` field, as the spec
joins them back with ``\\n``); in ``id``, ``event`` and comments a line break would start a
new field, so it is never written there.
"""

from __future__ import annotations

import functools
import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

PING = b": ping\n\n"


def _one_line(value: str) -> str:
    return _LINE_BREAK.sub(" ", value)


@functools.lru_cache(maxsize=64)  # the event types are a handful of fixed names
def _event_line(event_type: str) -> bytes:
    return b"event: " + _one_line(event_type).encode() + b"\n"


def event_frame(event_id: int | None, event_type: str, data: bytes) -> bytes:
    """``id: <id>\\nevent: <type>\\ndata: <data>\\n\\n``; no ``id`` line for ephemeral events."""
    event_line = _event_line(event_type)
    # find, not ``in``: bytes.__contains__ first tries its argument as an int, and makes and
    # drops a TypeError (~2,000 instructions) before it searches
    if data.find(b"\n") >= 0 or data.find(b"\r") >= 0:
        lines = _LINE_BREAK.split(data.decode())
        body = b"".join(b"data: " + line.encode() + b"\n" for line in lines)
    else:  # JSON from orjson never has a raw line break: one format, one allocation
        if event_id is None:
            return b"%bdata: %b\n\n" % (event_line, data)
        return b"id: %d\n%bdata: %b\n\n" % (event_id, event_line, data)
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + event_line + body + b"\n"


def comment(text: str) -> bytes:
    """A comment line that clients ignore (``: text``), used for keep-alives."""
    return b": " + _one_line(text).encode() + b"\n\n"


def hello(retry_ms: int) -> bytes:
    """The first bytes of every stream: the reconnect delay and a comment, flushed at once."""
    return b"retry: %d\n" % retry_ms + comment("connected")
