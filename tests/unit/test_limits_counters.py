"""Limits builds a request's counters once per (policy, levels, windows): what it hands out must
always equal what `counters_for` computes at that moment."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mitmproxy import http
from unit_support import governed, make_flow, policy_yaml

from codexgate.addons.limits import Charge, Limits, counters_for, levels_of
from codexgate.addons.policy_source import PolicySource
from codexgate.metrics import GatewayMetrics
from codexgate.policies.loader import load_policy
from codexgate.stores.embedded import EmbeddedStore
from codexgate.usage import Usage

pytest_plugins = ["unit_support"]

T = 1_767_225_599.5  # 2025-12-31 23:59:59.5 UTC: the next second rolls minute, day, month and year


def limited_policy(tmp_path: Path, name: str, team_budget: int) -> Path:
    text = policy_yaml().replace(
        "  platform: {org: acme}",
        f"  platform: {{org: acme, budgets: [{{limit_usd: {team_budget}, period: 1M}}],"
        " rate_limits: [{requests: 600, per: 1m}, {tokens: 5000, per: 1m, rolling: true}]}",
    )
    path = tmp_path / name
    path.write_text(text)
    return path


def test_counters_follow_window_rollover_and_policy_reload(tmp_path, upstream_env):
    limits = Limits(PolicySource(GatewayMetrics()), GatewayMetrics())
    first = load_policy(limited_policy(tmp_path, "a.yaml", 500))
    state = governed(make_flow(), first, key="alice", model="gpt-5.5")

    def check(now: float) -> list:
        got = limits._counters(state, now)
        assert got == counters_for(levels_of(state), now)
        return got

    before = check(T)
    assert {c.counter_id for c in before} == {
        "team:platform/usd/1M", "team:platform/requests/1m", "team:platform/tokens/1m/rolling",
    }  # fmt: skip
    again = check(T + 0.2)  # same windows: served from the cache, the very same counters
    assert all(a is b for a, b in zip(again, before, strict=True))
    after = check(T + 0.5)  # 2026-01-01 00:00:00: every window has rolled over
    assert {c.counter_id: c.bucket_start for c in after} != {c.counter_id: c.bucket_start for c in before}
    # A reload (a new policy object) is never served counters of the old one.
    second = load_policy(limited_policy(tmp_path, "b.yaml", 50))
    state.policy = second
    (budget,) = [c for c in check(T + 0.6) if c.kind == "usd"]
    assert budget.limit == 50


def test_settlement_starts_after_the_answer_and_lands_at_shutdown(tmp_path, upstream_env):
    """The response hook leaves the store alone (its work would sit on the answer's path), and a
    settlement still waiting when the gateway stops is made before the store closes: the actual
    cost is charged, not the estimate."""
    metrics = GatewayMetrics()
    limits = Limits(PolicySource(metrics), metrics)
    # Far beyond the test's run time, so "not yet" below does not depend on how fast the machine is.
    limits.settle_delay_seconds = 3600
    charge = Charge(limits, metrics)
    policy = load_policy(limited_policy(tmp_path, "p.yaml", 500))
    store = EmbeddedStore(str(tmp_path / "counters.sqlite3"))
    limits.store = store
    flow = make_flow(body={"model": "gpt-5.5", "input": "x" * 400})
    state = governed(flow, policy, key="alice", model="gpt-5.5")
    state.provider = "openai"

    async def body() -> None:
        await limits.request(flow)
        assert state.metering is not None and state.metering.reserved
        (budget,) = [c for c in state.metering.counters if c.kind == "usd"]
        estimate = state.metering.reservation.usd  # what admission holds (the worst case: a hard budget)
        flow.response = http.Response.make(200, b"{}")
        state.usage = Usage(input_tokens=1000, output_tokens=10)
        await charge.response(flow)
        for _ in range(3):  # a few loop turns later, while mitmproxy writes the answer: untouched
            await asyncio.sleep(0)
        (held,) = await store.snapshot([budget], time.time())
        assert held.used == estimate
        await limits.done()  # the gateway stops before the settlement's turn came
        reopened = EmbeddedStore(str(tmp_path / "counters.sqlite3"))
        try:
            (settled,) = await reopened.snapshot([budget], time.time())
        finally:
            await reopened.close()
        assert settled.used == state.cost_usd
        assert 0 < settled.used < estimate

    asyncio.run(body())
