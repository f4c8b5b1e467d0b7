"""`GET /v1/models`: the models (and aliases) this key may use, in OpenAI's list format."""

from __future__ import annotations

import json

from mitmproxy import http

from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Decision, answer_locally, refuse, state_of


class ModelsEndpoint:
    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.endpoint != "models" or state.key is None:
            return
        key = state.key
        created = int(state.policy.mtime_ns // 1_000_000_000)
        compiled = state.policy
        visible = []
        for name, (canonical, _entry) in compiled.models_by_name.items():
            if not compiled.key_allows_model(key, name, canonical):
                continue
            # Listed only when a deployment the key may use serves it (its own routes or a fallback).
            reachable = compiled.reachable_providers(key, canonical)
            if reachable:
                visible.append({"id": name, "object": "model", "created": created, "owned_by": reachable[0]})
        path = flow.request.path.split("?", 1)[0].rstrip("/")
        if "/models/" in path:
            wanted = path.rsplit("/", 1)[1]
            match = [model for model in visible if model["id"] == wanted]
            if not match:
                refuse(
                    flow,
                    error_response(404, "model_not_found", f"model {wanted} is not available to key {key.name}"),
                    Decision.UNKNOWN_MODEL,
                )
                return
            payload: dict = match[0]
        else:
            payload = {"object": "list", "data": visible}
        content = json.dumps(payload).encode()
        answer_locally(flow, http.Response.make(200, content, {"content-type": "application/json"}))
