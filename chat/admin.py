"""``python -m chat users ...`` and ``tokens ...``: accounts and service-issued tokens, kept in
the store the service uses (CHAT_DATABASE), run while the service runs or not.

Passwords are hashed with Argon2id before they reach the store; a token is printed once, alone
on stdout, and only its SHA-256 is stored. A running service honours a revocation (``tokens
revoke``, ``users remove``) within its revocation poll (2 s). Errors go to stderr: exit 1 for
what the store refuses (a name that exists, an unknown name or token), 2 for bad input."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from chat import credentials
from chat.cli import reader_gone
from chat.config import Settings
from chat.errors import ChatError, InvalidRoom
from chat.events import now_rfc3339
from chat.identity import Role
from chat.rules import check_room
from chat.rules import user_name as checked_name
from chat.store import Store, accounts
from chat.store.account_reads import TokenRow
from chat.store.dialect import database_kind, shown_database, sqlite_path, without_secrets
from chat.store.store import database_errors

T = TypeVar("T")

MAX_PASSWORD_CHARS = 1024  # what POST /api/session accepts


class Refused(Exception):
    """An error for the user: its message goes to stderr, the command exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``users`` or ``tokens`` (``args.command``), action ``args.action``."""
    commands: dict[tuple[str, str], Callable[[argparse.Namespace, Settings], int]] = {
        ("users", "add"): users_add,
        ("users", "list"): users_list,
        ("users", "passwd"): users_passwd,
        ("users", "remove"): users_remove,
        ("tokens", "create"): tokens_create,
        ("tokens", "list"): tokens_list,
        ("tokens", "revoke"): tokens_revoke,
    }
    try:
        return commands[args.command, args.action](args, settings)
    except Refused as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except ChatError as error:  # what the store refused: a name that exists, an unknown one
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D at the password prompt
        print("\nstopped; nothing changed", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tokens list | head -1`: the reader has what it wanted
        if args.action != "list":  # a token or a change's report not shown: not quietly
            raise
        return reader_gone()


# -- the store ---------------------------------------------------------------------------


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    new_file = database_kind(settings.database) == "sqlite" and not os.path.exists(
        sqlite_path(settings.database)
    )

    async def go() -> T:
        store = Store(settings, on_commit=lambda events: None)
        try:
            await store.open()
        except database_errors(settings) as error:
            shown = shown_database(settings.database)
            reason = without_secrets(str(error), settings.database)
            raise Refused(f"cannot open CHAT_DATABASE {shown}: {reason}") from None
        if new_file:  # a mistyped path would otherwise give an empty list, or a token kept apart
            print(
                f"note: CHAT_DATABASE {settings.database} did not exist: this made a new, "
                "empty database",
                file=sys.stderr,
            )
        try:
            return await work(store)
        except database_errors(settings, opening=False) as error:  # read-only, damaged
            shown = shown_database(settings.database)
            reason = without_secrets(str(error), settings.database)
            raise Refused(f"CHAT_DATABASE {shown} failed: {reason}; nothing changed") from None
        finally:
            await store.close()

    return asyncio.run(go())


# -- users -------------------------------------------------------------------------------


def user_name(value: str) -> str:
    """A user name by the one rule of ``author`` (``chat.rules.user_name``): NFC-normalised,
    1-64 characters, no control or format characters, no comma, no space at either end, no
    ``@`` first."""
    try:
        return checked_name(value)
    except ValueError as error:
        raise Refused(f"invalid user name {value[:80]!r}: {error}", 2) from None


def account_name(value: str) -> str:
    """The name of an account that may exist: a user name (``user_name``), or, for one made
    before that rule (with a space at an end, a comma, an ``@`` first), the name as given, so
    that it can still get a new password or be removed."""
    try:
        return checked_name(value)
    except ValueError:
        if not value:
            raise Refused("a user name must not be empty", 2) from None
        return value


NOT_UTF8 = "the password is not UTF-8 text; nothing changed"


def read_password(args: argparse.Namespace, name: str) -> str:
    """One line of stdin (``--password-stdin``), or typed twice at a prompt (not echoed)."""
    try:
        if args.password_stdin:
            line = sys.stdin.readline()
            password = line.removesuffix("\n").removesuffix("\r")
        else:
            password = getpass.getpass(f"Password for {name}: ")
            if getpass.getpass("Password again: ") != password:
                raise Refused("the two passwords differ; nothing changed")
    except UnicodeDecodeError:  # a strict decoder (the locale, or the terminal's reader)
        raise Refused(NOT_UTF8, 2) from None
    if not password:
        raise Refused("the password must not be empty; nothing changed", 2)
    try:
        password.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept as surrogates by the decoder
        raise Refused(NOT_UTF8, 2) from None
    if len(password) > MAX_PASSWORD_CHARS:
        raise Refused(f"the password must be at most {MAX_PASSWORD_CHARS} characters", 2)
    return password


def users_add(args: argparse.Namespace, settings: Settings) -> int:
    name = user_name(args.name)
    role: Role = "admin" if args.admin else args.role

    async def work(store: Store) -> None:
        if await store.password_hash(name) is not None:
            raise Refused(f"an account named {name!r} exists")
        encoded = credentials.hash_password(read_password(args, name))
        await store.write(accounts.add_user(name, encoded, role))

    _with_store(settings, work)
    print(f"added {name} ({role})")
    return 0


def users_list(args: argparse.Namespace, settings: Settings) -> int:
    users = _with_store(settings, lambda store: store.users())
    if args.json:
        print(json.dumps(users, ensure_ascii=False, indent=2))
    else:
        rows = [[u["user"], u["role"], u["created_at"]] for u in users]
        _table(["USER", "ROLE", "CREATED_AT"], rows)
    return 0


def users_passwd(args: argparse.Namespace, settings: Settings) -> int:
    name = account_name(args.name)

    ended: list[int] = []

    async def work(store: Store) -> None:
        if await store.password_hash(name) is None:
            raise Refused(f"no account named {name!r}")
        encoded = credentials.hash_password(read_password(args, name))
        ended.append(len(await store.write(accounts.set_password(name, encoded))))

    _with_store(settings, work)
    print(
        f"changed the password of {name}; signed out {ended[0]} session(s) "
        "(tokens from `tokens create` stay valid)"
    )
    return 0


def users_remove(args: argparse.Namespace, settings: Settings) -> int:
    name = account_name(args.name)
    revoked = _with_store(settings, lambda store: store.write(accounts.remove_user(name)))
    print(f"removed {name} and revoked its tokens ({len(revoked)})")
    return 0


# -- tokens ------------------------------------------------------------------------------


def room_scope(value: str | None) -> list[str] | None:
    """``--rooms a,b`` as room names (each checked), or None: every room."""
    if value is None:
        return None
    rooms = [room.strip() for room in value.split(",") if room.strip()]
    if not rooms:
        raise Refused("--rooms needs at least one room name", 2)
    try:
        return sorted({check_room(room) for room in rooms})
    except InvalidRoom as error:
        raise Refused(error.message, 2) from None


def tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    name = user_name(args.name)
    rooms = room_scope(args.rooms)
    if args.ttl_days is not None and not 0 < args.ttl_days <= 36500:
        raise Refused("--ttl-days must be more than 0 (and at most 36500)", 2)
    expires_at = None
    if args.ttl_days is not None:
        expires_at = now_rfc3339(datetime.now(UTC) + timedelta(days=args.ttl_days))
    token, token_hash = credentials.new_token()
    token_id = credentials.new_token_id()
    op = accounts.create_token(token_id, token_hash, name, args.role, "api", rooms, expires_at)
    _with_store(settings, lambda store: store.write(op))
    try:
        print(token, flush=True)
    except BrokenPipeError:  # `tokens create ... | head -c 0`: the token was made, not shown
        reader_gone()
        print(
            f"error: token {token_id} was created, but standard output was closed before it "
            f"could be shown, and it is shown only once: revoke it with "
            f"`python -m chat tokens revoke {token_id}` and create another.",
            file=sys.stderr,
        )
        return 1
    scope = ", ".join(rooms) if rooms is not None else "every room"
    print(
        f"token {token_id} for {name} ({args.role}; {scope}; expires "
        f"{expires_at or 'never'}). It is shown only this once: "
        f"revoke it with `python -m chat tokens revoke {token_id}`.",
        file=sys.stderr,
    )
    return 0


def token_json(row: TokenRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": row.user,
        "role": row.role,
        "kind": row.kind,
        "rooms": None if row.rooms is None else sorted(row.rooms),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
    }


def tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [token_json(row) for row in _with_store(settings, lambda store: store.tokens())]
    if args.user is not None:
        user = account_name(args.user)
        rows = [row for row in rows if row["user"] == user]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    header = ["ID", "USER", "ROLE", "KIND", "ROOMS", "CREATED_AT", "EXPIRES_AT", "REVOKED_AT"]
    table = [
        [
            row["id"],
            row["user"],
            row["role"],
            row["kind"],
            "*" if row["rooms"] is None else ",".join(row["rooms"]),
            row["created_at"],
            row["expires_at"] or "-",
            row["revoked_at"] or "-",
        ]
        for row in rows
    ]
    _table(header, table)
    return 0


def tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> TokenRow:
        found = [row for row in await store.tokens() if row.id == args.id]
        if not found:
            raise Refused(f"no token {args.id!r} (`python -m chat tokens list` shows them)")
        if found[0].revoked_at is None:
            await store.write(accounts.revoke_token(token_id=args.id))
        return found[0]

    row = _with_store(settings, work)
    if row.revoked_at is not None:
        print(f"token {row.id} was already revoked at {row.revoked_at}")
    else:
        print(f"revoked token {row.id} of {row.user}; a running service refuses it within 2 s")
    return 0


# -- output ------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
