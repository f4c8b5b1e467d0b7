"""A Redis that stops answering for a while (SIGSTOP) under load, then resumes (SIGCONT): the
reservations of requests whose callers gave up (503) must not stay charged, and settlements that
failed meanwhile must still land. Two store instances share the server, as two gateways would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import redis

from codexgate.stores.base import Amounts, Counter, StoreUnavailable
from codexgate.stores.redis_store import RedisStore

if TYPE_CHECKING:
    from fakes.redis_server import RedisServer

NOW = time.time()
BUDGET = Counter("key:alice/usd/1d", "usd", 1e9, NOW - 10, 86400.0, 86400.0, NOW + 86400.0)
REQUESTS = Counter("key:alice/requests/1d", "requests", 1e9, NOW - 10, 86400.0, 86400.0, NOW + 86400.0)
ESTIMATE = Amounts(usd=1.0, requests=1, tokens=0)
ACTUAL = Amounts(usd=0.25, requests=1, tokens=0)
SETTLE_WINDOW = 30.0  # seconds: an upper bound for the test's wait, never a pass/fail criterion


def test_paused_redis_leaves_no_phantom_reservation(fresh_redis_server: RedisServer) -> None:
    prefix = f"phantom-{uuid.uuid4().hex[:8]}:"
    raw = redis.Redis.from_url(fresh_redis_server.url)
    served: list[str] = []
    refused: list[str] = []

    async def one(store: RedisStore, request_id: str) -> None:
        try:
            admission = await store.reserve(request_id, [BUDGET, REQUESTS], ESTIMATE, time.time())
        except StoreUnavailable:
            refused.append(request_id)  # the gateway answered 503: nothing may stay charged
            return
        assert admission.admitted
        served.append(request_id)
        await asyncio.sleep(0.005)
        with contextlib.suppress(StoreUnavailable):  # the store keeps trying; Charge only logs it
            await store.settle(request_id, ACTUAL)

    async def body() -> None:
        stores = [RedisStore(fresh_redis_server.url, prefix=prefix, read_timeout_seconds=0.3) for _ in range(2)]
        tasks: list[asyncio.Task[None]] = []
        try:
            for i in range(240):
                if i == 60:
                    fresh_redis_server.proc.send_signal(signal.SIGSTOP)
                if i == 180:
                    fresh_redis_server.proc.send_signal(signal.SIGCONT)
                tasks.append(asyncio.create_task(one(stores[i % 2], f"req-{i}")))
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
            # The settle window: releases of given-up reservations and retried settlements land.
            deadline = time.monotonic() + SETTLE_WINDOW
            while time.monotonic() < deadline and (raw.zcard(prefix + "open") or raw.keys(prefix + "res:*")):
                await asyncio.sleep(0.1)
        finally:
            fresh_redis_server.proc.send_signal(signal.SIGCONT)
            for store in stores:
                await store.close()

    asyncio.run(body())
    assert refused, "the pause must have made callers give up"
    assert served, "requests before and after the pause are served"
    assert raw.zcard(prefix + "open") == 0
    assert raw.keys(prefix + "res:*") == []
    spent = sum(float(v) for v in raw.hgetall(prefix + "c:" + BUDGET.counter_id).values())
    counted = sum(float(v) for v in raw.hgetall(prefix + "c:" + REQUESTS.counter_id).values())
    assert counted == len(served)
    assert spent == pytest.approx(ACTUAL.usd * len(served), rel=1e-9)


def test_a_wrong_clock_offset_is_relearnt_not_fatal(fresh_redis_server: RedisServer) -> None:
    """The deadline is on Redis's clock, through an offset learnt from TIME. Should this host's
    clock jump back after that, a reservation arrives "past its deadline" although its caller still
    waits: Redis refuses it (nothing is reserved), the store learns the offset again and retries."""

    async def body() -> None:
        store = RedisStore(fresh_redis_server.url, prefix=f"clock-{uuid.uuid4().hex[:8]}:")
        try:
            assert (await store.reserve("warm-up", [BUDGET], ESTIMATE, time.time())).admitted
            store._clock_offset = -3600.0  # as if this clock had jumped an hour ahead of Redis's
            admission = await store.reserve("after-the-jump", [BUDGET], ESTIMATE, time.time())
            assert admission.admitted
            assert store._clock_offset is not None and store._clock_offset > -1
            (state,) = await store.snapshot([BUDGET], time.time())
            assert state.used == 2 * ESTIMATE.usd  # the refused try reserved nothing
        finally:
            await store.close()

    asyncio.run(body())


def test_a_request_reserved_again_after_a_failed_attempt_keeps_its_reservation(
    fresh_redis_server: RedisServer,
) -> None:
    """A caller that sends the same request id again after StoreUnavailable (as a store operation
    retried through a failover does): the release queued for the failed attempt must not undo the
    admission that follows it, or the request would run with nothing reserved and settle nothing."""
    prefix = f"again-{uuid.uuid4().hex[:8]}:"
    counters = [BUDGET, REQUESTS]

    async def body() -> tuple[list[float], bool, list[float]]:
        store = RedisStore(fresh_redis_server.url, prefix=prefix, read_timeout_seconds=0.3)
        try:
            assert (await store.reserve("warm-up", counters, ESTIMATE, NOW)).admitted
            assert await store.settle("warm-up", ACTUAL)
            fresh_redis_server.proc.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable):
                    await store.reserve("again", counters, ESTIMATE, NOW)
            finally:
                fresh_redis_server.proc.send_signal(signal.SIGCONT)
            assert (await store.reserve("again", counters, ESTIMATE, NOW)).admitted
            # Until nothing of the failed attempt is left to send (its release was due 0.35 s after it).
            async with asyncio.timeout(SETTLE_WINDOW):
                while store._orphans or store._pending:
                    await asyncio.sleep(0.02)
            held = [state.used for state in await store.snapshot(counters, NOW)]
            settled = await store.settle("again", ACTUAL)
            return held, settled, [state.used for state in await store.snapshot(counters, NOW)]
        finally:
            await store.close()

    held, settled, used = asyncio.run(body())
    assert held == [ACTUAL.usd + ESTIMATE.usd, 2]  # still reserved: warm-up's actual + this estimate
    assert settled
    assert used == [2 * ACTUAL.usd, 2]
