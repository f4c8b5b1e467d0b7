"""Answers requests routed to a family answered inside the gateway (`mock`), after its latency."""

from __future__ import annotations

import time

from mitmproxy import http

from codexgate.failsafe import fail_closed
from codexgate.flowstate import answer_locally, state_of
from codexgate.providers.registry import FAMILIES, family_for


class MockUpstream:
    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or not state.cleared or state.provider is None or state.body is None:
            return
        settings = state.policy.policy.providers[state.provider]
        # `answers_locally` is the family class's: the family is made (`family_for`) only when it does.
        if not FAMILIES[settings.kind].answers_locally:
            return
        family = family_for(settings)
        model = state.upstream_model or state.model or "mock-model"
        content, content_type = await family.answer_locally(
            state.body, state.endpoint or "responses", state.stream, model, flow.request.raw_content or b""
        )
        state.first_byte = time.time()
        answer_locally(
            flow, http.Response.make(200, content, {"content-type": content_type, "cache-control": "no-cache"})
        )
