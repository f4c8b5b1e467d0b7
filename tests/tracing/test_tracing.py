"""Tracing: real OTLP/HTTP export (protobuf) to a fake collector, spans checked field by field."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_collector import FakeCollector, attributes
from mitmproxy import exceptions, http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from codexgate.addons.identify import CLIENT_CREDENTIALS_KEY
from codexgate.addons.tracing import NO_ATTEMPT, TraceEnd, Tracing
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest, refuse
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import CompiledPolicy, load_policy
from codexgate.usage import Usage

VIRTUAL_KEY = "sk-cg-alice-0000000000000000000000000000"
UPSTREAM_SECRET = "sk-proj-upstream-secret-0123456789"
PROMPT = "please refactor the payroll module PROMPT-MARKER-7f3a"
INSTRUCTIONS = "You are Codex INSTRUCTIONS-MARKER-91c2"
ANSWER = "Here is the refactor ANSWER-MARKER-55d0"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
HEADER_MARKERS = ("UA-MARKER-13", "TRACESTATE-MARKER-22", "TURN-MARKER-31", "thread-MARKER-40")
SESSION = "019a-session-5e1f"

POLICY = f"""\
gateway:
  intercept_hosts: [api.openai.com]
providers:
  openai:
    kind: openai
    base_url: https://upstream.example.net:8443/openai/v1
    keys:
      - value: env:CODEXGATE_TRACING_UPSTREAM_KEY
  backup:
    kind: openai
    base_url: https://backup.example.org/v1
    keys:
      - value: env:CODEXGATE_TRACING_UPSTREAM_KEY
  local:
    kind: mock
models:
  gpt-5.5:
    routes: [{{provider: openai, model: gpt-5.5-2026-01-01}}]
    price: {{input_per_mtok: 1.25, output_per_mtok: 10}}
  mock-model:
    routes: [{{provider: local}}]
    price: {{input_per_mtok: 0, output_per_mtok: 0}}
orgs:
  acme: {{}}
teams:
  platform: {{org: acme}}
keys:
  - {{name: alice, team: platform, hash: {hash_key(VIRTUAL_KEY)}}}
