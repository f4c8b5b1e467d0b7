"""Anthropic errors (HTTP answers and in-stream `error` events) as OpenAI-shaped errors."""

from __future__ import annotations

import json
import re
from typing import Any

from codexgate.providers.anthropic.values import JSON, as_str

_CONTEXT_TOO_LONG = re.compile(
    r"prompt is too long|too many (input )?tokens|context (window|length|limit)|exceed(s|ed)? .*context",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------
# Errors


def _error_fields(error: Any) -> tuple[str, str]:
    if isinstance(error, dict):
        kind = as_str(error.get("type"))
        message = as_str(error.get("message"))
        return kind, message
    return "", ""


def stream_error(error: Any) -> tuple[str, str]:
    """An Anthropic error object met inside a 200 stream → (response.failed code, message)."""
    kind, message = _error_fields(error)
    if kind == "rate_limit_error":
        return "rate_limit_exceeded", f"Anthropic rate limit: {message or 'too many requests'}"
    if kind == "billing_error":
        return "insufficient_quota", f"The gateway's Anthropic account cannot be billed: {message}"
    if kind in ("authentication_error", "permission_error"):
        return "server_error", "Anthropic refused the gateway's provider credentials; tell the gateway operator."
    if kind in ("invalid_request_error", "request_too_large") and _CONTEXT_TOO_LONG.search(message):
        return "context_length_exceeded", f"Anthropic: {message}"
    if kind in ("invalid_request_error", "request_too_large"):
        return "invalid_prompt", f"Anthropic refused the request: {message}"
    if kind == "overloaded_error":
        return "server_error", f"Anthropic is overloaded: {message or 'try again shortly'}"
    return "server_error", f"Anthropic error ({kind or 'unknown'}): {message or 'no details'}"


def _error_body(message: str, kind: str, code: str) -> JSON:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def translate_error(status: int, provider_body: bytes) -> tuple[int, JSON]:
    """An Anthropic error answer → (status for Codex, OpenAI-shaped error body)."""
    try:
        document = json.loads(provider_body) if provider_body else {}
    except ValueError:
        document = {}
    kind, message = _error_fields(document.get("error") if isinstance(document, dict) else None)
    detail = message or f"HTTP {status}"
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        # The client never sees the provider's own words here: nothing about the key leaves.
        return 502, _error_body(
            f"Anthropic refused the gateway's provider credentials ({kind or status}). "
            "This is a gateway configuration problem; tell the gateway operator.",
            "server_error",
            "upstream_auth_failed",
        )
    if status == 429 or kind == "rate_limit_error":
        return 429, _error_body(f"Anthropic rate limit reached: {detail}", "rate_limit_exceeded", "rate_limit_exceeded")
    if status == 402 or kind == "billing_error":
        return 429, _error_body(
            f"The gateway's Anthropic account cannot be billed: {detail}. Tell the gateway operator.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if status == 529 or kind == "overloaded_error":
        return 503, _error_body(f"Anthropic is overloaded: {detail}", "server_error", "server_error")
    if status == 413 or kind == "request_too_large":
        if _CONTEXT_TOO_LONG.search(message):
            return 400, _error_body(f"Anthropic: {detail}", "invalid_request_error", "context_length_exceeded")
        return 400, _error_body(
            f"The request is too large for Anthropic: {detail}", "invalid_request_error", "request_too_large"
        )
    if status == 404 or kind == "not_found_error":
        return 404, _error_body(
            f"Anthropic does not know this model or path: {detail}", "invalid_request_error", "model_not_found"
        )
    if 400 <= status < 500:
        if _CONTEXT_TOO_LONG.search(message):
            return 400, _error_body(f"Anthropic: {detail}", "invalid_request_error", "context_length_exceeded")
        return 400, _error_body(
            f"Anthropic refused the request: {detail}", "invalid_request_error", "invalid_request_error"
        )
    if status == 504 or kind == "timeout_error":
        return 504, _error_body(f"Anthropic timed out: {detail}", "server_error", "server_error")
    return 502, _error_body(f"Anthropic server error: {detail}", "server_error", "server_error")
