"""A whole (not streamed) chat completion → a Responses `response` object, derived from the stream
translator: the completion is turned into the `chat.completion.chunk` events a streamed answer
would have carried, and the same `StreamTranslator` reads them. There is no second translation
to keep in step with the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codexgate.providers.chat.stream import DONE, StreamTranslator
from codexgate.providers.responses.objects import ResponseContext
from codexgate.providers.responses.tools import ToolNameMap

__all__ = ["completion_chunks", "translate_response"]

# What a completion's `message` carries that a chunk's `delta` carries under the same name.
_DELTA_FIELDS = ("role", "content", "refusal", "reasoning_content", "reasoning", "reasoning_details")


def completion_chunks(completion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chunk events a stream of `completion` would have been: one chunk with the first
    choice's message as its delta (tool calls numbered by `index`), its finish reason and the
    usage, then `[DONE]`. A completion without choices is an error chunk."""
    usage = completion.get("usage")
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        error = completion.get("error")
        return [{"error": error if error is not None else "the provider sent no answer", "usage": usage}, dict(DONE)]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message: Mapping[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    delta = {key: message[key] for key in _DELTA_FIELDS if message.get(key) is not None}
    calls = [
        call
        for call in message.get("tool_calls") or []
        if isinstance(call, dict) and isinstance(call.get("function"), dict)
    ]
    if calls:
        delta["tool_calls"] = [{**call, "index": index} for index, call in enumerate(calls)]
    first = {"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}
    if choice.get("error") is not None:
        first["error"] = choice["error"]
    return [{"choices": [first], "usage": usage}, dict(DONE)]


def translate_response(
    provider_body: Mapping[str, Any],
    ctx: ResponseContext,
    *,
    tools: ToolNameMap | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A non-streamed chat completion → a Responses API `response` object, exactly as the stream of
    the same answer would have ended. Reasoning envelopes are sealed for `upstream_model` (the one
    given to `build_request`; default `ctx.model`)."""
    translator = StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    for chunk in completion_chunks(provider_body):
        translator.feed(chunk)
    translator.finish()
    assert translator.response is not None  # finish() always ends the answer
    return translator.response
