"""Answers requests routed to a `mock` provider, locally, after its configured latency."""

from __future__ import annotations

import asyncio
import json
import time

from mitmproxy import http

from codexgate.failsafe import fail_closed
from codexgate.flowstate import answer_locally, state_of
from codexgate.policies.schema import MockProvider
from codexgate.providers import mock
from codexgate.sse import encode_chat_stream, encode_responses_stream


class MockUpstream:
    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or not state.cleared or state.provider is None or state.body is None:
            return
        settings = state.policy.policy.providers[state.provider]
        if not isinstance(settings, MockProvider):
            return
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        model = state.upstream_model or state.model or "mock-model"
        settings = mock.within_cap(settings, state.body)
        input_tokens = mock.estimated_input_tokens(flow.request.raw_content or b"", settings)
        if state.endpoint == "responses" and state.stream:
            content = encode_responses_stream(mock.responses_events(state.body, model, input_tokens, settings))
            content_type = "text/event-stream"
        elif state.endpoint == "responses":
            content = json.dumps(mock.responses_body(state.body, model, input_tokens, settings)).encode()
            content_type = "application/json"
        elif state.stream:
            content = encode_chat_stream(mock.chat_chunks(state.body, model, input_tokens, settings))
            content_type = "text/event-stream"
        else:
            content = json.dumps(mock.chat_body(state.body, model, input_tokens, settings)).encode()
            content_type = "application/json"
        state.first_byte = time.time()
        answer_locally(
            flow, http.Response.make(200, content, {"content-type": content_type, "cache-control": "no-cache"})
        )
