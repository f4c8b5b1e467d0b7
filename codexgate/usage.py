"""Token usage as providers report it, normalised; pure functions over bodies and events."""

from __future__ import annotations

import contextlib
import dataclasses
import json
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


class StreamUsageReader:
    """Watches a streamed answer go by, unchanged, and keeps its usage and outcome.

    Only events that can carry usage are JSON-decoded: text deltas pass with a substring test.
    """

    __slots__ = ("endpoint", "_parser", "usage", "outcome", "events", "response_id")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._parser = SSEParser()
        self.usage: Usage | None = None
        self.outcome: str | None = None  # completed / incomplete / failed / done; None = cut short
        self.events = 0
        self.response_id: str | None = None

    def feed(self, chunk: bytes) -> None:
        for name, data in self._parser.feed(chunk):
            self.events += 1
            if self.endpoint == "responses":
                self._responses_event(name, data)
            else:
                self._chat_event(data)

    def _responses_event(self, name: str, data: str) -> None:
        if name == "response.created" and self.response_id is None:
            with contextlib.suppress(ValueError):
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
