"""Budgets and rate limits through a real gateway process (embedded store)."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.cli import main as cli_main
from codexgate.policies.keys import hash_key

KEYS = {name: f"sk-cg-limits-{name}-{'0' * 24}" for name in ("solo", "t1a", "t1b", "org", "rate", "tok", "crowd")}
# Every request to mock-model costs (input + output tokens) x $1000 per million tokens; the
# mock's input tokens are the body bytes / 4, exactly as admission estimates them, and its
# output tokens equal the output allowance, so actual cost == estimate (overspend bound 0).
PRICE_PER_TOKEN = 1000 / 1_000_000
OUTPUT_TOKENS = 500


def limits_policy() -> str:
    keys = "\n".join(
        f'  - {{name: {name}, team: {team}, hash: "{hash_key(secret)}"{extra}}}'
        for name, secret, team, extra in [
            ("solo", KEYS["solo"], "free", ", budgets: [{limit_usd: 1.2, period: 1M}]"),
            ("t1a", KEYS["t1a"], "t1", ""),
            ("t1b", KEYS["t1b"], "t1", ""),
            ("org", KEYS["org"], "t2", ""),
            ("rate", KEYS["rate"], "free", ", rate_limits: [{requests: 2, per: 1m}]"),
            ("tok", KEYS["tok"], "free", ", rate_limits: [{tokens: 1200, per: 1h}]"),
            # A soft budget: the reservation is the estimate, so exactly cap // cost fit however the
            # 24 requests interleave (a hard budget reserves the worst case while requests are in
            # flight; tests/integration/test_hard_budgets.py proves its ceiling).
            ("crowd", KEYS["crowd"], "free", ", budgets: [{limit_usd: 7.0, period: 1d, hard: false}]"),
        ]
    )
    return f"""\
providers:
  local: {{kind: mock, output_tokens: {OUTPUT_TOKENS}, latency_ms: 50}}
models:
  mock-model:
    routes: [{{provider: local}}]
    price: {{input_per_mtok: 1000, output_per_mtok: 1000}}
    output_allowance: {OUTPUT_TOKENS}
    max_output_tokens: {OUTPUT_TOKENS}  # the mock writes exactly this: its worst case under hard budgets
orgs:
  free: {{}}
  capped: {{budgets: [{{limit_usd: 1.2, period: 1w}}]}}
teams:
  free: {{org: free}}
  t1: {{org: free, budgets: [{{limit_usd: 1.2, period: 1d}}]}}
  t2: {{org: capped}}
