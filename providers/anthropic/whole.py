"""A whole (not streamed) Anthropic Message as a Responses `response` object.

There is no second translator for whole answers: the Message is replayed as the stream events
the Messages API would have sent for it (`message_events`) and fed to the same
`StreamTranslator`, whose terminal `response` is the answer. Whatever the stream does with a
block (whitespace-only text left out, custom tool input decoded, thinking sealed for replay, a
refusal marked) the whole answer does too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from codexgate.providers.anthropic.stream import StreamTranslator
from codexgate.providers.anthropic.tools import RequestInfo
from codexgate.providers.anthropic.values import JSON
from codexgate.providers.responses import ResponseContext


def translate_response(provider_body: Mapping[str, Any], ctx: ResponseContext, info: RequestInfo | None = None) -> JSON:
    """A non-streamed Anthropic Message (or error document) → a Responses API `response` object."""
    translator = StreamTranslator(ctx, info)
    for event in message_events(provider_body):
        translator.feed(event)
    translator.finish()
    if translator.response is None:  # finish() always ends the answer
        raise RuntimeError("the Anthropic stream translator gave no final response")
    return translator.response


def message_events(message: Mapping[str, Any]) -> Iterator[JSON]:
    """The stream events (`message_start` … `message_stop`) that carry this whole Message.

    Each block comes whole, in one delta; blocks the stream translator has no use for, and
    blocks of the wrong shape, are left out. An error document becomes one `error` event; anything
    else is not an answer (ValueError: the gateway answers 502 `translation_failed`)."""
    if message.get("type") == "error":
        yield {"type": "error", "error": message.get("error")}
        return
    if message.get("type") != "message":
        raise ValueError(f"not an Anthropic Message: type {str(message.get('type'))[:40]!r}")
    yield {"type": "message_start", "message": {"type": "message", "role": "assistant", "content": []}}
    content = message.get("content")
    for index, block in enumerate(content if isinstance(content, list) else []):
        if isinstance(block, dict):
            for event in _block_events(block):
                yield {**event, "index": index}
    delta = {"stop_reason": message.get("stop_reason"), "stop_details": message.get("stop_details")}
    yield {"type": "message_delta", "delta": delta, "usage": message.get("usage")}
    yield {"type": "message_stop"}


def _block_events(block: Mapping[str, Any]) -> list[JSON]:
    """content_block_start, its deltas and content_block_stop for one content block (no index)."""
    kind = block.get("type")
    deltas: list[JSON]
    if kind == "text" and isinstance(block.get("text"), str):
        start: JSON = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": block["text"]}]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        thinking, signature = block.get("thinking"), block.get("signature")
        deltas = [{"type": "thinking_delta", "thinking": thinking}] if isinstance(thinking, str) else []
        if isinstance(signature, str) and signature:
            deltas.append({"type": "signature_delta", "signature": signature})
    elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
        start, deltas = {"type": "redacted_thinking", "data": block["data"]}, []
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
        arguments = block.get("input")
        deltas = [
            {"type": "input_json_delta", "partial_json": json.dumps(arguments if isinstance(arguments, dict) else {})}
        ]
    else:
        return []  # server tool blocks and the like: the stream translator ignores them too
    return [
        {"type": "content_block_start", "content_block": start},
        *({"type": "content_block_delta", "delta": delta} for delta in deltas),
        {"type": "content_block_stop"},
    ]
