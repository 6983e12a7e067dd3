"""Accounts, tokens and members in the real store (chat.store.accounts): a write into a
private room is refused at its commit once the writer is no longer a member, whatever the
process's own book still says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chat.config import Settings
from chat.errors import Conflict, NotFound
from chat.events import Event
from chat.identity import Identity
from chat.store import Store, accounts, writes


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    published: list[Event] = []
    made = Store(Settings(database=database), published.extend)
    async with asyncio.timeout(20):
        await made.open()
    yield made
    async with asyncio.timeout(20):
        await made.close()


async def test_a_removed_member_cannot_write_into_the_private_room(store: Store) -> None:
    bob = Identity("bob")
    try:
        async with asyncio.timeout(20):
            await store.write(accounts.create_room("secret", None, True, "alice"))
            await store.write(accounts.add_member("secret", "bob", "member", "alice"))
            post = writes.post_message("secret", "bob", "in", None, create_room=True)
            assert (await store.write(accounts.guarded("secret", bob, post))).id
            await store.write(accounts.remove_member("secret", "bob", "alice"))
            late = writes.post_message("secret", "bob", "late", None, create_room=True)
            with pytest.raises(NotFound):
                await store.write(accounts.guarded("secret", bob, late))
            with pytest.raises(NotFound):  # a guest, and a guest session with a member's name
                await store.write(accounts.guarded("secret", None, late))
            with pytest.raises(NotFound):
                await store.write(accounts.guarded("secret", Identity("alice", guest=True), late))
            admin = Identity("root", "admin")
            assert (await store.write(accounts.guarded("secret", admin, late))).id
            public = writes.post_message("lobby", "carl", "hi", None, create_room=True)
            assert (await store.write(accounts.guarded("lobby", None, public))).id
            texts = [
                m["text"]
                for m in (await store.history("secret", before=None, after=None, limit=10))[0]
            ]
            assert texts == ["in", "late"]  # bob's late one is not there; the admin's is
    finally:
        await store.close()


async def create_token(store: Store, token_id: str, user: str, kind: str) -> bytes:
    """A token of ``kind`` (``guest`` or ``api``) for ``user``; returns its hash."""
    token_hash = token_id.encode().ljust(32, b"-")
    role = "bot" if kind == "api" else "member"
    await store.write(accounts.create_token(token_id, token_hash, user, role, kind, None, None))
    return token_hash


async def revoked(store: Store, token_hash: bytes) -> bool:
    row = await store.token(token_hash)
    assert row is not None
    return row.revoked_at is not None


async def test_a_token_takes_its_name_from_guest_sessions(store: Store) -> None:
    """A defect a probe found, fixed: ``tokens create zed`` left zed's guest session valid,
    and the guest edited and deleted the token's messages under the name (an account's
    creation already revoked them)."""
    try:
        async with asyncio.timeout(20):
            guests = [await create_token(store, g, "zed", "guest") for g in ("g1", "g2")]
            api = await create_token(store, "t1", "zed", "api")
            assert [await revoked(store, h) for h in (*guests, api)] == [True, True, False]
            other = await create_token(store, "g3", "amy", "guest")
            await create_token(store, "t2", "zed", "api")
            assert not await revoked(store, other)  # another name's guest session stays
            with pytest.raises(Conflict):  # and no new guest session takes the name
                await create_token(store, "g4", "zed", "guest")
            await store.write(accounts.revoke_token("t1"))
            await store.write(accounts.revoke_token("t2"))
            assert not await store.holds_name("zed")  # free again once its tokens are revoked
            await create_token(store, "g5", "zed", "guest")
    finally:
        await store.close()


async def test_an_account_takes_its_name_from_guest_sessions_and_is_reserved(
    store: Store,
) -> None:
    try:
        async with asyncio.timeout(20):
            await store.write(
                accounts.create_token("g1", b"g" * 32, "carol", "member", "guest", None, None)
            )
            await store.write(
                accounts.create_token("t1", b"t" * 32, "ci", "bot", "api", None, None)
            )
            assert await store.reserved_names() == ["ci"]  # a guest name reserves nothing
            assert [await store.holds_name(n) for n in ("carol", "ci", "dan")] == [
                False,
                True,
                False,
            ]
            await store.write(accounts.add_user("carol", "$argon2id$x", "member"))
            assert await store.holds_name("carol")
            row = await store.token(b"g" * 32)
            assert row is not None and row.revoked_at is not None
            assert sorted(await store.reserved_names()) == ["carol", "ci"]
            with pytest.raises(Conflict):
                await store.write(accounts.add_user("carol", "$argon2id$x", "member"))
    finally:
        await store.close()
