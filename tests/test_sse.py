"""SSE wire format, read back with a small parser that follows the HTML spec's rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from chat import sse


@dataclass
class Parsed:
    events: list[tuple[str | None, str, str]] = field(default_factory=list)  # (id, type, data)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    fields: list[str] = field(default_factory=list)  # every field name seen, in order


def parse(stream: bytes) -> Parsed:
    """An event stream as a browser's EventSource interprets it (HTML, "Server-sent events",
    9.2.6): lines end at CRLF, CR or LF; a blank line dispatches; data lines join with LF."""
    out = Parsed()
    last_id: str | None = None
    event_type, data = "", ""
    for line in re.split(r"\r\n|\r|\n", stream.decode())[:-1]:  # [-1]: an unterminated tail
        if line == "":
            if data:
                out.events.append((last_id, event_type or "message", data.removesuffix("\n")))
            event_type, data = "", ""
            continue
        if line.startswith(":"):
            out.comments.append(line[1:].removeprefix(" "))
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        out.fields.append(name)
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            out.retry = int(value)
    return out


def test_frame_has_id_event_and_data_lines_then_a_blank_line() -> None:
    frame = sse.event_frame(42, "message", b'{"id":42,"text":"hi"}')
    assert frame == b'id: 42\nevent: message\ndata: {"id":42,"text":"hi"}\n\n'
    assert parse(frame).events == [("42", "message", '{"id":42,"text":"hi"}')]


def test_ephemeral_frame_has_no_id_line() -> None:
    frame = sse.event_frame(None, "typing", b'{"user":"bob"}')
    assert frame == b'event: typing\ndata: {"user":"bob"}\n\n'
    parsed = parse(frame)
    assert "id" not in parsed.fields
    assert parsed.events == [(None, "typing", '{"user":"bob"}')]


def test_frames_concatenate_into_a_stream_of_separate_events() -> None:
    stream = sse.event_frame(1, "message", b"a") + sse.event_frame(2, "activity", b"b")
    assert parse(stream).events == [("1", "message", "a"), ("2", "activity", "b")]


@pytest.mark.parametrize(
    "text",
    ["one\ntwo", "one\n\ntwo", "\nleading", "trailing\n", "a\nb\nc\n\n", "  indented\n second"],
)
def test_data_with_line_feeds_round_trips_exactly(text: str) -> None:
    frame = sse.event_frame(7, "message", text.encode())
    assert frame.endswith(b"\n\n") and b"\n\n" not in frame[:-2]  # no early dispatch
    assert parse(frame).events == [("7", "message", text)]


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("one\r\ntwo", [b"one", b"two"]),
        ("one\rtwo", [b"one", b"two"]),
        ("a\r\n\rb\nc", [b"a", b"", b"b", b"c"]),
        ("a\r\r\nb", [b"a", b"", b"b"]),
    ],
)
def test_carriage_returns_split_data_lines_too(text: str, lines: list[bytes]) -> None:
    frame = sse.event_frame(None, "message", text.encode())
    assert b"\r" not in frame
    assert frame == b"event: message\n" + b"".join(b"data: " + x + b"\n" for x in lines) + b"\n"
    # SSE itself turns every line break into LF: the text comes back with LF line ends.
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    assert parse(frame).events == [(None, "message", normalized)]


def test_non_ascii_data_with_line_breaks_round_trips() -> None:
    text = "héllo\nwörld ✓\n日本"
    assert parse(sse.event_frame(3, "message", text.encode())).events == [("3", "message", text)]


def test_data_that_looks_like_fields_stays_data() -> None:
    text = "x\nid: 99\nevent: evil\n: comment\nretry: 1"
    frame = sse.event_frame(5, "message", text.encode())
    parsed = parse(frame)
    assert parsed.events == [("5", "message", text)]
    assert parsed.fields == ["id", "event"] + ["data"] * 5
    assert parsed.retry is None and parsed.comments == []


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n"])
def test_line_break_in_event_type_cannot_inject_a_field(brk: str) -> None:
    frame = sse.event_frame(1, f"message{brk}id: 666{brk}{brk}data: x", b"{}")
    parsed = parse(frame)
    assert parsed.fields == ["id", "event", "data"]
    assert len(parsed.events) == 1
    event_id, event_type, data = parsed.events[0]
    assert event_id == "1" and data == "{}"
    assert "\n" not in event_type and "\r" not in event_type
    assert event_type.startswith("message")


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n"])
def test_line_break_in_comment_cannot_inject_a_field(brk: str) -> None:
    frame = sse.comment(f"hi{brk}data: evil{brk}{brk}retry: 1")
    assert frame.startswith(b": ") and frame.endswith(b"\n\n")
    assert b"\r" not in frame and frame.count(b"\n") == 2
    parsed = parse(frame)
    assert parsed.fields == [] and parsed.events == [] and parsed.retry is None
    assert len(parsed.comments) == 1 and parsed.comments[0].startswith("hi")


def test_comment_frame() -> None:
    assert sse.comment("ping") == b": ping\n\n"
    assert parse(sse.comment("hello there")).comments == ["hello there"]


def test_hello_bytes() -> None:
    assert sse.hello(3000) == b"retry: 3000\n: connected\n\n"
    parsed = parse(sse.hello(1500))
    assert parsed.retry == 1500 and parsed.comments == ["connected"] and parsed.events == []


def test_ping_is_a_comment_that_dispatches_nothing() -> None:
    assert sse.PING == b": ping\n\n"
    assert sse.comment("ping") == sse.PING
    parsed = parse(sse.PING + sse.event_frame(None, "typing", b"{}"))
    assert parsed.comments == ["ping"] and parsed.events == [(None, "typing", "{}")]
