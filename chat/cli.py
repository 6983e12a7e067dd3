"""``python -m chat``: serve, migrate, post, tail, users, tokens."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from chat import __version__, logs
from chat.config import Settings
from chat.identity import ROLES

if TYPE_CHECKING:
    from chat import client as client_models

TOKEN_HELP = (
    "send `Authorization: Bearer TOKEN` (default: CHAT_TOKEN; prefer it: a command line "
    "is visible to other users of the machine)"
)
PASSWORD_STDIN_HELP = "read the password from the first line of stdin instead of a prompt"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat",
        description="Real-time multi-room chat and activity-feed service. Settings come from "
        "CHAT_* environment variables or a .env file (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"chat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description="Start the service under Hypercorn. The database (CHAT_DATABASE, default "
        "chat.db) is created and migrated on start. SIGTERM or Ctrl-C ends every stream "
        "and exits.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1); any address but loopback needs CHAT_AUTH "
        "set explicitly, to open or required (else exit 2)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the same port (default 1); more than 1 needs the Redis "
        "broker (CHAT_BROKER=redis://host:port/0)",
    )
    serve.add_argument(
        "--certfile",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (chain), offering HTTP/2 and HTTP/1.1; "
        "needs --keyfile",
    )
    serve.add_argument(
        "--keyfile", metavar="FILE", help="the PEM private key of --certfile; needs --certfile"
    )
    serve.add_argument("--worker-of", type=int, default=1, help=argparse.SUPPRESS)

    post = commands.add_parser(
        "post",
        help="post a message to a room",
        description="Post a message and print the stored event (JSON). With a token "
        "(--token or CHAT_TOKEN) the message is from the token's user; without one, name "
        "yourself with --author (a service with CHAT_AUTH=required needs a token).",
    )
    post.add_argument("room")
    post.add_argument("text")
    post.add_argument(
        "--author",
        help="who the message is from; required without a token, and with one it must be "
        "the token's user (leave it out)",
    )
    post.add_argument("--url", help="the service (default: CHAT_URL, http://127.0.0.1:8000)")
    post.add_argument("--token", help=TOKEN_HELP)

    tail = commands.add_parser(
        "tail",
        help="print a room's events as they arrive",
        description="Follow one or more rooms (or * for all) and print each event once. "
        "Reconnects by itself after a dropped connection or a server restart and resumes "
        "where it left off (Last-Event-ID). Ctrl-C stops it. A refusal that retrying cannot "
        "mend (a bad room name; a token missing, revoked or expired: 401; a room it may not "
        "read: 403 or 404) prints the service's message and exits 1.",
    )
    tail.add_argument("rooms", nargs="+", metavar="ROOM", help="room names, or * for all")
    tail.add_argument("--types", help="only these event types, e.g. message,activity")
    tail.add_argument("--authors", help="only events by these authors or actors")
    tail.add_argument("--mentions", help="only messages mentioning @NAME")
    tail.add_argument("--since", type=int, help="start after this event id (replays history)")
    tail.add_argument("--json", action="store_true", help="print each event as one JSON line")
    tail.add_argument("--url", help="the service (default: CHAT_URL, http://127.0.0.1:8000)")
    tail.add_argument("--token", help=TOKEN_HELP)

    commands.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply the migrations that CHAT_DATABASE has not seen yet: migrations/ "
        "for SQLite, migrations/postgresql/ for a postgresql:// URL. Several processes may "
        "run it at once.",
    )
    _users_parser(commands)
    _tokens_parser(commands)
    return parser


def _users_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser(
        "users",
        help="add, list, change or remove accounts",
        description="Accounts that sign in with a password (POST /api/session), kept in "
        "CHAT_DATABASE; the service may be running. Passwords are stored as Argon2id hashes.",
    )
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="create an account",
        description="Create an account. The password is asked twice at a prompt (not "
        "echoed), or read as one line from stdin with --password-stdin. Exit 1 if the name "
        "is taken.",
    )
    add.add_argument("name", metavar="NAME", help="user name: 1-64 printable characters")
    role = add.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="the same as --role admin")
    role.add_argument(
        "--role", choices=ROLES, default="member", help="the account's role (default member)"
    )
    add.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)
    listing = actions.add_parser(
        "list",
        help="list accounts",
        description="List every account: name, role, when it was created (never a password).",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    passwd = actions.add_parser(
        "passwd",
        help="set an account's password",
        description="Set a new password (prompt or --password-stdin); the old one stops "
        "working at once, and so do the sign-ins made with it (their streams end within a "
        "few seconds). Tokens from `tokens create` stay valid (`tokens revoke` ends them). "
        "Exit 1 if there is no such account.",
    )
    passwd.add_argument("name", metavar="NAME", help="the account")
    passwd.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)
    remove = actions.add_parser(
        "remove",
        help="remove an account and revoke its tokens",
        description="Remove the account and revoke every token issued to its name (sign-ins "
        "and `tokens create`); a running service refuses them within 2 s and ends their "
        "streams. Exit 1 if there is no such account.",
    )
    remove.add_argument("name", metavar="NAME", help="the account")


def _tokens_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = commands.add_parser(
        "tokens",
        help="create, list or revoke API tokens",
        description="Tokens for bots, services and scripts: sent as `Authorization: Bearer "
        "<token>` (python -m chat post/tail --token, or CHAT_TOKEN). Only a hash is kept.",
    )
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="issue a token and print it once",
        description="Issue a token for NAME (an account is not needed) and print it, alone "
        "on stdout; it cannot be shown again. Its id and details go to stderr.",
    )
    create.add_argument("name", metavar="NAME", help="the user the token acts as")
    create.add_argument(
        "--role", choices=ROLES, default="bot", help="the token's role (default bot)"
    )
    create.add_argument(
        "--rooms",
        metavar="ROOM,ROOM",
        help="reach only these rooms (comma-separated); default every room the user may",
    )
    create.add_argument(
        "--ttl-days", type=float, metavar="N", help="expire after N days (default never)"
    )
    listing = actions.add_parser(
        "list",
        help="list tokens",
        description="List tokens, sign-in sessions included: id, user, role, kind (api or "
        "session), rooms (* for all), created, expires, revoked. Never the token itself.",
    )
    listing.add_argument("--user", metavar="NAME", help="only this user's tokens")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = actions.add_parser(
        "revoke",
        help="revoke a token",
        description="Revoke the token with this id (from `tokens list`); a running service "
        "refuses it within 2 s and ends its streams. Exit 1 if there is no such token.",
    )
    revoke.add_argument("id", metavar="ID", help="the token's id (not the token)")


def _migrate(settings: Settings) -> int:
    import sqlite3

    import psycopg

    from chat.store.dialect import database_kind
    from chat.store.store import migrate

    try:
        applied = migrate(settings)
    except (sqlite3.Error, psycopg.Error, OSError) as error:
        print(f"error: cannot migrate CHAT_DATABASE: {error}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    where = settings.database
    if database_kind(where) == "postgresql":
        where = "the PostgreSQL database"  # the URL may carry a password
    print(f"{where}: up to date ({len(applied)} applied)")
    return 0


def _client(args: argparse.Namespace, settings: Settings) -> int:
    """``post`` and ``tail``, written with the client library (``chat.client``)."""
    from chat import client

    url = args.url or settings.url
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"--url must be an http:// or https:// URL, not {url!r}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request on stderr
    if args.command == "post":
        if args.author is None and token is None:
            print("post needs --author, or a token (--token or CHAT_TOKEN)", file=sys.stderr)
            return 2
        try:
            message = asyncio.run(_post(url, token, args.room, args.text, args.author))
        except client.ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(json.dumps(message.model_dump(mode="json", exclude_unset=True), ensure_ascii=False))
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        try:
            asyncio.run(_tail(args, url, token))
        except client.RequestRefused as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


async def _post(
    url: str, token: str | None, room: str, text: str, author: str | None
) -> client_models.Message:
    from chat.client import ChatClient

    async with ChatClient(url, token=token) as chat:
        return await chat.post(room, text, author=author)


async def _tail(args: argparse.Namespace, url: str, token: str | None) -> None:
    """Follow the rooms until interrupted: every event once, in order, across reconnections
    (``ChatClient.events``); a reset is printed as a line. Raises RequestRefused when the
    server refuses the request itself (a 4xx: a bad room name or filter; a token unknown,
    revoked or expired; a room it may not read)."""
    from chat.client import ChatClient, Event, Filters, Reconnect, Reset

    def show(payload: Mapping[str, Any]) -> None:
        line = json.dumps(payload, ensure_ascii=False) if args.json else describe(payload)
        print(line, flush=True)

    def on_reset(reset: Reset) -> None:
        show(reset.payload)

    def on_reconnect(pause: Reconnect) -> None:
        resume = f" after #{pause.last_id}" if pause.last_id is not None else ""
        print(
            f"{pause.reason}; reconnecting in {pause.delay_s:.1f}s{resume}",
            file=sys.stderr,
            flush=True,
        )

    filters = Filters(types=args.types, authors=args.authors, mentions=args.mentions)
    async with ChatClient(url, token=token) as chat:
        stream = chat.events(
            args.rooms, filters, since=args.since, on_reset=on_reset, on_reconnect=on_reconnect
        )
        async with stream:
            event: Event
            async for event in stream:
                show(event.payload)


def describe(event: Mapping[str, Any]) -> str:
    """One line for a person: ``#12 general alice: hello``."""
    kind, room = event.get("type"), event.get("room")
    head = f"#{event['id']} {room}" if "id" in event else f"{room}"
    if kind == "message":
        return f"{head} {event['author']}: {event['text']}"
    if kind == "activity":
        summary = event.get("summary") or f"{event['verb']} {event['object']}"
        return f"{head} * {event['actor']} {summary}"
    if kind == "message.edited":
        return f"{head} {event['author']} edited #{event['message_id']}: {event['text']}"
    if kind == "message.deleted":
        return f"{head} {event['author']} deleted #{event['message_id']}"
    if kind in ("reaction.added", "reaction.removed"):
        verb = "reacted" if kind == "reaction.added" else "took back"
        return f"{head} {event['author']} {verb} {event['emoji']} on #{event['message_id']}"
    if kind == "typing":
        return f"{head} {event['user']} is typing"
    if kind == "presence":
        return f"{head} {event['user']} {'joined' if event['state'] == 'join' else 'left'}"
    if kind == "reset":
        return f"{head} (history reset: events up to #{event['latest_id']} were skipped)"
    return f"{head} {json.dumps(event, ensure_ascii=False)}"


