"""Admission under hard budgets (Limits with a real embedded store): the reservation is the
request's worst case, a remainder too small for it caps the output upstream, and the estimate is
taken on the decoded body."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import pytest
from mitmproxy import http
from unit_support import error_of, governed, make_flow, policy_yaml

from codexgate.addons.limits import Limits
from codexgate.addons.policy_source import PolicySource
from codexgate.metrics import GatewayMetrics
from codexgate.policies.loader import load_policy
from codexgate.stores.base import Amounts
from codexgate.stores.embedded import EmbeddedStore

pytest_plugins = ["unit_support"]

# gpt-5.5 in the unit policy: $1.25 input and $10 output per million tokens.
PER_INPUT, PER_OUTPUT = 1.25e-6, 10e-6


def budget_policy(tmp_path: Path, budget: str, extra: str = "") -> Path:
    text = policy_yaml().replace("  platform: {org: acme}", f"  platform: {{org: acme, budgets: [{budget}]}}")
    text = text.replace(
        "    price: {input_per_mtok: 1.25, output_per_mtok: 10}",
        f"    price: {{input_per_mtok: 1.25, output_per_mtok: 10}}\n    max_output_tokens: 100000{extra}",
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def admit(tmp_path: Path, policy_path: Path, flow: http.HTTPFlow, body: dict, spent: float = 0.0):
    """Runs Limits.request on `flow` (routed directly to the OpenAI provider) after `spent` was charged."""
    metrics = GatewayMetrics()
    limits = Limits(PolicySource(metrics), metrics)
    limits.store = EmbeddedStore(str(tmp_path / "counters.sqlite3"))
    policy = load_policy(policy_path)
    state = governed(flow, policy, key="alice", model="gpt-5.5", body=body)
    state.provider, state.upstream_model = "openai", "gpt-5.5-2026-01-01"

    async def run() -> None:
        if spent:
            earlier = governed(make_flow(body={"model": "gpt-5.5"}), policy, key="alice", model="gpt-5.5")
            counters = limits._counters(earlier, time.time())
            admission = await limits.store.reserve("earlier", counters, Amounts(usd=spent, requests=1), time.time())
            assert admission.admitted
            await limits.store.settle("earlier", Amounts(usd=spent, requests=1))
        await limits.request(flow)
        await limits.store.close()

    asyncio.run(run())
    return state


def test_gzipped_body_reserves_what_the_plain_body_reserves(tmp_path, upstream_env):
    policy = budget_policy(tmp_path, "{limit_usd: 500, period: 1M, hard: false}")
    body = {"model": "gpt-5.5", "input": "the same long prompt " * 20_000}
    plain = json.dumps(body).encode()
    zipped = gzip.compress(plain)
    assert len(zipped) * 50 < len(plain)
    estimates = []
    for name, content, headers in (("plain", plain, {}), ("gzip", zipped, {"content-encoding": "gzip"})):
        flow = make_flow(body=content, headers=headers)
        flow.request.raw_content = content  # as it came over the wire (make() would encode it again)
        (tmp_path / name).mkdir()
        state = admit(tmp_path / name, policy, flow, body)
        assert state.metering.reserved
        estimates.append(state.metering.reservation.usd)
    assert estimates[0] == estimates[1]
    assert estimates[0] == pytest.approx(len(plain) // 4 * PER_INPUT + 4096 * PER_OUTPUT)


def test_roomy_hard_budget_reserves_the_worst_case_and_leaves_the_body_alone(tmp_path, upstream_env):
    policy = budget_policy(tmp_path, "{limit_usd: 500, period: 1M}")
    body = {"model": "gpt-5.5", "input": "hello"}
    flow = make_flow(body=body)
    before = flow.request.raw_content
    state = admit(tmp_path, policy, flow, body)
    m = state.metering
    assert m.reserved and m.output_cap is None
    assert m.reservation.usd == pytest.approx(len(before) * PER_INPUT + 100_000 * PER_OUTPUT)
    assert flow.request.raw_content == before


def test_small_remainder_caps_the_output_of_a_direct_request(tmp_path, upstream_env):
    policy = budget_policy(tmp_path, "{limit_usd: 0.5, period: 1M}")
    body = {"model": "gpt-5.5", "input": "hello"}
    flow = make_flow(body=body)
    size = len(flow.request.raw_content)
    state = admit(tmp_path, policy, flow, dict(body), spent=0.45)
    m = state.metering
    assert m.reserved
    # $0.05 left: (0.05 - input) / $10 per million output tokens.
    expected = int((0.05 - size * PER_INPUT) / PER_OUTPUT)
    assert expected - 2 <= m.output_cap <= expected
    assert m.reservation.usd <= 0.05 + 1e-12
    assert json.loads(flow.request.content)["max_output_tokens"] == m.output_cap


def test_client_cap_below_the_budget_cap_is_kept(tmp_path, upstream_env):
    policy = budget_policy(tmp_path, "{limit_usd: 0.5, period: 1M}")
    body = {"model": "gpt-5.5", "input": "hello", "max_output_tokens": 2000}
    flow = make_flow(body=body)
    size = len(flow.request.raw_content)
    state = admit(tmp_path, policy, flow, dict(body), spent=0.45)
    assert state.metering.reserved and state.metering.output_cap is None
    assert json.loads(flow.request.content)["max_output_tokens"] == 2000
    assert state.metering.reservation.usd == pytest.approx(size * PER_INPUT + 2000 * PER_OUTPUT)


def test_remainder_below_the_useful_minimum_is_refused(tmp_path, upstream_env):
    policy = budget_policy(tmp_path, "{limit_usd: 0.5, period: 1M}")
    body = {"model": "gpt-5.5", "input": "hello"}
    flow = make_flow(body=body)
    state = admit(tmp_path, policy, flow, dict(body), spent=0.5 - 500 * PER_OUTPUT)  # room for ~500 < 1024
    assert not state.metering.reserved
    assert flow.response is not None and flow.response.status_code == 402
    error = error_of(flow)
    assert error["code"] == "budget_exceeded" and "1,024 output tokens" in error["message"]


def test_soft_budget_is_not_capped(tmp_path, upstream_env):
    policy = budget_policy(tmp_path, "{limit_usd: 0.5, period: 1M, hard: false}")
    body = {"model": "gpt-5.5", "input": "hello"}
    flow = make_flow(body=body)
    state = admit(tmp_path, policy, flow, dict(body), spent=0.45)
    assert state.metering.reserved and state.metering.output_cap is None
    assert "max_output_tokens" not in json.loads(flow.request.content)


def test_chat_requests_are_capped_in_the_field_the_client_uses():
    from codexgate.addons.output_cap import cap_body

    legacy = {"model": "m", "messages": [], "max_tokens": 9000}
    cap_body(legacy, "chat", 500)
    assert legacy["max_tokens"] == 500 and "max_completion_tokens" not in legacy
    modern: dict = {"model": "m", "messages": []}
    cap_body(modern, "chat", 500)
    assert modern == {"model": "m", "messages": [], "max_completion_tokens": 500}
    responses: dict = {"model": "m", "input": "x"}
    cap_body(responses, "responses", 500)
    assert responses["max_output_tokens"] == 500


def test_the_mock_provider_stops_at_the_cap_like_a_real_one():
    from codexgate.policies.schema import MockProvider
    from codexgate.providers import mock

    settings = MockProvider(kind="mock", output_tokens=500)
    assert mock.within_cap(settings, {"max_output_tokens": 120}).output_tokens == 120
    assert mock.within_cap(settings, {"max_completion_tokens": 9000}).output_tokens == 500
    assert mock.within_cap(settings, {}).output_tokens == 500
