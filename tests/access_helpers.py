"""Accounts and tokens for tests: written into a server's SQLite file through the real store
(as ``python -m chat users/tokens`` do), before the server starts or while it runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from chat import credentials
from chat.config import Settings
from chat.events import now_rfc3339
from chat.identity import Role
from chat.store import Store, accounts


class Seed:
    """``async with Seed(db) as seed:`` then ``await seed.user(...)``, ``await seed.token(...)``."""

    def __init__(self, database: str | Path) -> None:
        """``database``: a store's ``CHAT_DATABASE`` (a live server's ``database``)."""
        self.store = Store(Settings(database=str(database)), lambda events: None)

    async def __aenter__(self) -> Seed:
        async with asyncio.timeout(20):
            await self.store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with asyncio.timeout(20):
            await self.store.close()

    async def user(self, name: str, password: str = "pw-" + "x" * 8, role: Role = "member") -> None:
        hashed = credentials.hash_password(password)
        async with asyncio.timeout(20):
            await self.store.write(accounts.add_user(name, hashed, role))

    async def token(
        self,
        user: str,
        role: Role = "member",
        rooms: list[str] | None = None,
        ttl_s: float | None = None,
    ) -> str:
        token, token_hash = credentials.new_token()
        expires = None
        if ttl_s is not None:
            expires = now_rfc3339(datetime.now(UTC) + timedelta(seconds=ttl_s))
        op = accounts.create_token(
            credentials.new_token_id(), token_hash, user, role, "api", rooms, expires
        )
        async with asyncio.timeout(20):
            await self.store.write(op)
        return token

    async def revoke(self, token: str) -> None:
        async with asyncio.timeout(20):
            await self.store.write(accounts.revoke_token(token_hash=credentials.token_hash(token)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    return await client.post("/api/session", json={"user": user, "password": password})
