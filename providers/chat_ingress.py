"""Chat Completions clients in front of the Responses-based translators (Anthropic, Gemini, Bedrock).

A client that speaks `POST /v1/chat/completions` reaches a provider family the gateway serves
through its Responses translators like this: the Chat request becomes a Responses request
(`chat_to_responses`), the provider's `ProviderFamily` takes it from there exactly as for Codex, and the
Responses answer comes back as a Chat answer (`responses_to_chat`, or `ChatChunkEncoder` /
`ChatSSERelay` for streams). Everything here is pure: dict → dict, event → chunks, bytes → bytes.

How the gateway drives it
-------------------------
Request (one `POST /v1/chat/completions` body `chat`)::

    try:
        dropped: list[str] = []
        body = chat_ingress.chat_to_responses(chat, dropped=dropped)
    except chat_ingress.ChatRequestError as exc:           # a ValueError
        return 400, exc.body()                             # OpenAI-shaped invalid_request_error
    include_usage = chat_ingress.wants_usage(chat)         # stream_options.include_usage
    family = registry.family_of(policy, provider_name)     # codexgate.providers.registry
    prepared = family.prepare(body, upstream_model, provider_name)
    # `dropped` names the Chat fields with no Responses counterpart (stop, seed, logit_bias, ...)

Answer, not streamed::

    response = family.whole(prepared, ctx, raw)
    try:
        completion = chat_ingress.responses_to_chat(response, model=chat["model"])
    except chat_ingress.UpstreamFailed as exc:             # the response has status "failed"
        return exc.status, exc.body()

Answer, streamed (`family.stream(...)` gives a `StreamBridge`, which yields Responses SSE bytes)::

    relay = chat_ingress.ChatSSERelay(model=chat["model"], include_usage=include_usage)
    for chunk in upstream_bytes:
        send(relay.feed(bridge.feed(chunk)))
    send(relay.feed(bridge.finish()) + relay.finish())     # relay.finish() ends with `data: [DONE]`
    # relay.encoder.outcome / .usage / .failure for the log

or, with Responses event dicts in hand, `ChatChunkEncoder(model, include_usage)` directly:
`feed(event) -> list[dict]`, `finish() -> list[dict]`; write each dict as `data: <json>` and
append `data: [DONE]` yourself (`encode_chunks` does the former).

Choices
-------
* system / developer messages stay where they are, as Responses input messages of the same role
  (not folded into `instructions`): nothing is reordered, and every family already collects
  developer/system messages from anywhere in the input into its system prompt.
* user / system / developer content becomes `input_text` / `input_image` / `input_file` parts;
  assistant text becomes a plain string message (the Responses API refuses `input_text` in
  assistant messages), an assistant `refusal` is kept as text; assistant `tool_calls` become
  `function_call` items (`call_id` = the Chat call id), `tool` messages `function_call_output`.
* function tools keep their schema; `strict` is sent explicitly (`false` unless the client said
  `true`: Chat's default is non-strict, the Responses API's is strict).
* Refused with `ChatRequestError` (HTTP 400): `n` other than 1, audio input parts, custom tools
  and custom tool calls, the legacy `functions` / `function_call` / `role: "function"`.
* Dropped silently: `user`, `metadata`, `n: 1`, `stream_options` (read by `wants_usage`).
  Dropped and named in `dropped`: every other field without a Responses counterpart (`stop`,
  `seed`, `logit_bias`, `logprobs`, `frequency_penalty`, ...) and unknown keys.
* Reasoning: summaries are dropped from the Chat answer (no standard Chat field; strict Chat
  clients reject extra keys), and reasoning items cannot be replayed by a Chat client, so each
  turn reasons afresh. Reasoning tokens still show in `completion_tokens_details`.
* Text of several message items is joined with a blank line ("\\n\\n"), streamed or not.
* `custom_tool_call` items (none arise from Chat requests, which carry function tools only) come
  back as function calls whose arguments are `{"input": <input>}`.
* A failed response: `responses_to_chat` raises `UpstreamFailed`; in a stream the encoder emits
  one `{"error": {"message", "type", "param", "code"}}` object in place of a chunk (what
  OpenAI-compatible hosts send; the openai SDK's stream iterator raises `APIError` on it) and
  nothing after it. A stream that ends without a terminal event ends the same way.
* Completion ids are `chatcmpl-` + the response id without its `resp_` prefix, so a streamed and
  a whole answer for the same response agree.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from codexgate.providers.base import SAMPLING_PARAMS, UNMAPPED_PARAMS_KEY
from codexgate.sse import SSEParser, decode_json, encode_json

JSON = dict[str, Any]

__all__ = [
    "ChatChunkEncoder",
    "ChatRequestError",
    "ChatSSERelay",
    "UpstreamFailed",
    "chat_to_responses",
    "chat_to_translator_body",
    "chat_usage",
    "completion_id",
    "encode_chunks",
    "responses_to_chat",
    "wants_usage",
]


class ChatRequestError(ValueError):
    """A Chat request this gateway cannot serve; answer 400 with `body()`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> JSON:
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": None}}


