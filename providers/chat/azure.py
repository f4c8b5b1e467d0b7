"""Azure OpenAI: its URLs, its `api-key` credentials and the v1 Responses pass-through body."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from codexgate.providers.base import (
    GATEWAY_ONLY_KEYS,
    REASONING_ENVELOPE_PREFIX,
)


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
