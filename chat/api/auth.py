"""The pipeline's identity step (``Authenticator``) and access step (``RoomAccessPolicy``):
every request, on every route, is turned into an ``Identity`` (or a guest) here and nowhere
else (ACCESS.md).

The credential is the first present of: ``Authorization: Bearer``, the ``chat_session``
cookie, ``?access_token=`` (stream GETs only). One that is present but malformed, wrongly
signed, expired or revoked is 401, never a guest. A cookie-authenticated write needs an
``Origin`` (or ``Referer``) of the service itself or of ``CHAT_CORS_ORIGINS`` (CSRF).

Verified credentials are kept (``IdentityCache``): a request with a known token costs a
SHA-256 and a dictionary lookup, not a store read. Revocation is honoured: revoking here drops
the entry at once, and ``watch`` reads the tokens revoked anywhere (another process, the
command line) every ``REVOCATION_POLL_S``, drops them, and ends their streams, as it ends
streams whose credential has expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from chat.access import AccessBook, check_room
from chat.api.pipeline import BODY_METHODS
from chat.api.request import Request
from chat.config import Settings, origins
from chat.credentials import JWT_SHAPE, TOKEN_SHAPE, BadCredential, JWTVerifier, token_hash
from chat.errors import Forbidden, SessionEnded, Unauthorized
from chat.events import now_rfc3339
from chat.identity import Identity
from chat.registry import Registry
from chat.store import Store

log = logging.getLogger(__name__)

COOKIE = "chat_session"
COOKIE_BYTES = COOKIE.encode()
REVOCATION_POLL_S = 2.0
# How far back each poll looks for revocations, beyond the last poll: commits that were in
# flight, and clocks of other hosts that run a little behind.
REVOCATION_OVERLAP_S = 30.0
CACHE_MAX = 100_000
# The stream GETs (chat/api/routes.py): the only ones that take `?access_token=` (ACCESS.md).
STREAM_ENDPOINTS = frozenset({"streams.room_events", "streams.events", "streams.notifications"})
# What needs no identity in `required` mode (besides POST /api/session, and /metrics when
# CHAT_METRICS_PUBLIC is set).
PUBLIC_ENDPOINTS = frozenset(
    {
        "ops.healthz",
        "ops.readyz",
        "ops.index",
        "ops.docs_assets",
        "static",
        "openapi",
        "ops.docs",
        "session.options",
    }
)


class IdentityCache:
    """Verified credentials (token hash or JWT -> Identity), the oldest dropped past a bound."""

    def __init__(self, limit: int = CACHE_MAX) -> None:
        self.limit = limit
        self.entries: dict[bytes | str, Identity] = {}

    def get(self, key: bytes | str, now: float) -> Identity | None:
        identity = self.entries.get(key)
        if identity is not None and identity.expires_at is not None and identity.expires_at <= now:
            del self.entries[key]
            return None
        return identity

    def put(self, key: bytes | str, identity: Identity) -> None:
        entries = self.entries
        if len(entries) >= self.limit:
            del entries[next(iter(entries))]
        entries[key] = identity

    def drop(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self.entries.pop(key, None)


class Authenticator:
    def __init__(self, settings: Settings, store: Store, registry: Registry) -> None:
        self.required = settings.auth == "required"
        self.metrics_public = settings.metrics_public or not self.required
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.jwt = JWTVerifier.configure(
            secret, settings.jwt_public_key_file, settings.jwt_audience
        )
        self.origins = origins(settings)
        self.store = store
        self.registry = registry
        self.cache = IdentityCache()
        # Names of accounts and of tokens' users: a guest may not write under them (the
        # store's, read again every REVOCATION_POLL_S, so a name taken elsewhere counts soon).
        self.reserved: frozenset[str] = frozenset()

    async def load(self) -> None:
        self.reserved = frozenset(await self.store.reserved_names())

    async def __call__(self, request: Request) -> Identity | None:
        credential, via = self.credential(request)
        if credential is None:
            if self.required and not self.is_public(request):
                raise Unauthorized("sign in: this service needs an identity (CHAT_AUTH=required)")
            return None
        try:
            identity = await self.resolve(credential)
        except Unauthorized as error:
            if via != "cookie":
                raise
            if request.endpoint == "session.create":
                return None  # signing in again replaces a session that ended
            raise SessionEnded(error.message) from None  # and the answer clears the cookie
        if via == "cookie" and request.method in BODY_METHODS:  # the writes
            self.check_origin(request)
        return identity

    def is_public(self, request: Request) -> bool:
        endpoint = request.endpoint
        if endpoint in PUBLIC_ENDPOINTS:
            return True
        if endpoint == "session.create":
            return True
        return endpoint == "ops.metrics" and self.metrics_public

    def credential(self, request: Request) -> tuple[str | None, str]:
        """(the credential, how it came): the first present of header, cookie, query."""
        header = request.header(b"authorization")
        if header is not None:
            scheme, _, value = header.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("the Authorization header must be `Bearer <token>`")
            return value.strip(), "bearer"
        cookies = request.header(b"cookie")
        if cookies is not None and COOKIE_BYTES in cookies:
            for part in cookies.decode("latin-1").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE and value:
                    return value, "cookie"
        if (
            request.endpoint in STREAM_ENDPOINTS
            and b"access_token" in request.scope["query_string"]
        ):
            query = request.scope["query_string"].decode("latin-1")
            for name, value in parse_qsl(query, keep_blank_values=True):
                if name == "access_token":
                    if not value:
                        raise Unauthorized("`access_token` is empty")
                    return value, "query"
        return None, ""

    async def resolve(self, credential: str) -> Identity:
        """The identity of a credential, or 401."""
        now = time.time()
        if TOKEN_SHAPE.fullmatch(credential):
            key: bytes | str = token_hash(credential)
        elif self.jwt is not None and JWT_SHAPE.fullmatch(credential):
            key = credential
        else:
            raise Unauthorized("the credential is not a token of this service")
        identity = self.cache.get(key, now)
        if identity is not None:
            return identity
        if isinstance(key, str):
            assert self.jwt is not None
            try:
                identity = self.jwt.verify(credential)
            except BadCredential as error:
                raise Unauthorized(str(error)) from None
        else:
            row = await self.store.token(key)
            if row is None or row.revoked_at is not None:
                raise Unauthorized("the token is unknown or revoked")
            if row.kind == "guest" and self.required:
                raise Unauthorized("a guest name signs in only while CHAT_AUTH=open")
            expires = row.expires_s
            if expires is not None and expires <= now:
                raise Unauthorized("the token has expired")
            guest = row.kind == "guest"
            identity = Identity(row.user, row.role, row.rooms, expires, key, guest)
        self.cache.put(key, identity)
        return identity

    def check_origin(self, request: Request) -> None:
        """A write authenticated by the cookie alone must come from our own page (or a listed
        origin): another site's form or script cannot make it."""
        source = request.header(b"origin") or request.header(b"referer")
        if source is None:
            raise Forbidden("a write signed in by cookie needs an Origin or Referer header")
        parts = urlsplit(source.decode("latin-1"))
        host = (request.header(b"host") or b"").decode("latin-1")
        if parts.netloc and parts.netloc == host:
            return
        if f"{parts.scheme}://{parts.netloc}" in self.origins:
            return
        raise Forbidden("a write signed in by cookie must come from this service's own page")

    def revoked(self, hashes: Iterable[bytes]) -> int:
        """Forget these tokens and end their streams; returns how many streams ended."""
        gone = set(hashes)
        if not gone:
            return 0
        self.cache.drop(gone)
        ended = 0
        for sub in list(self.registry.subscribers):
            identity = sub.identity
            if identity is not None and identity.token_hash in gone:
                sub.close("credential_revoked")
                ended += 1
        return ended

    def end_expired(self, now: float) -> int:
        ended = 0
        for sub in list(self.registry.subscribers):
            identity = sub.identity
            expires_at = None if identity is None else identity.expires_at
            if expires_at is not None and expires_at <= now:
                sub.close("credential_expired")
                ended += 1
        return ended

    async def watch(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """Forever: every REVOCATION_POLL_S, honour revocations made anywhere and end the
        streams of expired credentials."""
        since = now_rfc3339(clock() - timedelta(seconds=REVOCATION_OVERLAP_S))
        while True:
            await asyncio.sleep(REVOCATION_POLL_S)
            started = clock()
            try:
                await self.load()  # first: once a revocation shows, so does a name taken
                self.revoked(await self.store.revoked_since(since))
            except Exception:
                log.warning("could not read revoked tokens; will try again", exc_info=True)
            else:
                since = now_rfc3339(started - timedelta(seconds=REVOCATION_OVERLAP_S))
            self.end_expired(time.time())


class RoomAccessPolicy:
    """The pipeline's access step: a request to a room's path (``/api/rooms/{room}/...``)
    reaches the room only if the identity may (a private room is a 404 to a non-member, a
    room outside the credential's scope a 403). Finer decisions (who may edit, delete,
    manage members) are the routes', with ``chat.access``."""

    def __init__(self, book: AccessBook) -> None:
        self.book = book

    async def __call__(self, request: Request) -> None:
        room = request.args.get("room")
        if room is not None:
            check_room(request.identity, room, self.book)
