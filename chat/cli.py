"""``python -m chat``: serve, migrate, post, tail, users, tokens."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import ssl
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from chat import cli_parser, logs
from chat.config import Settings
from chat.migrations import Migration

log = logging.getLogger("chat.cli")

JWT_SECRET_MIN_BYTES = 32  # HS256's key: at least the hash's 256 bits (RFC 7518, 3.2)


def _migrated(settings: Settings, doing: str) -> list[Migration] | str:
    """Apply the pending migrations: the applied ones, or why they could not be, in one line
    (``doing``: what it says could not be done), without a password of the URL."""
    from chat.store.dialect import shown_database, without_secrets
    from chat.store.store import database_errors, migrate

    try:
        return migrate(settings)
    except database_errors(settings) as error:
        shown = shown_database(settings.database)
        reason = without_secrets(str(error), settings.database)
        return f"error: cannot {doing} CHAT_DATABASE {shown}: {reason}"


def _migrate(settings: Settings) -> int:
    from chat.store.dialect import shown_database

    applied = _migrated(settings, "migrate")
    if isinstance(applied, str):
        print(applied, file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"{shown_database(settings.database)}: up to date ({len(applied)} applied)")
    return 0


def is_loopback(host: str) -> bool:
    """Whether ``--host`` reaches this machine only: 127.0.0.0/8, ::1, or localhost."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def reader_gone() -> int:
    """After a ``BrokenPipeError`` on stdout (``... | head -1``: the reader has what it
    wanted): what is still buffered, and anything written later, goes to /dev/null, so
    nothing fails again (at exit either). Returns 0."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``chat`` command; its exit status. Output is flushed here, where a reader that
    stopped early is still seen: a buffered stdout would otherwise meet the closed pipe at
    the interpreter's exit, after any handler."""
    code = _command(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()
    return code


def _command(argv: Sequence[str] | None) -> int:
    args = cli_parser.parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        for problem in error.errors():
            if problem["type"] == "default_factory_not_called":
                continue  # a default made from a setting in error, which is said already
            name = "CHAT_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"{name}: {problem['msg']}", file=sys.stderr)
        return 2
    logs.setup(settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command in ("post", "tail"):
        from chat import cli_client

        return cli_client.run(args, settings)
    if args.command in ("users", "tokens"):
        from chat import admin

        return admin.run(args, settings)
    refusal = _serve_problem(args, settings)
    if refusal is not None:
        text, code = refusal
        if settings.log_format == "json":  # one JSON object a line on stderr (ACCESS.md)
            log.error(text)
        else:
            print(text, file=sys.stderr)
        return code
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


def _serve_problem(args: argparse.Namespace, settings: Settings) -> tuple[str, int] | None:
    """Why ``serve`` cannot start, in one line, and its exit status (2: a setting or an
    argument; 1: the port or the database); None when it can."""
    if not is_loopback(args.host) and "auth" not in settings.model_fields_set:
        return (
            f"refusing to serve on {args.host!r} (not loopback) while CHAT_AUTH is not set: "
            "anyone who can reach it could read and post as anyone. Choose, in the "
            "environment or .env: CHAT_AUTH=required (every request signs in) or "
            "CHAT_AUTH=open (guests read public rooms and post under any name).",
            2,
        )
    if args.workers < 1:
        return "--workers must be at least 1", 2
    if args.workers > 1 and settings.broker == "local":
        return (
            "--workers > 1 needs a broker shared by the workers: with the local broker each "
            "worker would only see its own events. Set CHAT_BROKER=redis://host:port/0.",
            2,
        )
    for setting_problem in (_tls_problem(args), _jwt_key_problem(settings)):
        if setting_problem is not None:
            return setting_problem, 2
    if args.worker_of == 1:  # the parent of workers, or the one process: once, in one line
        listen_problem = _listen_problem(args.host, args.port)
        if listen_problem is not None:
            return listen_problem, 1
        migrated = _migrated(settings, "open")  # a database it cannot use: not a traceback
        if isinstance(migrated, str):
            return migrated, 1
    return None


def _listen_problem(host: str, port: int) -> str | None:
    """Why the service cannot listen on ``host:port`` (in use, or not an address of this
    machine), or None: one line rather than a traceback of the server's start. Probed with
    a socket of its own, without SO_REUSEPORT: the workers of another ``serve --workers``
    hold their port with it, and workers of ours would be let in beside them, the kernel
    sharing the connections between two services."""
    from chat.serve import listening_socket

    try:
        listening_socket(host, port, dead_peer_seconds=0).close()
    except OSError as error:
        return f"cannot listen on {host}:{port}: {error.strerror or error}"
    return None


def _jwt_key_problem(settings: Settings) -> str | None:
    """Why the JWT settings cannot verify JWTs, or None: said at start in one line, not as a
    traceback of the app's start. A secret shorter than HS256's 32 bytes (RFC 7518, 3.2); a
    secret and a key file at once (which one signs is ambiguous); a key file that is missing,
    not a PEM public key, not RSA or P-256."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    path = settings.jwt_public_key_file
    if secret and path is not None:
        return (
            "CHAT_JWT_SECRET and CHAT_JWT_PUBLIC_KEY_FILE are both set: set the one your "
            "application signs with (HS256 with the secret, RS256 or ES256 with the key)"
        )
    try:
        size = len(secret.encode())
    except UnicodeEncodeError:  # bytes of the environment that are not UTF-8
        return "CHAT_JWT_SECRET is not UTF-8 text: the host application signs with text"
    if secret and size < JWT_SECRET_MIN_BYTES:
        return (
            f"CHAT_JWT_SECRET: {size} bytes; HS256 needs at least "
            f"{JWT_SECRET_MIN_BYTES} (RFC 7518, 3.2), e.g. from "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if path is None:
        return None
    from chat import credentials

    try:
        credentials.JWTVerifier.configure(None, path, None)
    except (OSError, ValueError, TypeError) as error:
        return f"CHAT_JWT_PUBLIC_KEY_FILE: cannot use {path} as an RSA or EC public key: {error}"
    return None


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
