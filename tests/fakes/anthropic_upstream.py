"""A fake Anthropic Messages API: validates what it receives against the anthropic SDK's request
types (strictly: unknown keys anywhere are errors) and against the rules the real API enforces
beyond the types, records every request, and answers in the real wire format — streamed (SSE)
or not — from replies a test scripts.

Pieces usable without the server: `request_errors(body, model_known=...)` (all request checks),
`build_message(reply, model)` and `message_events(message)` (what the API sends for a reply,
each streamed event validated against `RawMessageStreamEvent`), `encode_sse(events)`.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import hashlib
import hmac
import json
import re
import types
import typing
import uuid
from typing import Any, NotRequired, Required

from aiohttp import web
from anthropic.types import Message, MessageCreateParams, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter, ValidationError
from typing_extensions import is_typeddict

from fakes.sdk_validation import assert_no_extras
from fakes.threaded import ThreadedApp

API_KEY = "sk-ant-fake-upstream-key"
ANTHROPIC_VERSION = "2023-06-01"

_SIGNING_KEY = b"fake-anthropic-thinking-signatures"
_REDACTED_PREFIX = "EmwKAhgBEgy-fake-redacted-"
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")

# What this fake knows about models, written from Anthropic's model documentation rather than
# from the translator: thinking forms accepted, output ceiling, effort levels.
_MODELS: dict[str, dict[str, Any]] = {
    "claude-3-7-sonnet-20250219": {"thinking": {"enabled"}, "max_output": 64000, "efforts": set()},
    "claude-opus-4-1": {"thinking": {"enabled"}, "max_output": 32000, "efforts": set()},
    "claude-sonnet-4-5": {"thinking": {"enabled"}, "max_output": 64000, "efforts": set()},
    "claude-haiku-4-5-20251001": {"thinking": {"enabled"}, "max_output": 64000, "efforts": set()},
    "claude-sonnet-4-6": {
        "thinking": {"enabled", "adaptive"},
        "max_output": 64000,
        "efforts": {"low", "medium", "high", "max"},
    },
    "claude-opus-4-7": {
        "thinking": {"adaptive"},
        "max_output": 128000,
        "efforts": {"low", "medium", "high", "xhigh", "max"},
    },
}

_PARAMS: TypeAdapter[Any] = TypeAdapter(MessageCreateParams)
_STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


# --------------------------------------------------------------------------------------------
# Strict walk of a request against the SDK's TypedDicts (TypeAdapter ignores unknown keys).

_HINTS: dict[type, tuple[dict[str, Any], frozenset[str]]] = {}


def _hints(typed_dict: type) -> dict[str, Any]:
    return _typed_dict_info(typed_dict)[0]


def _required(typed_dict: type) -> frozenset[str]:
    return _typed_dict_info(typed_dict)[1]


def _typed_dict_info(typed_dict: type) -> tuple[dict[str, Any], frozenset[str]]:
    """(key -> type, required keys). The SDK's modules use `from __future__ import annotations`,
    so `__required_keys__` cannot see `Required[...]`: read it from the resolved hints instead."""
    if typed_dict not in _HINTS:
        hints: dict[str, Any] = {}
        required: set[str] = set()
        for key, annotation in typing.get_type_hints(typed_dict, include_extras=True).items():
            while typing.get_origin(annotation) in (Required, NotRequired):
                if typing.get_origin(annotation) is Required:
                    required.add(key)
                annotation = typing.get_args(annotation)[0]
            hints[key] = annotation
        if getattr(typed_dict, "__total__", True):
            required |= set(hints) - {k for k in hints if k in getattr(typed_dict, "__optional_keys__", ())}
        _HINTS[typed_dict] = (hints, frozenset(required))
    return _HINTS[typed_dict]


def _literal_keys_agree(typed_dict: type, value: dict[str, Any]) -> bool:
    """False when a Literal-typed key of the TypedDict contradicts the value (a discriminator)."""
    for key, annotation in _hints(typed_dict).items():
        if key in value and typing.get_origin(annotation) is typing.Literal:
            if value[key] not in typing.get_args(annotation):
                return False
        elif key not in value and key in _required(typed_dict) and _is_literal(annotation):
            return False
    return True


def _is_literal(annotation: Any) -> bool:
    return typing.get_origin(annotation) is typing.Literal


def _walk(value: Any, annotation: Any, path: str, errors: list[str]) -> None:
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is object:
        return
    if origin is typing.Annotated:
        _walk(value, typing.get_args(annotation)[0], path, errors)
        return
    if origin in (typing.Union, types.UnionType):
        alternatives = list(typing.get_args(annotation))
        if isinstance(value, dict):
            agreeing = [a for a in alternatives if not is_typeddict(a) or _literal_keys_agree(a, value)]
            if not agreeing:
                errors.append(f"{path}: matches none of {[getattr(a, '__name__', str(a)) for a in alternatives]}")
                return
            alternatives = agreeing
        best: list[str] | None = None
        for alternative in alternatives:
            attempt: list[str] = []
            _walk(value, alternative, path, attempt)
            if not attempt:
                return
            if best is None or len(attempt) < len(best):
                best = attempt
        errors.extend(best or [f"{path}: no alternative fits"])
        return
    if annotation is type(None):
        if value is not None:
            errors.append(f"{path}: expected null")
        return
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            errors.append(f"{path}: {value!r} not one of {typing.get_args(annotation)}")
        return
    if is_typeddict(annotation):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected object ({annotation.__name__})")
            return
        hints = _hints(annotation)
        extra_allowed = (getattr(annotation, "__pydantic_config__", None) or {}).get("extra") == "allow"
        for key in value:
            if key not in hints and not extra_allowed:
                errors.append(f"{path}: unknown key {key!r} for {annotation.__name__}")
        for key in _required(annotation):
            if key not in value:
                errors.append(f"{path}: missing {key!r} for {annotation.__name__}")
        for key, item in value.items():
            if key in hints:
                _walk(item, hints[key], f"{path}.{key}", errors)
        return
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence) or annotation in (list,):
        if not isinstance(value, list):
            errors.append(f"{path}: expected array")
            return
        (item_type,) = typing.get_args(annotation) or (Any,)
        for index, item in enumerate(value):
            _walk(item, item_type, f"{path}[{index}]", errors)
        return
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected object")
            return
        args = typing.get_args(annotation)
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(f"{path}: non-string key")
            if args:
                _walk(item, args[1], f"{path}.{key}", errors)
        return
    if annotation is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected boolean")
        return
    if annotation is int:
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected integer")
        return
    if annotation is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{path}: expected number")
        return
    if annotation is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected string")
        return
    if isinstance(annotation, type):
        try:
            if not isinstance(value, annotation):
                errors.append(f"{path}: expected {annotation.__name__}")
        except TypeError:
            pass
        return
    # Anything else (protocols such as IO[bytes]) cannot be sent as JSON: refuse it.
    errors.append(f"{path}: cannot check against {annotation!r}")


def sdk_errors(body: dict[str, Any]) -> list[str]:
    """The body against `MessageCreateParams`: the SDK's pydantic validation plus a strict key walk."""
    errors: list[str] = []
    try:
        _PARAMS.validate_python(body)
    except ValidationError as exc:
        errors.append(f"SDK validation: {exc}")
    _walk(body, MessageCreateParams, "$", errors)
    return errors


