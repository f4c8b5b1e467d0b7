"""A whole (not streamed) Anthropic Message as a Responses `response` object."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from codexgate.providers.anthropic.answer import (
    _call_item,
    _custom_input,
    _incomplete_reason,
    _message_item,
    _reasoning_item,
    _refusal_text,
    _response_object,
    _UsageCounter,
)
from codexgate.providers.anthropic.errors import _stream_error
from codexgate.providers.anthropic.tools import RequestInfo
from codexgate.providers.anthropic.values import JSON, _dict, _new_id, _str
from codexgate.providers.base import ResponseContext

# --------------------------------------------------------------------------------------------
# Answers: not streamed


def translate_response(provider_body: Mapping[str, Any], ctx: ResponseContext, info: RequestInfo | None = None) -> JSON:
    """A non-streamed Anthropic Message → a Responses API `response` object."""
    if provider_body.get("type") == "error":
        code, message = _stream_error(provider_body.get("error"))
        return _response_object(ctx, info, "failed", [], None, error={"code": code, "message": message})
    output: list[JSON] = []
    for block in provider_body.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            if block["text"].strip():  # a whitespace-only block would poison the next request
                output.append(_message_item(_new_id("msg"), block["text"]))
        elif kind == "thinking":
            text = _str(block.get("thinking"))
            signature = block.get("signature")
            record = {"type": "thinking", "thinking": text, "signature": signature} if signature else None
            output.append(_reasoning_item(_new_id("rs"), text, record, ctx, info))
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            record = {"type": "redacted_thinking", "data": block["data"]}
            output.append(_reasoning_item(_new_id("rs"), "", record, ctx, info))
        elif kind == "tool_use":
            arguments = json.dumps(_dict(block.get("input")))
            name = str(block.get("name") or "")
            ref = info.tools.get(name) if info else None
            payload = _custom_input(arguments) if ref is not None and ref.kind == "custom" else arguments
            output.append(
                _call_item(
                    _new_id("ctc" if ref and ref.kind == "custom" else "fc"), str(block.get("id")), name, payload, info
                )
            )
    stop_reason = provider_body.get("stop_reason")
    if stop_reason == "refusal":
        partial = any(item["type"] == "message" for item in output)
        output.append(_message_item(_new_id("msg"), _refusal_text(provider_body.get("stop_details"), partial)))
    counter = _UsageCounter()
    counter.update(provider_body.get("usage"))
    incomplete = _incomplete_reason(stop_reason)
    return _response_object(
        ctx, info, "incomplete" if incomplete else "completed", output, counter.responses(), incomplete=incomplete
    )