# Responses failure codes → (HTTP status, OpenAI error type); the gateway's other translators
# use the same types (see e.g. anthropic.translate_error).
_FAILURES: dict[str, tuple[int, str]] = {
    "rate_limit_exceeded": (429, "rate_limit_exceeded"),
    "insufficient_quota": (429, "insufficient_quota"),
    "context_length_exceeded": (400, "invalid_request_error"),
    "invalid_prompt": (400, "invalid_request_error"),
    "server_error": (502, "server_error"),
}


class UpstreamFailed(Exception):
    """The Responses answer failed; `status` and `body()` are the Chat client's error answer."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        fallback = (400, "invalid_request_error") if code.startswith("invalid") else (502, "server_error")
        status, kind = _FAILURES.get(code, fallback)
        self.status = status
        self.error: JSON = {"message": message, "type": kind, "param": None, "code": code}

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> UpstreamFailed:
        error = _map(response.get("error"))
        status = response.get("status")
        message = _str(error.get("message")) or f"the upstream response ended with status {status!r}"
        return cls(message, _str(error.get("code")) or "server_error")

    def body(self) -> JSON:
        return {"error": dict(self.error)}


# --------------------------------------------------------------------------------------------
# Request: Chat Completions → Responses

# Chat fields read below, and those dropped without a word.
_HANDLED = frozenset(
    {
        "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "response_format", "verbosity", "reasoning_effort", "stream", "stream_options",
        "store", "n", "functions", "function_call", "prompt_cache_key", "safety_identifier", "service_tier",
        "prompt_cache_retention",
    }
)  # fmt: skip
_SILENT = frozenset({"user", "metadata"})
_PASS_THROUGH = (
    "temperature", "top_p", "parallel_tool_calls", "prompt_cache_key", "safety_identifier", "service_tier",
    "prompt_cache_retention",
)  # fmt: skip


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether a streamed Chat request asked for the final usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return bool(body.get("stream")) and isinstance(options, Mapping) and options.get("include_usage") is True


def chat_to_responses(body: Mapping[str, Any], *, dropped: list[str] | None = None) -> JSON:
    """A Chat Completions request body → a Responses API request body (raises `ChatRequestError`).

    Names of Chat fields that have no Responses counterpart are appended to `dropped`."""
    if not isinstance(body, Mapping):
        raise ChatRequestError("the request body must be a JSON object")
    present = {key: value for key, value in body.items() if value is not None}
    notes = dropped if dropped is not None else []
    n = present.get("n", 1)
    if n != 1:
        raise ChatRequestError(f"n={n!r} is not supported by this gateway for this model: ask for one choice", "n")
    for legacy in ("functions", "function_call"):
        if legacy in present:
            raise ChatRequestError(f"the legacy `{legacy}` parameter is not supported: use `tools`", legacy)
    model = present.get("model")
    if not isinstance(model, str) or not model:
        raise ChatRequestError("`model` must be a non-empty string", "model")

    out: JSON = {"model": model, "input": _input_items(present.get("messages"))}
    if "tools" in present:
        out["tools"] = _tools(present["tools"])
    if "tool_choice" in present:
        out["tool_choice"] = _tool_choice(present["tool_choice"])
    for key in _PASS_THROUGH:
        if key in present:
            out[key] = present[key]
    limit = present.get("max_completion_tokens", present.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ChatRequestError("max_completion_tokens / max_tokens must be a positive integer", "max_tokens")
        out["max_output_tokens"] = limit
    text: JSON = {}
    if "response_format" in present:
        text["format"] = _text_format(present["response_format"])
    if "verbosity" in present:
        text["verbosity"] = present["verbosity"]
    if text:
        out["text"] = text
    if "reasoning_effort" in present:
        out["reasoning"] = {"effort": present["reasoning_effort"]}
    out["stream"] = present.get("stream") is True
    out["store"] = present.get("store") is True
    for key in present:
        if key not in _HANDLED and key not in _SILENT:
            notes.append(key)
    return out


def chat_to_translator_body(body: Mapping[str, Any]) -> JSON:
    """`chat_to_responses` for the gateway's own translators: the Responses body plus the Chat
    sampling parameters (`stop`, `seed`, ...) under their Chat names and the names of the other
    dropped fields, so each family maps what its API has and reports the rest (see
    `base.sampling_params`). Never sent anywhere as it is: it is not a valid Responses body."""
    dropped: list[str] = []
    out = chat_to_responses(body, dropped=dropped)
    for key in SAMPLING_PARAMS:
        if body.get(key) is not None:
            out[key] = body[key]
    unmapped = [name for name in dropped if name not in SAMPLING_PARAMS]
    if unmapped:
        out[UNMAPPED_PARAMS_KEY] = unmapped
    return out


def _input_items(messages: Any) -> list[JSON]:
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError("`messages` must be a non-empty array", "messages")
    items: list[JSON] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise ChatRequestError(f"{where} must be an object", where)
        role = message.get("role")
        if role in ("system", "developer", "user"):
            items.append(
                {"type": "message", "role": role, "content": _input_parts(message.get("content"), role, where)}
            )
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            if not isinstance(calls, list):
                raise ChatRequestError(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
            text = _assistant_text(message, where)
            if text is not None and (text or not calls):
                items.append({"type": "message", "role": "assistant", "content": text})
            items.extend(_function_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ChatRequestError(f"{where}.tool_call_id must be a non-empty string", f"{where}.tool_call_id")
            output = _plain_text(message.get("content"), where)
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        elif role == "function":
            raise ChatRequestError(f"{where}: legacy `function` messages are not supported: use `tool`", where)
        else:
            raise ChatRequestError(f"{where}: unknown role {role!r}", f"{where}.role")
    return items


def _input_parts(content: Any, role: str, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise ChatRequestError(f"{where}.content must be a string or an array of parts", f"{where}.content")
    parts: list[JSON] = []
    for index, part in enumerate(content):
        here = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part, Mapping) and isinstance(part.get("text"), str):
            parts.append({"type": "input_text", "text": part["text"]})
        elif kind == "image_url" and role == "user" and isinstance(part, Mapping):
            parts.append(_image_part(part.get("image_url"), here))
        elif kind == "file" and role == "user" and isinstance(part, Mapping):
            parts.append(_file_part(part.get("file"), here))
        elif kind == "input_audio":
            raise ChatRequestError(f"{here}: audio input is not supported by this gateway for this model", here)
        else:
            raise ChatRequestError(f"{here}: a content part of type {kind!r} is not allowed in a {role} message", here)
    return parts


def _image_part(image: Any, where: str) -> JSON:
    url, detail = (image, None) if isinstance(image, str) else (None, None)
    if isinstance(image, Mapping):
        url, detail = image.get("url"), image.get("detail")
    if not isinstance(url, str) or not url:
        raise ChatRequestError(f"{where}.image_url.url must be a non-empty string", f"{where}.image_url")
    return {"type": "input_image", "image_url": url, "detail": detail if isinstance(detail, str) else "auto"}


def _file_part(file: Any, where: str) -> JSON:
    if not isinstance(file, Mapping):
        raise ChatRequestError(f"{where}.file must be an object", f"{where}.file")
    part: JSON = {"type": "input_file"}
    for key in ("file_data", "file_id", "filename"):
        if isinstance(file.get(key), str):
            part[key] = file[key]
    if "file_data" not in part and "file_id" not in part:
        raise ChatRequestError(f"{where}.file needs file_data or file_id", f"{where}.file")
    return part


def _plain_text(content: Any, where: str, kinds: tuple[str, ...] = ("text",)) -> str:
    """String content, or the text of its text parts (tool, assistant messages)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ChatRequestError(f"{where}.content must be a string or an array of parts", f"{where}.content")
    pieces: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        key = "refusal" if kind == "refusal" else "text"
        if kind not in kinds or not isinstance(part, Mapping) or not isinstance(part.get(key), str):
            here = f"{where}.content[{index}]"
            raise ChatRequestError(f"{here}: a content part of type {kind!r} is not allowed here", here)
        pieces.append(part[key])
    return "".join(pieces)


