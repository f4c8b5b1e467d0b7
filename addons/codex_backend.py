"""Codex's own backend, as far as a virtual key needs it: the model catalog.

In proxy mode Codex 0.169 asks `chatgpt.com/backend-api/codex/models?client_version=…` for its
model catalog, carrying the API key, i.e. the virtual key, which must not leave the gateway. That
request is answered here (before KeyGuard would refuse it with 403 and Codex log an ERROR) with the
models this key may use. In base-URL mode the same catalog is served at `GET /v1/codex/models` for
the launcher to hand Codex as `model_catalog_json`. (Measured with an API-key sign-in: Codex's
other startup fetch from chatgpt.com, `/backend-api/plugins/export/curated`, carries no key; it is
not the gateway's business and passes like any other request.)

A request without a virtual key (a ChatGPT sign-in's token) is left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from codexgate.addons.identify import CLIENT_CREDENTIALS_KEY, key_candidates
from codexgate.addons.policy_source import PolicySource
from codexgate.catalog import codex_catalog
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.policies.keys import KEY_PREFIX, hash_key

logger = logging.getLogger(__name__)

CATALOG_PATHS = ("/backend-api/codex/models", "/v1/codex/models", "/codex/models")


def _path(flow: http.HTTPFlow) -> str:
    return flow.request.path.split("?", 1)[0].rstrip("/") or "/"


class CodexBackend:
    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or flow.request.method != "GET":
            return
        path = _path(flow)
        policy = self._policy.current()
        gateway_listener = isinstance(flow.client_conn.proxy_mode, ReverseMode)
        if gateway_listener:
            if path not in CATALOG_PATHS[1:]:
                return
            saved = flow.metadata.get(CLIENT_CREDENTIALS_KEY)  # SecretMask's, under mitmweb; Identify reads it too
        else:
            if not policy.is_guard_host(flow.request.pretty_host.lower()):
                return
            # SecretMask moved a virtual key sent to a guard host out of the headers; nothing else needs it.
            saved = flow.metadata.pop(CLIENT_CREDENTIALS_KEY, None)
            if not path.startswith("/backend-api/"):
                return
        headers = http.Headers([(n.encode(), v.encode()) for n, v in saved]) if saved else flow.request.headers
        candidates = key_candidates(headers)
        key = next((k for k in (policy.keys_by_hash.get(hash_key(c)) for c in candidates) if k), None)
        if key is None:
            if gateway_listener or any(c.startswith(KEY_PREFIX) for c in candidates):
                flow.response = error_response(
                    401, "invalid_api_key", "unknown virtual key; ask your platform team for one"
                )
            return  # a ChatGPT sign-in's request: not the gateway's business
        if key.disabled or (key.expires_at is not None and key.expires_at <= dt.datetime.now(dt.UTC)):
            flow.response = error_response(401, "key_disabled", f"virtual key {key.name} is disabled or expired")
            return
        if path not in CATALOG_PATHS:
            return  # KeyGuard removes the key and refuses
        body = codex_catalog(policy, key)
        flow.comment = f"codexgate: model catalog for key {key.name} ({len(body['models'])} models)"
        logger.info("Codex model catalog for key %s served (%d models, %s)", key.name, len(body["models"]), path)
        flow.response = http.Response.make(
            200, json.dumps(body).encode(), {"content-type": "application/json", "cache-control": "no-store"}
        )
