"""Anthropic Messages API (`POST /v1/messages`) behind Codex's Responses API: pure translators.

How the gateway drives this module (everything here is pure; the addon does the I/O)::

    from codexgate.providers import anthropic
    from codexgate.providers.base import ResponseContext, TranslateOptions

    options = TranslateOptions(provider_name="anthropic-prod", default_max_tokens=8192)
    provider_body = anthropic.build_request(codex_body, upstream_model, options)
    # options.dropped_tools now names the tools Claude cannot serve (web_search, tool_search, ...)
    info = anthropic.request_info(codex_body, upstream_model)   # what the answer side must know
    stream = bool(provider_body.get("stream"))                    # mirrors the Codex body (always true)
    url, headers = anthropic.request_target(base_url, upstream_model, stream)
    headers.update(anthropic.auth_headers(secret))                # x-api-key; drop every client credential
    # POST json.dumps(provider_body) to url with headers.

    ctx = ResponseContext(response_id, model=codex_body["model"], provider_name=..., created_at=...)
    # 2xx, streamed (content-type text/event-stream):
    decoder, translator = anthropic.StreamDecoder(), anthropic.StreamTranslator(ctx, info)
    for chunk in body_chunks:                                     # arbitrary byte boundaries
        for event in decoder.feed(chunk):
            out_events.extend(translator.feed(event))             # Responses events, sequence-numbered
    out_events.extend(translator.finish())                       # at end of stream, always
    translator.usage, translator.outcome                         # for accounting
    # 2xx, not streamed:
    response = anthropic.translate_response(json.loads(body), ctx, info)
    # non-2xx before the stream started:
    status, error_body = anthropic.translate_error(upstream_status, upstream_body_bytes)
    # copy the upstream `retry-after` header onto the 429/503 answer: Codex retries a 429 only with it.

`base_url` is the API root (`https://api.anthropic.com`); one ending in `/v1` also works.

Reasoning across turns: each Claude thinking block (with its signature) or redacted_thinking block
becomes a Responses `reasoning` item whose `encrypted_content` is a `seal_reasoning` envelope
scoped to (provider_name, upstream model). Codex replays it on the next turn and `build_request`
puts the blocks back, verbatim, in the assistant message before the tool_use they preceded.
Always pass `info` to the answer side: without it envelopes are sealed for `ctx.model` (so never
replayed) and calls of custom tools (apply_patch) come back as function_call, not custom_tool_call.

Thinking: Claude 4.6 and later (and the Fable/Mythos families) take adaptive thinking plus
`output_config.effort`; earlier models take `thinking.type=enabled` with a token budget
(minimal 1024, low 2048, medium 8192, high 24576, xhigh 28672), `max_tokens` raised above it.
Manual thinking is left off for a request where the API would refuse it: a forced tool choice, or
a tool loop whose assistant turn did not start with a replayable thinking block (for example
after a switch from another model).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from codexgate.providers.base import (
    ResponseContext,
    TranslateOptions,
    echoed_fields,
    open_reasoning,
    sampling_params,
    seal_reasoning,
    stop_sequences,
)
from codexgate.providers.base import input_items as _input_items
from codexgate.providers.jsonstring import InputStringStream, without_lone_surrogates
from codexgate.sse import SSEParser
from codexgate.usage import Usage

__all__ = [
    "ANTHROPIC_VERSION",
    "INTERLEAVED_THINKING_BETA",
    "RequestInfo",
    "StreamDecoder",
    "StreamTranslator",
    "ToolRef",
    "auth_headers",
    "build_request",
    "request_info",
    "request_target",
    "translate_error",
    "translate_response",
]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

ANTHROPIC_VERSION = "2023-06-01"
# Lets Claude 4 (before 4.6) think again after each tool result; 4.6+ does so with adaptive thinking.
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"

# reasoning.effort -> thinking budget for models that take `thinking.type=enabled`.
_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 28672}
# reasoning.effort -> output_config.effort for models that take adaptive thinking.
_ADAPTIVE_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
# Output room for thinking, added to the default max_tokens under adaptive thinking.
_ADAPTIVE_ALLOWANCE = {"low": 4096, "medium": 8192, "high": 24576, "xhigh": 24576}
# The lowest output ceiling among budget-thinking models (Opus 4 / 4.1): a computed default never
# goes above it, so a request is not refused for max_tokens alone.
_BUDGET_MODEL_MAX_TOKENS = 32000
_MIN_BUDGET = 1024

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_DATA_URL = re.compile(r"^data:([^;,]+)?((?:;[^;,]+)*?)(;base64)?,(.*)$", re.DOTALL)
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_CONTEXT_TOO_LONG = re.compile(
    r"prompt is too long|too many (input )?tokens|context (window|length|limit)|exceed(s|ed)? .*context",
    re.IGNORECASE,
)
_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
_EMPTY_TOOL_OUTPUT = "(no output)"


def _dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# --------------------------------------------------------------------------------------------
# Models


def _claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model id, wherever the numbers sit.

    "claude-sonnet-4-6" → (4, 6), "claude-3-7-sonnet-20250219" → (3, 7),
    "claude-opus-4-20250514" → (4, 0), "anthropic.claude-haiku-4-5-20251001-v1:0" → (4, 5).
    """
    lowered = model.lower()
    start = lowered.find("claude")
    tokens = re.split(r"[-_.@:/]", lowered[start:] if start >= 0 else lowered)
    numbers: list[int] = []
    for token in tokens:
        if token.isdigit() and len(token) <= 2:
            numbers.append(int(token))
            if len(numbers) == 2:
                break
        elif numbers:
            break  # a date, a family name or a version suffix ends the version
    if not numbers:
        return None
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def _uses_adaptive_thinking(model: str) -> bool:
    version = _claude_version(model)
    if version is None:
        return any(family in model.lower() for family in ("fable", "mythos"))
    return version >= (4, 6)


