"""Decides which requests the gateway governs, and reads what they ask for.

Governed: everything on the gateway (base-URL) listener, and requests to governed hosts on
the proxy listener. For those: the endpoint, the JSON body, the model, whether it streams.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from codexgate.addons.intake_limits import IntakeCaps, RequestLimits
from codexgate.addons.policy_source import PolicySource
from codexgate.bounded import (
    BodyTooLarge,
    DuplicateKey,
    canonical_object,
    clip,
    decode_body,
    nesting_exceeds,
    unique_object,
)
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest, refuse, state_of
from codexgate.headers import header_value, header_values

logger = logging.getLogger(__name__)

# Matched on the end of the path: a provider's own base path (e.g. /openai/v1 on a proxied
# provider host) comes before the endpoint.
ENDPOINTS = {
    ("POST", "/responses"): "responses",
    ("POST", "/chat/completions"): "chat",
    ("GET", "/models"): "models",
}
SERVED = "POST /v1/responses, POST /v1/chat/completions, GET /v1/models"
MAX_SESSION_ID = 128
# `json.loads`'s own reading of a document (the C scanner of a JSONDecoder), for an object read from
# its first byte (see `Intake.request`), refusing an object that names a key twice (`unique_object`).
_SCAN_ONCE: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(object_pairs_hook=unique_object).scan_once  # type: ignore[attr-defined]
# The request fields of OpenAI's Responses and Chat Completions APIs (the openai SDK's
# `ResponseCreateParams` and `CompletionCreateParams`; a test holds this to the SDK's), all in
# casefolded form: a top-level key that folds to one of them but is not it is refused.
API_FIELDS = frozenset({
    "access_programs", "background", "background_options", "context_management", "conversation", "image",
    "include", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options",
    "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
    # Chat Completions only
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "messages", "modalities", "n", "prediction", "presence_penalty", "reasoning_effort",
    "response_format", "seed", "stop", "verbosity", "web_search_options",
})  # fmt: skip


def case_ambiguity(body: dict[str, Any]) -> tuple[str, str] | None:
    """(code, message) when a top-level key is, to a provider that decodes JSON case-insensitively,
    another key of the body or an API field it is not. Go's encoding/json (OpenAI-compatible servers
    such as Ollama) matches field names that way, with Unicode simple folding (`"ſtream"` is
    `stream`): `"Model"` beside `"model"` is a key named twice there, and `"STREAM"` alone is
    `stream`, which the gateway does not read. Nested objects: exact repeats only (`unique_object`);
    a client's own labels may hold `Env` and `env`. One pass; a key in API_FIELDS is in folded form."""
    folds: set[str] = set()
    for key in body:
        known = key in API_FIELDS
        fold = key if known else key.casefold()
        if fold in folds:
            return "duplicate_key", f"request body names the key {clip(key, 64)!r} twice in one object (but for case)"
        if not known and fold in API_FIELDS:
            return "ambiguous_key", f"request body has the key {clip(key, 64)!r}, which some providers read as {fold!r}"
        folds.add(fold)
    return None


DEFAULT_CAPS = IntakeCaps()  # without RequestLimits (frozen: one for all)
HEAD_FIELDS = frozenset({b"session-id", b"x-session-id", b"upgrade"})  # read in one pass