def _assistant_text(message: Mapping[str, Any], where: str) -> str | None:
    content = message.get("content")
    refusal = message.get("refusal")
    if content is None and not isinstance(refusal, str):
        return None
    text = _plain_text(content, where, ("text", "refusal"))
    if isinstance(refusal, str) and refusal and refusal not in text:
        text = f"{text}\n\n{refusal}" if text else refusal
    return text


def _function_call(call: Any, where: str) -> JSON:
    if not isinstance(call, Mapping):
        raise ChatRequestError(f"{where} must be an object", where)
    if call.get("type", "function") != "function":
        raise ChatRequestError(f"{where}: tool calls of type {call.get('type')!r} are not supported", f"{where}.type")
    function = call.get("function")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise ChatRequestError(f"{where}.id must be a non-empty string", f"{where}.id")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ChatRequestError(f"{where}.function.name must be a string", f"{where}.function")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    return {"type": "function_call", "call_id": call_id, "name": function["name"], "arguments": arguments}


def _tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise ChatRequestError("`tools` must be an array", "tools")
    out: list[JSON] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise ChatRequestError(f"{where}: tools of type {kind!r} are not supported: use function tools", where)
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ChatRequestError(f"{where}.function.name must be a non-empty string", f"{where}.function")
        parameters = function.get("parameters")
        converted: JSON = {
            "type": "function",
            "name": function["name"],
            "parameters": dict(parameters) if isinstance(parameters, Mapping) else {"type": "object", "properties": {}},
            "strict": function.get("strict") is True,
        }
        if isinstance(function.get("description"), str):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return {"type": "function", "name": function["name"]}
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if isinstance(allowed, Mapping) and allowed.get("mode") in ("auto", "required"):
            names = [
                _str(_map(tool.get("function")).get("name"))
                for tool in allowed.get("tools") or []
                if isinstance(tool, Mapping) and tool.get("type") == "function"
            ]
            tools = [{"type": "function", "name": name} for name in names if name]
            return {"type": "allowed_tools", "mode": allowed["mode"], "tools": tools}
    raise ChatRequestError(f"unsupported tool_choice {choice!r}", "tool_choice")


