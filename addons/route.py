"""Routes an admitted request to a provider deployment of its model, and points it there."""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import GatewayRequest, Translation, refuse, state_of
from codexgate.policies.loader import upstream_model
from codexgate.policies.schema import OpenAIProvider
from codexgate.providers.adapters import CODEX_HEADERS, Adapter, adapter_for, new_context
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
        adapter = adapter_for(provider)
        if adapter is not None:
            self._translated(flow, state, adapter)
            return
        if isinstance(provider, OpenAIProvider):
            scheme, host, port, path = upstream_target(provider.base_url, state.endpoint or "responses")
            flow.request.url = f"{scheme}://{host}:{port}{path}"
            if state.stream:
                # The stream is read as it passes; a compressed stream could not be.
                flow.request.headers["accept-encoding"] = "identity"
            if rewrite:
                flow.request.content = json.dumps(body).encode()

    @staticmethod
    def _translated(flow: http.HTTPFlow, state: GatewayRequest, adapter: Adapter) -> None:
        """Point the request at a provider that speaks another API, with its body translated."""
        if state.endpoint != "responses":
            refuse(
                flow,
                error_response(
                    400, "endpoint_not_supported",
                    f"provider {state.provider} is reached through the Responses API only (POST /v1/responses)",
                ),
                "endpoint_not_supported",
            )  # fmt: skip
            return
        assert state.body is not None and state.provider is not None
        upstream = state.upstream_model or state.model or ""
        prepared = adapter.prepare(dict(state.body, stream=state.stream), upstream, state.provider)
        headers = flow.request.headers
        for name in CODEX_HEADERS:
            headers.pop(name, None)
        headers.pop("content-encoding", None)
        flow.request.url = prepared.url
        flow.request.content = prepared.body  # (sets content-length too)
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # the answer is translated as it passes
        headers.update(prepared.headers)
        state.translation = Translation(
            adapter, prepared, new_context(state.model_requested or upstream, state.provider)
        )
        if prepared.dropped_tools:
            logger.info(
                "request %s to %s: tools it cannot serve were dropped: %s",
                state.request_id,
                state.provider,
                ", ".join(prepared.dropped_tools),
            )
