"""Server-sent events: an incremental parser (chunk boundaries are arbitrary) and an encoder, and
the JSON of their data lines (`decode_json`, `encode_json`): orjson, on the per-event hot path of
every translated stream, with the stdlib where orjson refuses what the stdlib reads or writes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson


def decode_json(data: bytes | str) -> Any:
    """JSON text (an event's data) → its value, as `json.loads(data)` reads it. orjson reads it
    first (several times faster); what orjson refuses and the stdlib takes — NaN and Infinity, a
    lone surrogate escape, invalid UTF-8 (replaced, as the stdlib parser's callers decoded bytes
    before) — is read by the stdlib. Raises ValueError when neither can. One difference is kept:
    orjson reads an integer beyond 64 bits as a float (no provider sends one)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)


def encode_json(value: Any) -> bytes:
    """`value` as compact JSON bytes, by orjson: non-ASCII as UTF-8 (SSE is UTF-8; Codex's serde_json
    reads either), NaN as null. What orjson refuses (a lone surrogate in a str, an int beyond 64
    bits, a non-str dict key) is written by the stdlib, ASCII-escaped, as it was before orjson."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


class _EventNames(dict[bytes, str]):
    """An "event: NAME" line's NAME, by the line, made on first use: a stream names its events with
    a dozen names; looked up (a dict subscript, no call) instead of decoded per event."""

    def __missing__(self, line: bytes) -> str:
        name = line[6:].decode("utf-8", "replace").strip()
        if len(self) < 1024:  # what providers name their events; a stream of made-up names is not kept
            self[line] = name
        return name


_NAMES = _EventNames()


class SSEParser:
    """Feed bytes, get complete events as (event name, data text) pairs; `feed_raw` gives the data
    as bytes, undecoded (what a JSON decoder reads fastest)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> bytes:
        """What was fed after the last complete event (the start of one not yet ended)."""
        return self._buffer

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        return [(name, data.decode("utf-8", "replace")) for name, data in self.feed_raw(chunk)]

    def feed_raw(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Complete events as (event name, data bytes): the data lines joined by b"\\n", undecoded."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if 13 in buffer:  # 13: b"\r", 10: b"\n" (an int is looked for by memchr; a bytes needle 10x slower)
            buffer = buffer.replace(b"\r\n", b"\n")  # (a "\r" kept at the end meets its "\n" next time)
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks[-1]  # the start of an event not yet ended (b"" after a complete one)
        del blocks[-1]
        events: list[tuple[str, bytes]] = []
        for block in blocks:
            # The usual shapes first, without a split per line: "event: NAME\ndata: JSON" (Anthropic,
            # Responses) and a lone "data: JSON" (Chat, Gemini). (Slices compared, not startswith /
            # removeprefix: the same, without a call each on the per-event path.)
            if block[:5] == b"data:":
                if 10 not in block:
                    events.append(("", block[6:] if block[5:6] == b" " else block[5:]))
                    continue
            elif block[:6] == b"event:":
                head, found, data_line = block.partition(b"\ndata:")
                if found and 10 not in head and 10 not in data_line:
                    events.append((_NAMES[head], data_line[1:] if data_line[:1] == b" " else data_line))
                    continue
            name = ""
            data: bytes | None = None
            more: list[bytes] | None = None  # the data lines after the first, rare
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[5:].removeprefix(b" ")
                    if data is None:
                        data = value
                    elif more is None:
                        more = [data, value]
                    else:
                        more.append(value)
                elif line.startswith(b"event:"):
                    name = line[6:].decode("utf-8", "replace").strip()
            if more is not None:
                events.append((name, b"\n".join(more)))
            elif data is not None:
                events.append((name, data))
            elif name:
                events.append((name, b""))
        return events


class _EventHeads(dict[Any, bytes]):
    """`b"event: NAME\\ndata: "` by event type, made on first use: the head of every event the
    gateway writes, looked up (a dict subscript, no call) instead of formatted per event."""

    def __missing__(self, kind: Any) -> bytes:
        head = b"event: %s\ndata: " % str(kind).encode()
        if len(self) < 256 and type(kind) is str:  # the event types of the Responses API, a few dozen
            self[kind] = head
        return head


_HEADS = _EventHeads()


def encode_event(event: dict[str, Any]) -> bytes:
    """One Responses-API event, named after its `type` as OpenAI sends them."""
    return _HEADS[event["type"]] + encode_json(event) + b"\n\n"


def encode_events(events: list[dict[str, Any]]) -> bytes:
    """`encode_event` of each, joined; orjson called directly (the per-event hot path of a
    translated stream), `encode_event`'s fallback for all of them when it refuses one."""
    try:
        return b"".join([_HEADS[event["type"]] + orjson.dumps(event) + b"\n\n" for event in events])
    except TypeError:
        return b"".join([encode_event(event) for event in events])


def encode_responses_stream(events: Iterable[dict[str, Any]]) -> bytes:
    return encode_events(list(events))


def encode_chat_stream(chunks: Iterable[dict[str, Any]]) -> bytes:
    body = b"".join(b"data: %s\n\n" % encode_json(chunk) for chunk in chunks)
    return body + b"data: [DONE]\n\n"
