"""Hard budgets through real gateways: a provider that writes far more than the output allowance
(its model's maximum, or the cap it is sent, as real providers do) cannot take a budget past its limit plus
epsilon — across two gateways sharing one redis-server, and with the embedded store — and the
cap reaches the provider on every path: direct, relayed (failover) and translated (Anthropic)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes.gateway import UPSTREAM_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI
from fakes.redis_server import RedisServer

from codexgate.addons.limits import counters_for
from codexgate.policies.keys import hash_key
from codexgate.policies.schema import Budget, Limited
from codexgate.stores.base import CounterStore
from codexgate.stores.embedded import EmbeddedStore
from codexgate.stores.factory import EMBEDDED_FILE
from codexgate.stores.redis_store import RedisStore

EPSILON = 0.001
PER_INPUT, PER_OUTPUT = 1e-6, 8e-6  # every model here: $1 input, $8 output per million tokens
MAX_OUTPUT = 20_000  # the gpt models' maximum output: a worst case of $0.16
KEYS = {name: f"sk-cg-hard-{name}-{'0' * 24}" for name in ("crowd", "direct", "relayed", "claude")}


def hard_policy(openai_url: str, anthropic_url: str, crowd_budget: float) -> str:
    price = "price: {input_per_mtok: 1, output_per_mtok: 8}"
    return f"""\
