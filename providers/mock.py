"""The built-in mock provider: deterministic answers in the real OpenAI wire formats.

Pure functions from a request body to a response body or a list of stream events; the
`Route` addon does the waiting and the I/O. A user message asking to run a command in
backticks ("run `ls -la`") becomes a call of the request's shell tool, so a full Codex tool
round trip works without any model.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from codexgate.policies.schema import MockProvider
from codexgate.providers.base import input_items as _input_items
from codexgate.providers.family import Prepared, ProviderFamily
from codexgate.sse import encode_chat_stream, encode_responses_stream

SHELL_TOOL_NAMES = ("shell_command", "exec_command", "shell", "container.exec", "local_shell")
_RUN_REQUEST = re.compile(r"\brun\b[^`]*`([^`]+)`", re.IGNORECASE)
# "... outside the sandbox": the call asks Codex for unsandboxed execution, which Codex puts to the user.
ESCALATION_REQUEST = "outside the sandbox"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _all_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Tools from `tools` and from Codex's `additional_tools` input items (namespaces)."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            for tool in item.get("tools") or []:
                if isinstance(tool, dict):
                    tools.append(tool)
                    tools.extend(t for t in tool.get("tools") or [] if isinstance(t, dict))
    return tools


def _shell_call(tools: list[dict[str, Any]], command: str, escalate: bool = False) -> tuple[str, str] | None:
    """(tool name, JSON arguments) calling the request's shell tool with `command`."""
    by_name = {tool.get("name"): tool for tool in tools if tool.get("type") in ("function", None)}
    for name in SHELL_TOOL_NAMES:
        tool = by_name.get(name)
        if tool is None:
            continue
        properties = ((tool.get("parameters") or {}).get("properties")) or {}
        if "cmd" in properties:
            arguments: dict[str, Any] = {"cmd": command}
            if escalate and "sandbox_permissions" in properties:
                arguments.update(sandbox_permissions="require_escalated", justification="You asked for it.")
            return name, json.dumps(arguments)
        if (properties.get("command") or {}).get("type") == "array":
            return name, json.dumps({"command": ["bash", "-lc", command]})
        return name, json.dumps({"command": command})
    return None


def plan_reply(body: dict[str, Any]) -> dict[str, Any]:
    """What the mock model says next: {"call": (name, args)} or {"text": str}."""
    items = _input_items(body)
    last = items[-1] if items else {}
    if last.get("type") in ("function_call_output", "custom_tool_call_output"):
        output = last.get("output")
        text = output if isinstance(output, str) else json.dumps(output)
        return {"text": f"The command finished. Its output was: {text.strip()[:400]}"}
    user_text = ""
    for item in reversed(items):
        if item.get("role") == "user":
            user_text = _text_of(item.get("content"))
            break
    match = _RUN_REQUEST.search(user_text)
    if match:
        call = _shell_call(_all_tools(body), match.group(1), ESCALATION_REQUEST in user_text.lower())
        if call:
            return {"call": call}
    return {"text": f"mock-model reply: {user_text.strip()[:200] or 'hello'}"}


def estimated_input_tokens(raw_body: bytes, settings: MockProvider) -> int:
    return settings.input_tokens if settings.input_tokens is not None else max(1, len(raw_body) // 4)


def within_cap(settings: MockProvider, body: dict[str, Any]) -> MockProvider:
    """The settings with output no longer than the request's own cap, as a real provider stops there."""
    caps = [body.get(name) for name in ("max_output_tokens", "max_completion_tokens", "max_tokens")]
    limits = [cap for cap in caps if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0]
    if not limits or min(limits) >= settings.output_tokens:
        return settings
    return settings.model_copy(update={"output_tokens": min(limits)})


def _responses_usage(input_tokens: int, settings: MockProvider) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": min(settings.cached_tokens, input_tokens), "cache_write_tokens": 0},
        "output_tokens": settings.output_tokens,
        "output_tokens_details": {"reasoning_tokens": min(settings.reasoning_tokens, settings.output_tokens)},
        "total_tokens": input_tokens + settings.output_tokens,
    }


