"""Bedrock's answers → ConverseStream event dicts, the one input of the stream translator: AWS
event-stream frames (checked and read as botocore reads them) as they arrive, or a whole Converse
answer restated as the events Bedrock would have streamed for it."""

from __future__ import annotations

import json
import struct
from binascii import crc32
from collections.abc import Mapping
from typing import Any

from botocore.eventstream import (
    ChecksumMismatch,
    DuplicateHeader,
    EventStreamHeaderParser,
    InvalidHeadersLength,
    InvalidPayloadLength,
    ParserError,
)

from codexgate.sse import decode_json

_PRELUDE = struct.Struct(">III")  # total length, headers length, prelude CRC
_U32 = struct.Struct(">I")
_PRELUDE_LENGTH = 12
_MAX_HEADERS_LENGTH = 128 * 1024  # botocore's limits
_MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
_STRING = 7  # the header value type of every header Bedrock sends (:event-type, :content-type, ...)


class EventStreamDecoder:
    """Feed the ConverseStream body in arbitrary chunks; get decoded events as they complete.

    Framing and checksums as botocore's `EventStreamBuffer` reads them (the same checks, limits and
    errors), without its per-header method calls: a frame costs a few slices and two CRCs. Headers
    of a type other than string, or malformed ones, are read by botocore's own header parser. A
    corrupt frame ends decoding with one synthetic `internalServerException`, so the translator
    fails the response instead of inventing an ending.
    """

    __slots__ = ("_broken", "_data")

    def __init__(self) -> None:
        self._data = b""
        self._broken = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if self._broken or not chunk:
            return []
        data = self._data + chunk if self._data else chunk
        events: list[dict[str, Any]] = []
        at = 0
        try:
            while len(data) - at >= _PRELUDE_LENGTH:
                total, headers_length, prelude_crc = _PRELUDE.unpack_from(data, at)
                computed = crc32(data[at : at + 8])
                if computed != prelude_crc:
                    raise ChecksumMismatch(prelude_crc, computed)
                if headers_length > _MAX_HEADERS_LENGTH:
                    raise InvalidHeadersLength(headers_length)
                payload_length = total - headers_length - 16
                if payload_length > _MAX_PAYLOAD_LENGTH:
                    raise InvalidPayloadLength(payload_length)
                if payload_length < 0:
                    raise ParserError(f"frame length {total} shorter than its headers ({headers_length})")
                if len(data) - at < total:
                    break  # the rest of this frame comes in a later chunk
                end = at + total - 4  # the message CRC covers prelude, headers and payload
                (message_crc,) = _U32.unpack_from(data, end)
                computed = crc32(data[at + 8 : end], prelude_crc)
                if computed != message_crc:
                    raise ChecksumMismatch(message_crc, computed)
                headers_end = at + _PRELUDE_LENGTH + headers_length
                headers = _headers(data[at + _PRELUDE_LENGTH : headers_end])
                event = _event_of(headers, data[headers_end:end])
                at += total
                if event is not None:
                    events.append(event)
        except ParserError as exc:
            self._broken = True
            events.append(
                {
                    "internalServerException": {
                        "message": f"corrupt event-stream frame from Bedrock ({type(exc).__name__})"
                    }
                }
            )
        self._data = data[at:] if at else data
        return events


def _headers(data: bytes) -> dict[str, Any]:
    """A frame's headers: string values read here; any other type, or anything malformed, read by
    botocore's parser (its values, its errors)."""
    headers: dict[str, Any] = {}
    at, end = 0, len(data)
    try:
        while at < end:
            size = data[at]
            name = data[at + 1 : at + 1 + size].decode()
            at += 1 + size
            if data[at] != _STRING:
                return EventStreamHeaderParser().parse(data)
            length = data[at + 1] << 8 | data[at + 2]
            value = data[at + 3 : at + 3 + length].decode()
            at += 3 + length
            if at > end:
                return EventStreamHeaderParser().parse(data)
            if name in headers:
                raise DuplicateHeader(name)
            headers[name] = value
    except (IndexError, UnicodeDecodeError):
        return EventStreamHeaderParser().parse(data)
    return headers


def _event_of(headers: Mapping[str, Any], payload: bytes) -> dict[str, Any] | None:
    kind = headers.get(":message-type")
    try:
        body = decode_json(payload) if payload else {}
    except ValueError:
        body = {"message": payload.decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {}
    if kind == "event":
        body.pop("p", None)  # Bedrock pads event payloads with a random "p" string
        return {str(headers.get(":event-type")): body}
    if kind == "exception":
        return {str(headers.get(":exception-type")): body}
    if kind == "error":
        text = f"{headers.get(':error-code')}: {headers.get(':error-message')}"
        return {"internalServerException": {"message": text}}
    return None


def converse_events(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A whole Converse answer → the ConverseStream events carrying the same blocks, stop reason
    and usage (messageStart, contentBlockStart/Delta/Stop per block, messageStop, metadata), so the
    whole answer is translated by the stream translator rather than by a second translator."""
    output = answer.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    events: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
    for index, block in enumerate(content if isinstance(content, list) else []):
        position = {"contentBlockIndex": index}
        deltas: list[dict[str, Any]]
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            deltas = [{"text": block["text"]}]
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use.get("toolUseId"), "name": use.get("name")}}
            events.append({"contentBlockStart": {**position, "start": start}})
            arguments = use.get("input") if use.get("input") is not None else {}
            deltas = [{"toolUse": {"input": json.dumps(arguments)}}]
        elif isinstance(block.get("reasoningContent"), dict):
            reasoning = block["reasoningContent"]
            text = reasoning.get("reasoningText") if isinstance(reasoning.get("reasoningText"), dict) else {}
            parts = {
                "text": text.get("text"),
                "signature": text.get("signature"),
                "redactedContent": reasoning.get("redactedContent"),
            }
            deltas = [{"reasoningContent": {key: value}} for key, value in parts.items() if isinstance(value, str)]
            deltas = deltas or [{"reasoningContent": {}}]
        else:
            continue  # images, citations, ...: blocks the stream translator has no use for either
        events.extend({"contentBlockDelta": {**position, "delta": delta}} for delta in deltas)
        events.append({"contentBlockStop": position})
    events.append({"messageStop": {"stopReason": answer.get("stopReason")}})
    events.append({"metadata": {"usage": answer.get("usage") if isinstance(answer.get("usage"), dict) else {}}})
    return events
