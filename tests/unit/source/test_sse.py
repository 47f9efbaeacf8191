"""The incremental SSE parser: the specification's rules one by one, then properties.

The properties compare the parser, fed in arbitrary chunks, with a deliberately
naive reference that follows the specification's prose on the whole stream.
"""

from __future__ import annotations

import itertools
import re

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from sidecar.source.sse import SseError, SseEvent, SseParser, parse


def feed_all(chunks: list[bytes]) -> list[SseEvent]:
    parser = SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


# ------------------------------------------------------------------------ rules


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: hello\n\n", [SseEvent("hello")]),
        (b"event: change\ndata: {}\n\n", [SseEvent("{}", "change")]),
        (b"data: a\ndata: b\ndata: c\n\n", [SseEvent("a\nb\nc")]),
        # Exactly one space after the colon is syntax; the rest is value.
        (b"data:  two spaces\n\n", [SseEvent(" two spaces")]),
        (b"data:tight\n\n", [SseEvent("tight")]),
        (b"data: a:b: c\n\n", [SseEvent("a:b: c")]),
        # A field without a colon has an empty value.
        (b"data\n\n", [SseEvent("")]),
        (b"data:\n\n", [SseEvent("")]),
        (b"data\ndata\n\n", [SseEvent("\n")]),
        (b"data: x\ndata\n\n", [SseEvent("x\n")]),
        (b"event\ndata: x\n\n", [SseEvent("x")]),
        # Comments, anywhere.
        (b": ping\n\n", []),
        (b":\n\n", []),
        (b"data: a\n: mid-event comment\ndata: b\n\n", [SseEvent("a\nb")]),
        # A blank line without data dispatches nothing and forgets the event type.
        (b"event: lonely\n\ndata: x\n\n", [SseEvent("x")]),
        (b"\n\n\n", []),
        (b"data: x\n\n\n\n", [SseEvent("x")]),
        # Unknown and differently-cased fields are ignored.
        (b"foo: bar\nData: no\nEVENT: no\ndata: x\n\n", [SseEvent("x")]),
        (b"data : spaced name\n\n", []),
        # Line endings: LF, CRLF, lone CR, mixed.
        (b"data: a\r\ndata: b\r\n\r\n", [SseEvent("a\nb")]),
        (b"data: a\rdata: b\r\r", [SseEvent("a\nb")]),
        (b"event: e\rdata: a\r\ndata: b\n\r\n", [SseEvent("a\nb", "e")]),
        (b"data: 1\n\ndata: 2\r\n\r\ndata: 3\r\r", [SseEvent("1"), SseEvent("2"), SseEvent("3")]),
        # An unfinished event at the end of the stream is dropped.
        (b"data: complete\n\ndata: partial\n", [SseEvent("complete")]),
        (b"data: no line end", []),
        # A leading byte-order mark is skipped; anywhere else it is content.
        (b"\xef\xbb\xbfdata: x\n\n", [SseEvent("x")]),
        (b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
        (b"data: \xef\xbb\xbfx\n\n", [SseEvent("\ufeffx")]),
        # Text is UTF-8; invalid bytes become U+FFFD rather than killing the stream.
        ("data: é€😀\n\n".encode(), [SseEvent("é€😀")]),
        (b"data: \xff\xfe\n\n", [SseEvent("\ufffd\ufffd")]),
    ],
)
def test_rules(stream: bytes, expected: list[SseEvent]) -> None:
    assert parse(stream) == expected


def test_ids_are_sticky_until_changed() -> None:
    events = parse(b"data: 1\n\nid: a\ndata: 2\n\ndata: 3\n\nid\ndata: 4\n\nid: b\n\ndata: 5\n\n")

    assert [(e.data, e.id) for e in events] == [
        ("1", None),
        ("2", "a"),
        ("3", "a"),
        ("4", ""),
        ("5", "b"),
    ]


def test_an_id_containing_nul_is_ignored() -> None:
    assert parse(b"id: ok\ndata: 1\n\nid: bad\x00id\ndata: 2\n\n")[1].id == "ok"


@pytest.mark.parametrize(
    ("line", "retry"),
    [(b"retry: 1500", 1500), (b"retry: 0", 0), (b"retry: 1.5", None), (b"retry: -1", None)],
)
def test_retry_field(line: bytes, retry: int | None) -> None:
    parser = SseParser()
    assert parser.feed(line + b"\ndata: x\n\n") == [SseEvent("x")]
    assert parser.retry == retry


def test_retry_ignores_non_ascii_digits() -> None:
    parser = SseParser()
    parser.feed("retry: ١٢\n".encode())
    assert parser.retry is None


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    parser = SseParser()
    assert parser.feed(b"event: hello\ndata: {}\n") == []
    assert parser.feed(b"\n") == [SseEvent("{}", "hello")]
    assert parser.feed(b"data: next\n\ndata: partial") == [SseEvent("next")]