def _normalised_path(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/") or "/"


def endpoint_of(method: str, path: str) -> str | None:
    for (wanted_method, suffix), endpoint in ENDPOINTS.items():
        if method == wanted_method and path.endswith(suffix):
            return endpoint
    if method == "GET" and "/models/" in path and not path.endswith("/models/"):
        return "models"
    return None


class Intake:
    def __init__(self, policy: PolicySource, limits: RequestLimits | None = None) -> None:
        self._policy = policy
        self._limits = limits

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        policy = self._policy.current()
        gateway_listener = isinstance(flow.client_conn.proxy_mode, ReverseMode)
        if not gateway_listener and not policy.is_governed_host(flow.request.host, flow.request.port):
            return
        state = GatewayRequest(request_id=flow.id, policy=policy, mode="gateway" if gateway_listener else "proxy")
        flow.metadata[METADATA_KEY] = state
        request = flow.request
        headers = request.headers
        by_name = state.head_values(headers.fields)
        if by_name is None:  # a name given twice: its values folded as `Headers.get` folds them
            values = header_values(headers, HEAD_FIELDS)
            session = values.get(b"session-id") or values.get(b"x-session-id")
            upgrade = values.get(b"upgrade")
        else:  # decoded only where present (`header_values` decodes as this does)
            raw = by_name.get(b"session-id") or by_name.get(b"x-session-id")
            session = raw.decode("utf-8", "surrogateescape") if raw else None
            raw = by_name.get(b"upgrade")
            upgrade = raw.decode("utf-8", "surrogateescape") if raw is not None else None
        state.session_id = session[:MAX_SESSION_ID] if session else None
        path = request.path.split("?", 1)[0].rstrip("/") or "/"  # `_normalised_path`, inline
        if upgrade is not None and path.endswith("/responses") and upgrade.lower() == "websocket":
            # Codex tries Responses over WebSocket first: ResponsesWebSocket (next) serves it or answers 426.
            state.endpoint = "responses_websocket"
            return
        method = request.method
        # Most requests are this, the first of ENDPOINTS: told without `endpoint_of`'s loop.
        state.endpoint = "responses" if method == "POST" and path.endswith("/responses") else endpoint_of(method, path)
        if state.endpoint is None:
            refuse(
                flow,
                error_response(
                    404,
                    "unknown_endpoint",
                    f"codexgate does not serve {clip(method, 16)} {clip(path)}; it serves {SERVED}",
                ),
                Decision.UNKNOWN_ENDPOINT,
            )

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.endpoint in (None, "models"):
            return
        state.received_at = time.time()
        caps = self._limits.caps if self._limits is not None else DEFAULT_CAPS
        if not caps.enabled:
            raw = self._decoded_unbounded(flow)
            if raw is None:
                return
        else:
            raw = self._decoded(flow, state, caps)
            if raw is None:
                return
        too_deep = False
        try:
            # A body as Codex and the SDKs write it (compact): read fast, no key twice by construction.
            body = canonical_object(raw)
            if body is None and raw[:1] == b"{" and raw[1:2] != b"\0":
                # What `json.loads(raw)` does with a body that opens an object, without its four
                # Python frames (a dozen calls a request): decoded as it decodes UTF-8 (its encoding
                # detection says UTF-8 here), read by the same C scanner, which raises its errors with
                # its messages; trailing whitespace allowed and anything else after the object
                # refused as `json.loads` does. Read once by this scanner either way; at most the
                # fast read before it (see `canonical_object`).
                text = raw.decode("utf-8", "surrogatepass")
                body, end = _SCAN_ONCE(text, 0)
                if end != len(text):
                    rest = text[end:]
                    end += len(rest) - len(rest.lstrip(" \t\n\r"))
                    if end != len(text):
                        raise json.JSONDecodeError("Extra data", text, end)
            elif body is None:
                body = json.loads(raw, object_pairs_hook=unique_object)
        except RecursionError:  # deeper than the interpreter's own limit (about 1,000 levels)
            body, too_deep = None, True
        except DuplicateKey as exc:
            refuse(
                flow,
                error_response(
                    400, "duplicate_key", f"request body names the key {clip(exc.key, 64)!r} twice in one object"
                ),
                Decision.INVALID_JSON,
            )
            return
        except ValueError as exc:
            refuse(
                flow, error_response(400, "invalid_json", f"request body is not valid JSON: {clip(str(exc))}"),
                Decision.INVALID_JSON,
            )  # fmt: skip
            return
        if too_deep or (caps.enabled and nesting_exceeds(body, caps.max_json_depth)):
            refuse(
                flow,
                error_response(400, "json_too_deep", f"request body nests deeper than {caps.max_json_depth} levels"),
                Decision.INVALID_JSON,
            )
            return
        if not isinstance(body, dict):
            message = "request body must be a JSON object"
            refuse(flow, error_response(400, "invalid_json", message), Decision.INVALID_JSON)
            return
        case_problem = case_ambiguity(body)
        if case_problem is not None:
            refuse(flow, error_response(400, *case_problem), Decision.INVALID_JSON)
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            refuse(
                flow,
                error_response(400, "missing_model", "request body needs a string 'model'", "model"),
                Decision.MISSING_MODEL,
            )
            return
        if caps.enabled and len(model) > caps.max_model_chars:
            refuse(
                flow,
                error_response(
                    400, "invalid_model", f"'model' is {len(model)} characters; at most {caps.max_model_chars}",
                    "model",
                ),
                Decision.INVALID_MODEL,
            )  # fmt: skip
            return
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            message = "'stream' must be true or false"
            refuse(flow, error_response(400, "invalid_stream", message, "stream"), Decision.INVALID_BODY)
            return
        state.body = body
        state.model_requested = model
        state.stream = stream

    @staticmethod
    def _decoded(flow: http.HTTPFlow, state: GatewayRequest, caps: IntakeCaps) -> bytes | None:
        """The body with its content-encoding removed under the decoded-size cap; what is
        forwarded and estimated from then on (the header goes: the upstream gets it plain)."""
        request = flow.request
        raw = request.raw_content or b""
        headers = request.headers
        by_name = state.head_values(headers.fields)  # (most often what requestheaders read: no pass at all)
        if by_name is None:
            encoding = header_value(headers, b"content-encoding") or ""
        else:
            found = by_name.get(b"content-encoding")
            encoding = found.decode("utf-8", "surrogateescape") if found else ""
        try:
            decoded = decode_body(raw, encoding, caps.max_body) if encoding else raw
        except BodyTooLarge:
            refuse(
                flow,
                error_response(
                    413, "request_too_large", f"the request body exceeds {caps.max_body} bytes once decoded"
                ),
                Decision.REQUEST_TOO_LARGE,
            )
            return None
        except ValueError as exc:
            refuse(
                flow,
                error_response(400, "invalid_body", f"request body cannot be decoded: {clip(str(exc))}"),
                Decision.INVALID_BODY,
            )
            return None
        if len(decoded) > caps.max_body:
            refuse(
                flow,
                error_response(413, "request_too_large", f"the request body exceeds {caps.max_body} bytes"),
                Decision.REQUEST_TOO_LARGE,
            )
            return None
        if encoding:
            del flow.request.headers["content-encoding"]
            flow.request.content = decoded  # (sets content-length)
        return decoded

    @staticmethod
    def _decoded_unbounded(flow: http.HTTPFlow) -> bytes | None:
        """Without limits (codexgate_intake_limits=false): mitmproxy's own decoding."""
        try:
            return flow.request.get_content(strict=True) or b""
        except ValueError:
            refuse(
                flow,
                error_response(400, "invalid_body", "request body cannot be decoded (content-encoding)"),
                Decision.INVALID_BODY,
            )
            return None
