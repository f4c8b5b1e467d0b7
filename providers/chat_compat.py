"""OpenAI-compatible Chat Completions hosts (Groq, Mistral, DeepSeek, xAI, OpenRouter, Together,
Fireworks, Cerebras, Perplexity, Ollama, vLLM, LM Studio, any generic host) and Azure OpenAI.

Codex speaks the Responses API only; these hosts speak `POST {base_url}/chat/completions`. This
module translates both ways, purely (no I/O). Each host's quirks live in a `Preset` (see `PRESETS`).

How the gateway drives it
-------------------------
Request (one Codex `POST /v1/responses` body `body`, routed to upstream model `upstream`)::

    preset = chat_compat.PRESETS["groq"]                      # or a Preset of your own
    base = policy_base_url or preset.base_url
    options = TranslateOptions(provider_name="groq-prod")
    chat_body = chat_compat.build_request(body, upstream, options, preset=preset)
    url, fixed = chat_compat.request_target(base, upstream, stream=chat_body["stream"])
    headers = {"content-type": "application/json", **fixed, **chat_compat.auth_headers(secret)}
    # options.dropped_tools now names the Codex tools the host cannot serve (say so in a header)
    tools = chat_compat.tool_map(body)        # chat function name -> Codex tool (custom/namespace)
    # Reasoning envelopes are scoped to (provider_name, upstream): pass the same `upstream` below.

Answer, not streamed (HTTP 200)::

    responses_body = chat_compat.translate_response(json.loads(raw), ctx, tools=tools, upstream_model=upstream)

Answer, streamed (HTTP 200, `text/event-stream`); chunk boundaries may fall anywhere::

    decoder = chat_compat.ChatStreamDecoder()
    translator = chat_compat.StreamTranslator(ctx, tools=tools, upstream_model=upstream)
    for chunk in upstream_bytes:                       # b"" at the end is fine too
        for event in decoder.feed(chunk):
            for out in translator.feed(event):
                send(codexgate.sse.encode_event(out))
    for out in translator.finish():                    # once, when the upstream stream ended
        send(codexgate.sse.encode_event(out))
    # translator.usage (Usage | None), translator.outcome ("completed"/"incomplete"/"failed")

Answer with an error status (any time before the stream started)::

    status, error_body = chat_compat.translate_error(upstream_status, raw_body)
    # keep the host's Retry-After header on a 429: Codex retries a 429 only when it is there

Azure OpenAI
------------
* Chat deployments: ``url, fixed = azure_target(endpoint, deployment, "2024-10-21", "chat")``,
  body from ``build_request(body, deployment, options, preset=PRESETS["azure"])``, credentials
  from ``azure_auth_headers(secret)`` (the `api-key` header); answers translate as above.
* v1 Responses API: ``url, fixed = azure_target(endpoint, deployment, None, "responses")`` and
  ``azure_responses_body(body, deployment)`` — a pass-through (the answer is already a Responses
  answer; nothing to translate back), with `api-key` credentials.

What is translated
------------------
instructions + developer/system messages → one leading system (or `developer`) message; user /
assistant messages (text, images as `image_url` parts); function_call / custom_tool_call →
assistant `tool_calls`, their outputs → `tool` messages (images in tool outputs follow as a user
message); reasoning items → only envelopes (`seal_reasoning`) made for the same provider and model,
replayed as `reasoning_content` (DeepSeek) or `reasoning_details` (OpenRouter) where the host wants
them (envelopes are scoped to the provider name and the upstream model); function tools →
`tools[].function`; custom tools (apply_patch) → a function with one string
parameter `input` whose calls come back as `custom_tool_call` items; namespaces (also inside
`additional_tools` input items) are flattened; hosted tools (web_search, tool_search, ...) are
dropped and named in `options.dropped_tools`; tool_choice; parallel_tool_calls; reasoning.effort →
`reasoning_effort` (only where the preset accepts it, mapped to the nearest accepted value);
text.format → `response_format`; a default `max_tokens` where the preset needs one; streams ask for
`stream_options.include_usage` where accepted.

Back: `content` → a `message`; `reasoning_content` / `reasoning` deltas, `<think>...</think>`
content and Mistral `thinking` parts → a `reasoning` item with a summary and a sealed envelope;
`tool_calls` (by index, argument fragments) → `function_call` / `custom_tool_call`; finish_reason
stop/tool_calls → completed, length → incomplete (`max_output_tokens`), content_filter → completed
(the answer is what the filter let through; `StreamTranslator.content_filtered` says so), an error
chunk or `finish_reason: "error"` → failed; usage from whichever chunk carries it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
import types
import uuid
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from codexgate.providers.base import (
    GATEWAY_ONLY_KEYS,
    REASONING_ENVELOPE_PREFIX,
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
from codexgate.sse import SSEParser

__all__ = [
    "DONE",
    "PRESETS",
    "ChatStreamDecoder",
    "Preset",
    "StreamTranslator",
    "ToolEntry",
    "ToolMap",
    "auth_headers",
    "azure_auth_headers",
    "azure_responses_body",
    "azure_target",
    "build_request",
    "get_preset",
    "request_target",
    "tool_map",
    "translate_error",
    "translate_response",
]

log = logging.getLogger(__name__)

ReasoningReplay = Literal["reasoning_content", "reasoning_details"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One host's address and the parts of the Chat Completions API it accepts."""

    name: str
    base_url: str
    # `reasoning_effort` values the host accepts; empty = never send the field.
    reasoning_effort_values: tuple[str, ...] = ()
    # Hosts with a small default output limit get `default_max_tokens` in this field.
    needs_max_tokens: bool = False
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    developer_role: bool = False  # instructions as `developer` instead of `system`
    parallel_tool_calls: bool = True  # the field is accepted (sent when Codex sets it)
    stream_options: bool = True  # `stream_options: {include_usage: true}` accepted
    tools: bool = True  # the host can call functions at all
    structured_output: Literal["json_schema", "json_object"] | None = "json_schema"
    # How the host wants its own reasoning back on later turns (None: it does not).
    reasoning_replay: ReasoningReplay | None = None
    # Mistral accepts only tool call ids of exactly 9 letters/digits.
    alnum9_tool_call_ids: bool = False
    # Hosts that insist on alternating user/assistant turns (consecutive same roles merged).
    merge_consecutive_roles: bool = False

    @property
    def reasoning_effort(self) -> bool:
        return bool(self.reasoning_effort_values)

    @property
    def needs_key(self) -> bool:
        return not self.base_url.startswith("http://localhost")


