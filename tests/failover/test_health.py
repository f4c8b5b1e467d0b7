"""Deployment cooldowns (in memory and on a real redis-server) and the weighted try order."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import uuid
from collections import Counter

import pytest
from fakes.redis_server import RedisServer

from codexgate.health import MemoryHealth, RedisHealth, weighted_order

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_health_cools_down_and_recovers() -> None:
    async def main() -> None:
        clock = FakeClock()
        health = MemoryHealth(clock=clock)
        assert await health.down(["a", "b"]) == set()
        await health.mark_down("a", 10, "rate_limited")
        await health.mark_down("b", 0, "ignored")  # no cooldown at all
        assert await health.down(["a", "b", "c"]) == {"a"}
        assert health.reason("a") == "rate_limited"
        await health.mark_down("a", 2, "overloaded")  # a shorter cooldown does not cut the longer one
        clock.now += 9.9
        assert await health.down(["a"]) == {"a"}
        clock.now += 0.2
        assert await health.down(["a", "b"]) == set()
        assert health.reason("a") is None
        await health.mark_down("a", 1, "auth_error")
        assert await health.down(["a"]) == {"a"}

    asyncio.run(main())


def test_redis_health_is_shared_and_recovers(redis_server: RedisServer) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"

    async def main() -> None:
        one = RedisHealth(redis_server.url, prefix=prefix)
        two = RedisHealth(redis_server.url, prefix=prefix)
        other = RedisHealth(redis_server.url, prefix=prefix + "other:")
        try:
            assert await one.down(["anthropic/a#0", "openai/b#1"]) == set()
            await one.mark_down("anthropic/a#0", 0.4, "rate_limited")
            assert await two.down(["anthropic/a#0", "openai/b#1"]) == {"anthropic/a#0"}  # another instance sees it
            assert await other.down(["anthropic/a#0"]) == set()  # prefixes keep gateways apart
            await two.mark_down("anthropic/a#0", 0.05, "shorter")  # does not cut the longer cooldown
            await asyncio.sleep(0.15)
            assert await one.down(["anthropic/a#0"]) == {"anthropic/a#0"}
            await asyncio.sleep(0.35)
            assert await one.down(["anthropic/a#0", "openai/b#1"]) == set()  # recovered by expiry
            assert await one.down([]) == set()
        finally:
            for health in (one, two, other):
                await health.close()

    asyncio.run(main())


def test_redis_health_outage_counts_as_healthy_fast_and_logs_once(
    fresh_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="codexgate.health")

    async def main() -> None:
        health = RedisHealth(fresh_redis_server.url, timeout_seconds=0.2, backoff_seconds=0.5)
        try:
            await health.mark_down("a", 30, "overloaded")
            assert await health.down(["a"]) == {"a"}
            os.kill(fresh_redis_server.proc.pid, signal.SIGSTOP)  # hung, not gone: the worst case
            try:
                # An answer, not a hang: the socket timeout turns the stopped server into "healthy".
                assert await asyncio.wait_for(health.down(["a"]), 10) == set()
                asked = 0
                real_mget = health._client.mget

                def counting_mget(*args: object, **kwargs: object) -> object:
                    nonlocal asked
                    asked += 1
                    return real_mget(*args, **kwargs)

                health._client.mget = counting_mget  # type: ignore[method-assign]
                for _ in range(20):
                    assert await health.down(["a"]) == set()
                    await health.mark_down("b", 5, "server_error")  # never raises
                assert asked == 0  # backing off: Redis is not asked meanwhile
                outage_logs = [r for r in caplog.records if "unavailable" in r.getMessage()]
                assert len(outage_logs) == 1
            finally:
                os.kill(fresh_redis_server.proc.pid, signal.SIGCONT)
            await asyncio.sleep(0.6)
            assert await health.down(["a"]) == {"a"}  # back after the back-off, cooldown intact
            assert any("is back" in r.getMessage() for r in caplog.records)
        finally:
            await health.close()

    asyncio.run(main())


def test_redis_health_unreachable_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        health = RedisHealth("redis://:hunter2@127.0.0.1:1/0", timeout_seconds=0.2)
        try:
            await health.mark_down("a", 5, "x")
            assert await health.down(["a"]) == set()
        finally:
            await health.close()

    caplog.set_level(logging.WARNING, logger="codexgate.health")
    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "hunter2" not in messages[0]


def test_weighted_order_splits_three_to_one() -> None:
    rng = random.Random(20261124)
    firsts = Counter(weighted_order([("a", 3), ("b", 1)], rng)[0] for _ in range(400))
    assert firsts["a"] + firsts["b"] == 400
    share = firsts["a"] / 400
    # 3:1 is 75 %; 4 standard deviations of 400 draws is ±8.7 points.
    assert abs(share - 0.75) < 0.087, firsts
    # Seeded: the same seed gives the same sequence.
    again = random.Random(20261124)
    assert Counter(weighted_order([("a", 3), ("b", 1)], again)[0] for _ in range(400)) == firsts


def test_weighted_order_without_replacement() -> None:
    rng = random.Random(7)
    candidates = [("a", 5), ("b", 3), ("c", 2), ("off", 0), ("d", 1)]
    positions: dict[str, Counter[int]] = {name: Counter() for name, _ in candidates}
    for _ in range(500):
        order = weighted_order(candidates, rng)
        assert sorted(order) == sorted(name for name, _ in candidates)  # each exactly once
        assert order[-1] == "off"  # weight 0: only as a last resort
        for i, name in enumerate(order):
            positions[name][i] += 1
    # Heavier goes first more often.
    assert positions["a"][0] > positions["b"][0] > positions["c"][0] > positions["d"][0]
    assert weighted_order([], rng) == []
    assert weighted_order([("only", 1)], rng) == ["only"]
    assert weighted_order([("x", 0), ("y", 0)], rng) == ["x", "y"]
