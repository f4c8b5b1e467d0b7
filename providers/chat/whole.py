"""A whole (not streamed) chat completion → a Responses `response` object."""

from __future__ import annotations

import logging
from typing import Any

from codexgate.providers.base import (
    ResponseContext,
)
from codexgate.providers.chat.answer import (
    _arguments,
    _call_item,
    _content_pieces,
    _dict,
    _merge_details,
    _new_id,
    _reasoning_item,
    _reasoning_text,
    _response_object,
    _ThinkSplitter,
    _usage,
)
from codexgate.providers.chat.errors import _failure
from codexgate.providers.chat.tools import ToolMap

log = logging.getLogger(__name__)


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
