"""Token usage as providers report it, normalised; pure functions over bodies and events."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from typing import Any

from codexgate.sse import SSEParser


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
# response.created's `{"type": ..., "sequence_number": ..., "response": {"id": "resp_..."`.
_CREATED_RESPONSE_ID = re.compile(r'"response"\s*:\s*\{\s*"id"\s*:\s*"([^"\\]+)"')
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
    """

    __slots__ = ("endpoint", "_parser", "_pending", "_exact", "usage", "outcome", "events", "response_id")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._parser = SSEParser()
        self._pending = b""  # the start of an event whose end has not come yet
        self._exact = False
        self.usage: Usage | None = None
        self.outcome: str | None = None  # completed / incomplete / failed / done; None = cut short
        self.events = 0
        self.response_id: str | None = None

    def feed(self, chunk: bytes) -> None:
        if (
            not self._pending
            and chunk.startswith(_NAMED_RESPONSES_EVENT)
            and not chunk.startswith(_KEY_EVENT_NAMES, len(_NAMED_RESPONSES_EVENT))
            and chunk.find(b"\n\n") == len(chunk) - 2
            and not self._exact
        ):
            self.events += 1  # most of a stream: one delta event per chunk
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
        if self._matters(whole):
            self._feed_events(whole)
        else:
            self.events += whole.count(b"\n\n")  # each event ends with a blank line

    @property
    def mid_event(self) -> bool:
        """Whether the bytes read so far stop inside an event (a stream cut there needs a blank
        line before anything appended to it can be an event of its own)."""
        return bool((self._pending or self._parser.pending).strip(b"\r\n"))

    def _matters(self, whole: bytes) -> bool:
        if self.endpoint != "responses":
            return any(word in whole for word in _CHAT_WORDS)
        if self.response_id is None and _RESPONSES_CREATED_WORD in whole:
            return True
        return any(word in whole for word in _RESPONSES_TERMINAL_WORDS)

    def _exact_feed(self, chunk: bytes) -> None:
        if not self._exact:
            self._exact = True
            chunk, self._pending = self._pending + chunk, b""
        self._feed_events(chunk)

    def _feed_events(self, chunk: bytes) -> None:
        for name, data in self._parser.feed(chunk):
            self.events += 1
            if self.endpoint == "responses":
                self._responses_event(name, data)
            else:
                self._chat_event(data)

    def _responses_event(self, name: str, data: str) -> None:
        if name == "response.created" and self.response_id is None:
            # Only a failure event needs the id: read where OpenAI puts it, decode all if elsewhere.
            found = _CREATED_RESPONSE_ID.search(data, 0, 300)
            if found is not None:
                self.response_id = found.group(1)
            else:
                with contextlib.suppress(ValueError, AttributeError):
                    self.response_id = (json.loads(data).get("response") or {}).get("id")
            return
        kind = name if name in RESPONSES_TERMINAL else None
        if (
            kind is None
            and '"response.' in data
            and ('completed"' in data or 'incomplete"' in data or 'failed"' in data)
        ):
            kind = ""  # unnamed event: decide from its type below
        if kind is None:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        outcome = RESPONSES_TERMINAL.get(event.get("type", ""))
        if outcome is None:
            return
        self.outcome = outcome
        response = event.get("response") or {}
        self.response_id = response.get("id")
        self.usage = usage_from_responses(response.get("usage")) or self.usage

    def _chat_event(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.outcome = "done"
            return
        if '"usage"' not in data:
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        usage = usage_from_chat(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
