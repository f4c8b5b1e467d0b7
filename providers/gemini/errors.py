"""Gemini error answers → OpenAI-shaped errors; retry-after."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.gemini.tools import as_str

_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
_URL_KEY = re.compile(r"([?&](?:key|access_token)=)[^&\s\"']+")
_CONTEXT_TOO_LONG = re.compile(
    r"exceeds the maximum number of tokens|input token count|context (?:window|length)|too many tokens|too long",
    re.IGNORECASE,
)


def scrub(message: str) -> str:
    """No key ever goes back to the client, even if Google echoed one."""
    return _URL_KEY.sub(r"\1[redacted]", _GOOGLE_KEY.sub("[redacted]", message))


@dataclasses.dataclass(frozen=True)
class _Classified:
    status: int  # for the client
    type: str
    code: str  # OpenAI error code (for HTTP error bodies)
    stream_code: str  # code for a `response.failed` (only codes Codex acts on)
    message: str


def classify(status: int, error: Mapping[str, Any]) -> _Classified:
    google_status = str(error.get("status") or "")
    raw_message = as_str(error.get("message"))
    message = scrub(raw_message) or f"HTTP {status}"
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    quota_ids = [str(v.get("quotaId") or "") for d in details for v in d.get("violations") or [] if isinstance(v, dict)]
    if (
        status in (401, 403)
        or google_status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        or reasons
        & {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED", "ACCESS_TOKEN_EXPIRED"}
        or "api key" in raw_message.lower()
    ):
        return _Classified(
            502,
            "server_error",
            "upstream_auth_error",
            "server_error",
            "The gateway's credentials for the Gemini provider were refused by Google "
            f"({google_status or status}); the gateway operator must fix the provider key.",
        )
    if status == 429 or google_status == "RESOURCE_EXHAUSTED":
        exhausted = (
            any("PerDay" in q for q in quota_ids) or "credits are depleted" in raw_message or "limit: 0" in raw_message
        )
        if exhausted:
            return _Classified(
                429,
                "insufficient_quota",
                "insufficient_quota",
                "insufficient_quota",
                f"Gemini quota exhausted: {message}",
            )
        return _Classified(
            429, "rate_limit_exceeded", "rate_limit_exceeded", "rate_limit_exceeded", f"Gemini rate limit: {message}"
        )
    if status == 400 and _CONTEXT_TOO_LONG.search(raw_message):
        return _Classified(
            400, "invalid_request_error", "context_length_exceeded", "context_length_exceeded", f"Gemini: {message}"
        )
    if status == 503 or google_status == "UNAVAILABLE" or "overloaded" in raw_message.lower():
        return _Classified(503, "server_error", "server_error", "server_error", f"Gemini is overloaded: {message}")
    if status == 404 or google_status == "NOT_FOUND":
        return _Classified(404, "invalid_request_error", "model_not_found", "server_error", f"Gemini: {message}")
    if 400 <= status < 500 and status != 408 and status != 499:
        return _Classified(
            status,
            "invalid_request_error",
            "invalid_request_error",
            "server_error",
            f"Gemini rejected the request: {message}",
        )
    if status == 504 or google_status == "DEADLINE_EXCEEDED":
        return _Classified(504, "server_error", "server_error", "server_error", f"Gemini timed out: {message}")
    if status == 500:
        return _Classified(500, "server_error", "server_error", "server_error", f"Gemini internal error: {message}")
    return _Classified(502, "server_error", "server_error", "server_error", f"Gemini error: {message}")


def _error_of(provider_body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(provider_body)
    except (ValueError, UnicodeDecodeError):
        return {"message": provider_body[:300].decode("utf-8", "replace")}
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # the non-SSE streaming endpoint wraps errors in an array
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def translate_error(status: int, provider_body: bytes) -> tuple[int, dict[str, Any]]:
    """A Gemini error answer → (status for the client, OpenAI-shaped error body)."""
    classified = classify(status, _error_of(provider_body))
    return classified.status, {
        "error": {"message": classified.message, "type": classified.type, "code": classified.code, "param": None}
    }


def retry_after_seconds(provider_body: bytes) -> int | None:
    """The wait Gemini asks for (`RetryInfo.retryDelay`, e.g. "37s"), for a Retry-After header."""
    for detail in _error_of(provider_body).get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(1, math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None