_LOW_MED_HIGH = ("low", "medium", "high")

# Checked against each host's documentation (base URLs as documented; quirks as documented or,
# where the documentation is silent, the conservative choice: a field a strict host would reject
# with 400/422 is not sent). Hosts whose models differ (xAI's grok-4 rejects reasoning_effort,
# grok-3-mini wants it) get the safe default; a policy can pass its own `dataclasses.replace(...)`.
PRESETS: Mapping[str, Preset] = types.MappingProxyType(
    {
        "generic": Preset("generic", "", parallel_tool_calls=False),
        "groq": Preset("groq", "https://api.groq.com/openai/v1", reasoning_effort_values=_LOW_MED_HIGH),
        # Mistral forbids unknown fields (422 extra_forbidden), `stream_options` among them; it
        # sends usage on the last chunk unasked. Tool call ids: [a-zA-Z0-9]{9}.
        "mistral": Preset("mistral", "https://api.mistral.ai/v1", stream_options=False, alnum9_tool_call_ids=True),
        # DeepSeek: thinking mode wants `reasoning_content` of tool-calling turns back (else 400);
        # structured output is json_object only.
        "deepseek": Preset(
            "deepseek",
            "https://api.deepseek.com",
            reasoning_effort_values=("low", "high", "max"),
            parallel_tool_calls=False,
            structured_output="json_object",
            reasoning_replay="reasoning_content",
        ),
        "xai": Preset("xai", "https://api.x.ai/v1"),
        "openrouter": Preset(
            "openrouter",
            "https://openrouter.ai/api/v1",
            reasoning_effort_values=("none", "minimal", "low", "medium", "high", "xhigh"),
            reasoning_replay="reasoning_details",
        ),
        "together": Preset("together", "https://api.together.ai/v1", parallel_tool_calls=False),
        "fireworks": Preset(
            "fireworks",
            "https://api.fireworks.ai/inference/v1",
            reasoning_effort_values=_LOW_MED_HIGH,
            needs_max_tokens=True,
            parallel_tool_calls=False,
        ),
        # Cerebras rejects parallel_tool_calls with 400.
        "cerebras": Preset(
            "cerebras", "https://api.cerebras.ai/v1", reasoning_effort_values=_LOW_MED_HIGH, parallel_tool_calls=False
        ),
        # Perplexity Sonar: no tool calling; turns must alternate.
        "perplexity": Preset(
            "perplexity",
            "https://api.perplexity.ai",
            parallel_tool_calls=False,
            stream_options=False,
            tools=False,
            merge_consecutive_roles=True,
        ),
        # Ollama answers 400 to reasoning settings for models that cannot think, so none are sent.
        "ollama": Preset("ollama", "http://localhost:11434/v1", parallel_tool_calls=False),
        "vllm": Preset("vllm", "http://localhost:8000/v1", reasoning_effort_values=_LOW_MED_HIGH),
        "lmstudio": Preset("lmstudio", "http://localhost:1234/v1", parallel_tool_calls=False),
        # Azure OpenAI chat deployments: the OpenAI model family itself.
        "azure": Preset(
            "azure",
            "",
            reasoning_effort_values=("minimal", "low", "medium", "high"),
            max_tokens_field="max_completion_tokens",
            developer_role=True,
        ),
    }
)


def get_preset(preset: Preset | str | None) -> Preset:
    if isinstance(preset, Preset):
        return preset
    return PRESETS[preset or "generic"]


# --------------------------------------------------------------------------- targets and auth


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """The chat completions URL under `base_url` (which ends in /v1 or the host's equivalent)."""
    return base_url.rstrip("/") + "/chat/completions", {}


def auth_headers(secret: str) -> dict[str, str]:
    # Local hosts (Ollama, vLLM, LM Studio) usually run without a key.
    return {"authorization": f"Bearer {secret}"} if secret else {}


def azure_target(
    endpoint: str,
    deployment: str,
    api_version: str | None,
    endpoint_kind: Literal["chat", "responses"],
) -> tuple[str, dict[str, str]]:
    """URL and fixed headers for an Azure OpenAI resource (credentials: `azure_auth_headers`).

    "chat": the deployment's chat completions (`api-version` required, e.g. "2024-10-21").
    "responses": the v1 API's `/openai/v1/responses` (the deployment goes in the body's `model`;
    `api-version` only if given, e.g. "preview" for resources that still want it).
    """
    root = endpoint.rstrip("/")
    if endpoint_kind == "chat":
        if not api_version:
            raise ValueError("Azure chat deployments need an api-version")
        path = f"/openai/deployments/{quote(deployment, safe='')}/chat/completions"
        return f"{root}{path}?api-version={quote(api_version, safe='')}", {}
    if endpoint_kind == "responses":
        query = f"?api-version={quote(api_version, safe='')}" if api_version else ""
        return f"{root}/openai/v1/responses{query}", {}
    raise ValueError(f"unknown Azure endpoint kind {endpoint_kind!r}")


def azure_auth_headers(secret: str) -> dict[str, str]:
    return {"api-key": secret}


def azure_responses_body(body: dict[str, Any], deployment: str) -> dict[str, Any]:
    """A Codex Responses body for Azure's v1 Responses API: passed through as it is, except the
    deployment as `model`, no Codex-internal item metadata, and no reasoning envelopes that the
    gateway made for other providers (Azure cannot read them)."""
    out = {key: value for key, value in body.items() if key not in GATEWAY_ONLY_KEYS}
    out["model"] = deployment
    items = body.get("input")
    if isinstance(items, list):
        kept: list[Any] = []
        for item in items:
            if not isinstance(item, dict):
                kept.append(item)
                continue
            if item.get("type") == "reasoning" and str(item.get("encrypted_content") or "").startswith(
                REASONING_ENVELOPE_PREFIX
            ):
                continue
            kept.append({k: v for k, v in item.items() if k != "internal_chat_message_metadata_passthrough"})
        out["input"] = kept
    return out


# --------------------------------------------------------------------------- tools

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")
# Tool types Codex sends that a chat host cannot run (hosted by OpenAI, or Responses-only).
_FUNCTION_LIKE = ("function", "custom", "namespace")


