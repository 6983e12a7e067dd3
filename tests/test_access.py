"""The access policy as plain code (chat.access), and the registry following it in event
order: who may see a room, the name a write is made under, moderation, members, replay."""

from __future__ import annotations

import pytest

from chat import access
from chat.access import AccessBook, ReplayGate
from chat.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from chat.events import Event, make_event
from chat.identity import Identity
from chat.registry import Registry
from chat.subscriber import Subscriber

ALICE = Identity("alice")
BOB = Identity("bob")
ADMIN = Identity("root", "admin")
BOT = Identity("ci", "bot")

_ids = iter(range(1, 1_000_000))


def created(room: str, owner: str, private: bool = True) -> Event:
    fields = {"user": owner, "title": room, "private": private}
    return make_event("room.created", room, fields, event_id=next(_ids))


def added(room: str, user: str, role: str = "member") -> Event:
    fields = {"user": user, "role": role, "by": "alice"}
    return make_event("member.added", room, fields, event_id=next(_ids))


def removed(room: str, user: str) -> Event:
    fields = {"user": user, "role": "member", "by": "alice"}
    return make_event("member.removed", room, fields, event_id=next(_ids))


def message(room: str, author: str = "alice") -> Event:
    return make_event("message", room, {"author": author, "text": "hi"}, event_id=next(_ids))


def book_with_secret() -> AccessBook:
    book = AccessBook()
    book.apply(created("secret", "alice"))
    return book


def test_a_private_room_is_not_found_for_non_members_guests_and_present_for_members() -> None:
    book = book_with_secret()
    access.check_room(ALICE, "secret", book)
    access.check_room(ADMIN, "secret", book)
    for outsider in (BOB, None, BOT):
        with pytest.raises(NotFound):
            access.check_room(outsider, "secret", book)
    access.check_room(None, "public", book)  # a room the book does not know is public
    book.apply(added("secret", "bob"))
    access.check_room(BOB, "secret", book)
    book.apply(removed("secret", "bob"))
    with pytest.raises(NotFound):
        access.check_room(BOB, "secret", book)


def test_a_scoped_credential_reaches_only_its_rooms() -> None:
    scoped = Identity("ci", "bot", frozenset({"builds"}))
    book = AccessBook()
    access.check_room(scoped, "builds", book)
    with pytest.raises(Forbidden):
        access.check_room(scoped, "general", book)
    assert access.visible(scoped, ["builds", "general"], book) == ["builds"]


def test_visible_hides_private_rooms_from_those_who_may_not_read_them() -> None:
    book = book_with_secret()
    rooms = ["general", "secret"]
    assert access.visible(None, rooms, book) == ["general"]
    assert access.visible(BOB, rooms, book) == ["general"]
    assert access.visible(ALICE, rooms, book) == rooms
    assert access.visible(ADMIN, rooms, book) == rooms


def test_author_is_the_identity_and_cannot_name_someone_else() -> None:
    assert access.author(ALICE, None) == "alice"
    assert access.author(ALICE, "alice") == "alice"
    with pytest.raises(Forbidden):
        access.author(ALICE, "bob")
    with pytest.raises(Forbidden):
        access.author(ALICE, "bob", "user")
    with pytest.raises(Forbidden):
        access.author(ALICE, "deploy-bot", "actor")  # a member acts as itself
    assert access.author(BOT, "deploy", "actor") == "deploy"  # bots and admins may name one
    assert access.author(ADMIN, "deploy", "actor") == "deploy"
    with pytest.raises(Forbidden):
        access.author(BOT, "deploy", "author")  # but never write as someone else
    assert access.author(None, "anyone") == "anyone"  # a guest declares itself
    with pytest.raises(ValidationFailed):
        access.author(None, None)


def test_owners_and_admins_moderate_and_manage_members() -> None:
    book = book_with_secret()
    book.apply(added("secret", "bob"))
    assert access.may_delete(ALICE, "secret", book)
    assert access.may_delete(ADMIN, "secret", book)
    assert not access.may_delete(BOB, "secret", book)
    assert not access.may_delete(None, "secret", book)
    access.may_manage(ALICE, "secret", book)
    access.may_manage(ADMIN, "secret", book)
    with pytest.raises(Forbidden):
        access.may_manage(BOB, "secret", book)
    with pytest.raises(Unauthorized):
        access.may_manage(None, "secret", book)
    access.may_remove(BOB, "secret", "bob", book)  # leaving
    with pytest.raises(Forbidden):
        access.may_remove(BOB, "secret", "alice", book)
    book.apply(added("secret", "bob", "owner"))
    access.may_manage(BOB, "secret", book)


