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


async def test_a_token_takes_its_name_from_guest_sessions(store: Store) -> None:
    """A defect a probe found, fixed: ``tokens create zed`` left zed's guest session valid,
    and the guest edited and deleted the token's messages under the name (an account's
    creation already revoked them)."""
    try:
        async with asyncio.timeout(20):
            await store.write(
                accounts.create_token("g1", b"g" * 32, "zed", "member", "guest", None, None)
            )
            await store.write(
                accounts.create_token("g2", b"h" * 32, "zed", "member", "guest", None, None)
            )
            await store.write(
                accounts.create_token("t1", b"t" * 32, "zed", "bot", "api", None, None)
            )
            for token_hash in (b"g" * 32, b"h" * 32):
                row = await store.token(token_hash)
                assert row is not None and row.revoked_at is not None
            row = await store.token(b"t" * 32)
            assert row is not None and row.revoked_at is None
            await store.write(  # another guest name is left alone
                accounts.create_token("g3", b"k" * 32, "amy", "member", "guest", None, None)
            )
            await store.write(
                accounts.create_token("t2", b"u" * 32, "zed", "bot", "api", None, None)
            )
            row = await store.token(b"k" * 32)
            assert row is not None and row.revoked_at is None
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