# --------------------------------------------------------------------------------------------
# Rules the API enforces beyond the types.


def sign_thinking(thinking: str) -> str:
    return base64.b64encode(hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()).decode()


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _turn_start(messages: list[dict[str, Any]]) -> int | None:
    """Index of the assistant message that began the assistant turn the final tool results answer."""
    index = len(messages) - 2
    start: int | None = None
    while index >= 0 and messages[index].get("role") == "assistant":
        start = index
        before = _blocks(messages[index - 1].get("content")) if index >= 1 else []
        if not before or not all(b.get("type") == "tool_result" for b in before):
            break
        index -= 2
    return start


def api_rule_errors(body: dict[str, Any], model_known: bool = True) -> list[str]:
    errors: list[str] = []
    model = _MODELS.get(body.get("model", ""), {}) if model_known else {}
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    thinking = body.get("thinking") or {}
    max_tokens = body.get("max_tokens", 0)

    if model and max_tokens > model["max_output"]:
        errors.append(f"max_tokens: {max_tokens} > {model['max_output']}, the maximum for {body['model']}")
    if not messages:
        errors.append("messages: at least one message is required")
    elif messages[0].get("role") != "user":
        errors.append("messages.0: the first message must use the user role")
    for index in range(1, len(messages)):
        if messages[index].get("role") == messages[index - 1].get("role"):
            errors.append(f"messages.{index}: roles must alternate (the translator merges same-role turns)")

    # tools
    names = [tool.get("name") for tool in tools]
    for name in names:
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            errors.append(f"tools: invalid tool name {name!r}")
    if len(set(names)) != len(names):
        errors.append("tools: tool names must be unique")
    tool_choice = body.get("tool_choice")
    if tool_choice and not tools:
        errors.append("tool_choice: may only be specified while providing tools")
    if tool_choice and tool_choice.get("type") == "tool" and tool_choice.get("name") not in names:
        errors.append(f"tool_choice: unknown tool {tool_choice.get('name')!r}")

    # thinking configuration
    kind = thinking.get("type")
    if kind and model and kind in ("enabled", "adaptive") and kind not in model["thinking"]:
        errors.append(f"thinking.type.{kind} is not supported for this model")
    effort = (body.get("output_config") or {}).get("effort")
    if effort and model and effort not in model["efforts"]:
        errors.append(f"output_config.effort: {effort!r} is not supported for this model")
    if kind == "enabled":
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024:
            errors.append("thinking.budget_tokens: must be at least 1024")
        if budget >= max_tokens:
            errors.append("max_tokens must be greater than thinking.budget_tokens")
        if tool_choice and tool_choice.get("type") not in ("auto", "none"):
            errors.append("Thinking may not be enabled when tool_choice forces tool use.")

    # content
    cache_marks = 0
    system = body.get("system")
    for block in _blocks(system) if isinstance(system, list) else []:
        if not block.get("text"):
            errors.append("system: text content blocks must be non-empty")
        cache_marks += "cache_control" in block
    cache_marks += sum("cache_control" in tool for tool in tools)
    seen_tool_ids: set[str] = set()
    uses_tools = False
    for index, message in enumerate(messages):
        blocks = _blocks(message.get("content"))
        where = f"messages.{index}"
        if not blocks:
            errors.append(f"{where}: content must be non-empty")
        for block in blocks:
            cache_marks += "cache_control" in block
            kind_ = block.get("type")
            if kind_ == "text" and not block.get("text"):
                errors.append(f"{where}: text content blocks must be non-empty")
            elif kind_ == "text" and not str(block.get("text")).strip():
                errors.append(f"{where}: text content blocks must contain non-whitespace text")
            if kind_ == "image" and block.get("source", {}).get("type") == "base64":
                try:
                    base64.b64decode(block["source"]["data"], validate=True)
                except (binascii.Error, ValueError):
                    errors.append(f"{where}: image data is not valid base64")
            if kind_ in ("tool_use", "tool_result"):
                uses_tools = True
            if kind_ == "tool_result":
                for inner in _blocks(block.get("content")) if isinstance(block.get("content"), list) else []:
                    if inner.get("type") == "text" and not inner.get("text"):
                        errors.append(f"{where}: text content blocks must be non-empty")
            if kind_ == "tool_use":
                tool_id = block.get("id", "")
                if not _TOOL_ID.match(tool_id):
                    errors.append(f"{where}: tool_use id {tool_id!r} does not match {_TOOL_ID.pattern}")
                if tool_id in seen_tool_ids:
                    errors.append(f"{where}: tool_use ids must be unique ({tool_id})")
                seen_tool_ids.add(tool_id)
            if kind_ == "thinking" and block.get("signature") != sign_thinking(block.get("thinking", "")):
                errors.append(f"{where}: Invalid `signature` in `thinking` block")
            if kind_ == "redacted_thinking" and not str(block.get("data", "")).startswith(_REDACTED_PREFIX):
                errors.append(f"{where}: Invalid `data` in `redacted_thinking` block")
        thinking_positions = [i for i, b in enumerate(blocks) if b.get("type") in ("thinking", "redacted_thinking")]
        if message.get("role") == "assistant" and thinking_positions and thinking_positions[0] != 0:
            errors.append(f"{where}: if an assistant message contains any thinking blocks, the first block must be one")
        if message.get("role") == "user":
            results = [i for i, b in enumerate(blocks) if b.get("type") == "tool_result"]
            if results and results != list(range(len(results))):
                errors.append(f"{where}: tool_result blocks must come first in the user message")
            previous = _blocks(messages[index - 1].get("content")) if index else []
            asked = {b.get("id") for b in previous if b.get("type") == "tool_use"}
            answered = {blocks[i].get("tool_use_id") for i in results}
            if answered - asked:
                errors.append(
                    f"{where}: unexpected tool_use_id in tool_result blocks: {sorted(map(str, answered - asked))}"
                )
        if message.get("role") == "assistant":
            asked = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
            following = _blocks(messages[index + 1].get("content")) if index + 1 < len(messages) else []
            answered = {b.get("tool_use_id") for b in following if b.get("type") == "tool_result"}
            if asked - answered:
                errors.append(
                    f"{where}: tool_use ids were found without tool_result blocks immediately after: "
                    f"{sorted(map(str, asked - answered))}"
                )
    if uses_tools and not tools:
        errors.append("Requests which include `tool_use` or `tool_result` blocks must define tools.")
    if cache_marks > 4:
        errors.append(f"A maximum of 4 blocks with cache_control may be provided. Found {cache_marks}.")

    last = messages[-1] if messages else {}
    last_blocks = _blocks(last.get("content"))
    final_text = str(last_blocks[-1].get("text")) if last_blocks and last_blocks[-1].get("type") == "text" else ""
    if last.get("role") == "assistant" and final_text != final_text.rstrip():
        errors.append("final assistant content cannot end with trailing whitespace")
    last_has_thinking = any(b.get("type") in ("thinking", "redacted_thinking") for b in last_blocks)
    if kind not in ("enabled", "adaptive") and last.get("role") == "assistant" and last_has_thinking:
        errors.append(
            "When thinking is disabled, an `assistant` message in the final position cannot contain `thinking`."
        )
    if kind == "enabled" and last.get("role") == "user" and any(b.get("type") == "tool_result" for b in last_blocks):
        start = _turn_start(messages)
        first = _blocks(messages[start].get("content"))[:1] if start is not None else []
        if not first or first[0].get("type") not in ("thinking", "redacted_thinking"):
            errors.append(
                "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
                "(preceeding the lastmost set of `tool_use` and `tool_result` blocks)."
            )
    return errors


