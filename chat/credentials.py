"""Credentials, without IO: service-issued tokens (made, hashed), passwords (Argon2id) and
JWTs signed by another application (PyJWT).

- A service-issued token is ``chat_`` and 43 URL-safe characters: 256 random bits. The store
  keeps only its SHA-256 (``token_hash``): a slow hash protects guessable secrets, and
  these are not guessable.
- Passwords: argon2-cffi's Argon2id with its default (RFC 9106 low-memory) parameters.
  ``verify_password`` of no account checks against ``dummy_hash()`` (made at the first
  check, not at start-up), so an unknown user costs what a wrong password costs.
- JWTs: only the algorithm the key is for is accepted (HS256 with a secret; RS256 or ES256
  with a public key), so ``alg: none`` and algorithm confusion (an HS256 token signed with
  the public key as its secret) fail; ``exp`` and ``sub`` are required, ``aud`` checked when
  configured. PyJWT and cryptography are imported only where JWTs are configured (a secret or a
  key): every start and every command would pay their import (about 70 ms) otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chat.identity import ROLES, Identity, Role
from chat.rules import ROOM_NAME, user_name

TOKEN_PREFIX = "chat_"
TOKEN_SHAPE = re.compile(r"chat_[A-Za-z0-9_-]{43}")
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

_hasher = PasswordHasher()


class BadCredential(Exception):
    """A credential that is malformed, wrongly signed, expired or revoked."""


def new_token() -> tuple[str, bytes]:
    """(the token, given to its holder once; its hash, stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def new_token_id() -> str:
    return secrets.token_hex(6)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def dummy_hash() -> str:
    """The hash of a random password, made once, on first use rather than at import: every
    process that imports this module (the service, each command) would pay an Argon2 hash
    at start-up otherwise."""
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(encoded: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored hash ``encoded``; ``None`` (no such account)
    is checked against ``dummy_hash()`` and is always False, in the same time."""
    dummy = dummy_hash()  # made at the first check of either kind: the first ones cost alike
    try:
        matched = _hasher.verify(dummy if encoded is None else encoded, password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and encoded is not None


@dataclass(frozen=True, slots=True)
class JWTVerifier:
    """Verifies JWTs minted by another application with one key and one algorithm."""

    key: Any
    algorithm: str
    audience: str | None

    @classmethod
    def configure(
        cls, secret: str | None, public_key_file: Path | None, audience: str | None
    ) -> JWTVerifier | None:
        """From the settings; None when neither a secret nor a key is set."""
        if public_key_file is None and not secret:
            return None
        import jwt  # noqa: F401 - loaded here, at start-up, rather than by the first request

        if public_key_file is None:
            return cls(secret, "HS256", audience)
        from cryptography.hazmat.primitives.asymmetric.ec import (
            SECP256R1,
            EllipticCurvePublicKey,
        )
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(public_key_file.read_bytes())
        if isinstance(key, RSAPublicKey):
            return cls(key, "RS256", audience)
        if isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1):
            return cls(key, "ES256", audience)
        raise ValueError(f"{public_key_file}: not an RSA or a P-256 (ES256) public key")

    def verify(self, token: str) -> Identity:
        import jwt  # loaded by configure (see the module's note)

        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as error:
            raise BadCredential(f"the JWT is not valid: {error}") from None
        user, role, rooms = claims.get("sub"), claims.get("role", "member"), claims.get("rooms")
        if not isinstance(user, str):
            raise BadCredential("the JWT's `sub` must be a user name")
        try:
            user = user_name(user)  # the one rule of user names, as for `author` and accounts
        except ValueError as error:
            raise BadCredential(f"the JWT's `sub` is not a user name: {error}") from None
        if role not in ROLES:
            raise BadCredential(f"the JWT's `role` must be one of {', '.join(ROLES)}")
        if rooms is not None and not (
            isinstance(rooms, list)
            and all(isinstance(r, str) and ROOM_NAME.fullmatch(r) for r in rooms)
        ):
            raise BadCredential("the JWT's `rooms` must be a list of room names")
        exp_claim = claims["exp"]
        if isinstance(exp_claim, bool) or not isinstance(exp_claim, int | float):
            raise BadCredential("the JWT's `exp` must be a number (RFC 7519: a NumericDate)")
        try:
            exp = float(exp_claim)  # PyJWT checked that it has passed; it may be huge
        except (OverflowError, ValueError):
            raise BadCredential("the JWT's `exp` is not a time") from None
        if not math.isfinite(exp):
            raise BadCredential("the JWT's `exp` is not a time")
        return Identity(user, _role(role), None if rooms is None else frozenset(rooms), exp)


def _role(value: str) -> Role:
    for role in ROLES:
        if role == value:
            return role
    raise BadCredential(f"unknown role {value!r}")
