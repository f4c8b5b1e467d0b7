"""Meter (usage read from answers) and Accounting (one line per governed request)."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest
from mitmproxy import flow as flow_module
from mitmproxy import http
from mitmproxy.test import taddons
from unit_support import governed, make_flow

from codexgate.addons.accounting import ACCOUNTING_FILE, Accounting
from codexgate.addons.limits import Charge, Limits, Metering
from codexgate.addons.meter import READ_EVERY, Meter
from codexgate.addons.policy_source import PolicySource
from codexgate.flowstate import Decision
from codexgate.metrics import GatewayMetrics
from codexgate.policies.schema import Price
from codexgate.pricing import PriceSource
from codexgate.stores.base import Amounts
from codexgate.usage import StreamUsageReader, Usage

pytest_plugins = ["unit_support"]

RESPONSES_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1000},
    "output_tokens": 80,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 1280,
}
RESPONSES_SSE = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1","usage":null}}\n\n'
    b'event: response.output_text.delta\r\ndata: {"type":"response.output_text.delta","delta":"h\xc3\xa9llo"}\r\n\r\n'
    b"event: response.completed\ndata: "
    + json.dumps({"type": "response.completed", "response": {"id": "resp_1", "usage": RESPONSES_USAGE}}).encode()
    + b"\n\n"
)
EXPECTED = Usage(input_tokens=1200, cached_tokens=1000, output_tokens=80, reasoning_tokens=64)


def sse_response() -> http.Response:
    return http.Response.make(200, b"", {"content-type": "text/event-stream; charset=utf-8"})


def metered_stream(compiled):
    """A streamed Responses request whose SSE answer Meter has set up: (meter, flow, state, the
    stream callable)."""
    meter = Meter()
    flow = make_flow(body={"model": "gpt-5.5", "stream": True})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5", "stream": True}, stream=True)
    flow.response = sse_response()
    meter.responseheaders(flow)
    return meter, flow, state, flow.response.stream


@pytest.mark.parametrize("size", [1, 2, 5, 17, 64, len(RESPONSES_SSE)])
def test_stream_usage_read_as_it_passes(compiled, size):
    meter, flow, state, observe = metered_stream(compiled)
    assert callable(observe)
    passed = b""
    for start in range(0, len(RESPONSES_SSE), size):
        chunk = RESPONSES_SSE[start : start + size]
        out = observe(chunk)
        assert out == chunk  # bytes unchanged
        passed += out
    observe(b"")
    assert passed == RESPONSES_SSE
    assert state.first_byte is not None
    meter.response(flow)
    assert state.usage == EXPECTED
    assert state.reader.outcome == "completed"
    assert state.reader.response_id == "resp_1"


@pytest.mark.parametrize("ending", ["response", "error"])
def test_active_streams_gauge_counts_streams_in_flight(compiled, ending):
    """The gauge's value is moved directly (not through `Gauge.inc`): one up per stream set up,
    one down when it ends, whichever way; a second ending does not count it down again."""
    metrics = GatewayMetrics()
    meter = Meter(metrics)
    flows = []
    for _ in range(2):
        flow = make_flow(body={"model": "gpt-5.5", "stream": True})
        governed(flow, compiled, key="alice", body={"model": "gpt-5.5", "stream": True}, stream=True)
        flow.response = sse_response()
        meter.responseheaders(flow)
        flows.append(flow)

    def in_flight() -> float | None:
        return metrics.registry.get_sample_value("codexgate_active_streams")

    assert in_flight() == 2
    getattr(meter, ending)(flows[0])
    assert in_flight() == 1
    getattr(meter, ending)(flows[0])
    assert in_flight() == 1
    getattr(meter, ending)(flows[1])
    assert in_flight() == 0


def test_stream_reader_tells_every_chunk_passed_whenever_asked(compiled):
    """The pass-through hands chunks to the reader unread and reads them in runs: whoever asks
    mid-stream (a cut stream's failure event, the accounting of a client that left) still gets
    what every chunk so far says, and a count the idle timeout can watch."""
    _, _, state, observe = metered_stream(compiled)
    delta = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n'
    created, _, rest = RESPONSES_SSE.partition(b"\n\n")
    chunks = [created + b"\n\n"] + [delta] * (2 * READ_EVERY + 3) + [rest[:40], rest[40:]]
    for number, chunk in enumerate(chunks, 1):
        assert observe(chunk) is chunk
        reader = state.reader
        if number <= len(chunks) - 2:  # every whole event so far counted, none cut
            assert (reader.events, reader.mid_event, reader.outcome) == (number, False, None)
            assert reader.response_id == "resp_1"
    assert reader.mid_event is False and reader.outcome == "completed" and reader.usage == EXPECTED
    assert reader.events == len(chunks) - 1 + 1  # the last two chunks are the last two events


def test_json_body_usage_responses(compiled):
    meter = Meter()
    flow = make_flow(body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"})
    flow.response = http.Response.make(
        200, json.dumps({"id": "resp_2", "usage": RESPONSES_USAGE}), {"content-type": "application/json"}
    )
    meter.responseheaders(flow)
    assert flow.response.stream is False
    meter.response(flow)
    assert state.usage == EXPECTED


def test_json_body_usage_chat_gzip(compiled):
    meter = Meter()
    flow = make_flow(url="http://127.0.0.1:4000/v1/chat/completions", body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"}, endpoint="chat")
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}
    flow.response = http.Response.make(200, json.dumps({"usage": usage}), {"content-type": "application/json"})
    flow.response.encode("gzip")
    meter.response(flow)
    assert state.usage == Usage(input_tokens=9, cached_tokens=2, output_tokens=4, reasoning_tokens=0)


def test_buffered_sse_body_of_local_answer(compiled):
    meter = Meter()
    flow = make_flow(body={"model": "mock"})
    state = governed(flow, compiled, key="alice", body={"model": "mock", "stream": True}, stream=True)
    state.answered_locally = True
    flow.response = http.Response.make(200, RESPONSES_SSE, {"content-type": "text/event-stream"})
    meter.responseheaders(flow)
    assert flow.response.stream is False  # the gateway's own answer is not observed as a stream
    meter.response(flow)
    assert state.usage == EXPECTED


def test_refusal_and_broken_body_carry_no_usage(compiled):
    meter = Meter()
    flow = make_flow(body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"})
    state.answered_locally = True
    flow.response = http.Response.make(403, json.dumps({"usage": RESPONSES_USAGE}))
    meter.response(flow)
    assert state.usage is None

    flow = make_flow(body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"})
    flow.response = http.Response.make(200, b"<html>oops", {"content-type": "text/html"})
    meter.response(flow)  # must not raise
    assert state.usage is None


@pytest.fixture
def accounting(policy_file, tmp_path):
    source = PolicySource()
    addon = Accounting()
    with taddons.context(source, addon) as tctx:
        tctx.configure(source, codexgate_policy=str(policy_file), codexgate_data_dir=str(tmp_path / "data"))
        yield addon
        addon.done()


def lines(tmp_path):
    path = tmp_path / "data" / ACCOUNTING_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_governed_request(accounting, compiled, tmp_path):
    flow = make_flow(body={"model": "gpt-5.5"}, headers={"session-id": "sess-1"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"}, model="gpt-5.5")
    state.session_id = "sess-1"
    state.provider = "openai"
    state.upstream_model = "gpt-5.5-2026-01-01"
    state.decision = Decision.FORWARDED
    state.usage = EXPECTED
    flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    accounting.responseheaders(flow)
    assert flow.response.headers["x-codexgate-request-id"] == flow.id
    assert flow.response.headers["x-codexgate-decision"] == "allowed"
    assert flow.response.headers["x-codexgate-provider"] == "openai"
    assert flow.response.headers["x-codexgate-model"] == "gpt-5.5-2026-01-01"
    accounting.response(flow)
    accounting.response(flow)
    accounting.error(flow)
    records = lines(tmp_path)
    assert len(records) == 1
    record = records[0]
    assert record["request_id"] == flow.id
    assert record["key"] == "alice"
    assert record["team"] == "platform"
    assert record["org"] == "acme"
    assert record["session_id"] == "sess-1"
    assert record["model_requested"] == "gpt-5.5"
    assert record["upstream_model"] == "gpt-5.5-2026-01-01"
    assert record["status"] == 200
    assert record["usage"] == EXPECTED.as_dict()
    assert "tokens=1200in/80out" in flow.comment
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / ACCOUNTING_FILE).st_mode)
    assert mode == 0o600


def test_refusal_and_upstream_error_recorded(accounting, compiled, tmp_path):
    refused = make_flow(body={"model": "o9-secret"})
    state = governed(refused, compiled, key="alice", body={"model": "o9-secret"})
    state.decision = Decision.MODEL_NOT_ALLOWED
    refused.response = http.Response.make(403, b"{}")
    accounting.responseheaders(refused)
    assert refused.response.headers["x-codexgate-decision"] == "refused"
    accounting.response(refused)

    failed = make_flow(body={"model": "gpt-5.5"})
    state = governed(failed, compiled, key="alice", body={"model": "gpt-5.5"}, model="gpt-5.5")
    state.decision = Decision.FORWARDED
    failed.error = flow_module.Error("connection reset")
    accounting.error(failed)
    accounting.error(failed)

    records = lines(tmp_path)
    assert [(r["decision"], r["status"], r["error"]) for r in records] == [
        ("model_not_allowed", 403, None),
        ("upstream_error", 502, "connection reset"),
    ]


def test_ungoverned_flow_not_recorded(accounting, tmp_path):
    flow = make_flow("GET", "https://github.com/", mode="regular")
    flow.response = http.Response.make(200)
    accounting.responseheaders(flow)
    accounting.response(flow)
    assert "x-codexgate-request-id" not in flow.response.headers
    assert lines(tmp_path) == []


def test_client_disconnect_is_its_own_outcome(accounting, compiled, tmp_path):
    """Charge names the outcome (and prices the usage that had passed); Accounting keeps it, with
    499 when no answer had started, and it is not counted as a refusal."""
    metrics = GatewayMetrics()
    charge = Charge(Limits(PolicySource(metrics), metrics), metrics)
    price = PriceSource(Price(input_per_mtok=1, output_per_mtok=8), None, None)

    def leaving(with_answer: bool):
        flow = make_flow(body={"model": "gpt-5.5", "stream": True})
        state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5", "stream": True}, model="gpt-5.5")
        state.decision = Decision.FORWARDED
        state.metering = Metering(price=price, estimate=Amounts(usd=0.5, requests=1), counters=[])
        if with_answer:
            flow.response = sse_response()
            state.reader = StreamUsageReader("responses")
            state.reader.feed(RESPONSES_SSE)  # the usage had passed before the client went
        flow.error = flow_module.Error("Client disconnected.")
        return flow

    async def run() -> None:
        for flow in (leaving(True), leaving(False)):
            await charge.error(flow)
            accounting.error(flow)

    asyncio.run(run())
    records = lines(tmp_path)
    assert [(r["decision"], r["status"], r["charge"]) for r in records] == [
        ("client_disconnected", 200, "actual"),
        ("client_disconnected", 499, "estimate"),
    ]
    assert records[0]["cost_usd"] == pytest.approx((1200 * 1 + 80 * 8) / 1e6)
    assert records[1]["cost_usd"] == 0.5


def test_a_short_write_is_completed_and_the_line_is_the_records(accounting, compiled, tmp_path, monkeypatch):
    """The accounting line written inline: `compact(record)` and a newline, the rest of a short write after it."""
    from codexgate import jsonline
    from codexgate.addons import accounting as accounting_module

    real_write = os.write
    sizes: list[int] = []

    def short(fd: int, data: bytes) -> int:
        sizes.append(len(data))
        return real_write(fd, data[:7])  # 7 bytes at a time, as a signal-interrupted write may

    flow = make_flow(body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"}, model="gpt-5.5")
    state.decision, state.provider, state.upstream_model = Decision.FORWARDED, "openai", "gpt-5.5-é"
    state.usage, state.cost_usd = EXPECTED, 0.0000125  # a float orjson writes otherwise: the standard form
    flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    accounting.responseheaders(flow)
    assert flow.response.headers["x-codexgate-model"] == "gpt-5.5-é"
    monkeypatch.setattr(accounting_module.os, "write", short)
    accounting.response(flow)
    monkeypatch.setattr(accounting_module.os, "write", real_write)
    text = (tmp_path / "data" / ACCOUNTING_FILE).read_bytes()
    assert text == (jsonline.compact(state.record) + "\n").encode("ascii")
    assert len(sizes) == -(-len(text) // 7) and sizes[0] == len(text)
    assert accounting.records == 1


def test_header_values_are_encoded_once_and_the_cache_is_bounded():
    from codexgate.addons.accounting import _Encoded

    encoded = _Encoded()
    assert encoded["gpt-5.5"] == b"gpt-5.5" and encoded["m-\udcff"] == "m-\udcff".encode("utf-8", "surrogateescape")
    for index in range(_Encoded.LIMIT + 5):
        assert encoded[f"m{index}"] == f"m{index}".encode()
    assert len(encoded) <= _Encoded.LIMIT
