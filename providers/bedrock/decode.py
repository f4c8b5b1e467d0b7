"""Bedrock's answers → ConverseStream event dicts, the one input of the stream translator: AWS
event-stream frames (decoded by botocore) as they arrive, or a whole Converse answer restated as the
events Bedrock would have streamed for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from codexgate.sse import decode_json


class EventStreamDecoder:
    """Feed the ConverseStream body in arbitrary chunks; get decoded events as they complete.

    Framing and checksums are botocore's (`EventStreamBuffer`). A corrupt frame ends decoding with
    one synthetic `internalServerException`, so the translator fails the response instead of
    inventing an ending.
    """

    __slots__ = ("_buffer", "_broken")

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._broken = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if self._broken or not chunk:
            return []
        self._buffer.add_data(chunk)
        events: list[dict[str, Any]] = []
        try:
            for message in self._buffer:
                event = _event_of(message)
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
        return events


def _event_of(message: EventStreamMessage) -> dict[str, Any] | None:
    headers = message.headers
    kind = headers.get(":message-type")
    try:
        payload = decode_json(message.payload) if message.payload else {}
    except ValueError:
        payload = {"message": message.payload.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {}
    if kind == "event":
        payload.pop("p", None)  # Bedrock pads event payloads with a random "p" string
        return {str(headers.get(":event-type")): payload}
    if kind == "exception":
        return {str(headers.get(":exception-type")): payload}
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