def _text_format(response_format: Any) -> JSON:
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema" and isinstance(response_format, Mapping):
        spec = response_format.get("json_schema")
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            schema = spec.get("schema")
            out: JSON = {"type": "json_schema", "name": spec["name"], "schema": dict(_map(schema))}
            if isinstance(spec.get("description"), str):
                out["description"] = spec["description"]
            if isinstance(spec.get("strict"), bool):
                out["strict"] = spec["strict"]
            return out
    raise ChatRequestError(f"unsupported response_format {response_format!r}", "response_format")


# --------------------------------------------------------------------------------------------
# Answer: Responses → Chat Completions


def completion_id(response_id: Any) -> str:
    if isinstance(response_id, str) and response_id:
        return "chatcmpl-" + response_id.removeprefix("resp_")
    return f"chatcmpl-{uuid.uuid4().hex}"


def _created(response: Mapping[str, Any]) -> int:
    created = response.get("created_at")
    return int(created) if isinstance(created, int | float) and not isinstance(created, bool) else int(time.time())


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chat_usage(usage: Any) -> JSON | None:
    """A Responses `usage` object → Chat `usage` (None when there is none)."""
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    inputs, outputs = _map(usage.get("input_tokens_details")), _map(usage.get("output_tokens_details"))
    prompt_details: JSON = {"cached_tokens": _int(inputs.get("cached_tokens"))}
    if "cache_write_tokens" in inputs:
        prompt_details["cache_write_tokens"] = _int(inputs.get("cache_write_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": _int(outputs.get("reasoning_tokens"))},
    }


