"""A failed-over request is admitted by the candidate's own provider and model levels before it is
tried there: a candidate whose hard budget is spent or whose rate limit is used up is not tried,
and when no candidate is left the client gets the refusal it would get had that candidate been the
first choice — nothing served past the limit, nothing counted twice, no reservation left held.

A real gateway process (embedded store, or a real redis-server), two fake OpenAI upstreams (the
first one fails: 500, 429 or a refused connection), the counters read through the store's API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.counter_use import counter_use
from fakes.failover_pair import failover_policy
from fakes.gateway import ALICE_KEY, Gateway, free_port
from fakes.openai_upstream import FakeOpenAI

from codexgate.addons.limits import counters_for
from codexgate.policies.loader import load_policy
from codexgate.stores.base import Amounts
from codexgate.stores.factory import open_store

SECOND_BUDGET = 1.0  # $, hard: spent before the test's requests
SECOND_PRICE = (2.0, 16.0)  # $ per million input / output tokens (the first model's: 1 / 8)


def write_policy(
    path: Path, first_url: str, second_url: str, second_limits: str, first_limits: str = "", key_budget: float = 100
) -> Path:
    key_limits = (f"budgets: [{{limit_usd: {key_budget}, period: 1d, rolling: true}}], "
                  "rate_limits: [{requests: 1000, per: 1h, rolling: true}]")  # fmt: skip
    path.write_text(
        failover_policy(first_url, second_url, first_limits=first_limits, second_limits=second_limits,
                        key_limits=key_limits, second_price=SECOND_PRICE)
    )  # fmt: skip
    return path


def used(policy: Path, store_spec: str, data_dir: Path) -> dict[str, float]:
    return counter_use(policy, store_spec, data_dir)


def spend_second_budget(
    policy: Path, store_spec: str, data_dir: Path, level: tuple[str, str] = ("provider", "second")
) -> None:
    """A level's hard budget (the second provider's), spent (as earlier requests would have spent it)."""
    compiled = load_policy(policy).policy
    now = time.time()
    kind, name = level
    limited = compiled.providers[name] if kind == "provider" else next(k for k in compiled.keys if k.name == name)
    counters = counters_for([(kind, name, limited)], now, compiled.gateway.hard_budgets.epsilon_usd)

    async def spend() -> None:
        store = open_store(store_spec, str(data_dir))
        try:
            assert (await store.reserve("earlier", counters, Amounts(usd=SECOND_BUDGET, requests=1), now)).admitted
            assert await store.settle("earlier", Amounts(usd=SECOND_BUDGET, requests=1))
        finally:
            await store.close()

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(spend())


def counter(used_now: dict[str, float], prefix: str) -> float:
    return sum(value for counter_id, value in used_now.items() if counter_id.startswith(prefix))


def start(tmp_path: Path, policy: Path, store_spec: str) -> Gateway:
    gateway = Gateway(policy, tmp_path / "data")
    gateway.store = store_spec
    gateway.metrics_port = free_port()
    return gateway.start()


def refusal(gateway: Gateway, model: str, session: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/responses",
        json={"model": model, "input": "hello", "stream": True},
        headers={"authorization": f"Bearer {ALICE_KEY}", "session-id": session},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("store", "failure"), [("embedded", "500"), ("redis", "429"), ("embedded", "connect")]
)  # fmt: skip
def test_a_candidate_whose_hard_budget_is_spent_is_not_tried(
    tmp_path: Path, upstreams: dict[str, FakeOpenAI], store: str, failure: str, request: pytest.FixtureRequest
) -> None:
    store_spec = request.getfixturevalue("fresh_redis_server").url if store == "redis" else "embedded"
    first_url = f"http://127.0.0.1:{free_port()}/v1" if failure == "connect" else upstreams["first"].url
    budget = f"budgets: [{{limit_usd: {SECOND_BUDGET}, period: 1d, rolling: true}}]"  # hard (the default)
    policy = write_policy(tmp_path / "policy.yaml", first_url, upstreams["second"].url, budget)
    data_dir = tmp_path / "data"
    spend_second_budget(policy, store_spec, data_dir)
    gateway = start(tmp_path, policy, store_spec)
    try:
        # What the second provider's budget answers as a first choice:
        direct = refusal(gateway, "gpt-second", "direct")
        assert direct.status_code == 402, direct.text
        if failure != "connect":
            upstreams["first"].failures.append((int(failure), {}))
        answer = refusal(gateway, "gpt-first", "failover")
        # The same refusal, not the second provider's answer past its budget.
        assert answer.status_code == 402, answer.text
        error, expected_error = answer.json()["error"], direct.json()["error"]
        assert (error["code"], error["type"]) == (expected_error["code"], expected_error["type"]) == (
            "budget_exceeded", "insufficient_quota")  # fmt: skip
        assert error["message"].split("; resets")[0] == expected_error["message"].split("; resets")[0]
        assert error["message"].startswith("provider second: rolling day budget $1.00 used")
        assert answer.headers["x-codexgate-error"] == "budget_exceeded"
        assert upstreams["second"].received == []  # never sent there
        (line,) = gateway.wait_accounting(lambda r: r["session_id"] == "failover")
        assert line["decision"] == "budget_exceeded" and line["status"] == 402
        outcomes = [(a["deployment"], a["outcome"]) for a in line["attempts"]]
        assert outcomes[-1] == ("second/gpt-second#0", "skipped_budget_exceeded")
        assert "second/gpt-second#0 not tried" in gateway.wait_log("second/gpt-second#0 not tried")
        metrics = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text
        attempts = [line for line in metrics.splitlines() if line.startswith("codexgate_upstream_attempts_total")]
        assert 'codexgate_upstream_attempts_total{outcome="skipped_budget_exceeded",provider="second"} 1.0' in attempts
        served_cost = 0.0
        if failure != "connect":  # (no first provider to serve it there)
            # A later request for the first model is served by its first choice as usual.
            client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
            served = client.responses.with_raw_response.create(model="gpt-first", input="hi")
            assert served.http_response.status_code == 200 and served.headers["x-codexgate-provider"] == "first"
            (ok,) = gateway.wait_accounting(lambda r: r["charge"] == "actual")
            served_cost = ok["cost_usd"]
    finally:
        gateway.stop()
    # Only a served request is counted: the refused ones left nothing held, nowhere.
    now = used(policy, store_spec, data_dir)
    expected = {"key:alice/usd": served_cost, "key:alice/requests": 1.0 if served_cost else 0.0,
                "provider:first/usd": 0.0, "provider:second/usd": SECOND_BUDGET}  # fmt: skip
    for prefix, value in expected.items():
        assert counter(now, prefix) == pytest.approx(value, abs=1e-12), (prefix, now)


def test_a_candidate_whose_rate_limit_is_used_up_is_not_tried(tmp_path: Path, upstreams: dict[str, FakeOpenAI]) -> None:
    limit = "rate_limits: [{requests: 1, per: 1h, rolling: true}]"
    policy = write_policy(tmp_path / "policy.yaml", upstreams["first"].url, upstreams["second"].url, limit)
    gateway = start(tmp_path, policy, "embedded")
    try:
        client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
        client.responses.create(model="gpt-second", input="the one request the hour allows")
        assert len(upstreams["second"].received) == 1
        direct = refusal(gateway, "gpt-second", "direct")
        assert direct.status_code == 429, direct.text
        upstreams["first"].failures.append((503, {}))
        answer = refusal(gateway, "gpt-first", "failover")
        assert answer.status_code == 429, answer.text
        error = answer.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == direct.json()["error"]["type"]
        assert error["message"].startswith("provider second: rate limit of 1 requests per hour reached")
        assert int(answer.headers["retry-after"]) > 0
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(upstreams["second"].received) == 1  # the hour's request only
        (line,) = gateway.wait_accounting(lambda r: r["session_id"] == "failover")
        assert line["decision"] == "rate_limited" and line["status"] == 429
        assert line["attempts"][-1]["outcome"] == "skipped_rate_limit_exceeded"
        gateway.wait_accounting(lambda r: True, count=3)
    finally:
        gateway.stop()
    now = used(policy, "embedded", tmp_path / "data")
    # Only the served request is counted (the refusals released what they held): the failed-over
    # one is not counted at the key, nor at either provider.
    assert counter(now, "key:alice/requests") == pytest.approx(1.0)
    assert counter(now, "provider:second/requests") == pytest.approx(1.0)
    assert counter(now, "provider:first/requests") == pytest.approx(0.0)


def test_a_stream_cut_after_a_failover_is_charged_the_candidates_estimate_at_its_levels(
    tmp_path: Path, upstreams: dict[str, FakeOpenAI]
) -> None:
    budget = "budgets: [{limit_usd: 50, period: 1d, rolling: true}]"
    policy = write_policy(tmp_path / "policy.yaml", upstreams["first"].url, upstreams["second"].url, budget)
    gateway = start(tmp_path, policy, "embedded")
    upstreams["first"].failures.append((500, {}))
    upstreams["second"].cut_stream.set()  # the answer breaks after its first event, before any usage
    content = b'{"model": "gpt-first", "input": "tell me a long story", "stream": true}'
    try:
        with httpx.stream(
            "POST", f"{gateway.base_url}/responses", content=content, timeout=30,
            headers={"authorization": f"Bearer {ALICE_KEY}", "session-id": "cut", "content-type": "application/json"},
        ) as answer:  # fmt: skip
            assert answer.status_code == 200 and answer.headers["x-codexgate-provider"] == "second"
            assert b"response.failed" in answer.read()
        (line,) = gateway.wait_accounting(lambda r: r["session_id"] == "cut")
    finally:
        gateway.stop()
    assert (line["provider"], line["charge"]) == ("second", "estimate")
    # The estimate at the second model's price: its body's bytes / 4 in, its output allowance out.
    estimate = (len(content) // 4 * SECOND_PRICE[0] + 1000 * SECOND_PRICE[1]) / 1e6
    assert line["cost_usd"] == pytest.approx(estimate, rel=1e-9)
    now = used(policy, "embedded", tmp_path / "data")
    assert counter(now, "provider:second/usd") == pytest.approx(estimate, rel=1e-9)
    assert counter(now, "provider:first/usd") == pytest.approx(0.0, abs=1e-12)
    assert counter(now, "key:alice/usd") == pytest.approx(estimate, rel=1e-9)  # once


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_a_first_choice_whose_own_budget_is_spent_leaves_the_request_to_a_candidate_with_room(
    tmp_path: Path, upstreams: dict[str, FakeOpenAI], store: str, request: pytest.FixtureRequest
) -> None:
    """Only the first choice's provider is full: the request is not refused while another candidate
    has room there — it is served there (counted there and at the key, once), and the full provider
    is neither sent anything nor charged."""
    store_spec = request.getfixturevalue("fresh_redis_server").url if store == "redis" else "embedded"
    budget = f"budgets: [{{limit_usd: {SECOND_BUDGET}, period: 1d, rolling: true}}]"
    policy = write_policy(tmp_path / "policy.yaml", upstreams["first"].url, upstreams["second"].url,
                          "budgets: [{limit_usd: 50, period: 1d, rolling: true}]", first_limits=budget)  # fmt: skip
    data_dir = tmp_path / "data"
    spend_second_budget(policy, store_spec, data_dir, ("provider", "first"))
    gateway = start(tmp_path, policy, store_spec)
    try:
        client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
        served = client.responses.with_raw_response.create(model="gpt-first", input="hi")
        assert served.http_response.status_code == 200
        assert served.headers["x-codexgate-provider"] == "second"
        assert upstreams["first"].received == [] and len(upstreams["second"].received) == 1
        (line,) = gateway.wait_accounting(lambda r: r["charge"] == "actual")
        assert (line["decision"], line["provider"], line["model"]) == ("forwarded", "second", "gpt-second")
        outcomes = [(a["deployment"], a["outcome"]) for a in line["attempts"]]
        assert outcomes[0] == ("first/gpt-first#0", "skipped_budget_exceeded")
        assert outcomes[-1][0] == "second/gpt-second#0" and outcomes[-1][1] == "ok"
    finally:
        gateway.stop()
    now = used(policy, store_spec, data_dir)
    assert counter(now, "provider:first/usd") == pytest.approx(SECOND_BUDGET)  # what was spent before, only
    assert counter(now, "provider:second/usd") == pytest.approx(line["cost_usd"], rel=1e-9)
    assert counter(now, "key:alice/usd") == pytest.approx(line["cost_usd"], rel=1e-9)  # once
    assert counter(now, "key:alice/requests") == pytest.approx(1.0)


def test_a_spent_key_budget_is_refused_outright_whatever_the_candidates(
    tmp_path: Path, upstreams: dict[str, FakeOpenAI]
) -> None:
    """The key's own budget is the same at every candidate: refused at admission, nothing relayed."""
    second_budget = "budgets: [{limit_usd: 50, period: 1d, rolling: true}]"
    policy = write_policy(tmp_path / "policy.yaml", upstreams["first"].url, upstreams["second"].url, second_budget,
                          key_budget=SECOND_BUDGET)  # fmt: skip
    data_dir = tmp_path / "data"
    spend_second_budget(policy, "embedded", data_dir, ("key", "alice"))
    gateway = start(tmp_path, policy, "embedded")
    try:
        answer = refusal(gateway, "gpt-first", "key-spent")
        assert answer.status_code == 402, answer.text
        assert answer.json()["error"]["message"].startswith("key alice: rolling day budget $1.00 used")
        (line,) = gateway.wait_accounting(lambda r: r["session_id"] == "key-spent")
        assert line["decision"] == "budget_exceeded" and not line["attempts"], json.dumps(line)
    finally:
        gateway.stop()
    assert upstreams["first"].received == [] and upstreams["second"].received == []