def is_loopback(host: str) -> bool:
    """Whether ``--host`` reaches this machine only: 127.0.0.0/8, ::1, or localhost."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "CHAT_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"{name}: {problem['msg']}", file=sys.stderr)
        return 2
    logs.setup(settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command in ("post", "tail"):
        return _client(args, settings)
    if args.command in ("users", "tokens"):
        from chat import admin

        return admin.run(args, settings)
    if not is_loopback(args.host) and "auth" not in settings.model_fields_set:
        print(
            f"refusing to serve on {args.host!r} (not loopback) while CHAT_AUTH is not set: "
            "anyone who can reach it could read and post as anyone. Choose, in the "
            "environment or .env: CHAT_AUTH=required (every request signs in) or "
            "CHAT_AUTH=open (guests read public rooms and post under any name).",
            file=sys.stderr,
        )
        return 2
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.broker == "local":
        print(
            "--workers > 1 needs a broker shared by the workers: with the local broker each "
            "worker would only see its own events. Set CHAT_BROKER=redis://host:port/0.",
            file=sys.stderr,
        )
        return 2
    tls_problem = _tls_problem(args)
    if tls_problem is not None:
        print(tls_problem, file=sys.stderr)
        return 2
    if args.workers > 1:
        from chat.workers import run_workers

        return run_workers(args.host, args.port, args.workers, settings.shutdown_grace_seconds)
    from chat.serve import run

    run(
        settings,
        args.host,
        args.port,
        reuse_port=args.worker_of > 1,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )
    return 0


def _tls_problem(args: argparse.Namespace) -> str | None:
    """Why ``--certfile`` / ``--keyfile`` cannot serve HTTPS, or None if they can (or are
    both absent)."""
    if args.certfile is None and args.keyfile is None:
        return None
    if args.certfile is None or args.keyfile is None:
        return "--certfile and --keyfile go together: give both (HTTPS) or neither (HTTP)"
    if args.workers > 1:
        return (
            "--workers > 1 does not serve HTTPS: terminate TLS in front of the workers "
            "(deploy/nginx.conf), or run one process with --certfile and --keyfile"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as error:
        return (
            f"cannot serve HTTPS with --certfile {args.certfile} --keyfile {args.keyfile}: {error}"
        )
    return None
