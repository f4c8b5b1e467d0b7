"""Server-sent events: an incremental parser (chunk boundaries are arbitrary) and an encoder."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


class SSEParser:
    """Feed bytes, get complete events as (event name, data text) pairs."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> bytes:
        """What was fed after the last complete event (the start of one not yet ended)."""
        return self._buffer

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        self._buffer += chunk
        if b"\r" in self._buffer:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        events: list[tuple[str, str]] = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                break
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            name = ""
            data: list[str] = []
            for line in block.decode("utf-8", "replace").split("\n"):
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("event:"):
                    name = line[6:].strip()
            if data or name:
                events.append((name, "\n".join(data)))
        return events


def encode_event(event: dict[str, Any]) -> bytes:
    """One Responses-API event, named after its `type` as OpenAI sends them."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def encode_responses_stream(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(encode_event(event) for event in events)


def encode_chat_stream(chunks: Iterable[dict[str, Any]]) -> bytes:
    body = b"".join(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode() for chunk in chunks)
    return body + b"data: [DONE]\n\n"