keys:
{keys}
"""


@pytest.fixture(scope="module")
def limits_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("limits")
    policy = root / "policy.yaml"
    policy.write_text(limits_policy())
    gateway = Gateway(policy, root / "data").start()
    yield gateway
    gateway.stop()


BODY = json.dumps({"model": "mock-model", "input": "a request of a fixed size"}).encode()


def ask(gateway: Gateway, name: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/responses",
        content=BODY,
        headers={"authorization": f"Bearer {KEYS[name]}", "content-type": "application/json"},
        timeout=20,
    )


def request_cost() -> float:
    return (len(BODY) // 4 + OUTPUT_TOKENS) * PRICE_PER_TOKEN


@pytest.mark.parametrize(
    ("names", "level"),
    [(["solo"], "key solo"), (["t1a", "t1b"], "team t1"), (["org"], "org capped")],
)
def test_budget_blocks_at_each_level(limits_gateway: Gateway, names: list[str], level: str) -> None:
    cost = request_cost()
    assert 0.4 < cost < 0.6  # two requests fit in $1.20, a third does not
    statuses = [ask(limits_gateway, names[i % len(names)]).status_code for i in range(2)]
    assert statuses == [200, 200]
    refused = ask(limits_gateway, names[0])
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert error["message"].startswith(f"{level}: ")
    assert "budget $1.20 used" in error["message"] and "resets 20" in error["message"]


def test_request_rate_limit_answers_429_with_retry_after(limits_gateway: Gateway) -> None:
    first = ask(limits_gateway, "rate")
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert ask(limits_gateway, "rate").status_code == 200
    refused = ask(limits_gateway, "rate")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "key rate: rate limit of 2 requests per minute reached" in refused.json()["error"]["message"]


def test_token_rate_limit(limits_gateway: Gateway) -> None:
    # Each request is estimated at ~515 tokens: two fit in 1200 per hour, the third does not.
    assert [ask(limits_gateway, "tok").status_code for _ in range(3)] == [200, 200, 429]


def test_concurrent_requests_never_overspend(limits_gateway: Gateway) -> None:
    cap, cost = 7.0, request_cost()
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda _: ask(limits_gateway, "crowd").status_code, range(24)))
    assert set(statuses) <= {200, 402}
    admitted = statuses.count(200)
    records = limits_gateway.wait_accounting(lambda r: r["key"] == "crowd", count=len(statuses))
    charged = sum(r["cost_usd"] or 0 for r in records)
    # Overspend bound: sum over in-flight requests of (actual - estimate)+ = 0 here.
    assert charged <= cap + 1e-9
    assert admitted == int(cap // cost)  # and nothing that fitted was refused
    assert charged == pytest.approx(admitted * cost)


def test_usage_report(limits_gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    ask(limits_gateway, "solo")
    assert limits_gateway.wait_accounting(lambda r: r["key"] == "solo")
    assert cli_main(["usage", "--data-dir", str(limits_gateway.data_dir), "--by", "key", "--json"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["solo"]["requests"] >= 1 and rows["solo"]["cost_usd"] > 0
    assert cli_main(["usage", "--data-dir", str(limits_gateway.data_dir), "--by", "team"]) == 0
    table = capsys.readouterr().out
    assert "t1" in table and "TOTAL" in table
    assert cli_main(["usage", "--data-dir", str(limits_gateway.data_dir), "--by", "org", "--csv"]) == 0
    assert capsys.readouterr().out.startswith("org,requests,refused,")


def test_lowering_a_cap_applies_at_once_and_restart_keeps_spend(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(limits_policy())
    data = tmp_path / "data"
    gateway = Gateway(policy, data).start()
    try:
        assert ask(gateway, "solo").status_code == 200
    finally:
        gateway.stop()
    # A new process on the same data dir still knows the spend: a second request fits, a third not.
    gateway = Gateway(policy, data).start()
    try:
        assert ask(gateway, "solo").status_code == 200
        assert ask(gateway, "solo").status_code == 402
        # Raising the cap in the policy file applies to the next request, without restart.
        policy.write_text(limits_policy().replace("limit_usd: 1.2, period: 1M", "limit_usd: 100, period: 1M"))
        stamp = time.time_ns() + 1_000_000_000
        import os

        os.utime(policy, ns=(stamp, stamp))
        assert ask(gateway, "solo").status_code == 200
        # And lowering it does too.
        policy.write_text(limits_policy().replace("limit_usd: 1.2, period: 1M", "limit_usd: 1, period: 1M"))
        os.utime(policy, ns=(stamp + 10**9, stamp + 10**9))
        assert ask(gateway, "solo").status_code == 402
    finally:
        gateway.stop()


def test_unpriced_model_is_refused_not_free(gateway: Gateway) -> None:
    sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="no known price"):
        sdk.responses.create(model="gpt-unpriced", input="x")


def test_known_model_priced_by_genai_prices(gateway: Gateway) -> None:
    sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0)
    sdk.responses.create(model="gpt-5-mini", input="price me", extra_headers={"session-id": "priced-session"})
    (record,) = gateway.wait_accounting(lambda r: r["session_id"] == "priced-session")
    # The fake reports 11 input (3 cached) and 7 output tokens; gpt-5-mini: $0.25 in, $0.025 cached, $2 out per MTok.
    assert record["cost_usd"] == pytest.approx((8 * 0.25 + 3 * 0.025 + 7 * 2.0) / 1_000_000, rel=1e-6)
    assert record["charge"] == "actual"


def test_stream_cut_before_usage_is_charged_its_estimate(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.cut_stream.set()
    try:
        sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=20)
        stream = sdk.responses.create(
            model="gpt-test", input="cut me off", stream=True, extra_headers={"session-id": "cut-session"}
        )
        with stream:
            kinds = [event.type for event in stream]
        # The answer ends cleanly with its failure event (not a cut connection the SDK would raise on).
        assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    finally:
        fake_openai.cut_stream.clear()
    assert gateway.wait_accounting(lambda r: r["session_id"] == "cut-session")
    time.sleep(0.3)  # grace for a second (wrong) record to show up
    records = [r for r in gateway.accounting() if r["session_id"] == "cut-session"]
    assert len(records) == 1  # charged once
    record = records[0]
    assert record["charge"] == "estimate" and record["usage"] is None
    # gpt-test costs $1/$8 per MTok: the estimate is input bytes / 4 plus the 4096-token output allowance.
    assert record["cost_usd"] > 4096 * 8 / 1_000_000
