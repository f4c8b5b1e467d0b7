"""Reading a chat answer into Responses parts: usage, think tags, reasoning items, tool-call items."""

from __future__ import annotations

import json
import uuid
from typing import Any

from codexgate.providers.base import (
    ResponseContext,
    Usage,
    response_object,
    seal_reasoning,
)
from codexgate.providers.chat.tools import ToolMap
from codexgate.providers.jsonstring import without_lone_surrogates

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
