"""A subscriber's filter: parsed from the query string, tested against events."""

from __future__ import annotations

import pytest

from chat.errors import InvalidQuery
from chat.events import Event, make_event
from chat.filters import MAX_LIST_ITEMS, Filter, parse_filter, split_list


def msg(author: str, text: str = "hello", event_type: str = "message") -> Event:
    return make_event(event_type, "r", {"author": author, "text": text}, event_id=1)


def activity(actor: str) -> Event:
    return make_event("activity", "r", {"actor": actor, "verb": "v", "object": "o"}, event_id=2)


def typing(user: str) -> Event:
    return make_event("typing", "r", {"user": user})


def parsed(**query: str) -> Filter:
    flt = parse_filter(query)
    assert flt is not None
    return flt


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"types": ""},
        {"authors": " , ,"},
        {"exclude_authors": ""},
        {"mentions": ","},
        {"user": "alice", "last_event_id": "5"},  # not filter parameters
    ],
)
def test_empty_query_is_no_filter(query: dict[str, str]) -> None:
    assert parse_filter(query) is None


def test_types_keeps_only_those_types() -> None:
    flt = parsed(types="message,activity")
    assert flt.matches(msg("a"))
    assert flt.matches(activity("a"))
    assert not flt.matches(typing("a"))
    assert not flt.matches(msg("a", event_type="message.edited"))


def test_every_documented_type_is_accepted() -> None:
    every = "message,message.edited,message.deleted,reaction.added,reaction.removed,activity"
    assert parsed(types=every + ",typing,presence,reset").types is not None


@pytest.mark.parametrize("types", ["messages", "message,bogus", "Message", "message.*"])
def test_unknown_type_is_invalid_query(types: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        parse_filter({"types": types})
    assert info.value.code == "invalid_query"
    assert info.value.status == 400


def test_authors_match_author_actor_and_user() -> None:
    flt = parsed(authors="alice,bob")
    assert flt.matches(msg("alice"))
    assert flt.matches(activity("bob"))
    assert flt.matches(typing("alice"))
    assert not flt.matches(msg("carol"))
    assert not flt.matches(activity("carol"))
    assert not flt.matches(make_event("reset", "r", {"latest_id": 1, "reason": "x"}))


def test_authors_are_case_sensitive_names() -> None:
    assert not parsed(authors="alice").matches(msg("Alice"))


def test_exclude_authors_drops_authors_actors_and_typing_users() -> None:
    flt = parsed(exclude_authors="me")
    assert not flt.matches(msg("me"))
    assert not flt.matches(msg("me", event_type="message.deleted"))
    assert not flt.matches(activity("me"))
    assert not flt.matches(typing("me"))
    assert flt.matches(msg("you"))
    assert flt.matches(activity("you"))
    assert flt.matches(typing("you"))
    assert flt.matches(make_event("reset", "r", {"latest_id": 1, "reason": "x"}))


def test_exclude_wins_over_authors() -> None:
    flt = parsed(authors="alice,bob", exclude_authors="bob")
    assert flt.matches(msg("alice"))
    assert not flt.matches(msg("bob"))


def test_types_and_authors_combine() -> None:
    flt = parsed(types="activity", authors="ci")
    assert flt.matches(activity("ci"))
    assert not flt.matches(msg("ci"))
    assert not flt.matches(activity("dev"))


@pytest.mark.parametrize(
    "text",
    [
        "hi @alice!",
        "@Alice, look",
        "@ALICE",
        "thanks @alice.",
        "(@alice)",
        "cc:@alice",
        "@alice's idea",
        "line one\n@alice",
        "@bob @alice",
    ],
)
def test_mention_matches_the_whole_name_in_any_case(text: str) -> None:
    assert parsed(mentions="alice").matches(msg("x", text))


@pytest.mark.parametrize(
    "text",
    [
        "@alicex",
        "@alice-bob",
        "@alice.smith",
        "@alice_2",
        "@alice2",
        "bob@alice.com",
        "x_@alice",
        "@@alice",
        "alice",
        "hi @ alice",
        "@alic",
        "",
    ],
)
def test_mention_rejects_other_names_emails_and_plain_words(text: str) -> None:
    assert not parsed(mentions="alice").matches(msg("x", text))


def test_mention_of_any_listed_name() -> None:
    flt = parsed(mentions="alice, bob")
    assert flt.matches(msg("x", "ping @bob"))
    assert flt.matches(msg("x", "ping @alice"))
    assert not flt.matches(msg("x", "ping @carol"))


def test_mention_names_are_literal_not_patterns() -> None:
    flt = parsed(mentions="a.c")
    assert flt.matches(msg("x", "hey @a.c"))
    assert not flt.matches(msg("x", "hey @abc"))


@pytest.mark.parametrize(
    "event",
    [
        typing("u"),
        make_event("activity", "r", {"actor": "a", "verb": "v", "object": "@alice"}),
        make_event("message", "r", {"author": "a", "text": 5}),
    ],
)
def test_mention_needs_a_text_string(event: Event) -> None:
    assert not parsed(mentions="alice").matches(event)


def test_mentions_notify_new_messages_not_edits() -> None:
    assert not parsed(mentions="alice").matches(msg("x", "now @alice", "message.edited"))


@pytest.mark.parametrize(
    ("raw", "items"),
    [
        (None, []),
        ("", []),
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        (" a , b ,,c, ", ["a", "b", "c"]),
        (",,,", []),
        ("two words,x", ["two words", "x"]),
    ],
)
def test_split_list(raw: str | None, items: list[str]) -> None:
    assert split_list(raw, "p") == items


def test_list_items_are_trimmed_before_matching() -> None:
    flt = parsed(types=" message , ", authors=" alice ")
    assert flt.matches(msg("alice"))
    assert not flt.matches(msg(" alice "))


def test_list_at_the_limit_is_accepted_and_one_more_is_not() -> None:
    names = [f"u{i}" for i in range(MAX_LIST_ITEMS)]
    assert parsed(authors=",".join(names)).matches(msg(names[-1]))
    with pytest.raises(InvalidQuery) as info:
        parse_filter({"authors": ",".join([*names, "extra"])})
    assert info.value.code == "invalid_query"
    assert "authors" in info.value.message


@pytest.mark.parametrize("param", ["types", "authors", "exclude_authors", "mentions"])
def test_too_many_items_in_any_parameter(param: str) -> None:
    query = {param: ",".join(["message"] * (MAX_LIST_ITEMS + 1))}
    with pytest.raises(InvalidQuery):
        parse_filter(query)


def test_overlong_name_is_invalid_query() -> None:
    with pytest.raises(InvalidQuery):
        parse_filter({"mentions": "a" * 65})
    assert parsed(mentions="a" * 64).matches(msg("x", "@" + "a" * 64))
