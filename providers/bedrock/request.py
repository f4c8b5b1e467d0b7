"""A Responses API request → a Converse / ConverseStream request body: the conversation
(`history`), tools, inference and reasoning settings, structured output, prompt cache points."""

from __future__ import annotations

import json
from typing import Any

from codexgate.providers.base import TranslateOptions, sampling_params, stop_sequences
from codexgate.providers.bedrock.history import (
    mid_tool_loop_without_reasoning,
    repair_tool_pairs,
    strip_final_assistant,
    system_and_conversation,
)
from codexgate.providers.bedrock.models import caches_prompts, reasoning_fields
from codexgate.providers.bedrock.tools import BEDROCK_NAMES, converse_tool_choice, tool_spec
from codexgate.providers.responses import ToolNameMap

_CACHE_POINT = {"cachePoint": {"type": "default"}}


def build_request(body: dict[str, Any], upstream_model: str, options: TranslateOptions) -> dict[str, Any]:
    """A Responses API request body → a Converse / ConverseStream request body (no modelId: that
    travels in the URL, see `request_target`)."""
    names, tools, dropped = ToolNameMap.from_request(body, BEDROCK_NAMES)
    for name in dropped:
        if name not in options.dropped_tools:
            options.dropped_tools.append(name)
    tool_choice, offered, tools_off = converse_tool_choice(body.get("tool_choice", "auto"), names, tools)
    if tools_off:
        offered = []
    system, history = system_and_conversation(body, names, options.provider_name, upstream_model)

    messages = repair_tool_pairs(history, bool(offered))
    if not messages or messages[0]["role"] != "user":
        # Converse conversations open with a user turn.
        messages.insert(0, {"role": "user", "content": [{"text": "(conversation start)"}]})
    if messages[-1]["role"] == "assistant":
        strip_final_assistant(messages)

    explicit_max = isinstance(body.get("max_output_tokens"), int) and body["max_output_tokens"] > 0
    max_tokens = body["max_output_tokens"] if explicit_max else options.default_max_tokens
    forced_tool = tool_choice is not None and ("any" in tool_choice or "tool" in tool_choice)
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    additional, send_max = reasoning_fields(upstream_model, reasoning.get("effort"), max_tokens, explicit_max)
    if "thinking" in additional and (forced_tool or mid_tool_loop_without_reasoning(messages)):
        # Claude refuses thinking with a forced tool choice, and mid tool loop without the
        # turn's own signed reasoning; answering without thinking beats failing the request.
        additional, send_max = {}, max_tokens

    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    inference: dict[str, Any] = {}
    if send_max is not None:
        inference["maxTokens"] = send_max
    if not additional:  # thinking / reasoning modes fix the sampling parameters themselves
        for source, target in (("temperature", "temperature"), ("top_p", "topP")):
            value = body.get(source)
            if isinstance(value, int | float) and not isinstance(value, bool):
                inference[target] = float(value)
    sampling = sampling_params(body, options, ("stop",))
    if stop_sequences(sampling.get("stop")):
        inference["stopSequences"] = stop_sequences(sampling["stop"])
    if inference:
        request["inferenceConfig"] = inference
    if offered:
        request["toolConfig"] = {"tools": [tool_spec(tool) for tool in offered]}
        if tool_choice is not None:
            request["toolConfig"]["toolChoice"] = tool_choice
    if additional:
        request["additionalModelRequestFields"] = additional

    output = _output_config(body)
    if output is not None:
        request["outputConfig"] = output

    if caches_prompts(upstream_model):
        # Codex replays the whole conversation every turn: cache points after the system prompt,
        # the tools and the newest message let the next turn read all of it from cache.
        if system:
            system.append(dict(_CACHE_POINT))
        if offered:
            request["toolConfig"]["tools"].append(dict(_CACHE_POINT))
        messages[-1]["content"].append(dict(_CACHE_POINT))
    return request


def _output_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """Structured output: the Responses `text.format` JSON schema as Converse's outputConfig."""
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if not isinstance(text_format, dict) or text_format.get("type") != "json_schema":
        return None
    schema = text_format.get("schema")
    if not isinstance(schema, dict):
        return None
    definition: dict[str, Any] = {"schema": json.dumps(schema)}
    for key in ("name", "description"):
        if isinstance(text_format.get(key), str):
            definition[key] = text_format[key]
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}