gateway: {{hard_budgets: {{epsilon_usd: {EPSILON}, min_output_tokens: 100}}}}
providers:
  openai: {{kind: openai, base_url: "{openai_url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
  openai-b: {{kind: openai, base_url: "{openai_url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
  claude: {{kind: anthropic, base_url: "{anthropic_url}", keys: [{{value: env:CG_ANTHROPIC_KEY}}]}}
models:
  gpt-direct: {{routes: [{{provider: openai}}], {price}, max_output_tokens: {MAX_OUTPUT}}}
  gpt-relayed: {{routes: [{{provider: openai}}, {{provider: openai-b}}], {price}, max_output_tokens: {MAX_OUTPUT}}}
  claude-sonnet-4-5: {{routes: [{{provider: claude}}], {price}, max_output_tokens: 64000}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: crowd, team: platform, hash: "{hash_key(KEYS["crowd"])}",
     budgets: [{{limit_usd: {crowd_budget}, period: 1d}}]}}
  - {{name: direct, team: platform, hash: "{hash_key(KEYS["direct"])}", budgets: [{{limit_usd: 0.1, period: 1d}}]}}
  - {{name: relayed, team: platform, hash: "{hash_key(KEYS["relayed"])}", budgets: [{{limit_usd: 0.1, period: 1d}}]}}
  - {{name: claude, team: platform, hash: "{hash_key(KEYS["claude"])}", budgets: [{{limit_usd: 0.1, period: 1d}}]}}
"""


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    # The model writes its maximum whenever it is not capped lower: 5x the output allowance (4096).
    fake.output_tokens = MAX_OUTPUT
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def claude_fake() -> Iterator[anthropic_fake.FakeAnthropic]:
    fake = anthropic_fake.FakeAnthropic().start()
    fake.output_tokens = 64_000  # up to max_tokens, which the translation always sends
    yield fake
    fake.stop()


def start_gateways(
    tmp_path: Path, openai_fake: FakeOpenAI, claude_fake: anthropic_fake.FakeAnthropic, store: str, count: int,
    crowd_budget: float = 2.0,
) -> list[Gateway]:  # fmt: skip
    policy = tmp_path / "policy.yaml"
    policy.write_text(hard_policy(openai_fake.url, claude_fake.url, crowd_budget))
    gateways = []
    for i in range(count):
        gateway = Gateway(policy, tmp_path / f"gw{i}", extra_env={"CG_ANTHROPIC_KEY": anthropic_fake.API_KEY})
        gateway.store = store
        gateways.append(gateway.start())
    return gateways


def ask(gateway: Gateway, key: str, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "input": "write as much as you can", "stream": stream}
    return httpx.post(
        f"{gateway.base_url}/responses",
        json=body,
        headers={"authorization": f"Bearer {KEYS[key]}"},
        timeout=30,
    )


def store_spent(store: CounterStore, key: str, limit: float) -> float:
    """What the store holds against the key's budget (settled and reserved), read through its API."""
    now = time.time()
    counters = counters_for([("key", key, Limited(budgets=[Budget(limit_usd=limit, period="1d")]))], now, EPSILON)

    async def read() -> float:
        try:
            (state,) = await store.snapshot(counters, now)
            return state.used
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("store_kind", ["redis", "embedded"])
def test_concurrent_requests_cannot_pass_limit_plus_epsilon(
    tmp_path: Path, request: pytest.FixtureRequest, openai_fake: FakeOpenAI,
    claude_fake: anthropic_fake.FakeAnthropic, store_kind: str,
) -> None:  # fmt: skip
    budget = 2.0
    if store_kind == "redis":
        redis: RedisServer = request.getfixturevalue("fresh_redis_server")
        gateways = start_gateways(tmp_path, openai_fake, claude_fake, redis.url, 2, budget)
    else:
        gateways = start_gateways(tmp_path, openai_fake, claude_fake, "embedded", 1, budget)
    sent_before = len(openai_fake.received)
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(
                pool.map(lambda i: ask(gateways[i % len(gateways)], "crowd", "gpt-direct", i % 3 == 0), range(30))
            )
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 402}, statuses
        refused = [a.json()["error"] for a in answers if a.status_code == 402]
        assert refused and all(e["code"] == "budget_exceeded" for e in refused)
        served = statuses.count(200)
        # $2 holds twelve worst cases ($0.16 each), then what remains is paid for by capped answers.
        assert served >= 12
        deadline = time.monotonic() + 30  # a bound for the wait, not a pass/fail criterion
        while True:
            lines = [line for gateway in gateways for line in gateway.accounting() if line["key"] == "crowd"]
            if len(lines) >= len(answers) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(lines) == len(answers)
        charged = sum(line["cost_usd"] or 0 for line in lines)
        assert charged <= budget + EPSILON
        assert charged > budget - 0.17  # the budget was really used (the provider wrote all it could)
        capped = [
            json.loads(r.body)["max_output_tokens"]
            for r in openai_fake.received[sent_before:]
            if "max_output_tokens" in json.loads(r.body)
        ]
        assert capped and all(100 <= cap < MAX_OUTPUT for cap in capped)
    finally:
        for gateway in gateways:
            gateway.stop()
    store: CounterStore = (
        RedisStore(redis.url) if store_kind == "redis" else EmbeddedStore(str(tmp_path / "gw0" / EMBEDDED_FILE))
    )
    spent = store_spent(store, "crowd", budget)
    assert spent == pytest.approx(charged, rel=1e-9, abs=1e-12)  # nothing left reserved, nothing lost
    assert spent <= budget + EPSILON


def test_the_cap_reaches_every_path(
    tmp_path: Path, openai_fake: FakeOpenAI, claude_fake: anthropic_fake.FakeAnthropic
) -> None:
    (gateway,) = start_gateways(tmp_path, openai_fake, claude_fake, "embedded", 1)
    try:
        for key, model, stream in (("direct", "gpt-direct", False), ("relayed", "gpt-relayed", True)):
            before = len(openai_fake.received)
            answer = ask(gateway, key, model, stream)
            assert answer.status_code == 200, answer.text
            (sent,) = [json.loads(r.body) for r in openai_fake.received[before:]]
            # $0.1 (+ epsilon) left: what the input (its body bytes as tokens) leaves, at $8 per million output tokens.
            assert 12_000 < sent["max_output_tokens"] <= 12_625
        before = len(claude_fake.received)
        answer = ask(gateway, "claude", "claude-sonnet-4-5")
        assert answer.status_code == 200, answer.text
        (sent,) = [json.loads(r.body) for r in claude_fake.received[before:]]
        assert 12_000 < sent["max_tokens"] <= 12_625
        assert not claude_fake.invalid and not openai_fake.invalid
        lines = gateway.wait_accounting(lambda r: r["charge"] == "actual", count=3)
        assert len(lines) == 3
        for line in lines:
            assert line["cost_usd"] <= 0.1 + EPSILON
            assert line["usage"]["output_tokens"] > 12_000  # the provider wrote up to the cap
    finally:
        gateway.stop()
    assert UPSTREAM_KEY  # the fakes checked the provider keys