"""

SERVER = Span.SpanKind.SPAN_KIND_SERVER
CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
ERROR = Status.StatusCode.STATUS_CODE_ERROR
UNSET = Status.StatusCode.STATUS_CODE_UNSET


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    path: Path = tmp_path_factory.mktemp("tracing") / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return load_policy(path)


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    fake = FakeCollector().start()
    yield fake
    fake.stop()


class Traced:
    """Tracing + TraceEnd inside a taddons context, as the chain would hold them."""

    def __init__(self, tctx: taddons.context, tracing: Tracing, end: TraceEnd) -> None:
        self.tctx = tctx
        self.tracing = tracing
        self.end = end


@pytest.fixture
def traced(collector: FakeCollector) -> Iterator[Traced]:
    tracing = Tracing()
    end = TraceEnd(tracing)
    with taddons.context(tracing, end) as tctx:
        tctx.configure(tracing, codexgate_otlp_endpoint=collector.endpoint, codexgate_service_name="gw-test")
        yield Traced(tctx, tracing, end)
        tracing.done()


def request_body() -> dict[str, Any]:
    return {
        "model": "gpt-5.5",
        "stream": True,
        "instructions": INSTRUCTIONS,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": f"{PROMPT} key={VIRTUAL_KEY}"}]}],
    }


def incoming(compiled: CompiledPolicy, *, traceparent: str | None = None, body: dict[str, Any] | None = None) -> Any:
    """A governed flow as Intake + SecretMask leave it at `requestheaders`, with its state."""
    body = body if body is not None else request_body()
    headers: dict[str | bytes, str | bytes] = {
        "content-type": "application/json",
        "authorization": "Bearer ***codexgate-masked***",
        "user-agent": f"codex_cli_rs/0.169.0 {HEADER_MARKERS[0]}",
        "tracestate": f"vendor={HEADER_MARKERS[1]}",
        "x-codex-turn-metadata": json.dumps({"turn_id": HEADER_MARKERS[2]}),
        "thread-id": HEADER_MARKERS[3],
        "session-id": SESSION,
    }
    if traceparent:
        headers["traceparent"] = traceparent
    flow = tflow.tflow()
    flow.request = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", json.dumps(body).encode(), headers)
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://api.openai.com@4000")
    flow.metadata[CLIENT_CREDENTIALS_KEY] = [("authorization", f"Bearer {VIRTUAL_KEY}")]
    state = GatewayRequest(request_id=flow.id, policy=compiled, mode="gateway", endpoint="responses")
    state.session_id = SESSION
    flow.metadata[METADATA_KEY] = state
    return flow, state


def admit_and_route(flow: http.HTTPFlow, state: GatewayRequest, body: dict[str, Any]) -> None:
    """What Intake, Identify, Admit, Route, Credentials and Seal leave on a cleared request."""
    assert state.key is None
    state.key = state.policy.keys_by_hash[hash_key(VIRTUAL_KEY)]
    state.team, state.org = "platform", "acme"
    state.body = body
    state.model_requested = body["model"]
    state.stream = bool(body.get("stream"))
    state.model = "gpt-5.5"
    state.provider = "openai"
    state.upstream_model = "gpt-5.5-2026-01-01"
    flow.request.url = "https://upstream.example.net:8443/openai/v1/responses"
    flow.request.headers["authorization"] = f"Bearer {UPSTREAM_SECRET}"
    state.cleared = True
    state.decision = Decision.FORWARDED


def answer(flow: http.HTTPFlow, state: GatewayRequest, status: int = 200, content: bytes = b"") -> None:
    """What the upstream and Meter/Charge leave once the answer has passed."""
    content_type = "text/event-stream" if state.stream else "application/json"
    flow.response = http.Response.make(status, content, {"content-type": content_type})
    state.first_byte = time.time()
    time.sleep(0.01)
    flow.response.timestamp_end = time.time()
    state.usage = Usage(input_tokens=1200, cached_tokens=1000, output_tokens=80, reasoning_tokens=64)
    state.cost_usd = 0.00035
    state.charge_basis = "actual"


def by_name(spans: list[tuple[dict[str, Any], Span]]) -> dict[str, Span]:
    return {span.name: span for _resource, span in spans}


def test_forwarded_request_is_one_server_span_with_an_attempt_child(traced, collector, compiled):
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    flow, state = incoming(compiled, traceparent=traceparent)
    traced.tracing.requestheaders(flow)
    admit_and_route(flow, state, request_body())
    sent = time.time()
    traced.end.request(flow)
    answer(flow, state)
    traced.end.response(flow)
    traced.tracing.done()

    spans = collector.wait_for(2)
    assert collector.content_types == ["application/x-protobuf"] * len(collector.requests)
    assert len(spans) == 2
    resource = spans[0][0]
    assert resource["service.name"] == "gw-test"
    assert resource["service.version"]
    named = by_name(spans)
    assert set(named) == {"chat gpt-5.5", "openai attempt"}
    server, attempt = named["chat gpt-5.5"], named["openai attempt"]

    # the caller's trace continues; the attempt is the request span's child
    assert server.trace_id.hex() == TRACE_ID
    assert server.parent_span_id.hex() == PARENT_ID
    assert attempt.trace_id == server.trace_id
    assert attempt.parent_span_id == server.span_id
    assert server.trace_state == ""  # tracestate is a header value: not carried over
    assert server.kind == SERVER and attempt.kind == CLIENT

    assert attributes(server) == {
        "codexgate.request_id": flow.id,
        "codexgate.mode": "gateway",
        "codexgate.decision": "forwarded",
        "codexgate.stream": True,
        "codexgate.endpoint": "responses",
        "gen_ai.operation.name": "chat",
        "http.response.status_code": 200,
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "codexgate.provider": "openai",
        "gen_ai.request.model": "gpt-5.5",
        "codexgate.model": "gpt-5.5",
        "gen_ai.response.model": "gpt-5.5-2026-01-01",
        "codexgate.key": "alice",
        "codexgate.team": "platform",
        "codexgate.org": "acme",
        "codexgate.session_id": SESSION,
        "gen_ai.conversation.id": SESSION,
        "codexgate.cost_usd": 0.00035,
        "codexgate.charge": "actual",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 80,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.reasoning.output_tokens": 64,
        "codexgate.ttfb_ms": pytest.approx((state.first_byte - state.started) * 1000, abs=0.01),
    }
    assert server.status.code == UNSET
    assert [event.name for event in server.events] == ["first_byte"]
    assert server.events[0].time_unix_nano == pytest.approx(state.first_byte * 1e9, abs=1e3)
    # start = the request's start; end = the response's end
    assert server.start_time_unix_nano == pytest.approx(state.started * 1e9, abs=1e3)
    assert flow.response is not None
    assert server.end_time_unix_nano == pytest.approx(flow.response.timestamp_end * 1e9, abs=1e3)

    assert attributes(attempt) == {
        "server.address": "upstream.example.net",
        "server.port": 8443,
        "http.request.method": "POST",
        "codexgate.provider": "openai",
        "codexgate.attempt": 1,
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-5.5-2026-01-01",
        "http.response.status_code": 200,
    }
    assert attempt.status.code == UNSET
    assert sent * 1e9 <= attempt.start_time_unix_nano <= flow.response.timestamp_start * 1e9
    assert attempt.end_time_unix_nano == server.end_time_unix_nano
    assert_nothing_secret(collector)


def assert_nothing_secret(collector: FakeCollector, *, content: bool = False) -> None:
    raw = b"".join(collector.raw)
    assert raw
    for secret in (VIRTUAL_KEY, UPSTREAM_SECRET, "sk-cg-", "sk-proj", "Bearer", *HEADER_MARKERS):
        assert secret.encode() not in raw, secret
    for text in (PROMPT, INSTRUCTIONS, ANSWER):
        assert (text.encode() in raw) == content, text


def test_refusal_is_an_error_span_without_attempt(traced, collector, compiled):
    flow, state = incoming(compiled)
    traced.tracing.requestheaders(flow)
    state.key = state.policy.keys_by_hash[hash_key(VIRTUAL_KEY)]
    state.team, state.org = "platform", "acme"
    state.model_requested = "gpt-5.5"
    refuse(flow, http.Response.make(429, b'{"error": {}}', {"content-type": "application/json"}), Decision.RATE_LIMITED)
    traced.end.request(flow)
    traced.end.response(flow)
    traced.tracing.done()

    (_resource, span), *rest = collector.wait_for(1)
    assert rest == []
    assert span.name == "chat gpt-5.5"
    assert span.parent_span_id == b""  # no traceparent: a new trace
    found = attributes(span)
    assert found["codexgate.decision"] == "rate_limited"
    assert found["http.response.status_code"] == 429
    assert found["error.type"] == "rate_limited"
    assert "gen_ai.usage.input_tokens" not in found and "codexgate.ttfb_ms" not in found
    assert span.status.code == ERROR
    assert span.status.message == "rate_limited"


def test_upstream_failure_marks_span_and_attempt(traced, collector, compiled):
    flow, state = incoming(compiled, traceparent="00-ffffffffffffffffffffffffffffffff-zz-01")  # invalid: ignored
    traced.tracing.requestheaders(flow)
    admit_and_route(flow, state, request_body())
    traced.end.request(flow)
    flow.error = tflow.terr("Server disconnected.")
    state.decision = Decision.UPSTREAM_ERROR  # as Accounting's error hook leaves it
    traced.end.error(flow)
    traced.tracing.done()

    named = by_name(collector.wait_for(2))
    server, attempt = named["chat gpt-5.5"], named["openai attempt"]
    assert server.parent_span_id == b"" and attempt.parent_span_id == server.span_id
    assert server.status.code == ERROR and attempt.status.code == ERROR
    assert attributes(server)["http.response.status_code"] == 502
    assert attributes(server)["error.type"] == "upstream_error"
    assert attributes(attempt)["error.type"] == "upstream_error"
    assert "http.response.status_code" not in attributes(attempt)
    assert b"Server disconnected" not in b"".join(collector.raw)


def test_client_disconnect_is_not_an_upstream_error(traced, collector, compiled):
    flow, state = incoming(compiled)
    traced.tracing.requestheaders(flow)
    admit_and_route(flow, state, request_body())
    traced.end.request(flow)
    flow.error = tflow.terr("Client disconnected.")
    state.decision = Decision.CLIENT_DISCONNECTED  # as Charge.error leaves it when the client left
    traced.end.error(flow)
    traced.tracing.done()

    named = by_name(collector.wait_for(2))
    server, attempt = named["chat gpt-5.5"], named["openai attempt"]
    assert attributes(server)["codexgate.decision"] == "client_disconnected"
    assert attributes(server)["error.type"] == "client_disconnected"
    assert attributes(server)["http.response.status_code"] == 499  # as the accounting line says
    assert attributes(attempt)["error.type"] == "client_disconnected"
    assert "upstream_error" not in b"".join(collector.raw).decode(errors="replace")


def test_upstream_5xx_answer_is_an_error(traced, collector, compiled):
    flow, state = incoming(compiled)
    traced.tracing.requestheaders(flow)
    admit_and_route(flow, state, request_body())
    traced.end.request(flow)
    answer(flow, state, status=503)
    traced.end.response(flow)
    traced.tracing.done()

    named = by_name(collector.wait_for(2))
    for span in named.values():
        assert span.status.code == ERROR
        assert attributes(span)["http.response.status_code"] == 503
        assert attributes(span)["error.type"] == "503"


def test_locally_answered_request_has_no_attempt(traced, collector, compiled):
    flow, state = incoming(compiled)
    traced.tracing.requestheaders(flow)
    state.model_requested = state.model = "mock-model"
    state.provider = "local"
    state.decision = Decision.ANSWERED
    state.answered_locally = True
    flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    traced.end.request(flow)
    traced.end.response(flow)
    traced.tracing.done()

    (_resource, span), *rest = collector.wait_for(1)
    assert rest == []
    assert span.name == "chat mock-model"
    assert attributes(span)["gen_ai.provider.name"] == "mock"
    assert attributes(span)["codexgate.provider"] == "local"
    assert span.status.code == UNSET


def test_attempts_for_fallbacks(traced, collector, compiled):
    """The API a fallback uses: one CLIENT child per attempt, each with its own outcome."""
    flow, state = incoming(compiled)
    traced.tracing.requestheaders(flow)
    admit_and_route(flow, state, request_body())
    first = traced.tracing.attempt(flow, "openai", ("upstream.example.net", 8443))
    first.end(status=429)
    with traced.tracing.attempt(flow, "backup", ("backup.example.org", 443)):
        pass  # a `with` block ends the attempt without status when nothing failed
    third = traced.tracing.attempt(flow, "backup", ("backup.example.org", 443))
    traced.end.request(flow)  # an attempt already exists: no automatic one
    answer(flow, state)
    traced.end.response(flow)
    assert third.recording is False  # the request's end ended it
    traced.tracing.done()

    spans = collector.wait_for(4)
    server = by_name(spans)["chat gpt-5.5"]
    attempts = sorted(
        (span for _r, span in spans if span.kind == CLIENT), key=lambda s: attributes(s)["codexgate.attempt"]
    )
    assert [(a.name, attributes(a)["server.address"], attributes(a)["codexgate.attempt"]) for a in attempts] == [
        ("openai attempt", "upstream.example.net", 1),
        ("backup attempt", "backup.example.org", 2),
        ("backup attempt", "backup.example.org", 3),
    ]
    assert all(a.parent_span_id == server.span_id for a in attempts)
    assert [a.status.code for a in attempts] == [ERROR, UNSET, UNSET]
    assert [attributes(a).get("http.response.status_code") for a in attempts] == [429, None, 200]


def test_content_only_when_enabled_and_never_credentials(traced, collector, compiled):
    traced.tctx.configure(traced.tracing, codexgate_trace_content=True)
    body = request_body()
    body["stream"] = False
    body["input"].append({"role": "user", "content": f"the upstream key is {UPSTREAM_SECRET}"})
    flow, state = incoming(compiled, body=body)
    traced.tracing.requestheaders(flow)
    admit_and_route(flow, state, body)
    traced.end.request(flow)
    output = {"output": [{"type": "message", "content": [{"type": "output_text", "text": ANSWER}]}]}
    answer(flow, state, content=json.dumps(output).encode())
    traced.end.response(flow)
    traced.tracing.done()

    server = by_name(collector.wait_for(2))["chat gpt-5.5"]
    found = attributes(server)
    assert PROMPT in found["gen_ai.input.messages"]
    assert found["gen_ai.system_instructions"] == INSTRUCTIONS
    assert ANSWER in found["gen_ai.output.messages"]
    assert "[redacted]" in found["gen_ai.input.messages"]
    assert_nothing_secret(collector, content=True)


def test_options_are_validated(collector):
    tracing = Tracing()
    with taddons.context(tracing) as tctx:
        for bad in ("127.0.0.1:4318", "ftp://collector/v1/traces", "http:///v1/traces", "http://h:99999/x"):
            with pytest.raises(exceptions.OptionsError):
                tctx.configure(tracing, codexgate_otlp_endpoint=bad)
            assert not tracing.enabled
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(tracing, codexgate_service_name=" ")
        tctx.configure(tracing, codexgate_otlp_endpoint=collector.endpoint)
        assert tracing.enabled
        tctx.configure(tracing, codexgate_otlp_endpoint="")
        assert not tracing.enabled
        tracing.done()


def test_off_by_default_exports_nothing_and_costs_nothing(collector, compiled):
    threads = set(threading.enumerate())
    tracing = Tracing()
    end = TraceEnd(tracing)
    with taddons.context(tracing, end) as tctx:
        tctx.configure(tracing)
        assert tctx.options.codexgate_otlp_endpoint == ""
        assert tctx.options.codexgate_trace_content is False
        assert tctx.options.codexgate_service_name == "codexgate"
        assert not tracing.enabled
        flow, state = incoming(compiled, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
        admit_and_route(flow, state, request_body())
        answer(flow, state)
        assert tracing.attempt(flow, "openai") is NO_ATTEMPT
        tracing.requestheaders(flow)
        end.request(flow)
        end.response(flow)
        tracing.done()
    assert set(threading.enumerate()) - threads == set()  # no exporter thread was started
    time.sleep(0.1)
    assert collector.requests == []
