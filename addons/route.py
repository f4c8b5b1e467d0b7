"""Routes an admitted request to a provider deployment of its model, and points it there."""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from codexgate.failsafe import fail_closed
from codexgate.flowstate import state_of
from codexgate.policies.loader import upstream_model
from codexgate.policies.schema import OpenAIProvider
from codexgate.providers.openai import upstream_target

logger = logging.getLogger(__name__)


class Route:
    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.model is None or state.body is None:
            return
        found = state.policy.lookup_model(state.model)
        if found is None:
            raise RuntimeError(f"admitted model {state.model} has no entry")
        canonical, entry = found
        route = entry.routes[0]  # weights, health and fallbacks pick among routes in a later step
        state.provider = route.provider
        state.upstream_model = upstream_model(route, canonical)
        provider = state.policy.policy.providers[route.provider]
        body = state.body
        rewrite = False
        if body.get("model") != state.upstream_model:
            body["model"] = state.upstream_model
            rewrite = True
        if state.endpoint == "chat" and state.stream and not (body.get("stream_options") or {}).get("include_usage"):
            # Without it a Chat stream carries no usage and the request could not be accounted.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            rewrite = True
        if isinstance(provider, OpenAIProvider):
            scheme, host, port, path = upstream_target(provider.base_url, state.endpoint or "responses")
            flow.request.url = f"{scheme}://{host}:{port}{path}"
            if state.stream:
                # The stream is read as it passes; a compressed stream could not be.
                flow.request.headers["accept-encoding"] = "identity"
            if rewrite:
                flow.request.content = json.dumps(body).encode()