def test_unread_counts_are_the_users_own_or_an_admins() -> None:
    access.check_unread(ALICE, "alice")
    access.check_unread(ADMIN, "alice")
    access.check_unread(None, "alice")
    with pytest.raises(Forbidden, match="only 'alice' and admins read 'alice''s unread counts"):
        access.check_unread(BOB, "alice")


def test_a_notification_feed_is_the_users_own_or_an_admins_and_says_so() -> None:
    """A probe saw bob refused alice's feed with a message about her unread counts."""
    access.check_feed(ALICE, "alice")
    access.check_feed(ADMIN, "alice")
    with pytest.raises(Forbidden, match="only 'alice' and admins read 'alice''s notifications"):
        access.check_feed(BOB, "alice")
    with pytest.raises(Forbidden, match="scoped to rooms"):
        access.check_feed(Identity("alice", rooms=frozenset({"general"})), "alice")


def test_a_private_room_needs_a_signed_in_creator() -> None:
    access.check_private_create(ALICE)
    with pytest.raises(Unauthorized):
        access.check_private_create(None)


def test_the_book_follows_events_in_order_from_any_earlier_state() -> None:
    events = [created("r", "alice"), added("r", "bob"), removed("r", "bob"), added("r", "carl")]
    for start in range(len(events) + 1):
        book = AccessBook()
        for event in events[:start]:  # a state that already includes some of the events
            book.apply(event)
        for event in events:
            book.apply(event)
        found = book.get("r")
        assert found is not None and found.private
        assert found.members == {"alice": "owner", "carl": "member"}


def test_replay_gate_follows_membership_event_by_event() -> None:
    book = book_with_secret()
    before = message("secret")
    join = added("secret", "bob")
    during = message("secret")
    leave = removed("secret", "bob")
    after = message("secret")
    public = message("general")
    for event in (join, leave):
        book.apply(event)
    gate = ReplayGate(BOB, book, {})  # bob was not a member where the replay starts
    shown = [e for e in (before, join, during, leave, after, public) if gate.allows(e)]
    assert shown == [join, during, leave, public]
    # starting while a member: everything until the removal, which is the last
    gate = ReplayGate(BOB, book, {"secret": True})
    assert [e for e in (during, leave, after) if gate.allows(e)] == [during, leave]
    assert all(ReplayGate(ADMIN, book, {}).allows(e) for e in (before, after))
    assert not ReplayGate(None, book, {}).allows(before)


def pending_ids(sub: Subscriber) -> list[int | None]:
    return [event.id for event in sub.take()]


@pytest.mark.parametrize("rooms", [("secret", "general"), None], ids=["listed", "every-room"])
def test_registry_delivers_a_private_room_only_from_the_addition_to_the_removal(
    rooms: tuple[str, ...] | None,
) -> None:
    """A stream (of listed rooms, or rooms=*) of bob, opened before bob is a member: the
    room's events reach it from ``member.added`` to ``member.removed``, both included; a
    guest's and a non-member's never; the owner's and an admin's always."""
    reg = Registry()
    bob, guest, carl = (Subscriber(rooms, identity=who) for who in (BOB, None, Identity("carl")))
    owner, admin = Subscriber(rooms, identity=ALICE), Subscriber(rooms, identity=ADMIN)
    for sub in (bob, guest, carl, owner, admin):
        reg.subscribe(sub)
    events = [created("secret", "alice"), message("secret"), added("secret", "bob")]
    events += [message("secret"), removed("secret", "bob"), message("secret")]
    events += [message("general")]
    for event in events:
        reg.dispatch(event)
    ids = [event.id for event in events]
    assert pending_ids(bob) == [*ids[2:5], ids[6]]
    assert pending_ids(guest) == [ids[6]]
    assert pending_ids(carl) == [ids[6]]
    assert pending_ids(owner) == ids
    assert pending_ids(admin) == ids


def test_registry_guards_typing_and_batches_of_a_private_room() -> None:
    reg = Registry()
    reg.dispatch(created("secret", "alice"))
    bob, alice = Subscriber(None, identity=BOB), Subscriber(None, identity=ALICE)
    reg.subscribe(bob)
    reg.subscribe(alice)
    typing = make_event("typing", "secret", {"user": "alice"})
    reg.dispatch(typing)
    reg.dispatch_all([message("secret"), message("secret")])
    assert bob.take() == []
    assert len(alice.take()) == 3


