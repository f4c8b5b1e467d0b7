"""The Responses output items (message, function / custom tool call, reasoning), usage and outcome
the stream translator makes of Bedrock's blocks, usage and stop reason."""

from __future__ import annotations

import json
import logging
from typing import Any

from codexgate.providers.base import ResponseContext, Usage, seal_reasoning
from codexgate.providers.bedrock.tools import ToolNames, resolve_tool
from codexgate.providers.jsonstring import without_lone_surrogates

logger = logging.getLogger(__name__)

_STOP_COMPLETED = {"end_turn", "tool_use", "stop_sequence", "guardrail_intervened", "content_filtered"}
_STOP_INCOMPLETE = {"max_tokens", "model_context_window_exceeded"}
_STOP_FAILED = {
    "malformed_model_output": "the model produced malformed output",
    "malformed_tool_use": "the model produced a malformed tool call",
}


def usage_from_bedrock(usage: Any) -> tuple[Usage, int]:
    """(normalised usage, cache-write tokens). Bedrock's inputTokens excludes cache reads and
    writes; the gateway counts input including both."""
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    cached, written = count("cacheReadInputTokens"), count("cacheWriteInputTokens")
    normalised = Usage(
        input_tokens=count("inputTokens") + cached + written,
        cached_tokens=cached,
        output_tokens=count("outputTokens"),
        reasoning_tokens=0,  # Bedrock does not report reasoning tokens apart from output tokens
    )
    return normalised, written


def usage_dict(usage: Usage, cache_write: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": cache_write},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def outcome_of(stop_reason: Any) -> tuple[str, dict[str, Any] | None]:
    """(completed / incomplete / failed, error object for failed). Guardrail interventions and
    content filtering end a normal, completed turn: Bedrock has already put its replacement text
    into the answer."""
    if stop_reason in _STOP_INCOMPLETE:
        return "incomplete", None
    if stop_reason in _STOP_FAILED:
        return "failed", {"code": "server_error", "message": f"Bedrock: {_STOP_FAILED[stop_reason]}; try again."}
    if stop_reason not in _STOP_COMPLETED:
        logger.warning("unknown Bedrock stopReason %r treated as completed", stop_reason)
    return "completed", None


def output_item_id(ctx: ResponseContext, prefix: str, index: int) -> str:
    return f"{prefix}_{ctx.response_id.removeprefix('resp_')}_{index}"


def call_item(
    ctx: ResponseContext, index: int, wire: str, call_id: str, tools: ToolNames | None, payload: str, done: bool
) -> dict[str, Any]:
    namespace, name, custom = resolve_tool(wire, tools)
    if custom:
        item: dict[str, Any] = {"type": "custom_tool_call", "id": output_item_id(ctx, "ctc", index), "call_id": call_id}
        item.update(name=name, input=payload)
    else:
        item = {"type": "function_call", "id": output_item_id(ctx, "fc", index), "call_id": call_id, "name": name}
        item.update(arguments=payload, status="completed" if done else "in_progress")
    if namespace:
        item["namespace"] = namespace
    return item


def custom_input(raw: str) -> str:
    """The string a custom tool receives, from the JSON Bedrock produced for its `input` parameter."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return raw
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return without_lone_surrogates(parsed["input"])
    return raw


def reasoning_item(
    ctx: ResponseContext, index: int, envelope_model: str, text: str, signature: str | None, redacted: str | None
) -> dict[str, Any]:
    block: dict[str, Any]
    if redacted is not None:
        block = {"redactedContent": redacted}
    else:
        block = {"reasoningText": {"text": text, **({"signature": signature} if signature else {})}}
    return {
        "type": "reasoning",
        "id": output_item_id(ctx, "rs", index),
        "summary": [{"type": "summary_text", "text": text}] if text else [],
        "encrypted_content": seal_reasoning(ctx.provider_name, envelope_model, {"block": block}),
    }


def message_item(ctx: ResponseContext, index: int, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": output_item_id(ctx, "msg", index),
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else [],
    }