def request_errors(body: dict[str, Any], model_known: bool = True) -> list[str]:
    """Everything the fake (and, as far as we know, the real API) refuses in a request body."""
    return sdk_errors(body) + api_rule_errors(body, model_known)


# --------------------------------------------------------------------------------------------
# Answers


@dataclasses.dataclass
class Reply:
    """One scripted answer. Content blocks are written without ids or signatures; the fake adds them."""

    content: list[dict[str, Any]] = dataclasses.field(
        default_factory=lambda: [{"type": "text", "text": "Hello from the fake Anthropic."}]
    )
    stop_reason: str = "end_turn"
    stop_details: dict[str, Any] | None = None
    input_tokens: int = 21
    cache_read_input_tokens: int = 5
    cache_creation_input_tokens: int = 3
    output_tokens: int = 40
    thinking_tokens: int | None = None  # None: not reported
    status: int = 200
    error: dict[str, Any] | None = None  # {"type": ..., "message": ...} for a non-200 answer or mid-stream
    error_after: int | None = None  # streamed: an error event after this many events
    cut_after: int | None = None  # streamed: drop the connection after this many events
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _complete_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block["type"]
    if kind == "thinking":
        return {"type": "thinking", "thinking": block["thinking"], "signature": sign_thinking(block["thinking"])}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": _REDACTED_PREFIX + uuid.uuid4().hex}
    if kind == "tool_use":
        return {
            "type": "tool_use",
            "id": block.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
            "name": block["name"],
            "input": block.get("input", {}),
        }
    return {"type": "text", "text": block["text"], "citations": None}