def _message_text(item: Mapping[str, Any], kind: str = "output_text") -> str:
    key = "refusal" if kind == "refusal" else "text"
    return "".join(
        part[key]
        for part in item.get("content") or []
        if isinstance(part, Mapping) and part.get("type") == kind and isinstance(part.get(key), str)
    )


def _call_arguments(item: Mapping[str, Any]) -> str:
    if item.get("type") == "custom_tool_call":
        raw = item.get("input")
        return json.dumps({"input": raw if isinstance(raw, str) else ""})
    arguments = item.get("arguments")
    return arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {})


def _call_id(item: Mapping[str, Any]) -> str:
    for key in ("call_id", "id"):
        if isinstance(item.get(key), str) and item[key]:
            return str(item[key])
    return f"call_{uuid.uuid4().hex}"


_CALL_TYPES = ("function_call", "custom_tool_call")


def _finish_reason(response: Mapping[str, Any], has_calls: bool) -> str:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def responses_to_chat(response: Mapping[str, Any], *, model: str) -> JSON:
    """A Responses `response` object → a `chat.completion` (raises `UpstreamFailed` unless the
    status is completed or incomplete)."""
    if response.get("status") not in ("completed", "incomplete"):
        raise UpstreamFailed.from_response(response)
    texts: list[str] = []
    refusals: list[str] = []
    annotations: list[JSON] = []
    calls: list[JSON] = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            offset = sum(len(text) + 2 for text in texts)
            part_offset = 0
            for part in item.get("content") or []:
                if (
                    isinstance(part, Mapping)
                    and part.get("type") == "output_text"
                    and isinstance(part.get("text"), str)
                ):
                    annotations += _annotations(part, offset + part_offset)
                    part_offset += len(part["text"])
            if text := _message_text(item):
                texts.append(text)
            if refusal := _message_text(item, "refusal"):
                refusals.append(refusal)
        elif item.get("type") in _CALL_TYPES:
            function = {"name": _str(item.get("name")), "arguments": _call_arguments(item)}
            calls.append({"id": _call_id(item), "type": "function", "function": function})
        # reasoning items (and anything else) have no Chat counterpart: dropped
    content = "\n\n".join(texts)
    message: JSON = {
        "role": "assistant",
        "content": content or (None if calls else ""),
        "refusal": "\n\n".join(refusals) or None,
    }
    if annotations:
        message["annotations"] = annotations
    if calls:
        message["tool_calls"] = calls
    finish = _finish_reason(response, bool(calls))
    out: JSON = {
        "id": completion_id(response.get("id")),
        "object": "chat.completion",
        "created": _created(response),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }
    usage = chat_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def _annotations(part: Mapping[str, Any], offset: int) -> list[JSON]:
    out: list[JSON] = []
    for note in part.get("annotations") or []:
        if isinstance(note, Mapping) and note.get("type") == "url_citation":
            start, end = _int(note.get("start_index")), _int(note.get("end_index"))
            citation = {
                "start_index": start + offset,
                "end_index": end + offset,
                "title": _str(note.get("title")),
                "url": _str(note.get("url")),
            }
            out.append({"type": "url_citation", "url_citation": citation})
    return out


# --------------------------------------------------------------------------------------------
# Streams: Responses events → chat.completion.chunk


@dataclasses.dataclass
class _Call:
    index: int  # the Chat tool call index
    call_id: str
    sent: str = ""  # argument text already sent (a custom call's whole `{"input": ...}` goes at its end)


@dataclasses.dataclass
class _Text:
    text: str = ""
    refusal: str = ""


