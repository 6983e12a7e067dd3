"""Sign-in sessions: ``POST /api/session`` (a password, or in ``open`` mode a guest name)
issues a token and sets it as the HttpOnly ``chat_session`` cookie, which ``EventSource``
sends by itself; ``GET`` says who is signed in; ``DELETE`` signs out (revokes it)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from quart import Blueprint, Response, jsonify, request
from quart_schema import document_response, validate_request

from chat import credentials
from chat.api.auth import COOKIE
from chat.api.deps import identity, no_content, services
from chat.errors import Conflict, Unauthorized, Unavailable
from chat.events import now_rfc3339
from chat.identity import Role
from chat.models import Session, SessionIn, SessionOptions, SessionOut
from chat.store import accounts

PASSWORD_NICENESS = 10


def _yield_cpu() -> None:
    """Lower the priority of the calling thread (Linux schedules threads one by one): a
    password check then takes the CPU only when the event loop leaves it, and a burst of
    sign-ins does not slow the delivery of events (bench/abuse.py measured it)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PASSWORD_NICENESS)


@functools.cache
def _passwords() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that checks passwords: one, so that sign-ins queue instead of taking a
    core each, at a lower priority than the event loop."""
    return concurrent.futures.ThreadPoolExecutor(1, "chat-passwords", initializer=_yield_cpu)


# Password checks queued for that thread, at most: past it a sign-in is answered 503 with
# Retry-After at once. The limits per address and per name (CHAT_SIGNIN_RATE_PER_MIN) hold
# one client back; many addresses guessing many names could otherwise queue checks (tens of
# ms of CPU each) without bound ahead of the next person's sign-in, and over HTTP/1.1 the
# check of a client that has gone runs all the same (chat.api.body.replay).
WAITING_CHECKS_MAX = 32


class _Queue:
    waiting = 0  # password checks queued or running (one process, one thread)


async def _check_password(encoded: str | None, password: str) -> bool:
    if _Queue.waiting >= WAITING_CHECKS_MAX:
        raise Unavailable("too many sign-ins are being checked now: try again in a moment")
    _Queue.waiting += 1
    try:
        check = functools.partial(credentials.verify_password, encoded, password)
        return await asyncio.get_running_loop().run_in_executor(_passwords(), check)
    finally:
        _Queue.waiting -= 1


bp = Blueprint("session", __name__)

# Its answers are never stored (ACCESS.md): the pipeline adds Cache-Control: no-store to
# every answer of these, errors included (chat/app.py).
SESSION_ENDPOINTS = ("session.create", "session.read", "session.end")


@bp.post("/api/session")
@validate_request(SessionIn)
@document_response(SessionOut, 201)
async def create(data: SessionIn) -> Response:
    """Sign in with a name and password; in `open` mode, a name alone signs in a guest
    (409 if an account holds the name). 201 with the token, also set as the `chat_session`
    cookie (HttpOnly, SameSite=Lax). A wrong password and an unknown name are the same 401;
    503 with `Retry-After` while 32 password checks wait already."""
    svc = services()
    settings = svc.settings
    found = await svc.store.password_hash(data.user)
    role: Role = "member"
    kind = "session"
    if data.password is not None:
        encoded = None if found is None else found[0]
        # Argon2 takes tens of ms of CPU: off the event loop, on the one thread that yields
        # the CPU to it (_passwords). An unknown name (None) is checked against a dummy
        # hash, so both failures take the same time.
        ok = await _check_password(encoded, data.password)
        if found is None or not ok:
            raise Unauthorized("wrong user name or password")
        role = found[1]
    elif settings.auth == "required":
        raise Unauthorized("a password is required (CHAT_AUTH=required)")
    elif found is not None:
        raise Conflict(f"an account holds the name {data.user!r}: sign in with its password")
    elif data.user in svc.auth.reserved:
        raise Conflict(f"a token holds the name {data.user!r}: sign in with it")
    else:
        kind = "guest"  # a name, not an account: a guest for everything but authorship
    token, token_hash = credentials.new_token()
    expires = datetime.now(UTC) + timedelta(hours=settings.session_ttl_hours)
    expires_at = now_rfc3339(expires)
    await svc.store.write(
        accounts.create_token(
            credentials.new_token_id(), token_hash, data.user, role, kind, None, expires_at
        )
    )
    body = {
        "user": data.user,
        "role": role,
        "guest": kind == "guest",
        "token": token,
        "expires_at": expires_at,
    }
    response = jsonify(body)
    response.status_code = 201
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.session_ttl_hours * 3600),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.cookie_secure or request.scheme == "https",
    )
    return response


@bp.get("/api/session/options")
@document_response(SessionOptions)
async def options() -> dict[str, Any]:
    """What the page needs before signing in (public): `{"auth": "open" | "required",
    "max_rooms_per_stream"}`."""
    settings = services().settings
    return {"auth": settings.auth, "max_rooms_per_stream": settings.max_rooms_per_stream}


@bp.get("/api/session")
@document_response(Session)
async def read() -> Response:
    """Who is signed in: `{"user", "role"}`, or 401."""
    who = identity()
    if who is None:
        raise Unauthorized("not signed in")
    response = jsonify({"user": who.user, "role": who.role, "guest": who.guest})
    return response


@bp.delete("/api/session")
async def end() -> Response:
    """Sign out: the token is revoked (its streams end) and the cookie cleared: 204."""
    who = identity()
    if who is None:
        raise Unauthorized("not signed in")
    svc = services()
    if who.token_hash is not None:
        await svc.store.write(accounts.revoke_token(token_hash=who.token_hash))
        svc.auth.revoked([who.token_hash])
    response = no_content()
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax")
    return response
