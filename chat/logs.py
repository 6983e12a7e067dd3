"""Logging: ``CHAT_LOG_FORMAT=text`` (lines for people) or ``json`` (one JSON object a line on
stderr, ACCESS.md, Logs), through the standard ``logging`` module and python-json-logger's
formatter.

The request and stream lines go to the ``chat.access`` logger at INFO: always written in
``json`` format, and in ``text`` format only with ``CHAT_LOG_LEVEL=DEBUG`` (a line per request
costs about as much as a small request). Their fields are the record's ``extra``. No line
carries a password, token, cookie or ``Authorization`` value: the request line's path has
the query's credentials redacted (``redacted_target``), and nothing else of a request's
head or body is logged.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from pythonjsonlogger.orjson import OrjsonFormatter

from chat.config import Settings

access_log = logging.getLogger("chat.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SECRET_NAMES = frozenset({"access_token", "token", "password", "jwt"})
QUERY_SEPARATOR = re.compile(rb"([&;])")


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``CHAT_LOG_FORMAT``: ``json`` lines carry ``ts``, ``level``,
    ``logger``, ``message``, the record's extra fields, and ``exc_info`` (a traceback)."""
    if log_format == "json":
        return OrjsonFormatter(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="ts",
        )
    return logging.Formatter(TEXT_FORMAT)


def setup(settings: Settings) -> None:
    """Configure the root logger from the settings (the command line calls this once)."""
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(formatter(settings.log_format))
    level = settings.log_level.upper()
    if settings.log_format == "json":
        access_level = logging.INFO
    else:
        access_level = logging.INFO if level == "DEBUG" else logging.WARNING
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    access_log.setLevel(access_level)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def redacted_target(path: str, query: bytes) -> str:
    """The request's path and query, with the value of every parameter whose name, decoded
    as a server would decode it (``access_toke%6E``, ``ACCESS_TOKEN``), is a credential's
    replaced. ``;`` counts as a separator too: redacting more than the service reads is
    harmless, less would not be. Control characters of the path (decoded by the server:
    ``%0A`` is a line break there) are percent-encoded again, so that a request cannot write
    a line of its own into a text log."""
    path = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", path)
    if not query:
        return path
    parts = QUERY_SEPARATOR.split(query)  # parameters at even places, separators between
    for i in range(0, len(parts), 2):
        name = parts[i].partition(b"=")[0]
        if unquote_plus(name.decode("latin-1")).strip().lower() in SECRET_NAMES:
            parts[i] = name + b"=[redacted]"
    return f"{path}?{b''.join(parts).decode('latin-1')}"
