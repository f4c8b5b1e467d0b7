"""Pieces of a Responses answer made from Claude's: usage, response object, output items."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from codexgate.providers.anthropic.tools import RequestInfo, ToolRef
from codexgate.providers.anthropic.values import JSON
from codexgate.providers.base import ResponseContext, echoed_fields, seal_reasoning
from codexgate.providers.jsonstring import without_lone_surrogates
from codexgate.usage import Usage

# --------------------------------------------------------------------------------------------
# Answers: shared pieces


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclasses.dataclass
class _UsageCounter:
    input_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    seen: bool = False

    def update(self, usage: Any) -> None:
        """Take every count the event carries (message_delta counts are cumulative)."""
        if not isinstance(usage, dict):
            return
        self.seen = True
        for key, attribute in (
            ("input_tokens", "input_tokens"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_creation"),
            ("output_tokens", "output_tokens"),
        ):
            if isinstance(usage.get(key), int):
                setattr(self, attribute, _int(usage[key]))
        details = usage.get("output_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int):
            self.thinking_tokens = _int(details["thinking_tokens"])

    def normalised(self) -> Usage:
        # Anthropic's input_tokens leaves out cache reads and writes; Codex's count includes them.
        return Usage(
            input_tokens=self.input_tokens + self.cache_read + self.cache_creation,
            cached_tokens=self.cache_read,
            output_tokens=self.output_tokens,
            reasoning_tokens=min(self.thinking_tokens, self.output_tokens),
        )

    def responses(self) -> JSON:
        usage = self.normalised()
        return {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": self.cache_creation},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }


_INCOMPLETE_STOPS = frozenset({"max_tokens", "model_context_window_exceeded"})


def _incomplete_reason(stop_reason: Any) -> str | None:
    """The Responses `incomplete_details.reason` for a Claude stop, None for a finished answer.

    A refusal stays a finished answer: Codex treats `response.incomplete` like a failed stream and
    would send the same request again for the same refusal. It is marked by a closing message
    saying so instead (see `_refusal_text`), also after partial text."""
    return "max_output_tokens" if stop_reason in _INCOMPLETE_STOPS else None


def _response_object(
    ctx: ResponseContext,
    info: RequestInfo | None,
    status: str,
    output: list[JSON],
    usage: JSON | None,
    *,
    error: JSON | None = None,
    incomplete: str | None = None,
) -> JSON:
    return {
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "model": ctx.model,
        "output": output,
        **_echo(ctx, info),
        "usage": usage,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
    }


def _echo(ctx: ResponseContext, info: RequestInfo | None) -> JSON:
    fields = echoed_fields(ctx)
    if info is not None and not ctx.echo:  # a context made without the request's echo
        fields["parallel_tool_calls"], fields["tool_choice"] = info.parallel_tool_calls, info.tool_choice
    return fields


def _envelope_model(ctx: ResponseContext, info: RequestInfo | None) -> str:
    return info.upstream_model if info else ctx.model


def _message_item(item_id: str, text: str, status: str = "completed") -> JSON:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else [],
    }


def _reasoning_item(
    item_id: str, text: str, block: JSON | None, ctx: ResponseContext, info: RequestInfo | None
) -> JSON:
    item: JSON = {
        "type": "reasoning",
        "id": item_id,
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if block is not None:
        item["encrypted_content"] = seal_reasoning(ctx.provider_name, _envelope_model(ctx, info), {"blocks": [block]})
    return item


def _call_item(item_id: str, call_id: str, anthropic_name: str, payload: str, info: RequestInfo | None) -> JSON:
    """A function_call (arguments JSON) or custom_tool_call (raw input) for a Claude tool_use."""
    ref = (info.tools.get(anthropic_name) if info else None) or ToolRef("function", anthropic_name)
    item: JSON
    if ref.kind == "custom":
        item = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": ref.name, "input": payload}
    else:
        item = {
            "type": "function_call",
            "id": item_id,
            "call_id": call_id,
            "name": ref.name,
            "arguments": payload,
            "status": "completed",
        }
    if ref.namespace:
        item["namespace"] = ref.namespace
    return item


def _custom_input(arguments_json: str) -> str:
    try:
        parsed = json.loads(arguments_json) if arguments_json.strip() else {}
    except ValueError:
        return arguments_json  # truncated input: hand over what there is
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return without_lone_surrogates(parsed["input"])
    if isinstance(parsed, dict) and len(parsed) == 1 and isinstance(next(iter(parsed.values())), str):
        return without_lone_surrogates(str(next(iter(parsed.values()))))
    return arguments_json


def _refusal_text(stop_details: Any, partial: bool = False) -> str:
    text = (
        "[The model stopped here and declined to continue this answer.]"
        if partial
        else "The model declined to answer this request."
    )
    if isinstance(stop_details, dict) and isinstance(stop_details.get("explanation"), str):
        text += f" {stop_details['explanation']}"
    return text
