"""A Codex Responses request → a Chat Completions request: URL, credentials, body."""

from __future__ import annotations

import json
from typing import Any

from codexgate.providers.base import (
    TranslateOptions,
    sampling_params,
    stop_sequences,
)
from codexgate.providers.base import input_items as _input_items
from codexgate.providers.chat.messages import ChatMessages
from codexgate.providers.chat.presets import Preset, get_preset
from codexgate.providers.chat.tools import chat_tools, custom_tool_function, function_tool, tool_choice


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """The chat completions URL under `base_url` (which ends in /v1 or the host's equivalent)."""
    return base_url.rstrip("/") + "/chat/completions", {}


def auth_headers(secret: str) -> dict[str, str]:
    # Local hosts (Ollama, vLLM, LM Studio) usually run without a key.
    return {"authorization": f"Bearer {secret}"} if secret else {}


_EFFORT_ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _effort(requested: Any, accepted: tuple[str, ...]) -> str | None:
    """The accepted effort nearest to Codex's (ties go up); None when the field is not sent."""
    if not accepted or requested not in _EFFORT_ORDER:
        return None
    if requested in accepted:
        return str(requested)
    if requested == "none":
        return None  # cannot turn thinking off here: let the host's default stand
    rank = _EFFORT_ORDER.index(requested)
    candidates = [value for value in accepted if value in _EFFORT_ORDER and value != "none"]
    if not candidates:
        return None
    return min(candidates, key=lambda value: (abs(_EFFORT_ORDER.index(value) - rank), -_EFFORT_ORDER.index(value)))


def _response_format(text: Any, preset: Preset) -> tuple[dict[str, Any] | None, str | None]:
    """(response_format, a system note when the schema can only be described)."""
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or preset.structured_output is None:
        return None, None
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}, None
    if kind != "json_schema":
        return None, None
    if preset.structured_output == "json_object":
        note = "Answer with one JSON object that matches this JSON schema:\n" + json.dumps(fmt.get("schema") or {})
        return {"type": "json_object"}, note
    schema: dict[str, Any] = {"name": str(fmt.get("name") or "response")}
    for key in ("description", "schema", "strict"):
        if fmt.get(key) is not None:
            schema[key] = fmt[key]
    return {"type": "json_schema", "json_schema": schema}, None


def build_request(
    body: dict[str, Any],
    upstream_model: str,
    options: TranslateOptions,
    *,
    preset: Preset | str | None = None,
) -> dict[str, Any]:
    """A Codex Responses request body → a Chat Completions request body for `preset`'s host."""
    host = get_preset(preset)
    tools, served, dropped = chat_tools(body)
    builder = ChatMessages(host, tools, options.provider_name, upstream_model)
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        builder.system.append(body["instructions"])
    for item in _input_items(body):
        builder.add(item)

    response_format, schema_note = _response_format(body.get("text"), host)
    if schema_note:
        builder.system.append(schema_note)
    out: dict[str, Any] = {"model": upstream_model, "messages": builder.result(host.developer_role)}

    if not host.tools:
        dropped = dropped + [str(tool.definition.get("name")) for tool in served]
        served = []
    if served:
        out["tools"] = [
            {
                "type": "function",
                "function": custom_tool_function(tool.wire, tool.definition)
                if tool.kind == "custom"
                else function_tool(tool.wire, tool.definition),
            }
            for tool in served
        ]
        if "tool_choice" in body:
            out["tool_choice"] = tool_choice(body["tool_choice"], tools)
        if host.parallel_tool_calls and isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    options.dropped_tools.extend(dropped)

    reasoning = body.get("reasoning")
    effort = _effort(reasoning.get("effort") if isinstance(reasoning, dict) else None, host.reasoning_effort_values)
    if effort is not None:
        out["reasoning_effort"] = effort
    if response_format is not None:
        out["response_format"] = response_format
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool):
            out[key] = body[key]
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit > 0:
        out[host.max_tokens_field] = limit
    elif host.needs_max_tokens:
        out[host.max_tokens_field] = options.default_max_tokens

    sampling = sampling_params(body, options, ("stop", "seed", "presence_penalty", "frequency_penalty"))
    if stop_sequences(sampling.get("stop")):
        out["stop"] = stop_sequences(sampling["stop"])
    for key in ("seed", "presence_penalty", "frequency_penalty"):
        if isinstance(sampling.get(key), int | float) and not isinstance(sampling.get(key), bool):
            out[key] = sampling[key]
    stream = bool(body.get("stream"))
    out["stream"] = stream
    if stream and host.stream_options:
        out["stream_options"] = {"include_usage": True}
    return out