@dataclasses.dataclass(frozen=True)
class ToolEntry:
    kind: Literal["function", "custom"]
    name: str  # Codex's name for it
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class ToolMap:
    """Chat function names ↔ the Codex tools they stand for."""

    by_chat_name: Mapping[str, ToolEntry]

    def entry(self, chat_name: str) -> ToolEntry:
        found = self.by_chat_name.get(chat_name)
        if found is not None:
            return found
        # Without a map (or an unknown name) Codex's one freeform tool is still recognised.
        return ToolEntry("custom" if chat_name == "apply_patch" else "function", chat_name)

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        for chat, entry in self.by_chat_name.items():
            if entry.name == name and entry.namespace == namespace:
                return chat
        if namespace is not None:
            return self.chat_name(name)
        return _sanitize_name(name)


def _sanitize_name(name: str) -> str:
    return _NAME_OK.sub("_", name)[:64] or "tool"


def _codex_tools(body: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """(tool, namespace) for every tool in `tools` and in `additional_tools` items, flattened."""
    found: list[tuple[dict[str, Any], str | None]] = []

    def add(tools: Any, namespace: str | None) -> None:
        for tool in tools or []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                add(tool.get("tools"), str(tool.get("name") or "") or None)
            else:
                found.append((tool, namespace))

    add(body.get("tools"), None)
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            add(item.get("tools"), None)
    return found


def _tool_entries(body: dict[str, Any]) -> tuple[dict[str, ToolEntry], list[tuple[str, dict[str, Any]]], list[str]]:
    """(chat name → entry, [(chat name, Codex tool)], names of tools dropped)."""
    entries: dict[str, ToolEntry] = {}
    served: list[tuple[str, dict[str, Any]]] = []
    dropped: list[str] = []
    for tool, namespace in _codex_tools(body):
        kind = tool.get("type")
        name = str(tool.get("name") or "")
        if kind not in ("function", "custom") or not name:
            dropped.append(name or str(kind))
            continue
        chat = _sanitize_name(name)
        if chat in entries and namespace:
            chat = _sanitize_name(f"{namespace}__{name}")
        base, n = chat, 2
        while chat in entries:  # still taken: number it
            chat = f"{base[:60]}_{n}"
            n += 1
        entries[chat] = ToolEntry("custom" if kind == "custom" else "function", name, namespace)
        served.append((chat, tool))
    return entries, served, dropped


def tool_map(body: dict[str, Any]) -> ToolMap:
    """How `build_request` named the request's tools; hand it to the response translators."""
    return ToolMap(types.MappingProxyType(_tool_entries(body)[0]))


def _custom_tool_function(chat: str, tool: dict[str, Any]) -> dict[str, Any]:
    description = str(tool.get("description") or "")
    # Codex describes these tools as freeform ("do not wrap in JSON"); a chat host can only call
    # functions, so the model is told where the freeform text goes instead.
    note = (
        "Here the tool is called as a function: put the complete freeform text in its one string "
        "argument `input`; it reaches the tool verbatim."
    )
    param_description = "The tool's freeform input."
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and fmt.get("definition"):
        param_description += f" It must match this {fmt.get('syntax') or ''} grammar:\n{fmt['definition']}"
    return {
        "name": chat,
        "description": f"{description}\n\n{note}".strip(),
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string", "description": param_description}},
            "required": ["input"],
            "additionalProperties": False,
        },
    }


