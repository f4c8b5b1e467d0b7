"""What a chat answer carries, read: usage counts, `<think>` tags, reasoning fields, Mistral's
content parts, tool-call arguments. Shared by the stream translator (and so by whole answers)."""

from __future__ import annotations

import json
from typing import Any

from codexgate.usage import Usage

__all__ = [
    "ThinkSplitter",
    "arguments_text",
    "as_dict",
    "chat_usage",
    "chunk_usage",
    "content_pieces",
    "merge_details",
    "reasoning_text",
]


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def chat_usage(raw: Any) -> Usage | None:
    """Chat usage → Usage (input incl. cached, output incl. reasoning). DeepSeek reports its cache
    hits as `prompt_cache_hit_tokens`; Groq streams usage inside `x_groq`."""
    if not isinstance(raw, dict):
        return None
    prompt_details = as_dict(raw.get("prompt_tokens_details"))
    completion_details = as_dict(raw.get("completion_tokens_details"))
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


def chunk_usage(chunk: dict[str, Any]) -> Usage | None:
    usage = chat_usage(chunk.get("usage"))
    if usage is None and isinstance(chunk.get("x_groq"), dict):
        usage = chat_usage(chunk["x_groq"].get("usage"))
    return usage


class ThinkSplitter:
    """Splits content that opens with `<think>...</think>` (R1-style models on Groq, Together,
    Fireworks, Perplexity, local hosts) into reasoning and text, across arbitrary deltas."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self._state = "start"
        self._buffer = ""
        self._strip = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        if self._state == "text" and not self._strip:  # past any <think> block (nothing buffered): as is
            return [("text", text)] if text else []
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


def content_pieces(content: Any) -> list[tuple[str, str]]:
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


def reasoning_text(source: dict[str, Any]) -> str:
    # DeepSeek, vLLM (older), LM Studio: reasoning_content; OpenRouter, Ollama, vLLM: reasoning.
    for key in ("reasoning_content", "reasoning"):
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def merge_details(details: list[dict[str, Any]], pieces: Any) -> None:
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


def arguments_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    return json.dumps(raw) if raw is not None else ""
