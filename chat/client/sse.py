"""An incremental Server-Sent Events parser (WHATWG rules), usable on its own."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEFrame:
    """One dispatched event: its ``event:`` type (``message`` by default), its data (the
    ``data:`` lines joined with ``\\n``), and the ``id:`` given in the frame itself (None
    when it had none: the service's ephemeral events)."""

    event: str
    data: str
    id: str | None


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (``: ping``), without its colon and first space."""

    text: str


_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """An incremental ``text/event-stream`` parser (WHATWG HTML, "Parsing an event stream"):
    feed it decoded text in chunks of any size; it returns the frames and comments that are
    complete. A ``retry:`` field sets ``retry_ms``."""

    def __init__(self) -> None:
        self.retry_ms: int | None = None
        self._buffer = ""
        self._started = False
        self._skip_lf = False  # the last chunk ended with CR: a LF first in the next is its pair
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, text: str) -> list[SSEFrame | SSEComment]:
        out: list[SSEFrame | SSEComment] = []
        if not text:
            return out
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        buffer, pos = self._buffer + text, 0
        while (end := _LINE_END.search(buffer, pos)) is not None:
            if end.group() == "\r" and end.end() == len(buffer):
                self._skip_lf = True
            self._line(buffer[pos : end.start()], out)
            pos = end.end()
        self._buffer = buffer[pos:]
        return out

    def _line(self, line: str, out: list[SSEFrame | SSEComment]) -> None:
        if not line:
            if self._data:
                out.append(SSEFrame(self._event or "message", "\n".join(self._data), self._id))
            self._event, self._data, self._id = "", [], None
            return
        if line.startswith(":"):
            out.append(SSEComment(line[1:].removeprefix(" ")))
            return
        name, colon, value = line.partition(":")
        value = value.removeprefix(" ") if colon else ""
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
