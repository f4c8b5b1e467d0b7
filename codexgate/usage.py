"""Token usage as providers report it, normalised; pure functions over bodies and events."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from typing import Any

from codexgate.sse import SSEParser, decode_json

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Usage:
    input_tokens: int = 0  # including cached
    cached_tokens: int = 0
    output_tokens: int = 0  # including reasoning
    reasoning_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def usage_from_responses(usage: Any) -> Usage | None:
    """`usage` of a Responses API response object."""
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=_int(usage.get("input_tokens")),
        cached_tokens=_int((usage.get("input_tokens_details") or {}).get("cached_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        reasoning_tokens=_int((usage.get("output_tokens_details") or {}).get("reasoning_tokens")),
    )


def usage_from_chat(usage: Any) -> Usage | None:
    """`usage` of a Chat Completions response or final stream chunk."""
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        cached_tokens=_int((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")),
    )


def usage_from_body(endpoint: str, body: Any) -> Usage | None:
    if not isinstance(body, dict):
        return None
    if endpoint == "responses":
        return usage_from_responses(body.get("usage"))
    return usage_from_chat(body.get("usage"))


# Terminal events of a Responses stream, and what each means for the request.
RESPONSES_TERMINAL = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}


# Words whose presence in a run of whole events sends it to the exact parser: a terminal event
# (named, or unnamed with its `type`), or the first event with the response's id.
_RESPONSES_TERMINAL_WORDS = tuple(name.encode() for name in RESPONSES_TERMINAL)
_RESPONSES_CREATED_WORD = b"response.created"
_RESPONSES_CREATED_AND_TERMINAL_WORDS = (_RESPONSES_CREATED_WORD, *_RESPONSES_TERMINAL_WORDS)
# response.created's `{"type": ..., "sequence_number": ..., "response": {"id": "resp_..."`.
_CREATED_RESPONSE_ID = re.compile(rb'"response"\s*:\s*\{\s*"id"\s*:\s*"([^"\\]+)"')
_CHAT_WORDS = (b'"usage"', b"[DONE]")
# A chunk that is one whole event named `response.<anything but these>` is counted, nothing more.
_NAMED_RESPONSES_EVENT = b"event: response."
_KEY_EVENT_NAMES = tuple(
    f"{name}{end}".encode() for name in ("completed", "incomplete", "failed", "created") for end in ("\n", "\r")
)


class StreamUsageReader:
    """Watches a streamed answer go by, unchanged, and keeps its usage and outcome.

    The usage comes in one of the last events, so most chunks need no parsing at all: a chunk
    that is one whole event named other than response.created/completed/incomplete/failed is
    only counted (two prefix tests and one search for its end); any other chunk is cut at its
    last event boundary, the whole events before it are counted (blank-line separators) and
    searched for the few words that matter (`response.completed`, ..., `"usage"`); only a run
    of events holding one of them goes through the SSE parser, and only the events that can
    carry usage are JSON-decoded (response.created's id is read without decoding it). A
    stream with `\r` line ends, comment lines or runs of blank lines is parsed event by event
    from there on (exact). Counted without parsing, a block of only `id:`/`retry:` fields would
    count as an event (OpenAI sends none; the count only numbers a failure event).

    A pass-through stream hands its chunks over unread instead (`unread.append`, a C call: the
    chunk path has no Python frame of the reader's), and `settle`s now and then; what the reader
    tells (usage, outcome, events, response id, mid_event) is read up to the last chunk handed
    over, whenever it is asked. Reading a run of chunks joined is reading them one by one: nothing
    here depends on where a chunk ends.
    """

    __slots__ = ("endpoint", "_parser", "_pending", "_exact", "_usage", "_outcome", "_events", "_response_id", "unread")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._parser = SSEParser()
        self._pending = b""  # the start of an event whose end has not come yet
        self._exact = False
        self._usage: Usage | None = None
        self._outcome: str | None = None
        self._events = 0
        self._response_id: str | None = None
        self.unread: list[bytes] = []  # chunks handed over and not read yet (`settle` reads them)

    def settle(self) -> None:
        """Reads the chunks handed over since the last time, as one."""
        if not self.unread:
            return
        data = b"".join(self.unread)
        self.unread.clear()
        try:
            self.feed(data)
        except Exception:  # a reading problem must never disturb the stream, nor whoever asks
            logger.exception("usage reader failed")

    @property
    def usage(self) -> Usage | None:
        self.settle()
        return self._usage

    @property
    def outcome(self) -> str | None:
        """completed / incomplete / failed / done; None = cut short."""
        self.settle()
        return self._outcome

    @property
    def events(self) -> int:
        self.settle()
        return self._events

    @property
    def response_id(self) -> str | None:
        self.settle()
        return self._response_id

    def feed(self, chunk: bytes) -> None:
        if self.unread:  # chunks handed over come first
            self.settle()
        if (
            not self._pending
            and chunk.startswith(_NAMED_RESPONSES_EVENT)
            and not chunk.startswith(_KEY_EVENT_NAMES, len(_NAMED_RESPONSES_EVENT))
            and chunk.find(b"\n\n") == len(chunk) - 2
            and not self._exact
            and b"\r" not in chunk  # `\r\n\r\n` ends an event too: the one `\n\n` may end a later one
        ):
            self._events += 1  # most of a stream: one delta event per chunk
            return
        if self._exact or b"\r" in chunk:
            self._exact_feed(chunk)
            return
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return
        if end + 2 == len(data):  # the usual case: a chunk ends where an event ends
            whole, self._pending = data, b""
        else:
            whole, self._pending = data[: end + 2], data[end + 2 :]
        if whole.startswith((b":", b"\n")) or b"\n:" in whole or b"\n\n\n" in whole:
            # A comment line, or a run of blank lines, is no event: count exactly from here on.
            self._exact, self._pending = True, b""
            self._feed_events(data)
            return
        self._read_run(whole)

    @property
    def mid_event(self) -> bool:
        """Whether the bytes read so far stop inside an event (a stream cut there needs a blank
        line before anything appended to it can be an event of its own)."""
        self.settle()
        return bool((self._pending or self._parser.pending).strip(b"\r\n"))

    def _read_run(self, whole: bytes) -> None:
        """A run of whole events: those holding a word that matters parsed, one by one, the others
        only counted (each event ends with a blank line)."""
        while whole:
            at = self._first_word(whole)
            if at < 0:
                self._events += whole.count(b"\n\n")
                return
            before = whole.rfind(b"\n\n", 0, at)
            start = before + 2 if before >= 0 else 0
            end = whole.find(b"\n\n", at) + 2  # the run ends with a blank line: always found
            self._events += whole.count(b"\n\n", 0, start)
            self._feed_events(whole[start:end])
            whole = whole[end:]

    def _first_word(self, whole: bytes) -> int:
        """Where the first word that sends an event to the parser is in `whole`, or -1."""
        if self.endpoint != "responses":
            words: tuple[bytes, ...] = _CHAT_WORDS
        elif self._response_id is None:
            words = _RESPONSES_CREATED_AND_TERMINAL_WORDS
        else:
            words = _RESPONSES_TERMINAL_WORDS
        first = -1
        for word in words:
            at = whole.find(word)
            if at >= 0 and (first < 0 or at < first):
                first = at
        return first

    def _exact_feed(self, chunk: bytes) -> None:
        if not self._exact:
            self._exact = True
            chunk, self._pending = self._pending + chunk, b""
        self._feed_events(chunk)

    def _feed_events(self, chunk: bytes) -> None:
        for name, data in self._parser.feed_raw(chunk):
            self._events += 1
            if self.endpoint == "responses":
                self._responses_event(name, data)
            else:
                self._chat_event(data)

    def _responses_event(self, name: str, data: bytes) -> None:
        if name == "response.created" and self._response_id is None:
            # Only a failure event needs the id: read where OpenAI puts it, decode all if elsewhere.
            found = _CREATED_RESPONSE_ID.search(data, 0, 300)
            if found is not None:
                self._response_id = found.group(1).decode("utf-8", "replace")
            else:
                with contextlib.suppress(ValueError, AttributeError):
                    self._response_id = (decode_json(data).get("response") or {}).get("id")
            return
        kind = name if name in RESPONSES_TERMINAL else None
        if (
            kind is None
            and b'"response.' in data
            and (b'completed"' in data or b'incomplete"' in data or b'failed"' in data)
        ):
            kind = ""  # unnamed event: decide from its type below
        if kind is None:
            return
        try:
            event = decode_json(data)  # orjson: a completed event holds the whole response
        except ValueError:
            return
        outcome = RESPONSES_TERMINAL.get(event.get("type", ""))
        if outcome is None:
            return
        self._outcome = outcome
        response = event.get("response") or {}
        self._response_id = response.get("id")
        self._usage = usage_from_responses(response.get("usage")) or self._usage

    def _chat_event(self, data: bytes) -> None:
        if data.strip() == b"[DONE]":
            self._outcome = "done"
            return
        if b'"usage"' not in data:
            return
        try:
            chunk = decode_json(data)
        except ValueError:
            return
        usage = usage_from_chat(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
