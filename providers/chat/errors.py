"""A host's errors → OpenAI-shaped errors with the codes Codex understands."""

from __future__ import annotations

import json
import re
from typing import Any

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


def answer_failure(status: int, raw: Any) -> dict[str, Any]:
    """A `response.error` object for an error met inside an answer."""
    message, code, kind = _error_fields(raw)
    if code.isdigit():  # OpenRouter puts the HTTP status of a mid-stream failure in `code`
        status = int(code)
    reason = _classify(status, message, code, kind)
    if reason == "invalid_request_error":
        reason = "server_error"
    return {"code": reason, "message": _redact(message or "the provider reported an error")}