class ChatChunkEncoder:
    """Responses stream events (dicts) → `chat.completion.chunk` dicts, incrementally.

    `feed(event)` returns the chunks for one event; `finish()`, called once after the last event,
    returns the usage chunk (empty `choices`) when `include_usage`, else nothing. After
    `response.failed` (or an `error` event, or a stream without a terminal event at `finish()`)
    the last dict is `{"error": {...}}` instead of a chunk, and nothing follows it. Attributes
    for the log: `outcome` ("completed" / "incomplete" / "failed"), `usage` (Chat-shaped),
    `failure` (the `UpstreamFailed`, if any)."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id: str | None = None
        self.created = 0
        self.outcome: str | None = None
        self.usage: JSON | None = None
        self.failure: UpstreamFailed | None = None
        self._started = False
        self._ended = False
        self._texts: dict[str, _Text] = {}  # by item key
        self._sent_text = False
        self._sent_refusal = False
        self._calls: dict[str, _Call] = {}  # by item key
        self._calls_by_id: dict[str, _Call] = {}  # by call_id

    # -- chunks

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        chunk: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _adopt(self, response: Any) -> None:
        if isinstance(response, Mapping) and self.id is None:
            self.id = completion_id(response.get("id"))
            self.created = _created(response)

    def _start(self, out: list[JSON]) -> None:
        if not self._started:
            self._started = True
            if self.id is None:
                self.id, self.created = completion_id(None), int(time.time())
            out.append(self._chunk({"role": "assistant"}))

    # -- items

    @staticmethod
    def _key(event: Mapping[str, Any], item: Mapping[str, Any] | None = None) -> str:
        item_id = event.get("item_id") or (item.get("id") if item else None)
        return str(item_id) if item_id else f"#{event.get('output_index')}"

    def _text(self, out: list[JSON], key: str, delta: Any, field: str = "content") -> None:
        """Send a text (or refusal) delta of one message item; a later item's text starts with the
        blank line `responses_to_chat` puts between items."""
        if not isinstance(delta, str) or not delta:
            return
        self._start(out)
        state = self._texts.setdefault(key, _Text())
        sent = delta
        if field == "content":
            if self._sent_text and not state.text:
                sent = "\n\n" + delta
            state.text += delta
            self._sent_text = True
        else:
            if self._sent_refusal and not state.refusal:
                sent = "\n\n" + delta
            state.refusal += delta
            self._sent_refusal = True
        out.append(self._chunk({field: sent}))

    def _text_catch_up(self, out: list[JSON], key: str, full: str, field: str = "content") -> None:
        """Send what a done event or the final response has beyond what was streamed."""
        state = self._texts.get(key) or _Text()
        sent = state.text if field == "content" else state.refusal
        if full.startswith(sent) and len(full) > len(sent):
            self._text(out, key, full[len(sent) :], field)

    def _call(self, out: list[JSON], key: str, item: Mapping[str, Any]) -> _Call:
        call_id = _call_id(item)
        call = self._calls.get(key) or self._calls_by_id.get(call_id)
        if call is None:
            self._start(out)
            call = _Call(len(self._calls_by_id), call_id)
            self._calls_by_id[call_id] = call
            function = {"name": _str(item.get("name")), "arguments": ""}
            first = {"index": call.index, "id": call_id, "type": "function", "function": function}
            out.append(self._chunk({"tool_calls": [first]}))
        self._calls[key] = call
        return call

    def _arguments(self, out: list[JSON], call: _Call, delta: Any) -> None:
        if isinstance(delta, str) and delta:
            call.sent += delta
            out.append(self._chunk({"tool_calls": [{"index": call.index, "function": {"arguments": delta}}]}))

    def _arguments_catch_up(self, out: list[JSON], call: _Call, full: str) -> None:
        if full.startswith(call.sent) and len(full) > len(call.sent):
            self._arguments(out, call, full[len(call.sent) :])

    def _item_done(self, out: list[JSON], key: str, item: Mapping[str, Any]) -> None:
        kind = item.get("type")
        if kind in _CALL_TYPES:
            call = self._call(out, key, item)
            self._arguments_catch_up(out, call, _call_arguments(item))
        elif kind == "message":
            self._text_catch_up(out, key, _message_text(item))
            self._text_catch_up(out, key, _message_text(item, "refusal"), "refusal")

    def _lookup(self, event: Mapping[str, Any]) -> _Call | None:
        return self._calls.get(self._key(event)) or self._calls.get(f"#{event.get('output_index')}")

    # -- events

    def feed(self, event: Mapping[str, Any]) -> list[JSON]:
        if self._ended or not isinstance(event, Mapping):
            return []
        out: list[JSON] = []
        kind = event.get("type")
        if kind in ("response.created", "response.in_progress", "response.queued"):
            self._adopt(event.get("response"))
            self._start(out)
        elif kind == "response.output_text.delta":
            self._text(out, self._key(event), event.get("delta"))
        elif kind == "response.output_text.done" and isinstance(event.get("text"), str):
            self._text_catch_up(out, self._key(event), event["text"])
        elif kind == "response.refusal.delta":
            self._text(out, self._key(event), event.get("delta"), "refusal")
        elif kind == "response.refusal.done" and isinstance(event.get("refusal"), str):
            self._text_catch_up(out, self._key(event), event["refusal"], "refusal")
        elif kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, Mapping) and item.get("type") in _CALL_TYPES:
                call = self._call(out, self._key(event, item), item)
                self._calls.setdefault(f"#{event.get('output_index')}", call)
                if item.get("type") == "function_call":
                    self._arguments(out, call, item.get("arguments"))
        elif kind == "response.function_call_arguments.delta":
            if (found := self._lookup(event)) is not None:
                self._arguments(out, found, event.get("delta"))
        elif kind == "response.function_call_arguments.done":
            if (found := self._lookup(event)) is not None and isinstance(event.get("arguments"), str):
                self._arguments_catch_up(out, found, event["arguments"])
        elif kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, Mapping):
                self._item_done(out, self._key(event, item), item)
        elif kind in ("response.completed", "response.incomplete"):
            self._terminal(out, event.get("response"))
        elif kind == "response.failed":
            response = event.get("response")
            self._fail(out, UpstreamFailed.from_response(_map(response)))
        elif kind == "error":
            message = _str(event.get("message")) or "the upstream stream failed"
            self._fail(out, UpstreamFailed(message, _str(event.get("code")) or "server_error"))
        # reasoning, content_part, annotation and other events carry nothing a Chat client reads
        return out

    def _terminal(self, out: list[JSON], response: Any) -> None:
        response = _map(response)
        self._adopt(response)
        self._start(out)
        for index, item in enumerate(response.get("output") or []):
            if isinstance(item, Mapping):
                self._item_done(out, self._key({"output_index": index}, item), item)
        if not self._sent_text and not self._calls_by_id:
            out.append(self._chunk({"content": ""}))  # as responses_to_chat: an empty answer is "", not null
        finish = _finish_reason(response, bool(self._calls_by_id))
        out.append(self._chunk({}, finish))
        self.outcome = "incomplete" if response.get("status") == "incomplete" else "completed"
        self.usage = chat_usage(response.get("usage"))
        self._ended = True

    def _fail(self, out: list[JSON], failure: UpstreamFailed) -> None:
        self.failure, self.outcome, self._ended = failure, "failed", True
        out.append(failure.body())

    def finish(self) -> list[JSON]:
        if not self._ended:
            out: list[JSON] = []
            self._fail(out, UpstreamFailed("the upstream stream ended before the response completed", "server_error"))
            return out
        if self.outcome == "failed" or not self.include_usage or self.usage is None:
            return []
        usage_chunk = self._chunk({})
        usage_chunk.update(choices=[], usage=self.usage)
        return [usage_chunk]


def encode_chunks(chunks: Iterable[Mapping[str, Any]]) -> bytes:
    """Chunks (and error objects) as SSE `data:` lines, without the final `data: [DONE]`."""
    return b"".join(b"data: %s\n\n" % encode_json(chunk) for chunk in chunks)


class ChatSSERelay:
    """Responses SSE bytes (what `StreamBridge.feed/finish` return) → Chat Completions SSE bytes;
    chunk boundaries anywhere. `finish()` ends the stream with `data: [DONE]`. `feed_events` takes
    the events themselves (`StreamBridge.feed_events`): a translated answer to a Chat client is not
    written as Responses JSON only to be read back."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.encoder = ChatChunkEncoder(model, include_usage)
        self._parser = SSEParser()

    def feed(self, data: bytes) -> bytes:
        chunks: list[JSON] = []
        for _name, raw in self._parser.feed_raw(data):
            try:
                event = decode_json(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                chunks += self.encoder.feed(event)
        return encode_chunks(chunks)

    def feed_events(self, events: list[JSON]) -> bytes:
        return encode_chunks([chunk for event in events for chunk in self.encoder.feed(event)])

    def finish(self) -> bytes:
        return encode_chunks(self.encoder.finish()) + b"data: [DONE]\n\n"