def _function_tool(chat: str, tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": chat}
    if tool.get("description"):
        function["description"] = str(tool["description"])
    parameters = tool.get("parameters")
    function["parameters"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
    if tool.get("strict") is True:
        function["strict"] = True
    return function


# --------------------------------------------------------------------------- request

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


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text", "refusal")
        )
    return ""


def _image_part(part: dict[str, Any]) -> dict[str, Any] | None:
    url = part.get("image_url")
    if isinstance(url, dict):  # chat-shaped already
        url = url.get("url")
    if not isinstance(url, str) or not url:
        return None  # file_id images live in OpenAI's file store: nothing to send elsewhere
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail in ("auto", "low", "high"):
        image["detail"] = detail
    elif detail == "original":
        image["detail"] = "high"
    return {"type": "image_url", "image_url": image}


def _user_content(content: Any) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """(chat content, image parts) of a Responses message content."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = str(part.get("text") or "")
            if not text.strip():
                continue
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            image = _image_part(part)
            if image is None:
                note = "[image omitted: not available to this provider]"
                texts.append(note)
                parts.append({"type": "text", "text": note})
            else:
                images.append(image)
                parts.append(image)
        elif kind == "input_file":
            note = f"[file {part.get('filename') or ''} omitted: files are not supported by this provider]"
            texts.append(note)
            parts.append({"type": "text", "text": note})
    if not images:
        # Plain strings are what every host accepts; some reject arrays of text parts.
        return "\n".join(texts), []
    return parts, images


def _output_text(output: Any) -> tuple[str, list[dict[str, Any]]]:
    """(text, image parts) of a function_call_output / custom_tool_call_output `output`."""
    if isinstance(output, str):
        return output, []
    if isinstance(output, list):
        texts: list[str] = []
        images: list[dict[str, Any]] = []
        for part in output:
            if not isinstance(part, dict):
                continue
            if part.get("type") in ("input_text", "output_text", "text"):
                texts.append(str(part.get("text") or ""))
            elif part.get("type") == "input_image":
                image = _image_part(part)
                if image is not None:
                    images.append(image)
                    texts.append("[image attached in the next message]")
        return "\n".join(texts), images
    return json.dumps(output), []


def _chat_call_id(call_id: str, alnum9: bool) -> str:
    if not alnum9 or re.fullmatch(r"[A-Za-z0-9]{9}", call_id):
        return call_id
    # Deterministic, so a call and its output still pair up.
    digest = base64.b32encode(hashlib.sha256(call_id.encode()).digest()).decode().lower()
    return digest[:9]


class _Messages:
    """Builds the chat `messages` list from Responses input items, in order."""

    def __init__(self, preset: Preset, tools: ToolMap, provider_name: str, model: str) -> None:
        self.preset = preset
        self.tools = tools
        self.provider_name = provider_name
        self.model = model
        self.system: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self._assistant: dict[str, Any] | None = None  # the assistant message being assembled
        self._pending_images: list[dict[str, Any]] = []  # images from tool outputs
        self._reasoning_text: list[str] = []
        self._reasoning_details: list[Any] = []
        self._call_names: dict[str, str] = {}

    def _close_assistant(self) -> None:
        self._assistant = None

    def _flush_images(self) -> None:
        if self._pending_images:
            images, self._pending_images = self._pending_images, []
            text = {"type": "text", "text": "Images returned by the tool calls above:"}
            self.messages.append({"role": "user", "content": [text, *images]})

    def _append(self, message: dict[str, Any]) -> None:
        if message.get("role") != "tool":
            self._flush_images()
        self.messages.append(message)

    def _assistant_message(self) -> dict[str, Any]:
        if self._assistant is None:
            self._flush_images()
            self._assistant = {"role": "assistant", "content": None}
            self.messages.append(self._assistant)
            self._attach_reasoning(self._assistant)
        return self._assistant

    def _attach_reasoning(self, message: dict[str, Any]) -> None:
        replay = self.preset.reasoning_replay
        if replay == "reasoning_details" and self._reasoning_details:
            message["reasoning_details"] = self._reasoning_details
        elif replay == "reasoning_content" and self._reasoning_text:
            # Only tool-calling turns need it back (DeepSeek ignores it elsewhere); it is moved to
            # the message once that message has tool calls, see `_finish_reasoning`.
            message["__reasoning_content"] = "".join(self._reasoning_text)
        self._reasoning_text = []
        self._reasoning_details = []

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        role = item.get("role")
        if kind in (None, "message") and role in ("system", "developer"):
            text = _text_of(item.get("content"))
            if text:
                self.system.append(text)
        elif kind in (None, "message") and role == "user":
            content, _ = _user_content(item.get("content"))
            if isinstance(content, str) and not content.strip():
                return  # blank text: hosts refuse it (or take it as a turn with nothing to say)
            self._close_assistant()
            self._append({"role": "user", "content": content})
        elif kind in (None, "message") and role == "assistant":
            text = _text_of(item.get("content"))
            if not text.strip():
                return  # e.g. the "\n\n" Claude sends before a tool call: nothing to replay
            message = self._assistant
            if message is not None and message.get("tool_calls"):
                self._close_assistant()  # text after calls is a new turn
            message = self._assistant_message()
            message["content"] = (message.get("content") or "") + text
        elif kind in ("function_call", "custom_tool_call"):
            self._tool_call(item)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._tool_output(item)
        elif kind == "reasoning":
            self._close_assistant()
            self._reasoning(item)
        # Everything else (additional_tools, web_search_call, compaction, ...) has no chat form.

    def _reasoning(self, item: dict[str, Any]) -> None:
        payload = open_reasoning(item.get("encrypted_content"), self.provider_name, self.model)
        if payload is None:
            return  # made for another provider/model, or an OpenAI blob: never forwarded
        text = payload.get("reasoning_content")
        if isinstance(text, str):
            self._reasoning_text.append(text)
        details = payload.get("reasoning_details")
        if isinstance(details, list):
            self._reasoning_details.extend(details)

    def _tool_call(self, item: dict[str, Any]) -> None:
        call_id = str(item.get("call_id") or item.get("id") or "")
        name = str(item.get("name") or "")
        namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
        if item.get("type") == "custom_tool_call":
            arguments = json.dumps({"input": str(item.get("input") or "")})
        else:
            raw = item.get("arguments")
            arguments = raw if isinstance(raw, str) else json.dumps(raw or {})
        self._call_names[call_id] = name
        if not self.preset.tools:
            self._close_assistant()
            self._append({"role": "assistant", "content": f"[I called the tool {name} with: {arguments}]"})
            return
        message = self._assistant_message()
        message.setdefault("tool_calls", []).append(
            {
                "id": _chat_call_id(call_id, self.preset.alnum9_tool_call_ids),
                "type": "function",
                "function": {"name": self.tools.chat_name(name, namespace), "arguments": arguments},
            }
        )

    def _tool_output(self, item: dict[str, Any]) -> None:
        self._close_assistant()
        call_id = str(item.get("call_id") or "")
        text, images = _output_text(item.get("output"))
        if not self.preset.tools:
            name = self._call_names.get(call_id, "tool")
            self._append({"role": "user", "content": f"[Result of the tool {name}]\n{text}"})
            if images:
                self._append({"role": "user", "content": images})
            return
        self.messages.append(
            {"role": "tool", "tool_call_id": _chat_call_id(call_id, self.preset.alnum9_tool_call_ids), "content": text}
        )
        self._pending_images.extend(images)

    def result(self, developer_role: bool) -> list[dict[str, Any]]:
        self._flush_images()
        messages = _repair_tool_pairs(self.messages)
        for message in messages:
            reasoning = message.pop("__reasoning_content", None)
            if reasoning is not None and message.get("tool_calls"):
                message["reasoning_content"] = reasoning
        if self.preset.merge_consecutive_roles:
            messages = _merge_roles(messages)
        if self.system:
            messages.insert(
                0, {"role": "developer" if developer_role else "system", "content": "\n\n".join(self.system)}
            )
        return messages


def _repair_tool_pairs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every assistant tool call answered by a tool message right after it, and no tool message
    without its call: hosts answer 400 otherwise (Codex history can hold interrupted turns)."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []

    def settle() -> None:
        for call_id in pending:
            out.append({"role": "tool", "tool_call_id": call_id, "content": "(no output was recorded for this call)"})
        pending.clear()

    for message in messages:
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if call_id in pending:
                pending.remove(call_id)
                out.append(message)
            else:
                out.append({"role": "user", "content": f"[Output of an earlier tool call]\n{message.get('content')}"})
            continue
        settle()
        out.append(message)
        if message.get("role") == "assistant":
            pending.extend(call["id"] for call in message.get("tool_calls") or [])
    settle()
    return out


def _merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        previous = out[-1] if out else None
        if (
            previous is not None
            and previous["role"] == message["role"]
            and message["role"] in ("user", "assistant")
            and not previous.get("tool_calls")
            and not message.get("tool_calls")
        ):
            merged = dict(previous)
            first, second = previous.get("content"), message.get("content")
            if isinstance(first, str) and isinstance(second, str):
                merged["content"] = f"{first}\n\n{second}"
            else:
                merged["content"] = _as_parts(first) + _as_parts(second)
            out[-1] = merged
        else:
            out.append(message)
    return out


def _as_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return list(content)
    return [{"type": "text", "text": str(content or "")}]


def _tool_choice(choice: Any, tools: ToolMap) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and choice.get("name"):
            name = tools.chat_name(str(choice["name"]), choice.get("namespace"))
            return {"type": "function", "function": {"name": name}}
        if kind == "allowed_tools":
            return "required" if choice.get("mode") == "required" else "auto"
    return "auto"  # a hosted tool was chosen: it is not available here


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
    entries, served, dropped = _tool_entries(body)
    tools = ToolMap(types.MappingProxyType(entries))
    builder = _Messages(host, tools, options.provider_name, upstream_model)
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        builder.system.append(body["instructions"])
    for item in _input_items(body):
        builder.add(item)

    response_format, schema_note = _response_format(body.get("text"), host)
    if schema_note:
        builder.system.append(schema_note)
    out: dict[str, Any] = {"model": upstream_model, "messages": builder.result(host.developer_role)}

    if not host.tools:
        dropped = dropped + [str(tool.get("name")) for _, tool in served]
        served = []
    if served:
        out["tools"] = [
            {
                "type": "function",
                "function": _custom_tool_function(chat, tool)
                if tool.get("type") == "custom"
                else _function_tool(chat, tool),
            }
            for chat, tool in served
        ]
        if "tool_choice" in body:
            out["tool_choice"] = _tool_choice(body["tool_choice"], tools)
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


# --------------------------------------------------------------------------- answers: shared parts


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(raw: Any) -> Usage | None:
    """Chat usage → Usage (input incl. cached, output incl. reasoning). DeepSeek reports its cache
    hits as `prompt_cache_hit_tokens`; Groq streams usage inside `x_groq`."""
    if not isinstance(raw, dict):
        return None
    prompt_details = _dict(raw.get("prompt_tokens_details"))
    completion_details = _dict(raw.get("completion_tokens_details"))
    input_tokens = _int(raw.get("prompt_tokens"))
    output_tokens = _int(raw.get("completion_tokens"))
    cached = _int(prompt_details.get("cached_tokens")) or _int(raw.get("prompt_cache_hit_tokens"))
    reasoning = _int(completion_details.get("reasoning_tokens"))
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=min(cached, input_tokens),
        output_tokens=output_tokens,
        reasoning_tokens=min(reasoning, output_tokens),
    )


def _chunk_usage(chunk: dict[str, Any]) -> Usage | None:
    usage = _usage(chunk.get("usage"))
    if usage is None and isinstance(chunk.get("x_groq"), dict):
        usage = _usage(chunk["x_groq"].get("usage"))
    return usage


def _responses_usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _response_object(
    ctx: ResponseContext,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    *,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    return response_object(ctx, status, output, _responses_usage(usage), error=error, incomplete=incomplete)


_CONTEXT_WORDS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "reduce the length",
    "input is too long",
    "tokens exceeds",
    "exceeds the limit",
)
_QUOTA_WORDS = ("insufficient_quota", "quota", "credit", "billing", "balance", "payment")
_SECRET = re.compile(
    r"(?i)(bearer\s+\S+|\b(?:sk|gsk|xai|csk|pplx|fw|nvapi|or|key)[-_][A-Za-z0-9_\-*.]{6,}|\b[A-Za-z0-9]{40,}\b)"
)


def _error_fields(raw: Any) -> tuple[str, str, str]:
    """(message, code, type) from whatever error shape a host sent."""
    error = raw.get("error", raw) if isinstance(raw, dict) else raw
    if isinstance(error, str):
        return error, "", ""
    if not isinstance(error, dict):
        return "", "", ""
    message = error.get("message", error.get("detail", ""))
    if not isinstance(message, str):
        message = json.dumps(message)  # Mistral's 422 carries pydantic's detail list
    code = error.get("code")
    kind = error.get("type")
    return message, "" if code is None else str(code), "" if kind is None else str(kind)


def _classify(status: int, message: str, code: str, kind: str) -> str:
    """The error code Codex understands for a provider error."""
    words = f"{message} {code} {kind}".lower()
    if status == 413 or any(word in words for word in _CONTEXT_WORDS):
        return "context_length_exceeded"
    if (
        status == 402
        or (status == 429 and any(word in words for word in _QUOTA_WORDS))
        or "insufficient_quota" in words
    ):
        return "insufficient_quota"
    if status == 429 or "rate_limit" in words or "rate limit" in words:
        return "rate_limit_exceeded"
    if status in (400, 404, 422):
        return "invalid_request_error"
    return "server_error"


def _redact(message: str) -> str:
    return _SECRET.sub("[redacted]", message)[:2000]


def translate_error(status: int, provider_body: bytes) -> tuple[int, dict[str, Any]]:
    """A host's error answer → (status for Codex, OpenAI-shaped error body)."""
    try:
        raw: Any = json.loads(provider_body or b"null")
    except ValueError:
        raw = provider_body.decode("utf-8", "replace")
    message, code, kind = _error_fields(raw)
    if status in (401, 403):
        # The host refused the gateway's key: not the developer's fault, and its message may
        # quote part of the key, so it is not passed on.
        return 502, {
            "error": {
                "message": f"The provider refused the gateway's credentials (HTTP {status}); "
                "ask the gateway's operator to check the provider key.",
                "type": "server_error",
                "code": "upstream_auth_failed",
                "param": None,
            }
        }
    text = _redact(message or f"HTTP {status}")
    words = f"{message} {code} {kind}".lower()
    reason = _classify(status, message, code, kind)
    if reason == "context_length_exceeded":
        return 400, _error_body(f"The provider says the input is too long: {text}", "invalid_request_error", reason)
    if reason == "insufficient_quota":
        return 429, _error_body(f"The provider's quota is used up: {text}", "insufficient_quota", reason)
    if reason == "rate_limit_exceeded":
        return 429, _error_body(f"The provider is rate limiting: {text}", "rate_limit_exceeded", reason)
    if reason == "invalid_request_error":
        return 400, _error_body(f"The provider rejected the request: {text}", "invalid_request_error", reason)
    if status in (503, 529) or "overload" in words or "unavailable" in words:
        return 503, _error_body(f"The provider is overloaded: {text}", "server_error", "server_error")
    return 502, _error_body(f"The provider failed (HTTP {status}): {text}", "server_error", "server_error")


def _error_body(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def _failure(status: int, raw: Any) -> dict[str, Any]:
    """A `response.error` object for an error met inside an answer."""
    message, code, kind = _error_fields(raw)
    if code.isdigit():  # OpenRouter puts the HTTP status of a mid-stream failure in `code`
        status = int(code)
    reason = _classify(status, message, code, kind)
    if reason == "invalid_request_error":
        reason = "server_error"
    return {"code": reason, "message": _redact(message or "the provider reported an error")}


class _ThinkSplitter:
    """Splits content that opens with `<think>...</think>` (R1-style models on Groq, Together,
    Fireworks, Perplexity, local hosts) into reasoning and text, across arbitrary deltas."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self._state = "start"
        self._buffer = ""
        self._strip = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._buffer += text
        while self._buffer:
            if self._state == "start":
                head = self._buffer.lstrip()
                if head.startswith(self.OPEN):
                    self._state, self._buffer = "think", head[len(self.OPEN) :]
                elif self.OPEN.startswith(head):
                    break  # could still become "<think>"
                else:
                    self._state = "text"
            elif self._state == "think":
                end = self._buffer.find(self.CLOSE)
                if end >= 0:
                    out.append(("reasoning", self._buffer[:end]))
                    self._state, self._buffer, self._strip = "text", self._buffer[end + len(self.CLOSE) :], True
                    continue
                keep = next((n for n in range(len(self.CLOSE) - 1, 0, -1) if self._buffer.endswith(self.CLOSE[:n])), 0)
                out.append(("reasoning", self._buffer[: len(self._buffer) - keep]))
                self._buffer = self._buffer[len(self._buffer) - keep :]
                break
            else:
                if self._strip:
                    self._buffer = self._buffer.lstrip()
                    if not self._buffer:
                        break
                    self._strip = False
                out.append(("text", self._buffer))
                self._buffer = ""
        return [(kind, piece) for kind, piece in out if piece]

    def flush(self) -> list[tuple[str, str]]:
        rest, self._buffer = self._buffer, ""
        if not rest:
            return []
        return [("reasoning" if self._state == "think" else "text", rest)]


def _content_pieces(content: Any) -> list[tuple[str, str]]:
    """Mistral's content chunks: [{"type": "thinking", "thinking": [...]}, {"type": "text", ...}]."""
    if isinstance(content, str):
        return [("text", content)]
    pieces: list[tuple[str, str]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            pieces.append(("text", part["text"]))
        elif part.get("type") == "thinking":
            for inner in part.get("thinking") or []:
                if isinstance(inner, dict) and isinstance(inner.get("text"), str):
                    pieces.append(("reasoning", inner["text"]))
    return pieces


def _reasoning_text(source: dict[str, Any]) -> str:
    # DeepSeek, vLLM (older), LM Studio: reasoning_content; OpenRouter, Ollama, vLLM: reasoning.
    for key in ("reasoning_content", "reasoning"):
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _merge_details(details: list[dict[str, Any]], pieces: Any) -> None:
    """OpenRouter streams `reasoning_details` in pieces; those sharing an index are one block."""
    for piece in pieces if isinstance(pieces, list) else []:
        if not isinstance(piece, dict):
            continue
        target = next(
            (
                d
                for d in details
                if "index" in piece and d.get("index") == piece.get("index") and d.get("type") == piece.get("type")
            ),
            None,
        )
        if target is None:
            details.append(dict(piece))
            continue
        for key, value in piece.items():
            if key in ("text", "summary", "data") and isinstance(value, str) and isinstance(target.get(key), str):
                target[key] += value
            elif value is not None:
                target[key] = value


def _reasoning_item(
    ctx: ResponseContext, item_id: str, text: str, details: list[dict[str, Any]], envelope_model: str
) -> dict[str, Any]:
    payload: dict[str, object] = {"reasoning_content": text}
    if details:
        payload["reasoning_details"] = details
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
        "encrypted_content": seal_reasoning(ctx.provider_name, envelope_model, payload),
    }


def _custom_input(arguments: str) -> str:
    """The freeform input out of the JSON arguments of the `input`-only function (models
    sometimes send the raw text instead of JSON: then that is the input)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        if isinstance(parsed.get("input"), str):
            return without_lone_surrogates(str(parsed["input"]))
        strings = [value for value in parsed.values() if isinstance(value, str)]
        if len(strings) == 1:
            return without_lone_surrogates(strings[0])
    return parsed if isinstance(parsed, str) else arguments


def _arguments(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    return json.dumps(raw) if raw is not None else ""


def _call_item(
    tools: ToolMap, chat_name: str, call_id: str, arguments: str, item_id: str, status: str
) -> dict[str, Any]:
    entry = tools.entry(chat_name)
    if entry.kind == "custom":
        item: dict[str, Any] = {
            "type": "custom_tool_call",
            "id": item_id,
            "call_id": call_id,
            "name": entry.name,
            "input": _custom_input(arguments),
        }
    else:
        item = {
            "type": "function_call",
            "id": item_id,
            "call_id": call_id,
            "name": entry.name,
            "arguments": arguments,
            "status": status,
        }
    if entry.namespace:
        item["namespace"] = entry.namespace
    return item


_STATUS_BY_FINISH = {"length": "incomplete", "error": "failed"}


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    *,
    tools: ToolMap | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A non-streamed chat completion → a Responses API `response` object. Reasoning envelopes are
    sealed for `upstream_model` (the one given to `build_request`; default `ctx.model`)."""
    tools = tools or ToolMap({})
    usage = _usage(provider_body.get("usage"))
    choices = provider_body.get("choices")
    if not isinstance(choices, list) or not choices:
        if provider_body.get("error") is not None:
            return _response_object(ctx, "failed", [], usage, error=_failure(500, provider_body))
        return _response_object(ctx, "failed", [], usage, error=_failure(500, "the provider sent no answer"))
    choice = _dict(choices[0])
    message = _dict(choice.get("message"))
    finish = choice.get("finish_reason")
    status = _STATUS_BY_FINISH.get(str(finish), "completed")

    reasoning = [_reasoning_text(message)] if _reasoning_text(message) else []
    texts: list[str] = []
    splitter = _ThinkSplitter()
    for kind, piece in _content_pieces(message.get("content")):
        parts = splitter.feed(piece) if kind == "text" else [(kind, piece)]
        for part_kind, part in parts:
            (reasoning if part_kind == "reasoning" else texts).append(part)
    for part_kind, part in splitter.flush():
        (reasoning if part_kind == "reasoning" else texts).append(part)
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        texts.append(message["refusal"])
    details: list[dict[str, Any]] = []
    _merge_details(details, message.get("reasoning_details"))

    output: list[dict[str, Any]] = []
    item_status = "incomplete" if status == "incomplete" else "completed"
    if reasoning or details:
        output.append(_reasoning_item(ctx, _new_id("rs"), "".join(reasoning), details, upstream_model or ctx.model))
    if "".join(texts).strip():  # whitespace alone would be replayed as a message hosts refuse
        text = "".join(texts)
        output.append(
            {
                "type": "message",
                "id": _new_id("msg"),
                "role": "assistant",
                "status": item_status,
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            continue
        function = call["function"]
        call_id = str(call.get("id") or _new_id("call"))
        output.append(
            _call_item(
                tools,
                str(function.get("name") or ""),
                call_id,
                _arguments(function.get("arguments")),
                _new_id("fc"),
                item_status,
            )
        )
    if status == "failed":
        return _response_object(ctx, "failed", output, usage, error=_failure(500, "the provider stopped with an error"))
    if finish == "content_filter":
        log.warning("provider %s: answer %s stopped by its content filter", ctx.provider_name, ctx.response_id)
    return _response_object(
        ctx, status, output, usage, incomplete="max_output_tokens" if status == "incomplete" else None
    )


# --------------------------------------------------------------------------- streams

DONE: Mapping[str, bool] = types.MappingProxyType({"done": True})


class ChatStreamDecoder:
    """SSE bytes → chunk dicts; `data: [DONE]` becomes `DONE`; an `event: error` (or any JSON
    without choices but with `error`) comes out as `{"error": ...}`."""

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for name, data in self._parser.feed(chunk):
            text = data.strip()
            if not text:
                continue
            if text == "[DONE]":
                events.append(dict(DONE))
                continue
            try:
                event = json.loads(text)
            except ValueError:
                log.warning("undecodable chat stream event skipped: %.200s", text)
                continue
            if not isinstance(event, dict):
                continue
            if name == "error" and "error" not in event:
                event = {"error": event}
            events.append(event)
        return events


@dataclasses.dataclass
class _OpenCall:
    output_index: int | None = None
    item_id: str = ""
    call_id: str = ""
    chat_name: str = ""
    arguments: str = ""
    custom: bool = False
    input_stream: InputStringStream | None = None
    done: bool = False


class StreamTranslator:
    """Chat completion chunks (from `ChatStreamDecoder`) → Responses stream events, as they come."""

    def __init__(
        self, ctx: ResponseContext, *, tools: ToolMap | None = None, upstream_model: str | None = None
    ) -> None:
        self.ctx = ctx
        # Envelopes are scoped to the model the host ran, as `build_request` opens them.
        self.envelope_model = upstream_model or ctx.model
        self.tools = tools or ToolMap({})
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self.content_filtered = False  # the host's content filter ended the answer
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any] | None] = []  # finished items, by output_index
        self._splitter = _ThinkSplitter()
        self._message: dict[str, Any] | None = None  # open message: index, id, text
        self._held = ""  # whitespace before a message opens: announced only with real text
        self._reasoning: dict[str, Any] | None = None  # open reasoning: index, id, text, details
        self._calls: dict[int, _OpenCall] = {}
        self._finish: str | None = None
        self._done_seen = False

    # ---- plumbing

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return event

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        response = _response_object(self.ctx, "in_progress", [], None)
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _next_index(self) -> int:
        self._output.append(None)
        return len(self._output) - 1

    # ---- feeding

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self.outcome is not None:
            return []  # the answer is over; a host's trailing chunks change nothing
        out = self._start()
        if event.get("done") is True:
            self._done_seen = True
            return out + self._terminal()
        usage = _chunk_usage(event)
        if usage is not None:
            self.usage = usage
        choices = event.get("choices")
        if event.get("error") is not None and not choices:
            return out + self._fail(_failure(500, event))
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Codex asks for one answer
            delta = _dict(choice.get("delta"))
            out += self._delta(delta)
            finish = choice.get("finish_reason")
            if finish:
                self._finish = str(finish)
                if self._finish == "error":
                    error = event.get("error") or choice.get("error") or "the provider stopped with an error"
                    return out + self._fail(_failure(500, error))
                out += self._close_all()
        return out

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        reasoning = _reasoning_text(delta)
        details = delta.get("reasoning_details")
        if reasoning or (isinstance(details, list) and details):
            out += self._reasoning_delta(reasoning, details)
        content = delta.get("content")
        if content:
            for kind, piece in _content_pieces(content):
                parts = self._splitter.feed(piece) if kind == "text" else [(kind, piece)]
                for part_kind, part in parts:
                    out += self._reasoning_delta(part, None) if part_kind == "reasoning" else self._text_delta(part)
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            out += self._text_delta(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out += self._call_delta(call)
        return out

    def _reasoning_delta(self, text: str, details: Any) -> list[dict[str, Any]]:
        out = self._close_message()
        if self._reasoning is None:
            index = self._next_index()
            self._reasoning = {"index": index, "id": _new_id("rs"), "text": "", "details": [], "part": False}
            item = {"id": self._reasoning["id"], "type": "reasoning", "summary": []}
            out.append(self._event("response.output_item.added", output_index=index, item=item))
        state = self._reasoning
        _merge_details(state["details"], details)
        if text:
            if not state["part"]:
                state["part"] = True
                out.append(
                    self._event(
                        "response.reasoning_summary_part.added",
                        item_id=state["id"],
                        output_index=state["index"],
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            state["text"] += text
            out.append(
                self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=state["id"],
                    output_index=state["index"],
                    summary_index=0,
                    delta=text,
                )
            )
        return out

    def _close_reasoning(self) -> list[dict[str, Any]]:
        state, self._reasoning = self._reasoning, None
        if state is None:
            return []
        out: list[dict[str, Any]] = []
        if state["part"]:
            part = {"type": "summary_text", "text": state["text"]}
            common = {"item_id": state["id"], "output_index": state["index"], "summary_index": 0}
            out.append(self._event("response.reasoning_summary_text.done", **common, text=state["text"]))
            out.append(self._event("response.reasoning_summary_part.done", **common, part=part))
        item = _reasoning_item(self.ctx, state["id"], state["text"], state["details"], self.envelope_model)
        self._output[state["index"]] = item
        out.append(self._event("response.output_item.done", output_index=state["index"], item=item))
        return out

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        out = self._close_reasoning()
        if self._message is None:
            # A whitespace-only message (e.g. "\n\n" before a tool call) would be replayed by
            # Codex next turn and refused upstream: open the item only once there is text.
            self._held += text
            if not self._held.strip():
                return out
            text, self._held = self._held, ""
            index = self._next_index()
            self._message = {"index": index, "id": _new_id("msg"), "text": ""}
            item = {
                "type": "message",
                "id": self._message["id"],
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message["id"],
                    output_index=index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                )
            )
        self._message["text"] += text
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message["id"],
                output_index=self._message["index"],
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _close_message(self, status: str = "completed") -> list[dict[str, Any]]:
        state, self._message, self._held = self._message, None, ""
        if state is None:
            return []
        part = {"type": "output_text", "text": state["text"], "annotations": []}
        common = {"item_id": state["id"], "output_index": state["index"], "content_index": 0}
        item = {"type": "message", "id": state["id"], "role": "assistant", "status": status, "content": [part]}
        self._output[state["index"]] = item
        return [
            self._event("response.output_text.done", **common, text=state["text"], logprobs=[]),
            self._event("response.content_part.done", **common, part=part),
            self._event("response.output_item.done", output_index=state["index"], item=item),
        ]

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_reasoning() + self._close_message()
        index = call.get("index", 0) if isinstance(call.get("index"), int) else len(self._calls)
        state = self._calls.setdefault(index, _OpenCall())
        function = _dict(call.get("function"))
        if isinstance(call.get("id"), str) and call["id"] and not state.call_id:
            state.call_id = call["id"]
        if isinstance(function.get("name"), str) and function["name"] and not state.chat_name:
            state.chat_name = function["name"]
        fragment = _arguments(function.get("arguments"))
        if state.output_index is None:
            if not state.chat_name:
                state.arguments += fragment  # nothing to announce before the name is known
                return out
            entry = self.tools.entry(state.chat_name)
            state.custom = entry.kind == "custom"
            state.call_id = state.call_id or _new_id("call")
            state.output_index = self._next_index()
            state.item_id = _new_id("ctc" if state.custom else "fc")
            added = _call_item(self.tools, state.chat_name, state.call_id, "", state.item_id, "in_progress")
            if state.custom:
                added["input"] = ""
                state.input_stream = InputStringStream()
            out.append(self._event("response.output_item.added", output_index=state.output_index, item=added))
            fragment, state.arguments = state.arguments + fragment, ""
        if fragment:
            state.arguments += fragment
            out += self._argument_delta(state, fragment)
        return out

    def _argument_delta(self, state: _OpenCall, fragment: str) -> list[dict[str, Any]]:
        common = {"item_id": state.item_id, "output_index": state.output_index}
        if not state.custom:
            return [self._event("response.function_call_arguments.delta", **common, delta=fragment)]
        assert state.input_stream is not None
        piece = state.input_stream.feed(fragment)
        return [self._event("response.custom_tool_call_input.delta", **common, delta=piece)] if piece else []

    def _close_call(self, state: _OpenCall, status: str) -> list[dict[str, Any]]:
        if state.done or state.output_index is None:
            return []
        state.done = True
        common = {"item_id": state.item_id, "output_index": state.output_index}
        item = _call_item(self.tools, state.chat_name, state.call_id, state.arguments, state.item_id, status)
        self._output[state.output_index] = item
        out: list[dict[str, Any]] = []
        if state.custom:
            assert state.input_stream is not None
            final = str(item["input"])
            shown = state.input_stream.emitted
            if final.startswith(shown) and len(final) > len(shown):
                out.append(self._event("response.custom_tool_call_input.delta", **common, delta=final[len(shown) :]))
            out.append(self._event("response.custom_tool_call_input.done", **common, input=final))
        else:
            out.append(self._event("response.function_call_arguments.done", **common, arguments=state.arguments))
        out.append(self._event("response.output_item.done", output_index=state.output_index, item=item))
        return out

    def _close_all(self) -> list[dict[str, Any]]:
        status = "incomplete" if self._finish == "length" else "completed"
        out: list[dict[str, Any]] = []
        for kind, piece in self._splitter.flush():
            out += self._reasoning_delta(piece, None) if kind == "reasoning" else self._text_delta(piece)
        out += self._close_reasoning() + self._close_message(status)
        for index in sorted(self._calls):
            out += self._close_call(self._calls[index], status)
        return out

    # ---- endings

    def _final_output(self) -> list[dict[str, Any]]:
        return [item for item in self._output if item is not None]

    def _terminal(self) -> list[dict[str, Any]]:
        out = self._close_all()
        if self._finish == "length":
            self.outcome = "incomplete"
            response = _response_object(
                self.ctx, "incomplete", self._final_output(), self.usage, incomplete="max_output_tokens"
            )
            return out + [self._event("response.incomplete", response=response)]
        if self._finish == "content_filter":
            self.content_filtered = True
            log.warning(
                "provider %s: answer %s stopped by its content filter", self.ctx.provider_name, self.ctx.response_id
            )
        self.outcome = "completed"
        response = _response_object(self.ctx, "completed", self._final_output(), self.usage)
        return out + [self._event("response.completed", response=response)]

    def _fail(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        self.outcome = "failed"
        response = _response_object(self.ctx, "failed", self._final_output(), self.usage, error=error)
        return [self._event("response.failed", response=response)]

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended: the terminal event, unless one was sent already."""
        if self.outcome is not None:
            return []
        out = self._start()
        if self._finish is not None or self._done_seen:
            return out + self._terminal()
        return out + self._fail(
            {"code": "server_error", "message": f"The provider's stream ended early ({self.ctx.provider_name})."}
        )
