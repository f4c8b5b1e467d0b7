"""Several gateway processes sharing one real redis-server, and what happens when it dies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes.gateway import Gateway
from fakes.redis_server import RedisServer

from codexgate.policies.keys import hash_key

KEY = "sk-cg-shared-store-key-000000000000000000000000"
BODY = json.dumps({"model": "mock-model", "input": "shared"}).encode()


def shared_policy(on_store_error: str, budget_usd: float = 100.0) -> str:
    return f"""\
gateway: {{on_store_error: {on_store_error}}}
providers:
  local: {{kind: mock, output_tokens: 100}}
models:
  mock-model:
    routes: [{{provider: local}}]
    price: {{input_per_mtok: 1000, output_per_mtok: 1000}}
    output_allowance: 100
# A soft budget: this file is about sharing one (hard budgets: test_hard_budgets.py).
teams: {{platform: {{org: acme, budgets: [{{limit_usd: {budget_usd}, period: 1d, hard: false}}]}}}}
keys:
  - {{name: shared, team: platform, hash: "{hash_key(KEY)}", rate_limits: [{{requests: 7, per: 1h}}]}}
"""


def ask(gateway: Gateway) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/responses",
        content=BODY,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        timeout=20,
    )


def two_gateways(tmp_path: Path, redis: RedisServer, on_store_error: str) -> list[Gateway]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(shared_policy(on_store_error))
    gateways = []
    for name in ("one", "two"):
        gateway = Gateway(policy, tmp_path / name)
        gateway.store = redis.url
        gateways.append(gateway.start())
    return gateways


@pytest.fixture
def gateways(tmp_path: Path, fresh_redis_server: RedisServer) -> Iterator[list[Gateway]]:
    running = two_gateways(tmp_path, fresh_redis_server, "closed")
    yield running
    for gateway in running:
        gateway.stop()


def test_two_instances_enforce_one_rate_limit_and_one_budget(gateways: list[Gateway]) -> None:
    # The rate limit: 7 requests an hour for the key, whichever instance serves them.
    statuses = [ask(gateways[i % 2]).status_code for i in range(9)]
    assert statuses == [200] * 7 + [429, 429]
    served = [len([r for r in g.accounting() if r["decision"] == "answered"]) for g in gateways]
    assert served == [4, 3]  # both instances did serve, and together exactly 7


def test_two_instances_share_a_budget(tmp_path: Path, fresh_redis_server: RedisServer) -> None:
    policy_text = shared_policy("closed", budget_usd=0.5).replace("requests: 7, per: 1h", "requests: 1000, per: 1h")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    running = []
    try:
        for name in ("one", "two"):
            gateway = Gateway(policy, tmp_path / name)
            gateway.store = fresh_redis_server.url
            running.append(gateway.start())
        # Each request costs (body bytes / 4 + 100) x $0.001: about $0.112, so four fit in $0.50.
        statuses = [ask(running[i % 2]).status_code for i in range(6)]
        assert statuses == [200, 200, 200, 200, 402, 402]
        charged = sum(r["cost_usd"] or 0 for g in running for r in g.accounting())
        assert charged <= 0.5
    finally:
        for gateway in running:
            gateway.stop()


@pytest.mark.parametrize("policy_says", ["closed", "open"])
def test_redis_killed_mid_run(tmp_path: Path, fresh_redis_server: RedisServer, policy_says: str) -> None:
    running = two_gateways(tmp_path, fresh_redis_server, policy_says)
    try:
        assert ask(running[0]).status_code == 200
        fresh_redis_server.kill()
        answer = ask(running[0])
        if policy_says == "closed":
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "store_unavailable"
            assert "retry-after" in answer.headers
        else:
            assert answer.status_code == 200
            assert answer.headers["x-codexgate-metering"] == "unavailable"
        log = running[0].log_text()
        assert "counter store unavailable" in log and f"on_store_error: {policy_says}" in log
    finally:
        for gateway in running:
            gateway.stop()
