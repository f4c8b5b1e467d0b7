"""AWS Bedrock Converse / ConverseStream: pure translators between the OpenAI Responses API (what
Codex speaks) and Bedrock's Converse wire format, plus SigV4 signing and the event-stream decoder.

How the gateway calls it (everything below is pure except `sign_request`, which reads the clock):

    from codexgate.providers import bedrock
    from codexgate.providers.base import ResponseContext, TranslateOptions

    options = TranslateOptions(provider_name="bedrock-prod", default_max_tokens=8192)
    converse = bedrock.build_request(codex_body, upstream_model, options)
    # options.dropped_tools now names tools Bedrock cannot serve (web_search, tool_search, ...)
    raw = json.dumps(converse, separators=(",", ":")).encode()
    base = route_base_url or bedrock.base_url(region)    # https://bedrock-runtime.{region}.amazonaws.com
    url, fixed = bedrock.request_target(base, upstream_model, stream=codex_body.get("stream", False))
    headers = dict(fixed)
    # either IAM credentials (SigV4; the lead resolves access key / secret / session token) ...
    headers |= bedrock.sign_request(url, raw, region, access_key, secret_key, session_token)
    # ... or a Bedrock API key (AWS_BEARER_TOKEN_BEDROCK style):
    # headers |= bedrock.auth_headers(api_key)
    # Send exactly `url` (the model id is percent-encoded in it and the signature covers that exact
    # path) and exactly `raw` (the signature covers the body hash); drop every client credential
    # header. Headers added after signing are fine as long as they are not in SignedHeaders
    # (host, content-type, x-amz-date, x-amz-security-token). Sign each attempt anew (the
    # signature is only valid for ~5 minutes and covers region and host).

    tools = bedrock.tool_names(codex_body)   # which Bedrock tool names are custom / namespaced
    ctx = ResponseContext(response_id, model=codex_body["model"], provider_name=..., created_at=...)

    # Non-streamed (POST .../converse): status 200 → JSON body
    response = bedrock.translate_response(json.loads(body), ctx, tools=tools, upstream_model=upstream_model)
    # Streamed (POST .../converse-stream): status 200 → content-type application/vnd.amazon.eventstream
    decoder = bedrock.EventStreamDecoder()
    translator = bedrock.StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    for chunk in upstream_chunks:                   # arbitrary byte boundaries
        for event in decoder.feed(chunk):
            for out in translator.feed(event):
                send_sse(out)                       # codexgate.sse.encode_event(out)
    for out in translator.finish():                 # at the end of the upstream body (b"")
        send_sse(out)
    translator.usage, translator.outcome            # for accounting
    # Any non-200 status (streamed or not): the body is JSON {"message": ...}
    status, error_body = bedrock.translate_error(upstream_status, upstream_body_bytes)

`tools=` and `upstream_model=` are optional keywords beyond the shared interface: without
`tools`, only `apply_patch` is recognised as a custom (freeform) tool and namespaced tools come
back under their flat Bedrock name; without `upstream_model`, reasoning envelopes are sealed for
`ctx.model`, while `build_request` opens them for `upstream_model`, so thinking is replayed only
when the two names agree.

Decoded stream events are dicts shaped like botocore's parsed ConverseStream events:
`{"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}}`, exceptions as
`{"throttlingException": {"message": "..."}}`. Blobs (reasoning `redactedContent`) stay base64
text, exactly as they travel in Bedrock's JSON.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from codexgate.providers.base import (
    ResponseContext,
    TranslateOptions,
    Usage,
    open_reasoning,
    response_object,
    sampling_params,
    seal_reasoning,
    stop_sequences,
)
from codexgate.providers.base import input_items as _input_items
from codexgate.providers.jsonstring import InputStringStream, without_lone_surrogates

__all__ = [
    "EventStreamDecoder",
    "StreamTranslator",
    "ToolNames",
    "auth_headers",
    "base_url",
    "build_request",
    "region_from_url",
    "request_target",
    "sign_request",
    "tool_names",
    "translate_error",
    "translate_response",
]

logger = logging.getLogger(__name__)

SIGNING_NAME = "bedrock"  # the service model's signingName (the host says bedrock-runtime)
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

# Bedrock's own limits (botocore service model: ToolName, ToolUseId patterns).
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
_DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_DATA_URL = re.compile(r"data:([^;,]+)?(?:;[^,]*)?;base64,(.*)", re.DOTALL)

# Claude on Bedrock: extended thinking exists from Claude 3.7 on; prompt caching (cachePoint) from
# 3.5 Haiku / 3.7 Sonnet on. Older Claude models reject both, so the model id decides.
_CLAUDE_THINKING = re.compile(r"claude-(?:3-7-|(?:opus|sonnet|haiku)-[4-9])")
_CLAUDE_CACHING = re.compile(r"claude-(?:3-7-|3-5-haiku|(?:opus|sonnet|haiku)-[4-9])")
# reasoning.effort → Claude thinking budget. maxTokens is raised to budget + 8000 so the answer
# keeps room after thinking; xhigh stays at 32000 in total, the smallest ceiling of any thinking
# Claude model (Opus 4 / 4.1).
_CLAUDE_BUDGETS = {"minimal": 1024, "low": 4000, "medium": 8000, "high": 16000, "xhigh": 24000}
_ANSWER_ROOM = 8000
_MIN_BUDGET = 1024  # Anthropic's minimum budget_tokens
_NOVA_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}

_CONTEXT_TOO_LONG = re.compile(
    r"too long|too many (?:input )?tokens|context (?:length|window|limit)|exceeds? (?:the )?(?:maximum|max)"
    r"(?: allowed)? (?:number of )?(?:input )?tokens|maximum context|input length",
    re.IGNORECASE,
)

_STOP_COMPLETED = {"end_turn", "tool_use", "stop_sequence", "guardrail_intervened", "content_filtered"}
_STOP_INCOMPLETE = {"max_tokens", "model_context_window_exceeded"}
_STOP_FAILED = {
    "malformed_model_output": "the model produced malformed output",
    "malformed_tool_use": "the model produced a malformed tool call",
}
# Mid-stream exceptions (ConverseStream's error events) → Responses error code.
_STREAM_ERRORS = {
    "throttlingException": "rate_limit_exceeded",
    "serviceUnavailableException": "server_error",
    "internalServerException": "server_error",
    "modelStreamErrorException": "server_error",
    "validationException": "invalid_prompt",
}


# --------------------------------------------------------------------------------------------
# Target, auth
# --------------------------------------------------------------------------------------------


def base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def region_from_url(url: str) -> str | None:
    """The region of a standard Bedrock runtime URL (incl. FIPS), else None (say it in the policy)."""
    match = re.match(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$", urlsplit(url).hostname or "")
    return match.group(1) if match else None


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """URL for Converse or ConverseStream, and the fixed headers (no credentials).

    The model id is a URI label: Bedrock ids carry ':' (`...-v1:0`) and ARNs carry ':' and '/',
    so it is percent-encoded whole, as botocore does; sign and send this exact URL.
    """
    operation = "converse-stream" if stream else "converse"
    url = f"{base_url.rstrip('/')}/model/{quote(upstream_model, safe='')}/{operation}"
    accept = EVENTSTREAM_CONTENT_TYPE if stream else "application/json"
    return url, {"content-type": "application/json", "accept": accept}


def auth_headers(secret: str) -> dict[str, str]:
    """A Bedrock API key (the service model's httpBearerAuth scheme) travels as a bearer token."""
    return {"authorization": f"Bearer {secret}"}


def sign_request(
    url: str, body: bytes, region: str, access_key: str, secret_key: str, session_token: str | None = None
) -> dict[str, str]:
    """SigV4 headers for POSTing `body` to `url` (authorization, x-amz-date, content-type, and
    x-amz-security-token for temporary credentials). Reads the clock; otherwise pure."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(access_key, secret_key, session_token), SIGNING_NAME, region).add_auth(request)
    return {name.lower(): str(value) for name, value in request.headers.items()}


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ToolDef:
    wire: str  # the name Bedrock sees
    name: str
    namespace: str | None
    custom: bool
    description: str
    schema: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ToolNames:
    """Bedrock tool name → (namespace, Codex name, is a custom tool), from the request's tools."""

    by_wire: Mapping[str, tuple[str | None, str, bool]] = dataclasses.field(default_factory=dict)


def _wire_name(namespace: str | None, name: str) -> str:
    """The Bedrock tool name for a Codex tool: Codex's own flat spelling (namespace + name, e.g.
    `mcp__docs__` + `search`) when Bedrock accepts it, else a sanitized name with a digest so two
    different names never collide."""
    raw = name
    if namespace:
        raw = namespace + name if namespace.endswith(("_", "-")) else f"{namespace}__{name}"
    if _TOOL_NAME.fullmatch(raw):
        return raw
    clean = re.sub(r"[^a-zA-Z0-9_-]", "_", raw)
    return f"{clean[:55]}_{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def _tool_use_id(call_id: object) -> str:
    """A Bedrock toolUseId for a Codex call_id; the same function serves toolUse and toolResult,
    so pairs stay paired even when an id from another provider needs rewriting."""
    text = call_id if isinstance(call_id, str) else ""
    if _TOOL_USE_ID.fullmatch(text):
        return text
    clean = re.sub(r"[^a-zA-Z0-9_.:-]", "_", text)
    return f"{clean[:50]}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _raw_tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tools from `tools` and from Codex's `additional_tools` input items."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            tools.extend(tool for tool in item.get("tools") or [] if isinstance(tool, dict))
    return tools


def _custom_description(tool: Mapping[str, Any]) -> str:
    description = str(tool.get("description") or "")
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        # The model only sees a string parameter; the grammar tells it what the string must be.
        syntax = fmt.get("syntax") or "lark"
        description += (
            f"\n\nPass the raw input as the `input` string. It must match this {syntax} grammar:\n"
            f"```{syntax}\n{fmt['definition']}\n```"
        )
    elif description:
        description += "\n\nPass the raw input as the `input` string."
    return description


def _collect_tools(body: Mapping[str, Any]) -> tuple[list[_ToolDef], list[str]]:
    tools: list[_ToolDef] = []
    dropped: list[str] = []
    seen: set[str] = set()

    def add(tool: Mapping[str, Any], namespace: str | None) -> None:
        kind = tool.get("type")
        name = tool.get("name")
        if kind not in ("function", "custom") or not isinstance(name, str) or not name:
            label = name if isinstance(name, str) and name else str(kind)
            dropped.append(f"{namespace}{label}" if namespace else label)
            return
        wire = _wire_name(namespace, name)
        if wire in seen:  # Bedrock rejects duplicate tool names; the first definition wins
            return
        seen.add(wire)
        if kind == "custom":
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The raw input for the tool."}},
                "required": ["input"],
                "additionalProperties": False,
            }
            description = _custom_description(tool)
        else:
            parameters = tool.get("parameters")
            schema = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
            description = str(tool.get("description") or "")
        tools.append(_ToolDef(wire, name, namespace, kind == "custom", description, schema))

    for tool in _raw_tools(body):
        if tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            for inner in tool.get("tools") or []:
                if isinstance(inner, dict):
                    add(inner, tool["name"])
        else:
            add(tool, None)
    return tools, dropped


