"""OpenAI-shaped error answers: `{"error": {"message", "type", "code", "param"}}`.

Codex prints `error.message` to the developer, so messages say what happened and what to do.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

# status -> OpenAI error type, as the OpenAI API uses them
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_denied",
    404: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    426: "invalid_request_error",
    429: "rate_limit_exceeded",
    431: "invalid_request_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


def error_object(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The `error` member of an OpenAI error answer with this status."""
    return {"message": message, "type": _TYPES.get(status, "server_error"), "code": code, "param": param}


def error_body(status: int, code: str, message: str, param: str | None = None) -> bytes:
    return json.dumps({"error": error_object(status, code, message, param)}).encode()


def error_response(
    status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> http.Response:
    all_headers = {"content-type": "application/json", "x-codexgate-error": code}
    all_headers.update(headers or {})
    return http.Response.make(status, error_body(status, code, message, param), all_headers)
