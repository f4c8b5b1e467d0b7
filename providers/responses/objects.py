"""The Responses API `response` object every translated answer ends in, the request fields it
echoes, and its `usage` block — one definition for every family.

`ResponseContext` is what a translator knows about the request it answers; `response_object`
builds the SDK-valid object (no extra keys, `openai.types.responses.Response`) for a status,
an output list and a usage block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from codexgate.usage import Usage

__all__ = ["ResponseContext", "echoed_fields", "request_echo", "response_object", "usage_block"]

JSON = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ResponseContext:
    """What a response translator needs to know about the request it answers."""

    response_id: str  # "resp_..." minted by the gateway, stable for the whole stream
    model: str  # the model name to report back (what the client asked for)
    provider_name: str
    created_at: int  # epoch seconds
    # Request fields the answer repeats (see `request_echo`); absent ones take the API defaults.
    echo: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def response_object(
    ctx: ResponseContext,
    status: str,
    output: list[JSON],
    usage: JSON | None,
    *,
    error: JSON | None = None,
    incomplete: str | None = None,
    echoed: JSON | None = None,
) -> JSON:
    """A Responses API `response` object as translators report it (SDK-valid, no extra keys).
    `echoed`: `echoed_fields(ctx)` where the caller has it already (an answer's first and last
    `response` objects echo the same fields)."""
    return {
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "model": ctx.model,
        "output": output,
        **(echoed_fields(ctx) if echoed is None else echoed),
        "usage": usage,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
    }


# What a Responses `response` object repeats from its request, with the API's defaults.
_ECHO_DEFAULTS: dict[str, Any] = {
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "metadata": {},
    "temperature": None,
    "top_p": None,
}


def request_echo(body: Mapping[str, Any]) -> JSON:
    """The request fields a `response` object echoes, as the request had them (well-formed ones)."""
    echo: JSON = {}
    if isinstance(body.get("parallel_tool_calls"), bool):
        echo["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required") or isinstance(choice, dict) and isinstance(choice.get("type"), str):
        echo["tool_choice"] = choice
    if isinstance(body.get("tools"), list):
        echo["tools"] = [tool for tool in body["tools"] if isinstance(tool, dict) and isinstance(tool.get("type"), str)]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()):
        echo["metadata"] = metadata
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool):
            echo[key] = body[key]
    return echo


def echoed_fields(ctx: ResponseContext) -> JSON:
    """parallel_tool_calls, tool_choice, tools, metadata, temperature, top_p for `ctx`'s answer."""
    return {key: ctx.echo.get(key, default) for key, default in _ECHO_DEFAULTS.items()}


def usage_block(usage: Usage, cache_write_tokens: int = 0) -> JSON:
    """The Responses `usage` object for normalised counts (input includes cached, output includes
    reasoning); `cache_write_tokens` where the provider reports prompt-cache writes (Anthropic)."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
