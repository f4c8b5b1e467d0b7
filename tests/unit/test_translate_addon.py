"""The Translate addon on a routed streamed request, driven as mitmproxy drives it: the stream's
headers, the stream callable fed the real Anthropic wire format chunk by chunk, usage, a cut stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest
from fakes.anthropic_upstream import Reply, build_message, encode_sse, message_events
from mitmproxy import http
from mitmproxy.test import tflow

from codexgate.addons.translate import Translate
from codexgate.addons.upstream_watch import WATCH_KEY, UpstreamWatch
from codexgate.flowstate import METADATA_KEY, GatewayRequest, Translation
from codexgate.mitm_seams import FAILED_EVENT
from codexgate.policies.schema import AnthropicProvider, SecretRef
from codexgate.providers.chat_ingress import ChatSSERelay
from codexgate.providers.family import new_context
from codexgate.providers.registry import family_for
from codexgate.providers.responses import ResponseContext
from codexgate.sse import SSEParser
from codexgate.usage import Usage

UPSTREAM_MODEL = "claude-sonnet-4-5"
PROVIDER_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "Content-Length": "999",
    "content-encoding": "identity",
    "Cache-Control": "no-store",
    "transfer-encoding": "chunked",
    "x-ratelimit-remaining-requests": "99",
    "request-id": "req_provider",
}


def routed_flow(http_version: str = "HTTP/1.1", ctx: ResponseContext | None = None) -> http.HTTPFlow:
    body = {"model": "claude", "input": "Say hello.", "stream": True}
    family = family_for(AnthropicProvider(kind="anthropic", keys=[SecretRef(value="env:UNUSED")]))
    flow = tflow.tflow()
    flow.request = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", json.dumps(body).encode())
    flow.request.http_version = http_version
    state = GatewayRequest(request_id="req-1", policy=cast(Any, None), mode="gateway", stream=True)
    prepared = family.prepare(body, UPSTREAM_MODEL, "anthropic")
    state.translation = Translation(family, prepared, ctx or new_context("claude", "anthropic"))
    flow.metadata[METADATA_KEY] = state
    flow.response = http.Response.make(200, b"", PROVIDER_HEADERS)
    flow.response.http_version = http_version
    flow.response.content = None  # streamed: no content until the end
    return flow


def upstream_events(reply: Reply) -> list[bytes]:
    """The Anthropic stream of `reply`, one chunk per event as the API writes them."""
    return [encode_sse([event]) for event in message_events(build_message(reply, UPSTREAM_MODEL), reply)]


def events_of(out: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data in SSEParser().feed(b"".join(out))]


@pytest.mark.parametrize(("version", "chunked"), [("HTTP/1.1", True), ("HTTP/2.0", False)])
def test_a_translated_stream_has_our_framing_headers_and_keeps_the_providers_others(version, chunked):
    flow = routed_flow(version)
    Translate().responseheaders(flow)
    assert flow.response is not None and callable(flow.response.stream)
    headers = flow.response.headers
    assert headers.get_all("content-type") == ["text/event-stream"]
    assert headers.get_all("cache-control") == ["no-cache"]
    assert "content-length" not in headers and "content-encoding" not in headers
    assert headers.get_all("transfer-encoding") == (["chunked"] if chunked else [])
    assert headers["x-ratelimit-remaining-requests"] == "99" and headers["request-id"] == "req_provider"


def translating_stream() -> tuple[http.HTTPFlow, Translate, Callable[[bytes], list[bytes]]]:
    """A routed flow whose answer headers Translate has seen: the flow, the addon, its stream callable."""
    flow = routed_flow()
    addon = Translate()
    addon.responseheaders(flow)
    assert flow.response is not None and callable(flow.response.stream)
    return flow, addon, flow.response.stream


def test_the_stream_callable_translates_chunk_by_chunk_and_usage_comes_from_the_stream():
    flow, addon, stream = translating_stream()
    reply = Reply(content=[{"type": "text", "text": "Héllo ✓ from the fake"}], input_tokens=30, output_tokens=9)
    out: list[bytes] = []
    for chunk in upstream_events(reply):
        out += stream(chunk)
    out += stream(b"")
    addon.response(flow)
    events = events_of(out)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Héllo ✓ from the fake"
    state = flow.metadata[METADATA_KEY]
    assert state.usage == Usage(input_tokens=38, cached_tokens=5, output_tokens=9)
    assert state.first_byte is not None
    assert all(out), "an empty chunk would end a chunked HTTP/1 body early"


def test_a_watched_stream_counts_its_chunks_for_the_idle_timeout_without_a_clock():
    flow = routed_flow()
    watch = UpstreamWatch(connect=1, first_byte=2, idle=3, total=4, started=0.0, last_data=5.0)
    flow.metadata[WATCH_KEY] = watch
    Translate().responseheaders(flow)
    assert flow.response is not None and callable(flow.response.stream)
    assert watch.noted and watch.progress is not None and watch.progress() == 0
    chunks = upstream_events(Reply(content=[{"type": "text", "text": "counted"}]))
    for chunk in chunks:
        flow.response.stream(chunk)
    assert watch.progress() == len(chunks)
    assert watch.last_data == 5.0  # the timer takes a changed count as data at the moment it looks


def test_a_stream_cut_mid_answer_ends_in_response_failed_billing_the_input():
    flow, addon, stream = translating_stream()
    chunks = upstream_events(Reply(content=[{"type": "text", "text": "cut short"}]))
    out: list[bytes] = []
    for chunk in chunks[:4]:  # message_start, the block's start and delta, no stop
        out += stream(chunk)
    out.append(flow.metadata[FAILED_EVENT](flow, "connection reset"))
    addon.error(flow)
    events = events_of(out)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["usage"]["input_tokens"] == 29
    state = flow.metadata[METADATA_KEY]
    assert state.usage is None  # a broken answer is charged the estimate (Limits), not a partial count
    assert state.translation.bridge.outcome == "failed"


def test_a_chat_client_gets_the_chunks_the_responses_bytes_would_have_given():
    """A Chat Completions client's answer is made from the translated events themselves; the same
    chunks, byte for byte, as from the Responses SSE the bridge writes, read back by the relay."""
    ctx = new_context("claude", "anthropic")
    flow = routed_flow(ctx=ctx)
    state = flow.metadata[METADATA_KEY]
    state.translation.chat_model, state.translation.chat_usage = "claude", True
    addon = Translate()
    addon.responseheaders(flow)
    assert flow.response is not None and callable(flow.response.stream)
    chunks = upstream_events(Reply(content=[{"type": "text", "text": "Chat, with a \ud83d cut"}]))
    out: list[bytes] = []
    for chunk in chunks:
        out += flow.response.stream(chunk)
    out += flow.response.stream(b"")

    bridge = state.translation.family.stream(state.translation.prepared, ctx)
    relay = ChatSSERelay("claude", True)
    expected = b"".join(relay.feed(bridge.feed(chunk)) for chunk in chunks)
    expected += relay.feed(bridge.feed(b"") + bridge.finish()) + relay.finish()
    assert b"".join(out) == expected
    assert expected.endswith(b"data: [DONE]\n\n") and b'"usage":{"prompt_tokens":29' in expected
