"""Bedrock errors → OpenAI-shaped errors with the codes Codex understands: an HTTP error answer
(`translate_error`) and an exception event in the middle of a ConverseStream (`stream_error`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_CONTEXT_TOO_LONG = re.compile(
    r"too long|too many (?:input )?tokens|context (?:length|window|limit)|exceeds? (?:the )?(?:maximum|max)"
    r"(?: allowed)? (?:number of )?(?:input )?tokens|maximum context|input length",
    re.IGNORECASE,
)
# Mid-stream exceptions (ConverseStream's error events) → Responses error code.
STREAM_ERRORS = {
    "throttlingException": "rate_limit_exceeded",
    "serviceUnavailableException": "server_error",
    "internalServerException": "server_error",
    "modelStreamErrorException": "server_error",
    "validationException": "invalid_prompt",
}


def stream_error(name: str, body: Mapping[str, Any]) -> tuple[str, str]:
    """(Responses error code, message) for a ConverseStream exception event `{name: body}`."""
    detail = str(body.get("message") or body.get("originalMessage") or name)
    code = STREAM_ERRORS.get(name, "server_error")
    if name == "validationException" and _CONTEXT_TOO_LONG.search(detail):
        code = "context_length_exceeded"
    if code == "rate_limit_exceeded":
        return code, f"Bedrock is throttling this gateway's requests: {detail}"
    if code == "context_length_exceeded":
        return code, f"The conversation is too long for this model on Bedrock: {detail}"
    return code, f"Bedrock failed mid-stream ({name}): {detail}"


def _error(status: int, code: str, message: str, error_type: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": error_type, "code": code, "param": None}}


def translate_error(status: int, provider_body: bytes) -> tuple[int, dict[str, Any]]:
    """A Bedrock error answer (`{"message": ...}`, the exception name only in a header) → the
    status and OpenAI-shaped body for Codex."""
    try:
        parsed = json.loads(provider_body) if provider_body else {}
    except ValueError:
        parsed = {}
    parsed = parsed if isinstance(parsed, dict) else {}
    detail = parsed.get("message") or parsed.get("Message") or ""
    if not isinstance(detail, str) or not detail:
        detail = provider_body.decode("utf-8", "replace")[:300] if provider_body else ""
    kind = str(parsed.get("__type") or "").rsplit("#", 1)[-1]

    if status in (401, 403) or (status == 400 and "security token" in detail.lower()):
        # Never echo Bedrock's text here: it is about the gateway's credentials, not the client's.
        return _error(
            502,
            "upstream_auth_failed",
            f"Bedrock refused the gateway's provider credentials (HTTP {status}); "
            "the gateway operator must fix the AWS credentials or model access for this route.",
            "server_error",
        )
    if status == 429:
        return _error(
            429, "rate_limit_exceeded", f"Bedrock is throttling this gateway: {detail}", "rate_limit_exceeded"
        )
    if status == 400 and _CONTEXT_TOO_LONG.search(detail):
        return _error(
            400,
            "context_length_exceeded",
            f"The conversation is too long for this model on Bedrock: {detail}",
            "invalid_request_error",
        )
    if status in (400, 413, 422):
        return _error(400, "invalid_request_error", f"Bedrock rejected the request: {detail}", "invalid_request_error")
    if status == 404:
        return _error(
            502,
            "upstream_model_not_found",
            f"Bedrock does not serve the model this route points at: {detail}",
            "server_error",
        )
    if status == 503 or kind == "ServiceUnavailableException":
        return _error(503, "server_error", f"Bedrock is unavailable or overloaded: {detail}", "server_error")
    if status == 408:
        return _error(504, "server_error", f"The model on Bedrock timed out: {detail}", "server_error")
    return _error(502, "server_error", f"Bedrock failed (HTTP {status}): {detail}", "server_error")