def _adaptive_effort(effort: str, model: str) -> str:
    mapped = _ADAPTIVE_EFFORT.get(effort, "high")
    version = _claude_version(model)
    if mapped == "xhigh" and (version is None or version < (4, 7)):
        return "high"  # xhigh arrived with Opus 4.7; earlier adaptive models refuse it
    return mapped


def _wants_interleaved_beta(model: str) -> bool:
    version = _claude_version(model)
    return version is not None and version[0] == 4 and version < (4, 6)


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
    if _wants_interleaved_beta(upstream_model):
        headers["anthropic-beta"] = INTERLEAVED_THINKING_BETA
    return url, headers


def auth_headers(secret: str) -> dict[str, str]:
    return {"x-api-key": secret}


# --------------------------------------------------------------------------------------------
# Tools


@dataclasses.dataclass(frozen=True)
class ToolRef:
    """A Codex tool as Codex knows it: how its calls must come back."""

    kind: str  # "function" | "custom"
    name: str
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What the answer side needs to know about the request it answers."""

    upstream_model: str
    tools: Mapping[str, ToolRef] = dataclasses.field(default_factory=dict)  # Claude's name -> Codex tool
    parallel_tool_calls: bool = True
    tool_choice: Any = "auto"  # echoed in the Responses object


@dataclasses.dataclass
class _ToolPlan:
    definitions: list[JSON]  # Anthropic tool params
    by_anthropic: dict[str, ToolRef]
    by_codex: dict[tuple[str, str | None], str]  # (name, namespace) -> Claude's name
    dropped: list[str]


def _codex_tools(body: Mapping[str, Any]) -> tuple[list[tuple[JSON, str | None, str]], list[str]]:
    """(tool, namespace, namespace description) for every tool Codex offers, and what is dropped."""
    groups: list[Iterable[Any]] = [body.get("tools") or []]
    groups += [item.get("tools") or [] for item in _input_items(body) if item.get("type") == "additional_tools"]
    found: list[tuple[JSON, str | None, str]] = []
    dropped: list[str] = []

    def take(tool: Any, namespace: str | None, namespace_description: str) -> None:
        if not isinstance(tool, dict):
            return
        kind = tool.get("type")
        if kind in ("function", "custom") and isinstance(tool.get("name"), str) and tool["name"]:
            found.append((tool, namespace, namespace_description))
        elif kind == "namespace" and namespace is None:
            inner_description = _str(tool.get("description"))
            for inner in tool.get("tools") or []:
                take(inner, str(tool.get("name") or ""), inner_description)
        else:
            name = _str(tool.get("name")) or None
            dropped.append(name or str(kind))

    for group in groups:
        if isinstance(group, list):
            for tool in group:
                take(tool, None, "")
    return found, dropped


def _sanitize_name(name: str) -> str:
    cleaned = _TOOL_NAME_BAD_CHARS.sub("_", name)[:64]
    return cleaned or "tool"


def _qualified(name: str, namespace: str | None) -> str:
    return f"{namespace}__{name}" if namespace else name


def _plan_tools(body: Mapping[str, Any]) -> _ToolPlan:
    found, dropped = _codex_tools(body)
    bare_counts = Counter(tool["name"] for tool, _, _ in found)
    plan = _ToolPlan([], {}, {}, dropped)
    for tool, namespace, namespace_description in found:
        name: str = tool["name"]
        key = (name, namespace)
        if key in plan.by_codex:
            continue  # offered twice (tools and additional_tools): one definition
        # A namespaced tool keeps its bare name unless another tool has it too.
        wanted = name if bare_counts[name] == 1 else _qualified(name, namespace)
        candidate = _sanitize_name(wanted)
        suffix = 2
        while candidate in plan.by_anthropic:
            candidate = f"{_sanitize_name(wanted)[:60]}_{suffix}"
            suffix += 1
        kind = "custom" if tool.get("type") == "custom" else "function"
        plan.by_anthropic[candidate] = ToolRef(kind, name, namespace)
        plan.by_codex[key] = candidate
        plan.definitions.append(_tool_definition(tool, candidate, kind, namespace, namespace_description))
    return plan


def _tool_definition(
    tool: JSON, anthropic_name: str, kind: str, namespace: str | None, namespace_description: str
) -> JSON:
    description = _str(tool.get("description"))
    if namespace and namespace_description:
        description = f"{description}\n\n(Part of the tool group `{namespace}`: {namespace_description})".strip()
    if kind == "custom":
        # Claude has no free-form tools: the raw input travels as one string parameter and
        # comes back to Codex as a custom_tool_call with that string as its `input`.
        note = "Put the complete raw input for this tool (free-form text, not JSON) in the `input` string."
        tool_format = _dict(tool.get("format"))
        if tool_format.get("type") == "grammar" and isinstance(tool_format.get("definition"), str):
            syntax = tool_format.get("syntax") or "grammar"
            note += f" It must match this {syntax} grammar:\n{tool_format['definition']}"
        definition: JSON = {
            "name": anthropic_name,
            "input_schema": {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The raw tool input."}},
                "required": ["input"],
                "additionalProperties": False,
            },
            "description": f"{description}\n\n{note}".strip(),
        }
        return definition
    parameters = tool.get("parameters")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        parameters = {"type": "object", "properties": {}}
    definition = {"name": anthropic_name, "input_schema": parameters}
    if description:
        definition["description"] = description
    return definition


def _anthropic_tool_name(plan: _ToolPlan, name: str, namespace: str | None) -> str:
    known = plan.by_codex.get((name, namespace))
    if known is None:
        # A call recorded under another grouping than today's tool list: match the bare name
        # when that is unambiguous, so history and tools keep agreeing.
        same_name = [anthropic_name for (codex_name, _), anthropic_name in plan.by_codex.items() if codex_name == name]
        known = same_name[0] if len(same_name) == 1 else None
    return known if known is not None else _sanitize_name(_qualified(name, namespace))


def request_info(body: Mapping[str, Any], upstream_model: str) -> RequestInfo:
    """What `translate_response` / `StreamTranslator` need from the request (tool names, echo fields)."""
    plan = _plan_tools(body)
    tool_choice = body.get("tool_choice", "auto")
    if _is_named_choice(tool_choice):
        tool_choice = {"type": tool_choice["type"], "name": tool_choice["name"]}
    elif tool_choice not in ("auto", "none", "required"):
        tool_choice = "auto"
    return RequestInfo(
        upstream_model=upstream_model,
        tools=dict(plan.by_anthropic),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        tool_choice=tool_choice,
    )


def _is_named_choice(choice: Any) -> bool:
    return (
        isinstance(choice, dict)
        and choice.get("type") in ("function", "custom")
        and isinstance(choice.get("name"), str)
    )


# --------------------------------------------------------------------------------------------
# Request: content


def _text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def _parse_data_url(url: str) -> tuple[str, str, bool] | None:
    """(media type, payload, is_base64) of a data: URL."""
    match = _DATA_URL.match(url)
    if not match:
        return None
    return (match.group(1) or "text/plain").lower(), match.group(4), bool(match.group(3))


def _image_block(part: Mapping[str, Any]) -> JSON:
    url = part.get("image_url")
    if isinstance(url, str) and url.startswith("data:"):
        parsed = _parse_data_url(url)
        if parsed and parsed[2] and parsed[0] in _IMAGE_MEDIA_TYPES:
            return {"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}
        media = parsed[0] if parsed else "unknown"
        return _text_block(f"[an image was attached here; its format ({media}) cannot be passed to this model]")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return _text_block("[an image was attached here by file id; it cannot be passed to this model]")


def _file_block(part: Mapping[str, Any]) -> JSON:
    filename = _str(part.get("filename")) or None
    data = part.get("file_data")
    if isinstance(data, str) and data:
        parsed = _parse_data_url(data) if data.startswith("data:") else ("application/pdf", data, True)
        if parsed and parsed[0] == "application/pdf" and parsed[2]:
            block: JSON = {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": parsed[1]},
            }
            if filename:
                block["title"] = filename
            return block
        if parsed and parsed[0].startswith("text/"):
            try:
                text = base64.b64decode(parsed[1]).decode("utf-8") if parsed[2] else parsed[1]
            except (binascii.Error, UnicodeDecodeError):
                text = ""
            if text:
                block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
                if filename:
                    block["title"] = filename
                return block
    url = part.get("file_url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "document", "source": {"type": "url", "url": url}}
    return _text_block(
        f"[a file{f' ({filename})' if filename else ''} was attached here; it cannot be passed to this model]"
    )


def _content_blocks(content: Any) -> list[JSON]:
    """Responses message content (string or parts) → Anthropic user/assistant blocks, no empty text."""
    # Anthropic refuses a text block that is empty or only whitespace ("text content blocks must
    # contain non-whitespace text"), so such parts are left out.
    if isinstance(content, str):
        return [_text_block(content)] if content.strip() else []
    blocks: list[JSON] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            if isinstance(part.get("text"), str) and part["text"].strip():
                blocks.append(_text_block(part["text"]))
        elif kind == "refusal":
            if isinstance(part.get("refusal"), str) and part["refusal"].strip():
                blocks.append(_text_block(part["refusal"]))
        elif kind == "input_image":
            blocks.append(_image_block(part))
        elif kind == "input_file":
            blocks.append(_file_block(part))
    return blocks


def _tool_result_content(output: Any) -> str | list[JSON]:
    if isinstance(output, str):
        return output or _EMPTY_TOOL_OUTPUT
    blocks = [block for block in _content_blocks(output) if block["type"] in ("text", "image")]
    if not blocks and output is not None and not isinstance(output, list):
        return json.dumps(output)
    return blocks or _EMPTY_TOOL_OUTPUT


def _tool_use_id(call_id: Any) -> str:
    cleaned = _TOOL_ID_BAD_CHARS.sub("_", call_id) if isinstance(call_id, str) else ""
    return cleaned or "call_unknown"


def _tool_use_input(arguments: Any) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        # Claude's tool input must be an object; keep what the model wrote so the history stays honest.
        return {"_unparsed_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _replay_blocks(payload: Mapping[str, Any] | None) -> list[JSON]:
    """The thinking blocks inside one of our envelopes, exactly as Claude returned them."""
    blocks: list[JSON] = []
    for block in (payload or {}).get("blocks") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str) and block.get("signature"):
            blocks.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return blocks


# --------------------------------------------------------------------------------------------
# Request: conversation


def _conversation(
    body: Mapping[str, Any], plan: _ToolPlan, provider_name: str, upstream_model: str
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
                    block["text"] for block in _content_blocks(item.get("content")) if block["type"] == "text"
                )
                if text.strip():
                    system.append(text)
            elif role == "assistant":
                add("assistant", [b for b in _content_blocks(item.get("content")) if b["type"] == "text"])
            else:
                add("user", _content_blocks(item.get("content")))
        elif kind in ("function_call", "custom_tool_call"):
            namespace = _str(item.get("namespace")) or None
            name = _str(item.get("name"), "unknown_tool")
            arguments = (
                {"input": _str(item.get("input"))}
                if kind == "custom_tool_call"
                else _tool_use_input(item.get("arguments"))
            )
            add(
                "assistant",
                [
                    {
                        "type": "tool_use",
                        "id": _tool_use_id(item.get("call_id")),
                        "name": _anthropic_tool_name(plan, name, namespace),
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
                        "tool_use_id": _tool_use_id(item.get("call_id")),
                        "content": _tool_result_content(item.get("output")),
                    }
                ],
            )
        elif kind == "reasoning":
            # Only our own envelope, for this provider and model, goes back to Claude; OpenAI's
            # encrypted reasoning and other providers' records are dropped.
            add(
                "assistant",
                _replay_blocks(open_reasoning(item.get("encrypted_content"), provider_name, upstream_model)),
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
        return [_text_block(header), *content]
    return [_text_block(f"{header}\n{content}")]


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
        repaired.insert(0, {"role": "user", "content": [_text_block("(The conversation so far follows.)")]})
    if not repaired:
        repaired.append({"role": "user", "content": [_text_block("(No input was given.)")]})
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


def _tool_choice(choice: Any, plan: _ToolPlan, parallel: bool) -> JSON | None:
    result: JSON
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        result = {"type": "any"}
    elif _is_named_choice(choice):
        namespace = _str(choice.get("namespace")) or None
        result = {"type": "tool", "name": _anthropic_tool_name(plan, choice["name"], namespace)}
        if result["name"] not in plan.by_anthropic:
            result = {"type": "auto"}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools" and choice.get("mode") == "required":
        result = {"type": "any"}  # Claude cannot narrow the set; it can still be made to call one
    else:
        result = {"type": "auto"}
    if not parallel:
        result["disable_parallel_tool_use"] = True
    return result


def build_request(body: Mapping[str, Any], upstream_model: str, options: TranslateOptions) -> JSON:
    """A Responses request body (as Codex sends it) → an Anthropic Messages request body."""
    plan = _plan_tools(body)
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
        request["system"] = [_text_block(text) for text in system]

    tool_choice: JSON | None = None
    if plan.definitions:
        request["tools"] = plan.definitions
        tool_choice = _tool_choice(body.get("tool_choice", "auto"), plan, body.get("parallel_tool_calls") is not False)
        request["tool_choice"] = tool_choice
    forced_tool = tool_choice is not None and tool_choice["type"] in ("any", "tool")

    explicit_max = body.get("max_output_tokens")
    explicit_max = explicit_max if isinstance(explicit_max, int) and explicit_max > 0 else None
    max_tokens = explicit_max or options.default_max_tokens
    reasoning = _dict(body.get("reasoning"))
    effort = _str(reasoning.get("effort")) or None
    thinking: JSON | None = None

    if effort is not None and _uses_adaptive_thinking(upstream_model):
        mapped = "low" if effort == "none" else _adaptive_effort(effort, upstream_model)
        output_config["effort"] = mapped
        # Forced tool use skips thinking anyway, and some models refuse the combination.
        if effort != "none" and not forced_tool:
            thinking = {"type": "adaptive", "display": "summarized"}
            if explicit_max is None:
                max_tokens = options.default_max_tokens + _ADAPTIVE_ALLOWANCE.get(mapped, 8192)
    elif effort in _BUDGETS:
        budget = _BUDGETS[effort]
        if explicit_max is None:
            max_tokens = max(
                options.default_max_tokens, min(budget + options.default_max_tokens, _BUDGET_MODEL_MAX_TOKENS)
            )
        # Leave the answer at least as much room as the smallest budget, but when the cap is too
        # small for that, the smallest budget Claude takes still fits under it (budget < max_tokens).
        budget = min(budget, max_tokens - _MIN_BUDGET)
        if budget < _MIN_BUDGET < max_tokens:
            budget = _MIN_BUDGET
        if forced_tool:
            logger.debug("manual thinking left off: tool_choice forces a tool")
        elif not _turn_starts_with_thinking(messages):
            logger.debug("manual thinking left off: the tool loop did not start with a replayable thinking block")
        elif budget >= _MIN_BUDGET:
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


# --------------------------------------------------------------------------------------------
# Answers: streamed


class StreamDecoder:
    """Anthropic's SSE bytes (any chunking) → decoded event dicts."""

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[JSON]:
        events: list[JSON] = []
        for name, data in self._parser.feed(chunk):
            if not data.strip():
                continue
            try:
                event = json.loads(data)
            except ValueError:
                # A garbled event cannot be skipped silently (it may be text): fail the answer.
                logger.warning("undecodable Anthropic stream event %r", data[:200])
                event = {"type": "error", "error": {"type": "api_error", "message": "undecodable stream event"}}
            if isinstance(event, dict):
                event.setdefault("type", name)
                events.append(event)
        return events


