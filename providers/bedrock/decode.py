"""AWS event-stream framing (botocore) → ConverseStream event dicts."""

from __future__ import annotations

import json
from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError


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
        payload = json.loads(message.payload) if message.payload else {}
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
