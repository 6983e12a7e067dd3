"""The command line of ``python -m chat``: its commands and options (``--help``)."""

from __future__ import annotations

import argparse

from chat import __version__
from chat.identity import ROLES

TOKEN_HELP = (
    "send `Authorization: Bearer TOKEN` (default: CHAT_TOKEN; prefer it: a command line "
    "is visible to other users of the machine)"
)
PASSWORD_STDIN_HELP = "read the password from the first line of stdin instead of a prompt"


def _whole(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def _port(text: str) -> int:
    return _whole(text, 0, 65535, "a port (0-65535)")


def _event_id(text: str) -> int:
    return _whole(text, 0, 2**63 - 1, "an event id (0 or more)")


def parser() -> argparse.ArgumentParser:
    """``python -m chat``'s arguments: every command, its options and its ``--help``."""
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
    serve.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
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
    tail.add_argument(
        "--since", type=_event_id, help="start after this event id (0: the whole history)"
    )
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
