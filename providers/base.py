"""The shape every translating provider family has, so the `Route`/`Meter` addons can drive any
of them the same way. Everything here is pure: dict → dict, event → events, no I/O.

Codex speaks the OpenAI Responses API only. A provider family that speaks something else
(Anthropic Messages, Gemini generateContent, Bedrock Converse, Chat Completions hosts)
provides, in its own module `providers/<family>.py`:

- `build_request(body: dict, upstream_model: str, options: TranslateOptions) -> dict`
  A Responses API request body (as Codex sends it) → the provider's request body.
  (URL, path and auth headers are the addon's business, see `request_target` below.)
- `request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]`
  The full URL to POST to and any fixed headers the family needs (e.g. `anthropic-version`),
  without credentials.
- `auth_headers(secret: str) -> dict[str, str]` — how the family's API key travels.
- `translate_response(provider_body: dict, ctx: ResponseContext) -> dict`
  A non-streamed provider answer → a Responses API `response` object.
- `class StreamTranslator(ctx: ResponseContext)` with
  `feed(event: dict) -> list[dict]` (one decoded provider stream event → zero or more
  Responses stream events, in order, `sequence_number` assigned by the translator) and
  `finish() -> list[dict]` (called once when the provider stream ended; emits the terminal
  event — `response.completed`, `response.incomplete`, or `response.failed` when the stream
  ended early — unless one was already emitted), plus attributes `usage: Usage | None`
  and `outcome: str | None` ("completed" / "incomplete" / "failed").
  Decoding the provider's framing (SSE lines, AWS event-stream frames) into event dicts is
  done by a separate function `decode_stream(parser_state, chunk: bytes) -> list[dict]` or a
  small decoder class, also in the family module, so chunk boundaries can fall anywhere.
- `translate_error(status: int, provider_body: bytes) -> tuple[int, dict]`
  A provider error → (status for the client, OpenAI-shaped `{"error": {...}}` body) with a
  code Codex understands where one applies (`rate_limit_exceeded`, `context_length_exceeded`,
  `insufficient_quota`, `server_error`, `invalid_request_error`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from codexgate.usage import Usage

__all__ = ["ResponseContext", "TranslateOptions", "Usage", "input_items", "response_object"]


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A Responses request's `input` as a list of item dicts (a bare string is one user message)."""
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def response_object(
    ctx: ResponseContext,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    *,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """A Responses API `response` object as translators report it (SDK-valid, no extra keys)."""
    return {
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "metadata": {},
        "temperature": None,
        "top_p": None,
    }


@dataclasses.dataclass(frozen=True)
class TranslateOptions:
    """Per-request choices the translator cannot infer from the body alone."""

    provider_name: str  # the policy's name for the provider, e.g. "anthropic-prod"
    default_max_tokens: int = 8192  # when the provider requires max_tokens and Codex sends none
    # Tools the provider cannot serve (web_search, tool_search, ...) are dropped; their names
    # are appended here by build_request so the addon can say so in a header and the log.
    dropped_tools: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ResponseContext:
    """What a response translator needs to know about the request it answers."""

    response_id: str  # "resp_..." minted by the gateway, stable for the whole stream
    model: str  # the model name to report back (what the client asked for)
    provider_name: str
    created_at: int  # epoch seconds


# Reasoning state across turns. A provider's own reasoning record (Anthropic thinking
# signatures, Gemini thought signatures, Bedrock reasoning content) is handed to Codex inside
# a Responses `reasoning` item's `encrypted_content`, which Codex replays verbatim on the next
# turn. The envelope names provider and model so it is replayed only to the same ones; an
# OpenAI blob (no envelope) is never sent to another provider, and an envelope is never sent
# to OpenAI. The payload is the family's own JSON; it is not secret from the client (the
# client held it anyway), only versioned and scoped.
REASONING_ENVELOPE_PREFIX = "cg1."


def seal_reasoning(provider_name: str, model: str, payload: dict[str, object]) -> str:
    import base64
    import json

    document = {"v": 1, "p": provider_name, "m": model, "d": payload}
    return REASONING_ENVELOPE_PREFIX + base64.urlsafe_b64encode(
        json.dumps(document, separators=(",", ":")).encode()
    ).decode().rstrip("=")


def open_reasoning(blob: object, provider_name: str, model: str) -> dict[str, object] | None:
    """The payload of an envelope made for this provider and model, else None (drop it)."""
    import base64
    import json

    if not isinstance(blob, str) or not blob.startswith(REASONING_ENVELOPE_PREFIX):
        return None
    encoded = blob[len(REASONING_ENVELOPE_PREFIX) :]
    try:
        document = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(document, dict) or document.get("v") != 1:
        return None
    if document.get("p") != provider_name or document.get("m") != model:
        return None
    payload = document.get("d")
    return payload if isinstance(payload, dict) else None