@dataclasses.dataclass
class _OpenBlock:
    kind: str  # text | thinking | redacted | call
    output_index: int
    item_id: str
    text: list[str] = dataclasses.field(default_factory=list)
    signature: str = ""
    data: str = ""
    summary_open: bool = False
    call_id: str = ""
    name: str = ""
    custom: bool = False
    custom_stream: InputStringStream | None = None
    streamed: list[str] = dataclasses.field(default_factory=list)
    opened: bool = True  # a text block is announced only once it holds non-whitespace text


class StreamTranslator:
    """Anthropic stream events in, Responses stream events out, one event at a time."""

    def __init__(self, ctx: ResponseContext, info: RequestInfo | None = None) -> None:
        self.ctx = ctx
        self.info = info
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self._sequence = 0
        self._started = False
        self._blocks: dict[int, _OpenBlock] = {}
        self._done: dict[int, JSON] = {}
        self._next_output = 0
        self._counter = _UsageCounter()
        self._stop_reason: str | None = None
        self._stop_details: Any = None

    # -- plumbing

    def _emit(self, out: list[JSON], event: JSON) -> None:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        out.append(event)

    def _start(self, out: list[JSON]) -> None:
        if self._started:
            return
        self._started = True
        shell = _response_object(self.ctx, self.info, "in_progress", [], None)
        self._emit(out, {"type": "response.created", "response": shell})
        self._emit(out, {"type": "response.in_progress", "response": dict(shell)})

    def _output(self) -> list[JSON]:
        return [self._done[index] for index in sorted(self._done)]

    def _finish_item(self, out: list[JSON], output_index: int, item: JSON) -> None:
        self._done[output_index] = item
        self._emit(out, {"type": "response.output_item.done", "output_index": output_index, "item": item})

    def _open_item(self, kind: str, prefix: str) -> _OpenBlock:
        block = _OpenBlock(kind, self._next_output, _new_id(prefix))
        self._next_output += 1
        return block

    # -- events

    def feed(self, event: Mapping[str, Any]) -> list[JSON]:
        out: list[JSON] = []
        if self.outcome is not None:
            return out  # the answer is over; late events change nothing
        kind = event.get("type")
        if kind == "message_start":
            self._start(out)
            self._counter.update(_dict(event.get("message")).get("usage"))
        elif kind == "content_block_start":
            self._start(out)
            self._block_start(out, event)
        elif kind == "content_block_delta":
            self._block_delta(out, event)
        elif kind == "content_block_stop":
            self._block_stop(out, event)
        elif kind == "message_delta":
            delta = _dict(event.get("delta"))
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
                self._stop_details = delta.get("stop_details")
            self._counter.update(event.get("usage"))
        elif kind == "message_stop":
            self._start(out)
            self._complete(out)
        elif kind == "error":
            self._start(out)
            code, text = _stream_error(event.get("error"))
            self._fail(out, code, text)
        return out

    def finish(self) -> list[JSON]:
        out: list[JSON] = []
        if self.outcome is None:
            self._start(out)
            self._fail(out, "server_error", "The Anthropic stream ended before the answer was complete.")
        return out

    # -- content blocks

    def _block_start(self, out: list[JSON], event: Mapping[str, Any]) -> None:
        index = event.get("index")
        content = _dict(event.get("content_block"))
        kind = content.get("type")
        if not isinstance(index, int):
            return
        if kind == "text":
            block = _OpenBlock("text", -1, _new_id("msg"), opened=False)
            self._blocks[index] = block
            if isinstance(content.get("text"), str) and content["text"]:
                self._text_delta(out, block, content["text"])
        elif kind in ("thinking", "redacted_thinking"):
            block = self._open_item("thinking" if kind == "thinking" else "redacted", "rs")
            if kind == "redacted_thinking":
                block.data = _str(content.get("data"))
            else:
                block.signature = _str(content.get("signature"))
            self._emit(
                out,
                {
                    "type": "response.output_item.added",
                    "output_index": block.output_index,
                    "item": {"type": "reasoning", "id": block.item_id, "summary": []},
                },
            )
            self._blocks[index] = block
            if kind == "thinking" and isinstance(content.get("thinking"), str) and content["thinking"]:
                self._thinking_delta(out, block, content["thinking"])
        elif kind == "tool_use":
            name = str(content.get("name") or "")
            ref = (self.info.tools.get(name) if self.info else None) or ToolRef("function", name)
            custom = ref.kind == "custom"
            block = self._open_item("call", "ctc" if custom else "fc")
            block.call_id, block.name, block.custom = str(content.get("id") or _new_id("toolu")), name, custom
            block.custom_stream = InputStringStream() if custom else None
            item = _call_item(block.item_id, block.call_id, name, "", self.info)
            if not custom:
                item["status"] = "in_progress"
            self._emit(out, {"type": "response.output_item.added", "output_index": block.output_index, "item": item})
            self._blocks[index] = block
        # Server tool blocks (web search results and the like) are never requested: ignored.

    def _open_text(self, out: list[JSON], block: _OpenBlock) -> None:
        block.opened, block.output_index = True, self._next_output
        self._next_output += 1
        self._emit(
            out,
            {
                "type": "response.output_item.added",
                "output_index": block.output_index,
                "item": _message_item(block.item_id, "", "in_progress"),
            },
        )
        self._emit(
            out,
            {
                "type": "response.content_part.added",
                "output_index": block.output_index,
                "item_id": block.item_id,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        )

    def _text_delta(self, out: list[JSON], block: _OpenBlock, text: str) -> None:
        block.text.append(text)
        if not block.opened:
            # Claude may send "\n\n" as a block of its own before a tool call; as a message item
            # Codex would replay it, and Anthropic refuses whitespace-only text blocks.
            held = "".join(block.text)
            if not held.strip():
                return
            self._open_text(out, block)
            text = held
        self._emit(
            out,
            {
                "type": "response.output_text.delta",
                "output_index": block.output_index,
                "item_id": block.item_id,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _thinking_delta(self, out: list[JSON], block: _OpenBlock, text: str) -> None:
        if not block.summary_open:
            block.summary_open = True
            self._emit(
                out,
                {
                    "type": "response.reasoning_summary_part.added",
                    "output_index": block.output_index,
                    "item_id": block.item_id,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        block.text.append(text)
        self._emit(
            out,
            {
                "type": "response.reasoning_summary_text.delta",
                "output_index": block.output_index,
                "item_id": block.item_id,
                "summary_index": 0,
                "delta": text,
            },
        )

    def _call_delta(self, out: list[JSON], block: _OpenBlock, partial: str) -> None:
        block.text.append(partial)
        if block.custom_stream is not None:
            piece = block.custom_stream.feed(partial)
            if piece:
                block.streamed.append(piece)
                self._emit(
                    out,
                    {
                        "type": "response.custom_tool_call_input.delta",
                        "output_index": block.output_index,
                        "item_id": block.item_id,
                        "delta": piece,
                    },
                )
        elif partial:
            self._emit(
                out,
                {
                    "type": "response.function_call_arguments.delta",
                    "output_index": block.output_index,
                    "item_id": block.item_id,
                    "delta": partial,
                },
            )

    def _block_delta(self, out: list[JSON], event: Mapping[str, Any]) -> None:
        block = self._blocks.get(event.get("index"))  # type: ignore[arg-type]
        delta = _dict(event.get("delta"))
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text" and isinstance(delta.get("text"), str):
            if delta["text"]:
                self._text_delta(out, block, delta["text"])
        elif kind == "thinking_delta" and block.kind == "thinking" and isinstance(delta.get("thinking"), str):
            if delta["thinking"]:
                self._thinking_delta(out, block, delta["thinking"])
        elif kind == "signature_delta" and block.kind == "thinking" and isinstance(delta.get("signature"), str):
            block.signature += delta["signature"]
        elif kind == "input_json_delta" and block.kind == "call" and isinstance(delta.get("partial_json"), str):
            self._call_delta(out, block, delta["partial_json"])

    def _block_stop(self, out: list[JSON], event: Mapping[str, Any]) -> None:
        index = event.get("index")
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is not None:
            self._close(out, block)

    def _close(self, out: list[JSON], block: _OpenBlock) -> None:
        if block.kind == "text":
            self._close_text(out, block)
        elif block.kind in ("thinking", "redacted"):
            self._close_reasoning(out, block)
        else:
            self._close_call(out, block)

    def _close_text(self, out: list[JSON], block: _OpenBlock) -> None:
        if not block.opened:
            return  # only whitespace came: no message item
        text = "".join(block.text)
        common = {"output_index": block.output_index, "item_id": block.item_id, "content_index": 0}
        self._emit(out, {"type": "response.output_text.done", **common, "text": text, "logprobs": []})
        self._emit(
            out,
            {
                "type": "response.content_part.done",
                **common,
                "part": {"type": "output_text", "text": text, "annotations": []},
            },
        )
        self._finish_item(out, block.output_index, _message_item(block.item_id, text))

    def _close_reasoning(self, out: list[JSON], block: _OpenBlock) -> None:
        text = "".join(block.text)
        if block.summary_open:
            common = {"output_index": block.output_index, "item_id": block.item_id, "summary_index": 0}
            self._emit(out, {"type": "response.reasoning_summary_text.done", **common, "text": text})
            self._emit(
                out,
                {
                    "type": "response.reasoning_summary_part.done",
                    **common,
                    "part": {"type": "summary_text", "text": text},
                },
            )
        record: JSON | None
        if block.kind == "redacted":
            record = {"type": "redacted_thinking", "data": block.data} if block.data else None
        else:
            # Without its signature a thinking block cannot be replayed: keep only the summary.
            record = {"type": "thinking", "thinking": text, "signature": block.signature} if block.signature else None
        self._finish_item(out, block.output_index, _reasoning_item(block.item_id, text, record, self.ctx, self.info))

    def _close_call(self, out: list[JSON], block: _OpenBlock) -> None:
        arguments = "".join(block.text)
        common = {"output_index": block.output_index, "item_id": block.item_id}
        if block.custom:
            payload = _custom_input(arguments)
            self._emit(out, {"type": "response.custom_tool_call_input.done", **common, "input": payload})
        else:
            if not arguments.strip():
                # A call without arguments streams none; Codex still wants a JSON object.
                arguments = "{}"
                self._emit(out, {"type": "response.function_call_arguments.delta", **common, "delta": arguments})
            payload = arguments
            self._emit(out, {"type": "response.function_call_arguments.done", **common, "arguments": payload})
        self._finish_item(
            out, block.output_index, _call_item(block.item_id, block.call_id, block.name, payload, self.info)
        )

    # -- endings

    def _complete(self, out: list[JSON]) -> None:
        for index in sorted(self._blocks):
            self._close(out, self._blocks.pop(index))  # a block never stopped: close it with what it has
        if self._stop_reason == "refusal":
            partial = any(item["type"] == "message" for item in self._done.values())
            block = _OpenBlock("text", -1, _new_id("msg"), opened=False)
            self._text_delta(out, block, _refusal_text(self._stop_details, partial))
            self._close_text(out, block)
        incomplete = _incomplete_reason(self._stop_reason)
        self.outcome = "incomplete" if incomplete else "completed"
        self.usage = self._counter.normalised()
        response = _response_object(
            self.ctx,
            self.info,
            self.outcome,
            self._output(),
            self._counter.responses(),
            incomplete=incomplete,
        )
        self._emit(out, {"type": f"response.{self.outcome}", "response": response})

    def _fail(self, out: list[JSON], code: str, message: str) -> None:
        self.outcome = "failed"
        # Input already processed is billed even when the answer breaks off.
        self.usage = self._counter.normalised() if self._counter.seen else None
        response = _response_object(
            self.ctx,
            self.info,
            "failed",
            self._output(),
            self._counter.responses() if self._counter.seen else None,
            error={"code": code, "message": message},
        )
        self._emit(out, {"type": "response.failed", "response": response})


# --------------------------------------------------------------------------------------------
# Errors


def _error_fields(error: Any) -> tuple[str, str]:
    if isinstance(error, dict):
        kind = _str(error.get("type"))
        message = _str(error.get("message"))
        return kind, message
    return "", ""


def _stream_error(error: Any) -> tuple[str, str]:
    """An Anthropic error object met inside a 200 stream → (response.failed code, message)."""
    kind, message = _error_fields(error)
    if kind == "rate_limit_error":
        return "rate_limit_exceeded", f"Anthropic rate limit: {message or 'too many requests'}"
    if kind == "billing_error":
        return "insufficient_quota", f"The gateway's Anthropic account cannot be billed: {message}"
    if kind in ("authentication_error", "permission_error"):
        return "server_error", "Anthropic refused the gateway's provider credentials; tell the gateway operator."
    if kind in ("invalid_request_error", "request_too_large") and _CONTEXT_TOO_LONG.search(message):
        return "context_length_exceeded", f"Anthropic: {message}"
    if kind in ("invalid_request_error", "request_too_large"):
        return "invalid_prompt", f"Anthropic refused the request: {message}"
    if kind == "overloaded_error":
        return "server_error", f"Anthropic is overloaded: {message or 'try again shortly'}"
    return "server_error", f"Anthropic error ({kind or 'unknown'}): {message or 'no details'}"


def _error_body(message: str, kind: str, code: str) -> JSON:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def translate_error(status: int, provider_body: bytes) -> tuple[int, JSON]:
    """An Anthropic error answer → (status for Codex, OpenAI-shaped error body)."""
    try:
        document = json.loads(provider_body) if provider_body else {}
    except ValueError:
        document = {}
    kind, message = _error_fields(document.get("error") if isinstance(document, dict) else None)
    detail = message or f"HTTP {status}"
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        # The client never sees the provider's own words here: nothing about the key leaves.
        return 502, _error_body(
            f"Anthropic refused the gateway's provider credentials ({kind or status}). "
            "This is a gateway configuration problem; tell the gateway operator.",
            "server_error",
            "upstream_auth_failed",
        )
    if status == 429 or kind == "rate_limit_error":
        return 429, _error_body(f"Anthropic rate limit reached: {detail}", "rate_limit_exceeded", "rate_limit_exceeded")
    if status == 402 or kind == "billing_error":
        return 429, _error_body(
            f"The gateway's Anthropic account cannot be billed: {detail}. Tell the gateway operator.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if status == 529 or kind == "overloaded_error":
        return 503, _error_body(f"Anthropic is overloaded: {detail}", "server_error", "server_error")
    if status == 413 or kind == "request_too_large":
        if _CONTEXT_TOO_LONG.search(message):
            return 400, _error_body(f"Anthropic: {detail}", "invalid_request_error", "context_length_exceeded")
        return 400, _error_body(
            f"The request is too large for Anthropic: {detail}", "invalid_request_error", "request_too_large"
        )
    if status == 404 or kind == "not_found_error":
        return 404, _error_body(
            f"Anthropic does not know this model or path: {detail}", "invalid_request_error", "model_not_found"
        )
    if 400 <= status < 500:
        if _CONTEXT_TOO_LONG.search(message):
            return 400, _error_body(f"Anthropic: {detail}", "invalid_request_error", "context_length_exceeded")
        return 400, _error_body(
            f"Anthropic refused the request: {detail}", "invalid_request_error", "invalid_request_error"
        )
    if status == 504 or kind == "timeout_error":
        return 504, _error_body(f"Anthropic timed out: {detail}", "server_error", "server_error")
    return 502, _error_body(f"Anthropic server error: {detail}", "server_error", "server_error")