def test_a_run_that_creates_a_private_room_or_adds_a_member_follows_the_book() -> None:
    """Concurrent writes share a commit, so a room's creation, a member's addition and the
    room's next events can reach the registry as one run of one room: the book follows them
    in order, as when they come one by one (a stream of every room sees only what it may)."""
    reg = Registry()
    bob, alice, carl = (Subscriber(None, identity=who) for who in (BOB, ALICE, Identity("carl")))
    for sub in (bob, alice, carl):
        reg.subscribe(sub)
    events = [created("secret", "alice"), message("secret"), added("secret", "bob")]
    events.append(message("secret"))
    reg.dispatch_all(events)

    def sent(sub: Subscriber) -> bytes:
        return sub.collect()[0]

    assert sent(carl) == b""
    assert sent(bob) == b"".join(e.frame for e in events[2:])
    assert sent(alice) == b"".join(e.frame for e in events)
    secret = reg.access.get("secret")
    assert secret is not None and secret.private and set(secret.members) == {"alice", "bob"}


def test_events_the_loaded_book_already_holds_are_not_applied_twice() -> None:
    """At start-up the book is loaded from the store as of an id; an older ``member.removed``
    that the broker delivers late must not undo a newer addition."""
    reg = Registry()
    leave = removed("secret", "bob")
    reg.access.load(["secret"], [("secret", "alice", "owner"), ("secret", "bob", "member")])
    reg.access_position = leave.id or 0
    reg.dispatch(leave)
    assert access.reads(BOB, reg.access.get("secret"))


def test_a_guest_session_is_a_guest_for_private_rooms_and_owns_nothing() -> None:
    guest = Identity("alice", guest=True)  # a guest who took the owner's name
    book = book_with_secret()
    with pytest.raises(NotFound):
        access.check_room(guest, "secret", book)
    with pytest.raises(Unauthorized):
        access.check_private_create(guest)
    with pytest.raises(Unauthorized):
        access.may_manage(guest, "secret", book)
    assert not access.may_delete(guest, "secret", book)
    assert access.owner(guest) is None and access.owner(ALICE) == "alice"
    assert access.author(guest, None) == "alice"  # it still writes under its name
    assert not ReplayGate(guest, book, {"secret": True}).allows(message("secret"))
    reg = Registry()
    reg.dispatch(created("secret", "alice"))
    sub = Subscriber(None, identity=guest)
    reg.subscribe(sub)
    reg.dispatch(message("secret"))
    assert sub.take() == []


def test_unread_counts_show_a_room_only_if_both_the_user_and_the_asker_may_see_it() -> None:
    book = book_with_secret()
    rooms = ["general", "secret"]
    assert access.unread_rooms(ALICE, "alice", rooms, book) == rooms
    assert access.unread_rooms(ADMIN, "alice", rooms, book) == rooms
    assert access.unread_rooms(ADMIN, "bob", rooms, book) == ["general"]  # bob may not
    assert access.unread_rooms(None, "alice", rooms, book) == ["general"]  # a guest asking
    guest = Identity("carl", guest=True)
    assert access.unread_rooms(guest, "alice", rooms, book) == ["general"]


def test_a_stream_of_listed_rooms_gets_its_users_access_events_of_other_rooms() -> None:
    """The page follows its rooms on one stream: it learns there that its user was added to,
    or removed from, a room it does not list yet (or any more)."""
    reg = Registry()
    bob = Subscriber(("general",), identity=BOB)
    carl = Subscriber(("general",), identity=Identity("carl"))
    reg.subscribe(bob)
    reg.subscribe(carl)
    events = [created("secret", "alice"), added("secret", "bob"), message("secret")]
    events += [removed("secret", "bob"), added("secret", "carl")]
    for event in events:
        reg.dispatch(event)
    assert [e.type for e in bob.take()] == ["member.added", "member.removed"]
    assert [e.type for e in carl.take()] == ["member.added"]
    reg.unsubscribe(bob)
    reg.unsubscribe(carl)
    assert reg.personal == {}


def test_guests_may_not_write_under_a_reserved_name_nor_remove_its_membership() -> None:
    reserved = {"alice", "ci"}
    with pytest.raises(Forbidden):
        access.author(None, "alice", "author", reserved)
    assert access.author(None, "carl", "author", reserved) == "carl"
    assert access.author(ALICE, None, "author", reserved) == "alice"  # signed in: its own
    book = book_with_secret()
    with pytest.raises(Unauthorized):
        access.may_remove(Identity("alice", guest=True), "secret", "alice", book)
    access.may_remove(ALICE, "secret", "alice", book)


def test_a_scoped_credential_gets_no_access_events_of_rooms_outside_its_scope() -> None:
    reg = Registry()
    scoped = Subscriber(("general",), identity=Identity("bob", rooms=frozenset({"general"})))
    reg.subscribe(scoped)
    reg.dispatch(created("secret", "alice"))
    reg.dispatch(added("secret", "bob"))
    assert scoped.take() == []
    with pytest.raises(Forbidden):  # and the scope answers before the room's privacy
        access.check_room(Identity("bob", rooms=frozenset({"general"})), "secret", reg.access)
