"""The Anthropic Messages request: target, credentials, conversation, history repair, thinking, caching."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.anthropic.content import (
    content_blocks,
    replay_blocks,
    text_block,
    tool_result_content,
    tool_use_id,
    tool_use_input,
)
from codexgate.providers.anthropic.models import (
    ADAPTIVE_ALLOWANCE,
    ANTHROPIC_VERSION,
    BUDGET_MODEL_MAX_TOKENS,
    BUDGETS,
    INTERLEAVED_THINKING_BETA,
    MIN_BUDGET,
    adaptive_effort,
    uses_adaptive_thinking,
    wants_interleaved_beta,
)
from codexgate.providers.anthropic.tools import ToolPlan, plan_tools, tool_choice
from codexgate.providers.anthropic.values import JSON, as_dict, as_str
from codexgate.providers.base import TranslateOptions, open_reasoning, sampling_params, stop_sequences
from codexgate.providers.base import input_items as _input_items

logger = logging.getLogger(__name__)

_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})


# --------------------------------------------------------------------------------------------
# Transport


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """The URL to POST to and the fixed headers (no credentials)."""
    base = base_url.rstrip("/")
    url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
    headers = {
        "anthropic-version": ANTHROPIC_VERSION,
        "content-type": "application/json",
        "accept": "text/event-stream" if stream else "application/json",
    }
    if wants_interleaved_beta(upstream_model):
        headers["anthropic-beta"] = INTERLEAVED_THINKING_BETA
    return url, headers


def auth_headers(secret: str) -> dict[str, str]:
    return {"x-api-key": secret}


# --------------------------------------------------------------------------------------------
# Request: conversation


def _conversation(
    body: Mapping[str, Any], plan: ToolPlan, provider_name: str, upstream_model: str
) -> tuple[list[str], list[JSON]]:
    """(system texts, alternating Anthropic messages) from the Responses input."""
    system: list[str] = []
    if isinstance(body.get("instructions"), str) and body["instructions"].strip():
        system.append(body["instructions"])
    turns: list[JSON] = []

    def add(role: str, blocks: list[JSON]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants strict alternation: merge
        else:
            turns.append({"role": role, "content": list(blocks)})

    for item in _input_items(body):
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                text = "\n\n".join(
                    block["text"] for block in content_blocks(item.get("content")) if block["type"] == "text"
                )
                if text.strip():
                    system.append(text)
            elif role == "assistant":
                add("assistant", [b for b in content_blocks(item.get("content")) if b["type"] == "text"])
            else:
                add("user", content_blocks(item.get("content")))
        elif kind in ("function_call", "custom_tool_call"):
            namespace = as_str(item.get("namespace")) or None
            name = as_str(item.get("name"), "unknown_tool")
            arguments = (
                {"input": as_str(item.get("input"))}
                if kind == "custom_tool_call"
                else tool_use_input(item.get("arguments"))
            )
            add(
                "assistant",
                [
                    {
                        "type": "tool_use",
                        "id": tool_use_id(item.get("call_id")),
                        "name": plan.names.wire_name(name, namespace),
                        "input": arguments,
                    }
                ],
            )
        elif kind in ("function_call_output", "custom_tool_call_output"):
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": tool_use_id(item.get("call_id")),
                        "content": tool_result_content(item.get("output")),
                    }
                ],
            )
        elif kind == "reasoning":
            # Only our own envelope, for this provider and model, goes back to Claude; OpenAI's
            # encrypted reasoning and other providers' records are dropped.
            add(
                "assistant",
                replay_blocks(open_reasoning(item.get("encrypted_content"), provider_name, upstream_model)),
            )
        # Everything else (additional_tools, hosted tool calls, compaction, item references) has no
        # Anthropic counterpart the model could use.
    return system, _repair(turns)


def _thinking_placed(blocks: list[JSON]) -> list[JSON]:
    """An assistant message holding thinking must start with it; one that does not (a merge of
    another model's text with our reasoning) loses its thinking rather than the request."""
    if not blocks or blocks[0]["type"] in _THINKING_TYPES:
        return blocks  # as Claude produced it, interleaved thinking included
    return [block for block in blocks if block["type"] not in _THINKING_TYPES]


def _tool_result_text(block: JSON) -> list[JSON]:
    content = block.get("content")
    header = f"Output of tool call {block.get('tool_use_id')}:"
    if isinstance(content, list):
        return [text_block(header), *content]
    return [text_block(f"{header}\n{content}")]


def _repair(turns: list[JSON]) -> list[JSON]:
    """Make the history acceptable to the Messages API.

    Every tool_use is answered by a tool_result in the very next user message, tool_results come
    first in it, results without their call become plain text, thinking blocks lead their message,
    and the conversation starts with the user.
    """
    repaired: list[JSON] = []
    pending: list[str] = []
    for turn in turns:
        if turn["role"] == "assistant":
            content = _thinking_placed(turn["content"])
            if not content:
                continue
            if pending:
                repaired.append({"role": "user", "content": [_missing_result(i) for i in pending]})
            repaired.append({"role": "assistant", "content": content})
            pending = [b["id"] for b in content if b["type"] == "tool_use"]
            continue
        results: list[JSON] = []
        others: list[JSON] = []
        for block in turn["content"]:
            if block["type"] == "tool_result":
                if block["tool_use_id"] in pending:
                    pending.remove(block["tool_use_id"])
                    results.append(block)
                else:
                    others.extend(_tool_result_text(block))
            else:
                others.append(block)
        results.extend(_missing_result(call_id) for call_id in pending)
        pending = []
        if results or others:
            repaired.append({"role": "user", "content": results + others})
    if pending:
        repaired.append({"role": "user", "content": [_missing_result(i) for i in pending]})
    if repaired and repaired[0]["role"] == "assistant":
        repaired.insert(0, {"role": "user", "content": [text_block("(The conversation so far follows.)")]})
    if not repaired:
        repaired.append({"role": "user", "content": [text_block("(No input was given.)")]})
    return repaired


def _missing_result(call_id: str) -> JSON:
    return {"type": "tool_result", "tool_use_id": call_id, "content": "No output was recorded for this call."}


def _turn_starts_with_thinking(messages: list[JSON]) -> bool:
    """Can manual thinking stay on? Only if this is not a tool loop, or the loop's assistant turn
    (which spans every assistant message since the last real user input) began with thinking."""
    last = messages[-1]
    if last["role"] != "user" or not any(b["type"] == "tool_result" for b in last["content"]):
        return True
    index = len(messages) - 2
    start: int | None = None
    while index >= 0 and messages[index]["role"] == "assistant":
        start = index
        before = messages[index - 1] if index >= 1 else None
        if before is None or not all(b["type"] == "tool_result" for b in before["content"]):
            break
        index -= 2
    return start is not None and messages[start]["content"][0]["type"] in _THINKING_TYPES


# --------------------------------------------------------------------------------------------
# Request: the whole body


def build_request(body: Mapping[str, Any], upstream_model: str, options: TranslateOptions) -> JSON:
    """A Responses request body (as Codex sends it) → an Anthropic Messages request body."""
    plan = plan_tools(body)
    options.dropped_tools.extend(plan.dropped)
    system, messages = _conversation(body, plan, options.provider_name, upstream_model)
    request: JSON = {"model": upstream_model, "messages": messages}

    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    output_config: JSON = {}
    if (
        isinstance(text_format, dict)
        and text_format.get("type") == "json_schema"
        and isinstance(text_format.get("schema"), dict)
    ):
        output_config["format"] = {"type": "json_schema", "schema": text_format["schema"]}
    elif isinstance(text_format, dict) and text_format.get("type") == "json_object":
        system.append("Answer with a single valid JSON object and nothing else.")

    if system:
        request["system"] = [text_block(text) for text in system]

    choice: JSON | None = None
    if plan.definitions:
        request["tools"] = plan.definitions
        choice = tool_choice(body.get("tool_choice", "auto"), plan.names, body.get("parallel_tool_calls") is not False)
        request["tool_choice"] = choice
    forced_tool = choice is not None and choice["type"] in ("any", "tool")

    explicit_max = body.get("max_output_tokens")
    explicit_max = explicit_max if isinstance(explicit_max, int) and explicit_max > 0 else None
    max_tokens = explicit_max or options.default_max_tokens
    reasoning = as_dict(body.get("reasoning"))
    effort = as_str(reasoning.get("effort")) or None
    thinking: JSON | None = None

    if effort is not None and uses_adaptive_thinking(upstream_model):
        mapped = "low" if effort == "none" else adaptive_effort(effort, upstream_model)
        output_config["effort"] = mapped
        # Forced tool use skips thinking anyway, and some models refuse the combination.
        if effort != "none" and not forced_tool:
            thinking = {"type": "adaptive", "display": "summarized"}
            if explicit_max is None:
                max_tokens = options.default_max_tokens + ADAPTIVE_ALLOWANCE.get(mapped, 8192)
    elif effort in BUDGETS:
        budget = BUDGETS[effort]
        if explicit_max is None:
            max_tokens = max(
                options.default_max_tokens, min(budget + options.default_max_tokens, BUDGET_MODEL_MAX_TOKENS)
            )
        # Leave the answer at least as much room as the smallest budget, but when the cap is too
        # small for that, the smallest budget Claude takes still fits under it (budget < max_tokens).
        budget = min(budget, max_tokens - MIN_BUDGET)
        if budget < MIN_BUDGET < max_tokens:
            budget = MIN_BUDGET
        if forced_tool:
            logger.debug("manual thinking left off: tool_choice forces a tool")
        elif not _turn_starts_with_thinking(messages):
            logger.debug("manual thinking left off: the tool loop did not start with a replayable thinking block")
        elif budget >= MIN_BUDGET:
            thinking = {"type": "enabled", "budget_tokens": budget}

    if messages[-1]["role"] == "assistant":
        _strip_final_assistant(messages)
    if thinking is not None:
        request["thinking"] = thinking
    elif messages[-1]["role"] == "assistant":
        # A final (prefill) assistant message may not carry thinking when thinking is off.
        content = [b for b in messages[-1]["content"] if b["type"] not in _THINKING_TYPES]
        if content:
            messages[-1]["content"] = content
        else:
            messages.pop()
    if output_config:
        request["output_config"] = output_config
    request["max_tokens"] = max_tokens
    stops = stop_sequences(sampling_params(body, options, ("stop",)).get("stop"))
    if stops:
        request["stop_sequences"] = stops

    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        request["stream"] = True
    _mark_cache_breakpoints(request)
    return request


def _strip_final_assistant(messages: list[JSON]) -> None:
    """Anthropic refuses a final assistant message ending in whitespace ("final assistant content
    cannot end with trailing whitespace"): trim its last text block, dropping it if nothing is left."""
    content = messages[-1]["content"]
    if content and content[-1]["type"] == "text":
        text = content[-1]["text"].rstrip()
        if text:
            content[-1] = {**content[-1], "text": text}
        else:
            content.pop()
    if not content:
        messages.pop()


def _mark_cache_breakpoints(request: JSON) -> None:
    """Prompt caching: Codex resends the whole conversation each turn, so mark the end of the
    stable prefix (tools + system) and the end of the conversation; the next turn reads both."""
    system = request.get("system")
    if system:
        system[-1]["cache_control"] = {"type": "ephemeral"}
    elif request.get("tools"):
        request["tools"][-1]["cache_control"] = {"type": "ephemeral"}
    for block in reversed(request["messages"][-1]["content"]):
        if block["type"] not in _THINKING_TYPES:
            block["cache_control"] = {"type": "ephemeral"}
            break