def _usage(reply: Reply, output_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": reply.cache_creation_input_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if reply.thinking_tokens is not None:
        usage["output_tokens_details"] = {"thinking_tokens": reply.thinking_tokens}
    return usage


def valid_message(data: dict[str, Any]) -> Message:
    parsed = Message.model_validate(data)
    assert_no_extras(parsed)
    return parsed


def build_message(reply: Reply, model: str) -> dict[str, Any]:
    """The non-streamed answer for a reply, SDK-validated."""
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_complete_block(block) for block in reply.content],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(reply, reply.output_tokens),
    }
    if reply.stop_details is not None:
        message["stop_details"] = reply.stop_details
    valid_message(message)
    return message


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def valid_stream_event(event: dict[str, Any]) -> None:
    if event["type"] == "ping":
        assert event == {"type": "ping"}
    elif event["type"] == "error":
        assert_no_extras(ErrorResponse.model_validate(event))
    else:
        assert_no_extras(_STREAM_EVENT.validate_python(event))


def message_events(message: dict[str, Any], reply: Reply | None = None) -> list[dict[str, Any]]:
    """The stream the API sends for a complete message, every event SDK-validated."""
    reply = reply or Reply()
    start = dict(message, content=[], stop_reason=None, stop_sequence=None, usage=_usage(reply, 1))
    start.pop("stop_details", None)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            events += [
                {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                for piece in _pieces(block["text"], 7)
            ]
        elif kind == "thinking":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            events += [
                {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}}
                for piece in _pieces(block["thinking"], 9)
            ]
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                }
            )
        elif kind == "redacted_thinking":
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        elif kind == "tool_use":
            events.append({"type": "content_block_start", "index": index, "content_block": dict(block, input={})})
            arguments = json.dumps(block["input"]) if block["input"] else ""
            events += [
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                }
                for p in _pieces(arguments, 5)
            ]
        events.append({"type": "content_block_stop", "index": index})
    final_usage = {
        key: value
        for key, value in _usage(reply, message["usage"]["output_tokens"]).items()
        if key not in ("cache_creation", "service_tier")
    }
    delta: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    if message.get("stop_details") is not None:
        delta["stop_details"] = message["stop_details"]
    events.append({"type": "message_delta", "delta": delta, "usage": final_usage})
    events.append({"type": "message_stop"})
    for event in events:
        valid_stream_event(event)
    return events


