"""An incremental parser for Server-Sent Events (the WHATWG ``text/event-stream`` format).

Pure: no I/O and no clock. Feed it bytes as they arrive, in chunks of any size,
and it returns the events completed so far; chunk boundaries never change the
result, even when they split a line ending or a multi-byte character.

The rules followed are the specification's "interpreting an event stream":

* lines end with CRLF, LF or a lone CR;
* a line starting with ``:`` is a comment (servers send them as keep-alives);
* ``field:value`` (one leading space of the value dropped) or a bare ``field``
  (empty value);
* ``data`` lines accumulate and are joined with ``\\n``; a blank line dispatches
  the event, but only when it carried data;
* ``id`` is sticky: an event reports the last id seen on the stream;
* unknown fields are ignored; an unfinished event at end of stream is dropped.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

DEFAULT_EVENT = "message"
#: Enough for a large entitlement snapshot, small enough that a server that never
#: ends its event cannot exhaust memory.
DEFAULT_MAX_EVENT_CHARS = 16 * 2**20

_LINE_END = re.compile(r"\r\n|\r|\n")


class SseError(ValueError):
    """The stream cannot be parsed any further (an event exceeded the size limit)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = DEFAULT_EVENT
    id: str | None = None


class SseParser:
    """Turns an event stream into :class:`SseEvent` values, incrementally."""

    def __init__(self, *, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        # utf-8-sig drops the optional byte-order mark at the very start of the stream,
        # and, being incremental, copes with the mark (or any character) split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._max_event_chars = max_event_chars
        self._partial = ""
        # A chunk ended in CR: a LF opening the next chunk belongs to the same line end.
        self._skip_lf = False
        self._data: list[str] = []
        self._size = 0
        self._event_type = ""
        self.last_event_id: str | None = None
        #: The server's requested reconnection delay in milliseconds, when it sent one.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Consume raw bytes; return the events they complete, in order."""
        return self._feed_text(self._decoder.decode(chunk))

    def _feed_text(self, text: str) -> list[SseEvent]:
        if not text:
            return []
        if self._skip_lf and text[0] == "\n":
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        events: list[SseEvent] = []
        if "\r" not in text:
            # LF line ends only (what servers send): split, the regex costs more than the rest.
            lines = text.split("\n")
            rest = lines.pop()
            if lines:
                lines[0] = self._partial + lines[0]
                self._partial = ""
                for line in lines:
                    event = self.feed_line(line)
                    if event is not None:
                        events.append(event)
            self._partial += rest
            self._check_size(len(self._partial))
            return events
        start = 0
        for match in _LINE_END.finditer(text):
            line = self._partial + text[start : match.start()]
            self._partial = ""
            start = match.end()
            event = self.feed_line(line)
            if event is not None:
                events.append(event)
        self._partial += text[start:]
        self._check_size(len(self._partial))
        return events

    def feed_line(self, line: str) -> SseEvent | None:
        """Consume one line (without its line ending); return the event it completes."""
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        self._apply_field(name, value)
        return None

    def _apply_field(self, name: str, value: str) -> None:
        if name == "data":
            self._check_size(len(value) + 1)
            self._size += len(value) + 1
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            # The specification ignores ids containing NUL: they could not be echoed
            # back in a Last-Event-ID header.
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _check_size(self, extra: int) -> None:
        if self._size + extra > self._max_event_chars:
            raise SseError(f"event larger than {self._max_event_chars} characters")

    def _dispatch(self) -> SseEvent | None:
        data, event_type = self._data, self._event_type
        self._data, self._size, self._event_type = [], 0, ""
        if not data:
            return None
        return SseEvent("\n".join(data), event_type or DEFAULT_EVENT, self.last_event_id)


def parse(stream: bytes) -> list[SseEvent]:
    """Every complete event of a whole stream."""
    return SseParser().feed(stream)
