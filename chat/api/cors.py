"""CORS (ACCESS.md): pages of the origins in ``CHAT_CORS_ORIGINS`` may call the API, with
credentials (the session cookie, an ``Authorization`` header). A listed ``Origin`` gets
``Access-Control-Allow-Origin: <that origin>``, ``Access-Control-Allow-Credentials: true``
and the exposed headers; a preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
from it gets 204 with the methods and headers it may use, before any credential is asked
for (a browser sends none with a preflight). An unlisted origin gets no CORS header at all.
``*`` lets any origin read, without credentials: the browser then sends no cookie.
"""

from __future__ import annotations

from chat.api.request import Request

EXPOSED = b"Retry-After, Idempotent-Replayed, RateLimit, RateLimit-Policy, X-Request-ID"
METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE"
ALLOWED_HEADERS = b"Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-ID"
MAX_AGE_S = b"600"
VARY = (b"vary", b"Origin")


class Cors:
    def __init__(self, origins: frozenset[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.encode() for o in origins if o != "*")
        self.on = self.any or bool(self.origins)

    def headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer to a request from ``origin``."""
        if origin is not None and origin in self.origins:
            return [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-expose-headers", EXPOSED),
                VARY,
            ]
        if self.any and origin is not None:
            return [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-expose-headers", EXPOSED),
                VARY,
            ]
        return [VARY] if self.origins else []  # the answer differs by Origin: caches, note

    def apply(self, request: Request) -> bool:
        """Note the request's CORS headers for its answer; True if it is a preflight that
        this answers (the pipeline then sends a 204 and stops)."""
        origin = request.header(b"origin")
        headers = self.headers(origin)
        request.extra_headers.extend(headers)
        preflight = (
            request.method == "OPTIONS"
            and len(headers) > 1
            and request.header(b"access-control-request-method") is not None
        )
        if preflight:
            request.extra_headers += [
                (b"access-control-allow-methods", METHODS),
                (b"access-control-allow-headers", ALLOWED_HEADERS),
                (b"access-control-max-age", MAX_AGE_S),
            ]
        return preflight