def encode_sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode() for event in events
    )


def _error_document(kind: str, message: str) -> dict[str, Any]:
    document = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:20]}",
    }
    assert_no_extras(ErrorResponse.model_validate(document))
    return document


# --------------------------------------------------------------------------------------------
# The server


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class FakeAnthropic(ThreadedApp):
    """Runs on its own event loop thread; `url` is its API root (POST {url}/v1/messages)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.invalid: list[list[str]] = []
        self.replies: list[Reply] = []  # consumed in order; the default reply when empty
        # Set → replies have this many output tokens, or max_tokens if smaller (stop_reason max_tokens).
        self.output_tokens: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.received.clear()
        self.invalid.clear()
        self.replies.clear()

    @staticmethod
    def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(_error_document(kind, message), status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(
            Received(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, raw)
        )
        if request.method != "POST" or request.path != "/v1/messages":
            return self._error(404, "not_found_error", f"Not found: {request.method} {request.path}")
        if request.headers.get("x-api-key") != API_KEY:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") != ANTHROPIC_VERSION:
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "invalid_request_error", "The request body is not valid JSON.")
        if body.get("model") not in _MODELS:
            return self._error(404, "not_found_error", f"model: {body.get('model')}")
        errors = request_errors(body)
        if errors:
            self.invalid.append(errors)
            return self._error(400, "invalid_request_error", "; ".join(errors))
        reply = self.replies.pop(0) if self.replies else Reply()
        if self.output_tokens is not None:
            produced = min(self.output_tokens, body["max_tokens"])
            stop = "max_tokens" if produced < self.output_tokens else reply.stop_reason
            reply = dataclasses.replace(reply, output_tokens=produced, stop_reason=stop)
        if reply.status != 200:
            error = reply.error or {"type": "api_error", "message": "Internal server error"}
            return self._error(reply.status, error["type"], error["message"], reply.headers)
        message = build_message(reply, body["model"])
        if not body.get("stream"):
            return web.json_response(message, headers=reply.headers)
        events = message_events(message, reply)
        response = web.StreamResponse(headers={"content-type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        for number, event in enumerate(events):
            if reply.cut_after is not None and number == reply.cut_after and request.transport is not None:
                request.transport.abort()  # the connection drops mid-stream
                return response
            if reply.error_after is not None and number == reply.error_after:
                error = reply.error or {"type": "overloaded_error", "message": "Overloaded"}
                await response.write(encode_sse([_error_document(error["type"], error["message"])]))
                break
            await response.write(encode_sse([event]))
        await response.write_eof()
        return response
