"""Request-side pieces every translating family shares: `TranslateOptions`, the Chat sampling
parameters, refusing what needs OpenAI's stored state, the reasoning envelope. Pure, no I/O.

The contract a family implements is `providers/family.py` (`ProviderFamily`); the answer side
(`response` object, stream events, tool names, the custom-tool JSON decoder) is the toolkit in
`providers/responses/`. `ResponseContext`, `response_object`, `request_echo` and `echoed_fields`
are re-exported here from there until every family imports them from the toolkit.

What every family promises (tests/providers/test_conformance.py checks it): no request it
builds carries whitespace-only text or an unanswered tool call or a role order its API refuses
(histories are repaired, not sent as they came); no answer holds a whitespace-only message item
(Codex would replay it); the `response` objects echo the request's fields (`request_echo`);
Chat sampling parameters are mapped where the API has them and named in
`TranslateOptions.dropped_params` where not; any split of the upstream stream gives the same
events; errors become OpenAI-shaped bodies with a code Codex understands (`rate_limit_exceeded`,
`context_length_exceeded`, `insufficient_quota`, `server_error`, `invalid_request_error`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from codexgate.providers.responses.objects import ResponseContext, echoed_fields, request_echo, response_object
from codexgate.usage import Usage

__all__ = [
    "GATEWAY_ONLY_KEYS",
    "SAMPLING_PARAMS",
    "UNMAPPED_PARAMS_KEY",
    "ResponseContext",
    "TranslateOptions",
    "UnsupportedRequest",
    "Usage",
    "echoed_fields",
    "input_items",
    "refuse_stateful",
    "request_echo",
    "response_object",
    "sampling_params",
    "stop_sequences",
]


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A Responses request's `input` as a list of item dicts (a bare string is one user message)."""
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


@dataclasses.dataclass(frozen=True)
class TranslateOptions:
    """Per-request choices the translator cannot infer from the body alone."""

    provider_name: str  # the policy's name for the provider, e.g. "anthropic-prod"
    default_max_tokens: int = 8192  # when the provider requires max_tokens and Codex sends none
    # Tools the provider cannot serve (web_search, tool_search, ...) are dropped; their names
    # are appended here by build_request so the addon can say so in a header and the log.
    dropped_tools: list[str] = dataclasses.field(default_factory=list)
    # Request parameters the provider has no counterpart for (Chat `seed` to Anthropic, ...),
    # appended by build_request (see `sampling_params`) so the client can be told.
    dropped_params: list[str] = dataclasses.field(default_factory=list)


# Chat Completions sampling parameters a Chat client may send. The Responses API has no field for
# them, so `chat_ingress` carries them in the Responses body under their Chat names, for the
# translators only (no Responses body with them ever leaves the gateway); each family maps what
# its API has and reports the rest in `TranslateOptions.dropped_params`.
SAMPLING_PARAMS = ("stop", "seed", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")
# Chat fields with no Responses counterpart at all, named for the same report.
UNMAPPED_PARAMS_KEY = "codexgate_unmapped_params"
GATEWAY_ONLY_KEYS = (*SAMPLING_PARAMS, UNMAPPED_PARAMS_KEY)


def sampling_params(body: Mapping[str, Any], options: TranslateOptions, mapped: Iterable[str]) -> dict[str, Any]:
    """The Chat sampling parameters present in `body`; those not in `mapped` (what the family can
    send) and those Chat fields the Responses form could not carry are added to `dropped_params`."""
    present = {key: body[key] for key in SAMPLING_PARAMS if body.get(key) is not None}
    if present.get("logprobs") is False:
        del present["logprobs"]  # asking for none is what every provider does anyway
    accepted = set(mapped)
    options.dropped_params.extend(key for key in present if key not in accepted)
    unmapped = body.get(UNMAPPED_PARAMS_KEY)
    if isinstance(unmapped, list):
        options.dropped_params.extend(str(name) for name in unmapped)
    return {key: value for key, value in present.items() if key in accepted}


def stop_sequences(value: Any) -> list[str]:
    """Chat `stop` (a string or a list of strings) as a list, empty strings left out."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str) and v]


class UnsupportedRequest(ValueError):
    """A request a translated provider cannot serve faithfully: answered 400 with `body()`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": None}}


def refuse_stateful(body: Mapping[str, Any], provider_name: str) -> None:
    """Raise `UnsupportedRequest` for what needs OpenAI's stored state: the gateway keeps no
    responses, so `previous_response_id` would silently lose the conversation and `background`
    would answer a job id nobody can poll."""
    if body.get("previous_response_id") is not None:
        raise UnsupportedRequest(
            f"previous_response_id is not supported for provider {provider_name}: the gateway stores no responses; "
            "send the whole conversation in `input` (as Codex does with store=false)",
            "previous_response_id",
        )
    if body.get("background") is True:
        raise UnsupportedRequest(
            f"background responses are not supported for provider {provider_name}; send the request with "
            "background=false (streaming if it is long)",
            "background",
        )


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