def test_a_crlf_split_across_chunks_is_one_line_end() -> None:
    parser = SseParser()
    # Were the LF a second line end, "a" would be dispatched on its own.
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SseEvent("a\nb")]
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: c\n\n") == [SseEvent("c")]


def test_a_cr_then_an_empty_chunk_then_lf_is_still_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [SseEvent("a")]


def test_a_character_split_across_chunks_survives() -> None:
    encoded = "data: 😀\n\n".encode()
    assert feed_all([encoded[:7], encoded[7:8], encoded[8:]]) == [SseEvent("😀")]


def test_feed_line_takes_lines_without_their_ending() -> None:
    parser = SseParser()
    assert parser.feed_line("event: change") is None
    assert parser.feed_line("data: x") is None
    assert parser.feed_line(": comment") is None
    assert parser.feed_line("") == SseEvent("x", "change")


def test_an_oversized_event_is_an_error() -> None:
    parser = SseParser(max_event_chars=10)
    parser.feed(b"data: 1234\n")
    with pytest.raises(SseError):
        parser.feed(b"data: 567890\n")


def test_an_oversized_line_is_an_error_before_it_ends() -> None:
    parser = SseParser(max_event_chars=10)
    with pytest.raises(SseError):
        parser.feed(b"data: " + b"x" * 20)


def test_the_size_limit_is_per_event() -> None:
    parser = SseParser(max_event_chars=10)
    for _ in range(5):
        assert parser.feed(b"data: 12345\n\n") == [SseEvent("12345")]


# ------------------------------------------------------------------- properties


def reference(text: str) -> list[SseEvent]:
    """The specification's algorithm, verbatim and non-incremental."""
    if text.startswith("\ufeff"):
        text = text[1:]
    *lines, _unterminated = re.split(r"\r\n|\r|\n", text)
    events: list[SseEvent] = []
    data, event_type, last_id = "", "", None
    for line in lines:
        if line == "":
            if data != "":
                events.append(SseEvent(data.removesuffix("\n"), event_type or "message", last_id))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            value = value.removeprefix(" ")
        else:
            name, value = line, ""
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


# Whole fields as well as fragments, so that generated streams often hold real events.
FIELDS = ["data", "data: x", "event: e", "id: i", "id", "event", "retry", ":", " ", "x", "é", "😀"]
BREAKS = ["\r", "\n", "\r\n", "\r\n", "\n\n", "\0", "\ufeff"]
TOKENS = st.sampled_from([*FIELDS, *BREAKS])
streams = st.lists(TOKENS, max_size=60).map("".join)


@st.composite
def chunkings(draw: st.DrawFn, payload: bytes) -> list[bytes]:
    """The payload cut anywhere: whole, byte by byte, or at random (empty chunks included)."""
    mode = draw(st.sampled_from(["whole", "bytes", "random"]))
    if mode == "whole":
        return [payload]
    if mode == "bytes":
        return [payload[i : i + 1] for i in range(len(payload))]
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=len(payload) + 2)))
    bounds = [0, *cuts, len(payload)]
    return [payload[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=500)
@given(data=st.data(), text=streams)
def test_any_stream_in_any_chunks_parses_like_the_reference(data: st.DataObject, text: str) -> None:
    payload = text.encode()
    assert feed_all(data.draw(chunkings(payload))) == reference(text)


@settings(max_examples=300)
@given(data=st.data(), payload=st.binary(max_size=80))
def test_arbitrary_bytes_parse_the_same_whatever_the_chunking(
    data: st.DataObject, payload: bytes
) -> None:
    assert feed_all(data.draw(chunkings(payload))) == parse(payload)


line_text = st.text(st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=20)
wire_events = st.lists(
    st.tuples(
        st.one_of(st.none(), line_text),  # event type
        st.lists(line_text, min_size=1, max_size=4),  # data lines
        st.one_of(st.none(), line_text.filter(lambda s: "\0" not in s)),  # id
    ),
    max_size=6,
)


@settings(max_examples=300)
@given(
    data=st.data(),
    events=wire_events,
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    tight=st.booleans(),
)
def test_serialised_events_round_trip_through_any_chunking(
    data: st.DataObject,
    events: list[tuple[str | None, list[str], str | None]],
    line_end: str,
    tight: bool,
) -> None:
    parts: list[str] = []
    expected: list[SseEvent] = []
    last_id: str | None = None
    for event_type, lines, event_id in events:
        parts.append(f": keep-alive{line_end}")
        if event_type is not None:
            parts.append(f"event: {event_type}{line_end}")
        if event_id is not None:
            parts.append(f"id: {event_id}{line_end}")
            last_id = event_id
        for line in lines:
            # "data:value" is only equivalent when the value has no leading space to lose.
            sep = ":" if tight and not line.startswith(" ") else ": "
            parts.append(f"data{sep}{line}{line_end}")
        parts.append(line_end)
        expected.append(SseEvent("\n".join(lines), event_type or "message", last_id))

    payload = "".join(parts).encode()
    assert feed_all(data.draw(chunkings(payload))) == expected