def tool_names(body: Mapping[str, Any]) -> ToolNames:
    """What the response translators need to know about the request's tools."""
    tools, _ = _collect_tools(body)
    return ToolNames({tool.wire: (tool.namespace, tool.name, tool.custom) for tool in tools})


def _resolve_tool(wire: str, tools: ToolNames | None) -> tuple[str | None, str, bool]:
    if tools is not None and wire in tools.by_wire:
        return tools.by_wire[wire]
    # Without the request's tools, Codex's one freeform tool is still recognised by name.
    return None, wire, wire == "apply_patch"


# --------------------------------------------------------------------------------------------
# Request: Responses → Converse
# --------------------------------------------------------------------------------------------


def _image_block(url: str) -> dict[str, Any]:
    """An image content block, or a text block saying why the image could not be passed.

    Converse takes images only as inline bytes or from S3; fetching an http(s) URL would be I/O,
    which a translator must not do.
    """
    match = _DATA_URL.fullmatch(url.strip())
    if match:
        mime = (match.group(1) or "").lower()
        fmt = _IMAGE_FORMATS.get(mime.removeprefix("image/")) if mime.startswith("image/") else None
        data = re.sub(r"\s+", "", match.group(2))
        if fmt:
            return {"image": {"format": fmt, "source": {"bytes": data}}}
        return {"text": f"[image omitted: Bedrock does not accept the image type {mime or 'unknown'}]"}
    if url.startswith("s3://"):
        extension = url.rsplit(".", 1)[-1].lower() if "." in url.rsplit("/", 1)[-1] else ""
        fmt = _IMAGE_FORMATS.get(extension)
        if fmt:
            return {"image": {"format": fmt, "source": {"s3Location": {"uri": url}}}}
    shown = url if len(url) <= 200 else url[:200] + "..."
    return {"text": f"[image at {shown} omitted: Bedrock accepts only inline (data URL) or S3 images]"}