def _output_item(plan: dict[str, Any]) -> dict[str, Any]:
    if "call" in plan:
        name, arguments = plan["call"]
        return {
            "type": "function_call",
            "id": _new_id("fc"),
            "call_id": _new_id("call"),
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }
    return {
        "type": "message",
        "id": _new_id("msg"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": plan["text"], "annotations": []}],
    }


def _response_object(body: dict[str, Any], model: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": _new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [],
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": None,
        "top_p": None,
    }


def responses_body(body: dict[str, Any], model: str, input_tokens: int, settings: MockProvider) -> dict[str, Any]:
    item = _output_item(plan_reply(body))
    return _response_object(body, model, "completed", [item], _responses_usage(input_tokens, settings))


def responses_events(
    body: dict[str, Any], model: str, input_tokens: int, settings: MockProvider
) -> list[dict[str, Any]]:
    """A complete Responses stream, event for event as OpenAI sends it."""
    item = _output_item(plan_reply(body))
    final = _response_object(body, model, "completed", [item], _responses_usage(input_tokens, settings))
    started = dict(final, status="in_progress", output=[], usage=None)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    if item["type"] == "function_call":
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(item, arguments="", status="in_progress"),
            },
            {
                "type": "response.function_call_arguments.delta",
                "output_index": 0,
                "item_id": item["id"],
                "delta": item["arguments"],
            },
            {
                "type": "response.function_call_arguments.done",
                "output_index": 0,
                "item_id": item["id"],
                "arguments": item["arguments"],
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        ]
    else:
        text = item["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": []}
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(item, content=[], status="in_progress"),
            },
            {
                "type": "response.content_part.added",
                "output_index": 0,
                "item_id": item["id"],
                "content_index": 0,
                "part": part,
            },
        ]
        for piece in re.findall(r"\S+\s*", text) or [text]:
            events.append(
                {
                    "type": "response.output_text.delta",
                    "output_index": 0,
                    "item_id": item["id"],
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }
            )
        events += [
            {
                "type": "response.output_text.done",
                "output_index": 0,
                "item_id": item["id"],
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "output_index": 0,
                "item_id": item["id"],
                "content_index": 0,
                "part": dict(part, text=text),
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        ]
    events.append({"type": "response.completed", "response": final})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def _chat_plan(body: dict[str, Any]) -> dict[str, Any]:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return {"text": f"The command finished. Its output was: {_text_of(last.get('content')).strip()[:400]}"}
    user_text = _text_of(last.get("content")) if last.get("role") == "user" else ""
    match = _RUN_REQUEST.search(user_text)
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    if match:
        call = _shell_call([dict(t, type="function") for t in tools], match.group(1))
        if call:
            return {"call": call}
    return {"text": f"mock-model reply: {user_text.strip()[:200] or 'hello'}"}


def _chat_usage(input_tokens: int, settings: MockProvider) -> dict[str, Any]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": settings.output_tokens,
        "total_tokens": input_tokens + settings.output_tokens,
        "prompt_tokens_details": {"cached_tokens": min(settings.cached_tokens, input_tokens)},
        "completion_tokens_details": {"reasoning_tokens": min(settings.reasoning_tokens, settings.output_tokens)},
    }


def chat_body(body: dict[str, Any], model: str, input_tokens: int, settings: MockProvider) -> dict[str, Any]:
    plan = _chat_plan(body)
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if "call" in plan:
        name, arguments = plan["call"]
        message["tool_calls"] = [
            {"id": _new_id("call"), "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
        finish = "tool_calls"
    else:
        message["content"] = plan["text"]
        finish = "stop"
    return {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _chat_usage(input_tokens, settings),
    }


def chat_chunks(body: dict[str, Any], model: str, input_tokens: int, settings: MockProvider) -> list[dict[str, Any]]:
    full = chat_body(body, model, input_tokens, settings)
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"], "model": model}
    message = full["choices"][0]["message"]
    chunks: list[dict[str, Any]] = [
        dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    ]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        chunks.append(
            dict(base, choices=[{"index": 0, "delta": {"tool_calls": [dict(call, index=0)]}, "finish_reason": None}])
        )
    else:
        for piece in re.findall(r"\S+\s*", message["content"]) or [message["content"]]:
            chunks.append(dict(base, choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
    chunks.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": full["choices"][0]["finish_reason"]}]))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append(dict(base, choices=[], usage=full["usage"]))
    return chunks


class MockFamily(ProviderFamily[MockProvider]):
    """Answered inside the gateway (`MockUpstream`), in whatever API the client speaks."""

    kind = "mock"
    settings_type = MockProvider
    answers_locally = True
    endpoints = frozenset({"responses", "chat"})

    def key_weights(self) -> list[int]:
        return []

    def prepare(self, body: dict[str, Any], upstream_model: str, provider_name: str,
                endpoint: str = "responses") -> Prepared:  # fmt: skip
        return Prepared("", {}, None, bool(body.get("stream")), upstream_model, translate=False)

    async def answer_locally(
        self, body: dict[str, Any], endpoint: str, stream: bool, model: str, raw_body: bytes
    ) -> tuple[bytes, str]:
        """(content, content type) of the answer, after the configured latency."""
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        settings = within_cap(self.settings, body)
        input_tokens = estimated_input_tokens(raw_body, settings)
        if endpoint == "responses" and stream:
            return encode_responses_stream(responses_events(body, model, input_tokens, settings)), "text/event-stream"
        if endpoint == "responses":
            return json.dumps(responses_body(body, model, input_tokens, settings)).encode(), "application/json"
        if stream:
            # As from OpenAI, the gateway asks for the usage chunk: the request is accounted from it.
            body = dict(body, stream_options={**(body.get("stream_options") or {}), "include_usage": True})
            return encode_chat_stream(chat_chunks(body, model, input_tokens, settings)), "text/event-stream"
        return json.dumps(chat_body(body, model, input_tokens, settings)).encode(), "application/json"
