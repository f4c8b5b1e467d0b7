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
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")  # (a "\r" kept at the end meets its "\n" next time)
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()  # the start of an event not yet ended (b"" after a complete one)
        events: list[tuple[str, bytes]] = []
        for block in blocks:
            name = ""
            data: bytes | None = None
            more: list[bytes] | None = None  # the data lines after the first, rare
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[5:]
                    if value.startswith(b" "):
                        value = value[1:]
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


def encode_event(event: dict[str, Any]) -> bytes:
    """One Responses-API event, named after its `type` as OpenAI sends them."""
    return b"event: %s\ndata: %s\n\n" % (str(event["type"]).encode(), encode_json(event))


def encode_responses_stream(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(encode_event(event) for event in events)


def encode_chat_stream(chunks: Iterable[dict[str, Any]]) -> bytes:
    body = b"".join(b"data: %s\n\n" % encode_json(chunk) for chunk in chunks)
    return body + b"data: [DONE]\n\n"