def _file_block(part: Mapping[str, Any]) -> dict[str, Any]:
    filename = str(part.get("filename") or "document")
    data = part.get("file_data")
    match = _DATA_URL.fullmatch(data.strip()) if isinstance(data, str) else None
    if match:
        mime = (match.group(1) or "").lower()
        fmt = _DOCUMENT_FORMATS.get(mime)
        if fmt is None and "." in filename:
            extension = filename.rsplit(".", 1)[-1].lower()
            fmt = extension if extension in _DOCUMENT_FORMATS.values() else None
        if fmt:
            # Bedrock's document name allows letters, digits, single spaces, - ( ) [ ] only.
            stem = filename.rsplit(".", 1)[0] if "." in filename else filename
            name = re.sub(r"\s+", " ", re.sub(r"[^A-Za-z0-9\-()\[\] ]", "-", stem)).strip() or "document"
            return {
                "document": {"format": fmt, "name": name[:200], "source": {"bytes": re.sub(r"\s+", "", match.group(2))}}
            }
    return {"text": f"[file {filename} omitted: Bedrock accepts only inline documents of supported types]"}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """Responses message content → Converse content blocks (text, image, document). Blank text is
    left out: Bedrock refuses it ("text content blocks must contain non-whitespace text")."""
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            if part["text"].strip():
                blocks.append({"text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str) and part["refusal"].strip():
            blocks.append({"text": part["refusal"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                blocks.append(_image_block(url))
            else:
                blocks.append({"text": "[image omitted: uploaded files are not available to Bedrock]"})
        elif kind == "input_file":
            blocks.append(_file_block(part))
    return blocks


def _tool_result_content(output: Any) -> list[dict[str, Any]]:
    if isinstance(output, list):
        blocks = [block for block in _content_blocks(output) if "text" in block or "image" in block]
    else:
        text = output if isinstance(output, str) else json.dumps(output)
        blocks = [{"text": text}] if text else []
    # Bedrock rejects blank text blocks; an empty result still has to answer its toolUse.
    return blocks or [{"text": "(no output)"}]


def _replayed_reasoning(item: Mapping[str, Any], provider_name: str, model: str) -> dict[str, Any] | None:
    """The reasoningContent block inside an envelope made for this provider and model.

    Only signed or redacted reasoning is replayed: that is what Claude checks and needs back to
    continue a tool loop with thinking; unsigned reasoning (e.g. DeepSeek) is not asked for.
    """
    payload = open_reasoning(item.get("encrypted_content"), provider_name, model)
    block = payload.get("block") if payload else None
    if not isinstance(block, dict):
        return None
    text_block = block.get("reasoningText")
    if isinstance(text_block, dict) and isinstance(text_block.get("signature"), str):
        if isinstance(text_block.get("text"), str):
            return {
                "reasoningContent": {
                    "reasoningText": {"text": text_block["text"], "signature": text_block["signature"]}
                }
            }
        return None
    redacted = block.get("redactedContent")
    if isinstance(redacted, str) and redacted:
        return {"reasoningContent": {"redactedContent": redacted}}
    return None


class _Conversation:
    """Accumulates Converse messages, merging consecutive turns of one role (Converse requires
    user and assistant to alternate)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def _tool_block_as_text(block: dict[str, Any]) -> dict[str, Any]:
    if "toolUse" in block:
        use = block["toolUse"]
        return {"text": f"[called tool {use['name']} (call {use['toolUseId']}) with input {json.dumps(use['input'])}]"}
    result = block["toolResult"]
    texts = [part["text"] for part in result["content"] if "text" in part]
    return {"text": f"[result of call {result['toolUseId']}]\n" + "\n".join(texts)}


def _repair_tool_pairs(messages: list[dict[str, Any]], tools_available: bool) -> list[dict[str, Any]]:
    """Make every toolUse answered by a toolResult in the next user message and every toolResult
    answer a toolUse of the previous assistant message, as Bedrock requires. Without a toolConfig
    Bedrock refuses tool blocks altogether, so then they become text."""
    if not tools_available:
        for message in messages:
            message["content"] = [
                _tool_block_as_text(block) if "toolUse" in block or "toolResult" in block else block
                for block in message["content"]
            ]
        return messages
    repaired: list[dict[str, Any]] = []
    pending: list[str] = []  # toolUse ids of the previous assistant message
    for message in messages:
        if message["role"] == "assistant":
            if pending:  # an assistant turn follows unanswered calls: answer them first
                repaired.append({"role": "user", "content": _missing_results(pending)})
            pending = [block["toolUse"]["toolUseId"] for block in message["content"] if "toolUse" in block]
            repaired.append(message)
            continue
        answered = set(pending)
        results, others = [], []
        for block in message["content"]:
            if "toolResult" in block:
                if block["toolResult"]["toolUseId"] in answered:
                    answered.discard(block["toolResult"]["toolUseId"])
                    results.append(block)
                else:
                    others.append(_tool_block_as_text(block))  # an orphan result
            else:
                others.append(block)
        missing = [call for call in pending if call in answered]
        # Tool results lead the user turn (Claude requires it); text the user added follows.
        message["content"] = results + _missing_results(missing) + others
        pending = []
        repaired.append(message)
    if pending:
        repaired.append({"role": "user", "content": _missing_results(pending)})
    return repaired


def _missing_results(call_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"toolResult": {"toolUseId": call, "content": [{"text": "(no result was recorded for this call)"}]}}
        for call in call_ids
    ]


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for message in messages for block in message["content"])


def _mid_tool_loop_without_reasoning(messages: list[dict[str, Any]]) -> bool:
    """Claude with thinking refuses a tool loop whose last assistant turn does not start with its
    reasoning block (e.g. the block was dropped because it came from another model)."""
    if len(messages) < 2 or messages[-1]["role"] != "user" or messages[-2]["role"] != "assistant":
        return False
    if not any("toolResult" in block for block in messages[-1]["content"]):
        return False
    first = messages[-2]["content"][0] if messages[-2]["content"] else {}
    return "reasoningContent" not in first


def _tool_choice(choice: Any, tools: list[_ToolDef]) -> tuple[dict[str, Any] | None, list[_ToolDef], bool]:
    """(Converse toolChoice or None for the default, the tools to offer, whether tools are off)."""
    if choice == "none":
        return None, [], True
    if choice == "required":
        return {"any": {}}, tools, False
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            wire = _wire_name(
                choice.get("namespace") if isinstance(choice.get("namespace"), str) else None, choice["name"]
            )
            if any(tool.wire == wire for tool in tools):
                return {"tool": {"name": wire}}, tools, False
        elif kind == "allowed_tools":
            allowed = {
                _wire_name(None, entry["name"])
                for entry in choice.get("tools") or []
                if isinstance(entry, dict) and isinstance(entry.get("name"), str)
            }
            kept = [tool for tool in tools if tool.wire in allowed or tool.name in allowed]
            mode = choice.get("mode")
            return ({"any": {}} if mode == "required" and kept else None), kept, False
    return None, tools, False  # "auto" (Bedrock's default) and anything unknown


def _reasoning_fields(
    model: str, effort: Any, max_tokens: int, explicit_max: bool
) -> tuple[dict[str, Any], int | None]:
    """(additionalModelRequestFields for reasoning, maxTokens to send) for `reasoning.effort`."""
    lowered = model.lower()
    if not isinstance(effort, str) or effort == "none":
        return {}, max_tokens
    if _CLAUDE_THINKING.search(lowered) and effort in _CLAUDE_BUDGETS:
        budget = _CLAUDE_BUDGETS[effort]
        if explicit_max:
            # The client's limit is respected; thinking shrinks to fit below it, or stays off.
            budget = min(budget, max_tokens - _MIN_BUDGET)
            if budget < _MIN_BUDGET:
                return {}, max_tokens
            return {"thinking": {"type": "enabled", "budget_tokens": budget}}, max_tokens
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}, max(max_tokens, budget + _ANSWER_ROOM)
    if "nova-2" in lowered and effort in _NOVA_EFFORT:
        level = _NOVA_EFFORT[effort]
        if level == "high" and explicit_max:
            level = "medium"  # high takes no maxTokens, and a client's (or a hard budget's) cap must hold
        fields = {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": level}}
        # Nova 2 at high effort takes no maxTokens (nor temperature / topP); it sets them itself.
        return fields, (None if level == "high" else max_tokens)
    return {}, max_tokens


def _strip_final_assistant(messages: list[dict[str, Any]]) -> None:
    """A final (prefill) assistant message may not end in whitespace (Claude refuses it): trim its
    last text block, dropping the block, and the message, when nothing is left."""
    content = messages[-1]["content"]
    if content and isinstance(content[-1].get("text"), str):
        text = content[-1]["text"].rstrip()
        if text:
            content[-1] = {**content[-1], "text": text}
        else:
            content.pop()
    if not content:
        messages.pop()


def build_request(body: dict[str, Any], upstream_model: str, options: TranslateOptions) -> dict[str, Any]:
    """A Responses API request body → a Converse / ConverseStream request body (no modelId: that
    travels in the URL, see `request_target`)."""
    system: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        system.append({"text": instructions})

    conversation = _Conversation()
    for item in _input_items(body):
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role in ("developer", "system"):
                # One system block per text part; images have no place in Converse's system.
                system.extend(block for block in _content_blocks(item.get("content")) if block.get("text", "").strip())
            elif role in ("user", "assistant"):
                conversation.add(role, _content_blocks(item.get("content")))
        elif kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):  # Bedrock's toolUse input must be an object
                arguments = {"arguments": item.get("arguments")}
            namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
            use = {
                "toolUseId": _tool_use_id(item.get("call_id")),
                "name": _wire_name(namespace, str(item.get("name"))),
                "input": arguments,
            }
            conversation.add("assistant", [{"toolUse": use}])
        elif kind == "custom_tool_call":
            namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
            use = {
                "toolUseId": _tool_use_id(item.get("call_id")),
                "name": _wire_name(namespace, str(item.get("name"))),
                "input": {"input": str(item.get("input") or "")},
            }
            conversation.add("assistant", [{"toolUse": use}])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            result = {
                "toolUseId": _tool_use_id(item.get("call_id")),
                "content": _tool_result_content(item.get("output")),
            }
            conversation.add("user", [{"toolResult": result}])
        elif kind == "reasoning":
            block = _replayed_reasoning(item, options.provider_name, upstream_model)
            if block is not None:
                conversation.add("assistant", [block])
        # Everything else (additional_tools, compaction, web_search_call, item_reference, ...)
        # has no Converse equivalent; additional_tools was read by _collect_tools.

    tools, dropped = _collect_tools(body)
    for name in dropped:
        if name not in options.dropped_tools:
            options.dropped_tools.append(name)
    tool_choice, offered, tools_off = _tool_choice(body.get("tool_choice", "auto"), tools)
    if tools_off:
        offered = []

    messages = _repair_tool_pairs(conversation.messages, bool(offered))
    if not messages or messages[0]["role"] != "user":
        # Converse conversations open with a user turn.
        messages.insert(0, {"role": "user", "content": [{"text": "(conversation start)"}]})
    if messages[-1]["role"] == "assistant":
        _strip_final_assistant(messages)

    explicit_max = isinstance(body.get("max_output_tokens"), int) and body["max_output_tokens"] > 0
    max_tokens = body["max_output_tokens"] if explicit_max else options.default_max_tokens
    forced_tool = tool_choice is not None and ("any" in tool_choice or "tool" in tool_choice)
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    additional, send_max = _reasoning_fields(upstream_model, reasoning.get("effort"), max_tokens, explicit_max)
    if "thinking" in additional and (forced_tool or _mid_tool_loop_without_reasoning(messages)):
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
        specs: list[dict[str, Any]] = []
        for tool in offered:
            spec: dict[str, Any] = {"name": tool.wire, "inputSchema": {"json": tool.schema}}
            if tool.description:
                spec["description"] = tool.description
            specs.append({"toolSpec": spec})
        request["toolConfig"] = {"tools": specs}
        if tool_choice is not None:
            request["toolConfig"]["toolChoice"] = tool_choice
    if additional:
        request["additionalModelRequestFields"] = additional

    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        schema = text_format.get("schema")
        if isinstance(schema, dict):
            definition: dict[str, Any] = {"schema": json.dumps(schema)}
            if isinstance(text_format.get("name"), str):
                definition["name"] = text_format["name"]
            if isinstance(text_format.get("description"), str):
                definition["description"] = text_format["description"]
            request["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}

    if _CLAUDE_CACHING.search(upstream_model.lower()):
        # Codex replays the whole conversation every turn: cache points after the system prompt,
        # the tools and the newest message let the next turn read all of it from cache.
        if system:
            system.append({"cachePoint": {"type": "default"}})
        if offered:
            request["toolConfig"]["tools"].append({"cachePoint": {"type": "default"}})
        messages[-1]["content"].append({"cachePoint": {"type": "default"}})
    return request


# --------------------------------------------------------------------------------------------
# Response: Converse → Responses
# --------------------------------------------------------------------------------------------


def _usage_from_bedrock(usage: Any) -> tuple[Usage, int]:
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


def _usage_dict(usage: Usage, cache_write: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": cache_write},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _response_object(
    ctx: ResponseContext,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    *,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    return response_object(ctx, status, output, usage, error=error, incomplete=incomplete)


def _outcome_of(stop_reason: Any) -> tuple[str, dict[str, Any] | None]:
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


def _item_id(ctx: ResponseContext, prefix: str, index: int) -> str:
    return f"{prefix}_{ctx.response_id.removeprefix('resp_')}_{index}"


def _call_item(
    ctx: ResponseContext, index: int, wire: str, call_id: str, tools: ToolNames | None, payload: str, done: bool
) -> dict[str, Any]:
    namespace, name, custom = _resolve_tool(wire, tools)
    if custom:
        item: dict[str, Any] = {"type": "custom_tool_call", "id": _item_id(ctx, "ctc", index), "call_id": call_id}
        item.update(name=name, input=payload)
    else:
        item = {"type": "function_call", "id": _item_id(ctx, "fc", index), "call_id": call_id, "name": name}
        item.update(arguments=payload, status="completed" if done else "in_progress")
    if namespace:
        item["namespace"] = namespace
    return item


def _custom_input(raw: str) -> str:
    """The string a custom tool receives, from the JSON Bedrock produced for its `input` parameter."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return raw
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return without_lone_surrogates(parsed["input"])
    return raw


def _reasoning_item(
    ctx: ResponseContext, index: int, envelope_model: str, text: str, signature: str | None, redacted: str | None
) -> dict[str, Any]:
    block: dict[str, Any]
    if redacted is not None:
        block = {"redactedContent": redacted}
    else:
        block = {"reasoningText": {"text": text, **({"signature": signature} if signature else {})}}
    return {
        "type": "reasoning",
        "id": _item_id(ctx, "rs", index),
        "summary": [{"type": "summary_text", "text": text}] if text else [],
        "encrypted_content": seal_reasoning(ctx.provider_name, envelope_model, {"block": block}),
    }


def _message_item(ctx: ResponseContext, index: int, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": _item_id(ctx, "msg", index),
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else [],
    }


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    *,
    tools: ToolNames | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A Converse answer → a Responses API `response` object."""
    envelope_model = upstream_model or ctx.model
    message = (provider_body.get("output") or {}).get("message") or {}
    output: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        index = len(output)
        if isinstance(block.get("text"), str):
            if not block["text"].strip():
                continue  # whitespace alone: Codex would replay it and Bedrock refuse it
            output.append(_message_item(ctx, index, block["text"], "completed"))
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            wire = str(use.get("name"))
            raw = json.dumps(use.get("input") if use.get("input") is not None else {})
            _, _, custom = _resolve_tool(wire, tools)
            payload = _custom_input(raw) if custom else raw
            output.append(_call_item(ctx, index, wire, str(use.get("toolUseId")), tools, payload, True))
        elif isinstance(block.get("reasoningContent"), dict):
            reasoning = block["reasoningContent"]
            text_block = reasoning.get("reasoningText") if isinstance(reasoning.get("reasoningText"), dict) else {}
            redacted = reasoning.get("redactedContent") if isinstance(reasoning.get("redactedContent"), str) else None
            text: str = text_block["text"] if isinstance(text_block.get("text"), str) else ""
            signature = text_block.get("signature") if isinstance(text_block.get("signature"), str) else None
            output.append(_reasoning_item(ctx, index, envelope_model, text, signature, redacted))
    usage, cache_write = _usage_from_bedrock(provider_body.get("usage"))
    status, error = _outcome_of(provider_body.get("stopReason"))
    return _response_object(
        ctx,
        status,
        output,
        _usage_dict(usage, cache_write),
        error=error,
        incomplete="max_output_tokens" if status == "incomplete" else None,
    )


# --------------------------------------------------------------------------------------------
# Stream: AWS event-stream framing → event dicts
# --------------------------------------------------------------------------------------------


class EventStreamDecoder:
    """Feed the ConverseStream body in arbitrary chunks; get decoded events as they complete.

    Framing and checksums are botocore's (`EventStreamBuffer`). A corrupt frame ends decoding with
    one synthetic `internalServerException`, so the translator fails the response instead of
    inventing an ending.
    """

    __slots__ = ("_buffer", "_broken")

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._broken = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if self._broken or not chunk:
            return []
        self._buffer.add_data(chunk)
        events: list[dict[str, Any]] = []
        try:
            for message in self._buffer:
                event = _event_of(message)
                if event is not None:
                    events.append(event)
        except ParserError as exc:
            self._broken = True
            events.append(
                {
                    "internalServerException": {
                        "message": f"corrupt event-stream frame from Bedrock ({type(exc).__name__})"
                    }
                }
            )
        return events


def _event_of(message: EventStreamMessage) -> dict[str, Any] | None:
    headers = message.headers
    kind = headers.get(":message-type")
    try:
        payload = json.loads(message.payload) if message.payload else {}
    except ValueError:
        payload = {"message": message.payload.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {}
    if kind == "event":
        payload.pop("p", None)  # Bedrock pads event payloads with a random "p" string
        return {str(headers.get(":event-type")): payload}
    if kind == "exception":
        return {str(headers.get(":exception-type")): payload}
    if kind == "error":
        text = f"{headers.get(':error-code')}: {headers.get(':error-message')}"
        return {"internalServerException": {"message": text}}
    return None


# --------------------------------------------------------------------------------------------
# Stream: Converse events → Responses events
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Block:
    kind: str  # text / tool / reasoning
    output_index: int
    item_id: str
    text: list[str] = dataclasses.field(default_factory=list)
    wire: str = ""
    call_id: str = ""
    custom: bool = False
    custom_input: InputStringStream | None = None
    emitted: list[str] = dataclasses.field(default_factory=list)  # custom input shown so far
    signature: str | None = None
    redacted: list[bytes] = dataclasses.field(default_factory=list)
    summary_open: bool = False


class StreamTranslator:
    """ConverseStream events (as `EventStreamDecoder` yields them) → Responses stream events."""

    def __init__(
        self, ctx: ResponseContext, *, tools: ToolNames | None = None, upstream_model: str | None = None
    ) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self._tools = tools
        self._envelope_model = upstream_model or ctx.model
        self._sequence = 0
        self._started = False
        self._blocks: dict[int, _Block] = {}
        self._items: dict[int, dict[str, Any]] = {}  # finished items by output_index
        self._next_index = 0
        self._stop_reason: str | None = None
        self._cache_write = 0
        self._have_metadata = False

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, out: list[dict[str, Any]], event_type: str, **fields: Any) -> None:
        out.append({"type": event_type, "sequence_number": self._sequence, **fields})
        self._sequence += 1

    def _output(self) -> list[dict[str, Any]]:
        return [self._items[index] for index in sorted(self._items)]

    def _start(self, out: list[dict[str, Any]]) -> None:
        if self._started:
            return
        self._started = True
        response = _response_object(self.ctx, "in_progress", [], None)
        self._emit(out, "response.created", response=response)
        self._emit(out, "response.in_progress", response=response)

    def _usage_payload(self) -> dict[str, Any] | None:
        return _usage_dict(self.usage, self._cache_write) if self.usage is not None else None

    def _fail(self, out: list[dict[str, Any]], code: str, message: str) -> None:
        self.outcome = "failed"
        response = _response_object(
            self.ctx, "failed", self._output(), self._usage_payload(), error={"code": code, "message": message}
        )
        self._emit(out, "response.failed", response=response)

    # -- public ---------------------------------------------------------------------------

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.outcome is not None or not isinstance(event, dict) or not event:
            return out
        self._start(out)
        name, body = next(iter(event.items()))
        body = body if isinstance(body, dict) else {}
        if name == "contentBlockStart":
            start = body.get("start") or {}
            if isinstance(start.get("toolUse"), dict):
                self._open_tool(out, body.get("contentBlockIndex"), start["toolUse"])
        elif name == "contentBlockDelta":
            self._delta(out, body.get("contentBlockIndex"), body.get("delta") or {})
        elif name == "contentBlockStop":
            self._close(out, body.get("contentBlockIndex"))
        elif name == "messageStop":
            for index in list(self._blocks):
                self._close(out, index)
            self._stop_reason = str(body.get("stopReason"))
            self._maybe_finish(out)
        elif name == "metadata":
            self.usage, self._cache_write = _usage_from_bedrock(body.get("usage"))
            self._have_metadata = True
            self._maybe_finish(out)
        elif name in _STREAM_ERRORS or name.endswith("Exception"):
            self._stream_error(out, name, body)
        # messageStart and events this gateway has no use for (citations, images) pass silently.
        return out

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.outcome is not None:
            return out
        self._start(out)
        if self._stop_reason is not None:
            message = "The Bedrock stream ended before its metadata event; the usage of this turn is unknown."
        else:
            message = "The Bedrock stream ended early, before the model finished its answer."
        self._fail(out, "server_error", message)
        return out

    # -- events ---------------------------------------------------------------------------

    def _stream_error(self, out: list[dict[str, Any]], name: str, body: Mapping[str, Any]) -> None:
        detail = str(body.get("message") or body.get("originalMessage") or name)
        code = _STREAM_ERRORS.get(name, "server_error")
        if name == "validationException" and _CONTEXT_TOO_LONG.search(detail):
            code = "context_length_exceeded"
        if code == "rate_limit_exceeded":
            message = f"Bedrock is throttling this gateway's requests: {detail}"
        elif code == "context_length_exceeded":
            message = f"The conversation is too long for this model on Bedrock: {detail}"
        else:
            message = f"Bedrock failed mid-stream ({name}): {detail}"
        self._fail(out, code, message)

    def _new_block(self, kind: str, index: int, prefix: str) -> _Block:
        output_index = self._next_index
        self._next_index += 1
        block = _Block(kind, output_index, _item_id(self.ctx, prefix, output_index))
        self._blocks[index] = block
        return block

    def _open_tool(self, out: list[dict[str, Any]], index: Any, start: Mapping[str, Any]) -> None:
        if not isinstance(index, int) or index in self._blocks:
            return
        wire, call_id = str(start.get("name")), str(start.get("toolUseId"))
        _, _, custom = _resolve_tool(wire, self._tools)
        block = self._new_block("tool", index, "ctc" if custom else "fc")
        block.wire, block.call_id, block.custom = wire, call_id, custom
        block.custom_input = InputStringStream() if custom else None
        item = _call_item(self.ctx, block.output_index, wire, call_id, self._tools, "", False)
        self._emit(out, "response.output_item.added", output_index=block.output_index, item=item)

    def _delta(self, out: list[dict[str, Any]], index: Any, delta: Mapping[str, Any]) -> None:
        if not isinstance(index, int):
            return
        block = self._blocks.get(index)
        if isinstance(delta.get("text"), str):
            piece = delta["text"]
            if block is None:
                # Held until it has non-whitespace text: a whitespace-only message item would be
                # replayed by Codex and refused by Bedrock ("text content blocks must contain
                # non-whitespace text"). A held block that stays blank is dropped.
                block = _Block("held", -1, "")
                self._blocks[index] = block
            if block.kind == "held" and piece:
                block.text.append(piece)
                held = "".join(block.text)
                if not held.strip():
                    return
                block = self._new_block("text", index, "msg")
                block.text.append(held)
                item = _message_item(self.ctx, block.output_index, "", "in_progress")
                self._emit(out, "response.output_item.added", output_index=block.output_index, item=item)
                self._emit(
                    out,
                    "response.content_part.added",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                )
                piece = held
            elif block.kind == "text" and piece:
                block.text.append(piece)
            if block.kind == "text" and piece:
                self._emit(
                    out,
                    "response.output_text.delta",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
        elif isinstance(delta.get("toolUse"), dict):
            piece = delta["toolUse"].get("input")
            if block is None or block.kind != "tool" or not isinstance(piece, str) or not piece:
                return
            block.text.append(piece)
            if block.custom_input is not None:
                shown = block.custom_input.feed(piece)
                if shown:
                    block.emitted.append(shown)
                    self._emit(
                        out,
                        "response.custom_tool_call_input.delta",
                        output_index=block.output_index,
                        item_id=block.item_id,
                        delta=shown,
                    )
            else:
                self._emit(
                    out,
                    "response.function_call_arguments.delta",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    delta=piece,
                )
        elif isinstance(delta.get("reasoningContent"), dict):
            self._reasoning_delta(out, index, block, delta["reasoningContent"])

    def _reasoning_delta(
        self, out: list[dict[str, Any]], index: int, block: _Block | None, delta: Mapping[str, Any]
    ) -> None:
        if block is None:
            block = self._new_block("reasoning", index, "rs")
            item = {"type": "reasoning", "id": block.item_id, "summary": []}
            self._emit(out, "response.output_item.added", output_index=block.output_index, item=item)
        if block.kind != "reasoning":
            return
        text = delta.get("text")
        if isinstance(text, str) and text:
            if not block.summary_open:
                block.summary_open = True
                self._emit(
                    out,
                    "response.reasoning_summary_part.added",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            block.text.append(text)
            self._emit(
                out,
                "response.reasoning_summary_text.delta",
                output_index=block.output_index,
                item_id=block.item_id,
                summary_index=0,
                delta=text,
            )
        if isinstance(delta.get("signature"), str):
            block.signature = (block.signature or "") + delta["signature"]
        if isinstance(delta.get("redactedContent"), str):
            try:
                block.redacted.append(base64.b64decode(delta["redactedContent"], validate=True))
            except (binascii.Error, ValueError):
                logger.warning("Bedrock sent redactedContent that is not base64; dropped")

    def _close(self, out: list[dict[str, Any]], index: Any) -> None:
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is None or block.kind == "held":
            return
        text = "".join(block.text)
        position = {"output_index": block.output_index, "item_id": block.item_id}
        if block.kind == "text":
            self._emit(out, "response.output_text.done", **position, content_index=0, text=text, logprobs=[])
            part = {"type": "output_text", "text": text, "annotations": []}
            self._emit(out, "response.content_part.done", **position, content_index=0, part=part)
            item = _message_item(self.ctx, block.output_index, text, "completed")
        elif block.kind == "tool":
            if block.custom:
                value = _custom_input(text)
                shown = "".join(block.emitted)
                if value.startswith(shown) and len(value) > len(shown):
                    # Whatever the incremental decoder held back (or could not read) comes now.
                    self._emit(out, "response.custom_tool_call_input.delta", **position, delta=value[len(shown) :])
                self._emit(out, "response.custom_tool_call_input.done", **position, input=value)
                item = _call_item(self.ctx, block.output_index, block.wire, block.call_id, self._tools, value, True)
            else:
                arguments = text or "{}"
                if not text:  # a call without arguments still streams its (empty object) arguments
                    self._emit(out, "response.function_call_arguments.delta", **position, delta=arguments)
                self._emit(out, "response.function_call_arguments.done", **position, arguments=arguments)
                item = _call_item(self.ctx, block.output_index, block.wire, block.call_id, self._tools, arguments, True)
        else:
            if block.summary_open:
                self._emit(out, "response.reasoning_summary_text.done", **position, summary_index=0, text=text)
                part = {"type": "summary_text", "text": text}
                self._emit(out, "response.reasoning_summary_part.done", **position, summary_index=0, part=part)
            redacted = base64.b64encode(b"".join(block.redacted)).decode() if block.redacted else None
            item = _reasoning_item(self.ctx, block.output_index, self._envelope_model, text, block.signature, redacted)
        self._items[block.output_index] = item
        self._emit(out, "response.output_item.done", output_index=block.output_index, item=item)

    def _maybe_finish(self, out: list[dict[str, Any]]) -> None:
        # Bedrock sends messageStop (the stop reason) and then metadata (usage): the turn is over
        # only when both have arrived.
        if self._stop_reason is None or not self._have_metadata:
            return
        status, error = _outcome_of(self._stop_reason)
        if status == "failed" and error is not None:
            self._fail(out, error["code"], error["message"])
            return
        self.outcome = status
        incomplete = "max_output_tokens" if status == "incomplete" else None
        response = _response_object(self.ctx, status, self._output(), self._usage_payload(), incomplete=incomplete)
        self._emit(out, f"response.{status}", response=response)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, error_type: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": error_type, "code": code, "param": None}}


def translate_error(status: int, provider_body: bytes) -> tuple[int, dict[str, Any]]:
    """A Bedrock error answer (`{"message": ...}`, the exception name only in a header) → the
    status and OpenAI-shaped body for Codex."""
    try:
        parsed = json.loads(provider_body) if provider_body else {}
    except ValueError:
        parsed = {}
    parsed = parsed if isinstance(parsed, dict) else {}
    detail = parsed.get("message") or parsed.get("Message") or ""
    if not isinstance(detail, str) or not detail:
        detail = provider_body.decode("utf-8", "replace")[:300] if provider_body else ""
    kind = str(parsed.get("__type") or "").rsplit("#", 1)[-1]

    if status in (401, 403) or (status == 400 and "security token" in detail.lower()):
        # Never echo Bedrock's text here: it is about the gateway's credentials, not the client's.
        return _error(
            502,
            "upstream_auth_failed",
            f"Bedrock refused the gateway's provider credentials (HTTP {status}); "
            "the gateway operator must fix the AWS credentials or model access for this route.",
            "server_error",
        )
    if status == 429:
        return _error(
            429, "rate_limit_exceeded", f"Bedrock is throttling this gateway: {detail}", "rate_limit_exceeded"
        )
    if status == 400 and _CONTEXT_TOO_LONG.search(detail):
        return _error(
            400,
            "context_length_exceeded",
            f"The conversation is too long for this model on Bedrock: {detail}",
            "invalid_request_error",
        )
    if status in (400, 413, 422):
        return _error(400, "invalid_request_error", f"Bedrock rejected the request: {detail}", "invalid_request_error")
    if status == 404:
        return _error(
            502,
            "upstream_model_not_found",
            f"Bedrock does not serve the model this route points at: {detail}",
            "server_error",
        )
    if status == 503 or kind == "ServiceUnavailableException":
        return _error(503, "server_error", f"Bedrock is unavailable or overloaded: {detail}", "server_error")
    if status == 408:
        return _error(504, "server_error", f"The model on Bedrock timed out: {detail}", "server_error")
    return _error(502, "server_error", f"Bedrock failed (HTTP {status}): {detail}", "server_error")
