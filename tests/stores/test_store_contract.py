"""The CounterStore contract (codexgate/stores/base.py), run against the embedded and the Redis store.

Time is always the `now` argument (a fake clock around T), never sleeping; only the outage
tests measure wall time, to prove the store fails promptly instead of hanging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import math
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from codexgate.stores.base import Admission, Amounts, Counter, CounterStore, StoreUnavailable
from codexgate.stores.embedded import EmbeddedStore
from codexgate.stores.factory import open_store
from codexgate.stores.redis_store import RedisStore

if TYPE_CHECKING:  # only for annotations: test modules here are not a package, conftest is not importable
    from fakes.redis_server import RedisServer

    from tests.stores.conftest import Backend

HANG_GUARD = 10.0  # seconds: only a hang (not a slow machine) takes this long
T = 1_700_000_000.0  # a fake "now"; a multiple of 10 so rolling 10 s buckets align on it
DAY = 86400.0


def usd(counter_id: str = "key:alice/usd/1d", limit: float = 10.0, start: float = T) -> Counter:
    return Counter(counter_id, "usd", limit, start, DAY, DAY, start + DAY)


def requests_per_day(counter_id: str = "key:alice/requests/1d", limit: float = 3.0) -> Counter:
    return Counter(counter_id, "requests", limit, T, DAY, DAY, T + DAY)


def tokens_per_day(counter_id: str = "key:alice/tokens/1d", limit: float = 1000.0) -> Counter:
    return Counter(counter_id, "tokens", limit, T, DAY, DAY, T + DAY)


def rolling_tokens(now: float, limit: float = 100.0) -> Counter:
    """100 tokens per rolling 60 s, counted in 10 s buckets."""
    start = math.floor(now / 10) * 10
    return Counter("key:bob/tokens/60s", "tokens", limit, start, 10.0, 60.0, start + 60.0)


def run[R](backend: Backend, body: Callable[[CounterStore], Awaitable[R]], **store_args: Any) -> R:
    async def main() -> R:
        store = backend.open(**store_args)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def used(store: CounterStore, counters: list[Counter], now: float = T + 1) -> list[float]:
    return [s.used for s in await store.snapshot(counters, now)]


def summary(admission: Admission) -> tuple[bool, str | None, list[float], list[float]]:
    return (
        admission.admitted,
        admission.refused_by.counter_id if admission.refused_by else None,
        [s.used for s in admission.states],
        [s.remaining for s in admission.states],
    )


# --- admission -------------------------------------------------------------------------------


def test_reserve_admits_within_limits_and_reports_states(backend: Backend) -> None:
    counters = [usd(limit=10), requests_per_day(limit=3), tokens_per_day(limit=1000)]

    async def body(store: CounterStore) -> None:
        first = await store.reserve("r1", counters, Amounts(usd=4, requests=1, tokens=300), T + 1)
        assert summary(first) == (True, None, [0, 0, 0], [6, 2, 700])
        assert [s.counter for s in first.states] == counters
        # Exactly filling a limit is allowed.
        second = await store.reserve("r2", counters, Amounts(usd=6, requests=1, tokens=700), T + 2)
        assert summary(second) == (True, None, [4, 1, 300], [0, 1, 0])
        states = await store.snapshot(counters, T + 3)
        assert [(s.used, s.remaining) for s in states] == [(10, 0), (2, 1), (1000, 0)]

    run(backend, body)


def test_refusal_names_first_counter_without_room_and_changes_nothing(backend: Backend) -> None:
    counters = [usd(limit=10), requests_per_day(limit=1), tokens_per_day(limit=100)]

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r0", counters, Amounts(usd=1, requests=1, tokens=10), T + 1)).admitted
        before = await used(store, counters)
        # requests (full) and tokens (too big) both lack room: the first in the given order is named.
        refused = await store.reserve("r1", counters, Amounts(usd=1, requests=1, tokens=1000), T + 2)
        assert summary(refused) == (False, "key:alice/requests/1d", [1, 1, 10], [8, -1, -910])
        assert refused.refused_by == counters[1]
        assert await used(store, counters) == before == [1, 1, 10]
        # Nothing was reserved under r1.
        assert await store.settle("r1", Amounts(usd=1)) is False
        assert await store.release("r1") is False
        assert await used(store, counters) == [1, 1, 10]

    run(backend, body)


def test_reserve_is_all_or_nothing_across_counters(backend: Backend) -> None:
    key, team = usd("key:alice/usd/1d", limit=10), usd("team:eng/usd/1d", limit=5)

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r1", [key, team], Amounts(usd=4), T + 1)).admitted
        # The key has room for 3 more, the team does not: neither is charged.
        refused = await store.reserve("r2", [key, team], Amounts(usd=3), T + 2)
        assert summary(refused) == (False, "team:eng/usd/1d", [4, 4], [3, -2])
        assert await used(store, [key, team]) == [4, 4]
        # A request that fits both is still admitted afterwards.
        assert (await store.reserve("r3", [key, team], Amounts(usd=1), T + 3)).admitted
        assert await used(store, [key, team]) == [5, 5]

    run(backend, body)


def test_counter_at_its_limit_refuses_even_a_zero_estimate(backend: Backend) -> None:
    budget = usd(limit=2)

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r1", [budget], Amounts(usd=2), T + 1)).admitted
        refused = await store.reserve("r2", [budget], Amounts(usd=0, requests=1), T + 2)
        assert summary(refused) == (False, budget.counter_id, [2], [0])
        # A zero limit blocks everything.
        blocked = usd("key:blocked/usd/1d", limit=0)
        assert not (await store.reserve("r3", [blocked], Amounts(), T + 3)).admitted

    run(backend, body)


def test_infinite_limit_always_has_room_and_nan_limit_never(backend: Backend) -> None:
    async def body(store: CounterStore) -> None:
        unlimited = usd("key:unlimited/usd/1d", limit=math.inf)
        first = await store.reserve("r1", [unlimited], Amounts(usd=1e9), T + 1)
        assert summary(first) == (True, None, [0], [math.inf])
        assert (await store.reserve("r2", [unlimited], Amounts(usd=1e9), T + 2)).admitted
        broken = usd("key:broken/usd/1d", limit=math.nan)
        refused = await store.reserve("r3", [unlimited, broken], Amounts(usd=1), T + 3)
        assert not refused.admitted and refused.refused_by == broken
        assert await used(store, [unlimited]) == [2e9]

    run(backend, body)


def test_float_amounts_fill_a_limit_exactly(backend: Backend) -> None:
    budget = usd(limit=1.0)

    async def body(store: CounterStore) -> None:
        results = [await store.reserve(f"r{i}", [budget], Amounts(usd=0.1), T + 1) for i in range(11)]
        assert [a.admitted for a in results] == [True] * 10 + [False]

    run(backend, body)


def test_request_without_counters_is_admitted_and_settles_once(backend: Backend) -> None:
    async def body(store: CounterStore) -> None:
        assert summary(await store.reserve("r1", [], Amounts(usd=1), T)) == (True, None, [], [])
        assert await store.settle("r1", Amounts(usd=1)) is True
        assert await store.settle("r1", Amounts(usd=1)) is False
        assert await store.snapshot([], T) == []

    run(backend, body)


def test_invalid_requests_are_rejected_before_touching_the_store(backend: Backend) -> None:
    async def body(store: CounterStore) -> None:
        with pytest.raises(ValueError, match="must be a finite number"):
            await store.reserve("r1", [usd()], Amounts(usd=-1), T)
        with pytest.raises(ValueError, match="must be a finite number"):
            await store.reserve("r1", [usd()], Amounts(tokens=math.nan), T)
        with pytest.raises(ValueError, match="duplicate counter ids"):
            await store.reserve("r1", [usd(), usd()], Amounts(usd=1), T)
        assert (await store.reserve("r2", [usd()], Amounts(usd=1), T)).admitted
        with pytest.raises(ValueError, match="must be a finite number"):
            await store.settle("r2", Amounts(usd=math.inf))
        assert await used(store, [usd()]) == [1]

    run(backend, body)


# --- settle / release / retries ----------------------------------------------------------------


def test_settle_replaces_reservation_by_actual(backend: Backend) -> None:
    counters = [usd(limit=10), requests_per_day(limit=5), tokens_per_day(limit=1000)]

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r1", counters, Amounts(usd=5, requests=1, tokens=800), T + 1)).admitted
        assert await store.settle("r1", Amounts(usd=1.25, requests=1, tokens=250)) is True
        assert await used(store, counters) == [1.25, 1, 250]
        # The actual may exceed the estimate: it is charged as it was.
        assert (await store.reserve("r2", counters, Amounts(usd=1, requests=1, tokens=100), T + 2)).admitted
        assert await store.settle("r2", Amounts(usd=3, requests=1, tokens=900)) is True
        assert await used(store, counters) == [4.25, 2, 1150]
        over = await store.reserve("r3", counters, Amounts(usd=0.5, requests=1, tokens=1), T + 3)
        assert summary(over) == (False, "key:alice/tokens/1d", [4.25, 2, 1150], [5.25, 2, -151])

    run(backend, body)


def test_settle_twice_charges_once(backend: Backend) -> None:
    budget = usd(limit=10)

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r1", [budget], Amounts(usd=5), T + 1)).admitted
        assert await store.settle("r1", Amounts(usd=2)) is True
        assert await store.settle("r1", Amounts(usd=7)) is False
        assert await store.release("r1") is False
        assert await used(store, [budget]) == [2]

    run(backend, body)


def test_settle_to_charges_the_counters_that_answered_instead(backend: Backend) -> None:
    """A failed-over request: the reservation leaves the first choice's counters, the actual goes to
    the answering provider's (past its limit if need be: the spend happened), shared levels net out."""
    key, first, second = usd("key:alice/usd/1d"), usd("provider:first/usd/1d"), usd("provider:second/usd/1d", limit=1)
    tokens = tokens_per_day("provider:second/tokens/1d")

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r1", [key, first], Amounts(usd=5, requests=1, tokens=500), T + 1)).admitted
        assert await store.settle_to("r1", Amounts(usd=2.5, requests=1, tokens=40), [key, second, tokens], T + 2)
        assert await used(store, [key, first, second, tokens]) == [2.5, 0, 2.5, 40]
        # Once: neither settle_to, settle nor release changes anything again.
        assert await store.settle_to("r1", Amounts(usd=9), [key, second], T + 3) is False
        assert await store.settle("r1", Amounts(usd=9)) is False
        assert await store.release("r1") is False
        assert await store.settle_to("never-reserved", Amounts(usd=9), [second], T + 3) is False
        assert await used(store, [key, first, second, tokens]) == [2.5, 0, 2.5, 40]
        refused = await store.reserve("r2", [key, second], Amounts(usd=0.1), T + 4)
        assert summary(refused)[:2] == (False, "provider:second/usd/1d")

    run(backend, body)


def test_release_removes_the_reservation(backend: Backend) -> None:
    budget = usd(limit=10)

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("keep", [budget], Amounts(usd=1.5), T + 1)).admitted
        assert (await store.reserve("r1", [budget], Amounts(usd=5), T + 2)).admitted
        assert await used(store, [budget]) == [6.5]
        assert await store.release("r1") is True
        assert await used(store, [budget]) == [1.5]
        assert await store.release("r1") is False
        assert await store.settle("r1", Amounts(usd=5)) is False
        assert await used(store, [budget]) == [1.5]
        assert await store.settle("never-reserved", Amounts(usd=5)) is False

    run(backend, body)


def test_reserve_again_with_held_request_id_adds_nothing(backend: Backend) -> None:
    budget = usd(limit=10)

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("r1", [budget], Amounts(usd=6), T + 1)).admitted
        assert (await store.reserve("r2", [budget], Amounts(usd=4), T + 2)).admitted
        # The budget is full, but r1 already holds its reservation: admitted, nothing added,
        # and its own reservation is not counted as use "before this request".
        retry = await store.reserve("r1", [budget], Amounts(usd=6), T + 3)
        assert summary(retry) == (True, None, [4], [0])
        assert await used(store, [budget]) == [10]
        assert await store.settle("r1", Amounts(usd=1)) is True
        assert await used(store, [budget]) == [5]
        assert await store.settle("r1", Amounts(usd=1)) is False
        assert await used(store, [budget]) == [5]

    run(backend, body)


# --- windows ----------------------------------------------------------------------------------


def _utc(year: int, month: int) -> float:
    return datetime.datetime(year, month, 1, tzinfo=datetime.UTC).timestamp()


def test_calendar_buckets_start_fresh(backend: Backend) -> None:
    jan, feb, mar, apr = (_utc(2025, m) for m in (1, 2, 3, 4))

    def month(start: float, end: float) -> Counter:
        return Counter("key:alice/usd/1M", "usd", 10.0, start, end - start, end - start, end)

    async def body(store: CounterStore) -> None:
        assert (await store.reserve("jan", [month(jan, feb)], Amounts(usd=8), jan + DAY)).admitted
        assert await store.settle("jan", Amounts(usd=8)) is True
        assert not (await store.reserve("jan2", [month(jan, feb)], Amounts(usd=3), jan + 2 * DAY)).admitted
        assert await used(store, [month(jan, feb)], feb - 1) == [8]
        # A new month is a fresh counter.
        feb_first = await store.reserve("feb", [month(feb, mar)], Amounts(usd=8), feb + 3600)
        assert summary(feb_first) == (True, None, [0], [2])
        assert await used(store, [month(feb, mar)], mar - 1) == [8]
        # March 1 lies within 31 days of February 1: read literally, the window would count
        # February's 8 again. A calendar limit counts its own month only.
        mar_first = await store.reserve("mar", [month(mar, apr)], Amounts(usd=8), mar + 3600)
        assert summary(mar_first) == (True, None, [0], [2])
        assert await used(store, [month(mar, apr)], mar + 2 * DAY) == [8]

    run(backend, body)


def test_rolling_window_sums_recent_buckets_and_drops_old_ones(backend: Backend) -> None:
    async def body(store: CounterStore) -> None:
        for i, (t, amount) in enumerate([(T + 1, 30), (T + 25, 30)]):
            assert (await store.reserve(f"r{i}", [rolling_tokens(t)], Amounts(tokens=amount), t)).admitted
        third = await store.reserve("r2", [rolling_tokens(T + 45)], Amounts(tokens=30), T + 45)
        assert summary(third) == (True, None, [60], [10])
        refused = await store.reserve("r3", [rolling_tokens(T + 55)], Amounts(tokens=20), T + 55)
        assert summary(refused) == (False, "key:bob/tokens/60s", [90], [-10])
        # The bucket starting at T counts while T is in (now - 60, now]...
        assert await used(store, [rolling_tokens(T + 59.5)], T + 59.5) == [90]
        # ...and no longer once now - 60 reaches it.
        assert await used(store, [rolling_tokens(T + 60)], T + 60) == [60]
        later = await store.reserve("r4", [rolling_tokens(T + 61)], Amounts(tokens=20), T + 61)
        assert summary(later) == (True, None, [60], [20])
        # At T+85 the window (T+25, T+85] holds the buckets T+40 (30) and T+60 (20).
        assert await used(store, [rolling_tokens(T + 85)], T + 85) == [50]
        # Settling into a bucket still in the window changes it.
        assert await store.settle("r4", Amounts(tokens=5)) is True
        assert await used(store, [rolling_tokens(T + 85)], T + 85) == [35]
        # Long after, everything has left the window.
        assert await used(store, [rolling_tokens(T + 1000)], T + 1000) == [0]

    run(backend, body)


# --- stale reservations ------------------------------------------------------------------------


def test_stale_reservation_is_settled_at_its_reserved_amount(backend: Backend) -> None:
    fresh, stale = usd("key:fresh/usd/1d"), usd("key:stale/usd/1d")

    async def body(store: CounterStore) -> None:
        # Not yet stale: created at T+1, a reserve at T+100 (age 99 < 100) leaves it open.
        assert (await store.reserve("a-old", [fresh], Amounts(usd=4), T + 1)).admitted
        assert (await store.reserve("a-probe", [fresh], Amounts(usd=1), T + 100)).admitted
        assert await store.settle("a-old", Amounts(usd=0.5)) is True
        assert await used(store, [fresh], T + 100) == [1.5]

        # Stale: age 100 at the next reserve. It stays charged at 4 and can no longer be settled.
        assert (await store.reserve("b-old", [stale], Amounts(usd=4), T + 1)).admitted
        assert (await store.reserve("b-young", [stale], Amounts(usd=2), T + 50)).admitted
        assert (await store.reserve("b-probe", [stale], Amounts(usd=1), T + 101)).admitted
        assert await store.settle("b-old", Amounts(usd=0.5)) is False
        assert await store.release("b-old") is False
        assert await used(store, [stale], T + 101) == [7]
        # The younger reservation was not touched.
        assert await store.settle("b-young", Amounts(usd=1)) is True
        assert await used(store, [stale], T + 101) == [6]

    run(backend, body, stale_after_seconds=100)


# --- persistence and sharing -------------------------------------------------------------------


def test_settled_spend_survives_reopening(backend: Backend) -> None:
    budget = usd(limit=10)

    async def first(store: CounterStore) -> None:
        assert (await store.reserve("settled", [budget], Amounts(usd=5), T + 1)).admitted
        assert await store.settle("settled", Amounts(usd=3)) is True
        assert (await store.reserve("open", [budget], Amounts(usd=2), T + 2)).admitted

    async def second(store: CounterStore) -> None:
        assert await used(store, [budget]) == [5]
        assert await store.settle("settled", Amounts(usd=1)) is False
        assert await store.settle("open", Amounts(usd=1)) is True
        assert await used(store, [budget]) == [4]

    run(backend, first)
    run(backend, second)


async def _race(stores: list[CounterStore], n: int, counters: list[Counter]) -> list[Admission]:
    calls = [stores[i % len(stores)].reserve(f"req-{i}", counters, Amounts(usd=1, requests=1), T + 1) for i in range(n)]
    return await asyncio.gather(*calls)


@pytest.mark.parametrize("instances", [1, 2])
def test_concurrent_reserves_admit_exactly_the_room(backend: Backend, instances: int) -> None:
    """50 concurrent reserves for a budget with room for 10, through one or two store instances."""
    counters = [usd(limit=10), requests_per_day(limit=1000)]

    async def main() -> None:
        stores = [backend.open() for _ in range(instances)]
        try:
            results = await _race(stores, 50, counters)
            admitted = [i for i, a in enumerate(results) if a.admitted]
            assert len(admitted) == 10
            assert all(a.refused_by == counters[0] for a in results if not a.admitted)
            assert await used(stores[0], counters) == [10, 10]
            # Each admitted request is charged once however its settles race.
            settles = [stores[j % instances].settle(f"req-{i}", Amounts(usd=0.5)) for i in admitted for j in (0, 1)]
            assert sorted(await asyncio.gather(*settles)) == [False] * 10 + [True] * 10
            assert await used(stores[-1], counters) == [5, 0]
        finally:
            for store in stores:
                await store.close()

    asyncio.run(main())


# --- embedded store ----------------------------------------------------------------------------

_CHILD_PRELUDE = """
import asyncio, json, sys, time
from codexgate.stores.base import Amounts, Counter
from codexgate.stores.embedded import EmbeddedStore
path, counters = sys.argv[1], [Counter(**c) for c in json.loads(sys.argv[2])]
store = EmbeddedStore(path)
"""

_CHILD_RACE = (
    _CHILD_PRELUDE
    + """
tag, n, now = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
print("ready", flush=True)
start_at = float(sys.stdin.readline())
while time.time() < start_at:  # spin, so both children start within microseconds of each other
    pass

async def main():
    calls = [store.reserve(f"{tag}-{i}", counters, Amounts(usd=1, requests=1), now) for i in range(n)]
    results = await asyncio.gather(*calls)
    await store.close()
    return [f"{tag}-{i}" for i, a in enumerate(results) if a.admitted]

print(json.dumps(asyncio.run(main())), flush=True)
"""
)

_CHILD_SETTLE_THEN_HANG = (
    _CHILD_PRELUDE
    + """
now = float(sys.argv[3])

async def main():
    assert (await store.reserve("settled", counters, Amounts(usd=5), now)).admitted
    assert await store.settle("settled", Amounts(usd=3))
    assert (await store.reserve("open", counters, Amounts(usd=2), now)).admitted

asyncio.run(main())
print("done", flush=True)
time.sleep(60)
"""
)


def _child(code: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _counters_arg(counters: list[Counter]) -> str:
    return json.dumps([dataclasses.asdict(c) for c in counters])


def test_embedded_two_processes_admit_exactly_the_room(tmp_path: Path, child_env: dict[str, str]) -> None:
    path = str(tmp_path / "counters.sqlite3")
    counters = [usd(limit=10), requests_per_day(limit=1000)]
    asyncio.run(EmbeddedStore(path).close())  # create the schema once, as a gateway's start would

    children = [_child(_CHILD_RACE, child_env, path, _counters_arg(counters), tag, "25", str(T + 1)) for tag in "ab"]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        start_at = time.time() + 0.2
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{start_at}\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            child.kill()
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    admitted = [rid for out, _ in outputs for rid in json.loads(out.strip().splitlines()[-1])]
    assert len(admitted) == 10

    async def check() -> None:
        store = EmbeddedStore(path)
        try:
            assert await used(store, counters) == [10, 10]
            assert all([await store.settle(rid, Amounts(usd=1, requests=1)) for rid in admitted])
        finally:
            await store.close()

    asyncio.run(check())


def test_embedded_settled_spend_survives_kill_9(tmp_path: Path, child_env: dict[str, str]) -> None:
    path = str(tmp_path / "counters.sqlite3")
    budget = usd(limit=10)
    child = _child(_CHILD_SETTLE_THEN_HANG, child_env, path, _counters_arg([budget]), str(T + 1))
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "done", child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.communicate()

    async def check() -> None:
        store = EmbeddedStore(path)
        try:
            # 3 settled + 2 still reserved by the killed process.
            assert await used(store, [budget]) == [5]
            assert await store.settle("settled", Amounts(usd=9)) is False
            assert await store.settle("open", Amounts(usd=1)) is True
            assert await used(store, [budget]) == [4]
        finally:
            await store.close()

    asyncio.run(check())


def test_embedded_file_is_owner_only_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "counters.sqlite3"

    async def body() -> None:
        store = EmbeddedStore(str(path))
        try:
            assert (await store.reserve("r1", [usd()], Amounts(usd=1), T + 1)).admitted
            for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert f.exists(), f
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        finally:
            await store.close()

    asyncio.run(body())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_embedded_locked_file_raises_store_unavailable_promptly(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite3")

    async def body() -> None:
        store = EmbeddedStore(path, busy_timeout_seconds=0.2)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
            with pytest.raises(StoreUnavailable, match="locked"):
                # A hang guard (50x the busy timeout), not a speed claim: locked means an error, not a wait.
                await asyncio.wait_for(store.reserve("r1", [usd()], Amounts(usd=1), T + 1), HANG_GUARD)
            holder.execute("ROLLBACK")
            assert (await store.reserve("r1", [usd()], Amounts(usd=1), T + 1)).admitted
        finally:
            holder.close()
            await store.close()
        with pytest.raises(StoreUnavailable):
            await store.snapshot([usd()], T + 1)

    asyncio.run(body())


# --- redis store --------------------------------------------------------------------------------


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on the shared server, to look at what the store wrote."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_redis_keys_expire_and_old_buckets_are_pruned(redis_server: RedisServer, raw: redis.Redis) -> None:
    prefix = "ttl-test:"
    stale_after = 100.0
    now = time.time()

    async def body() -> None:
        store = RedisStore(redis_server.url, stale_after_seconds=stale_after, prefix=prefix)
        try:
            daily = usd(start=now - 10)  # bucket ends 86390 s from now
            assert (await store.reserve("r1", [daily], Amounts(usd=1), now)).admitted
            ttl = raw.pttl(prefix + "c:" + daily.counter_id)
            assert (DAY - 10) * 1000 < ttl <= (DAY - 10 + 60) * 1000
            rttl = raw.pttl(prefix + "res:r1")
            assert stale_after * 1000 < rttl <= (stale_after + 3600) * 1000
            assert raw.pttl(prefix + "open") > 0
            assert await store.settle("r1", Amounts(usd=1)) is True
            assert raw.exists(prefix + "res:r1") == 0
            assert raw.zcard(prefix + "open") == 0

            for t in (now, now + 30, now + 200):
                assert (await store.reserve(f"roll-{t}", [rolling_tokens(t)], Amounts(tokens=1), t)).admitted
            # The buckets of `now` and `now + 30` left the window more than the margin ago.
            fields = raw.hkeys(prefix + "c:" + rolling_tokens(now).counter_id)
            assert fields == [repr(float(rolling_tokens(now + 200).bucket_start))]
        finally:
            await store.close()

    asyncio.run(body())


def test_redis_password_stays_out_of_messages() -> None:
    async def body() -> None:
        store = RedisStore("redis://gate:s3cret@127.0.0.1:1/0")
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.snapshot([usd()], T)
            assert "s3cret" not in str(caught.value)
            assert "gate:***@127.0.0.1:1" in str(caught.value)
        finally:
            await store.close()

    asyncio.run(body())


async def _assert_unavailable_promptly(op: Awaitable[Any]) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        # A hang guard (far above the 0.5 s socket timeouts), not a speed claim: an error, not a hang.
        await asyncio.wait_for(op, HANG_GUARD)
    return time.monotonic() - started


def test_redis_killed_server_raises_store_unavailable_promptly(fresh_redis_server: RedisServer) -> None:
    async def body() -> None:
        store = RedisStore(fresh_redis_server.url)
        try:
            assert (await store.reserve("r1", [usd()], Amounts(usd=1), T + 1)).admitted  # the store is connected
            fresh_redis_server.kill()
            await _assert_unavailable_promptly(store.reserve("r2", [usd()], Amounts(usd=1), T + 2))
            await _assert_unavailable_promptly(store.settle("r1", Amounts(usd=1)))
            await _assert_unavailable_promptly(store.release("r1"))
            await _assert_unavailable_promptly(store.snapshot([usd()], T + 3))
        finally:
            await store.close()

    asyncio.run(body())


def test_redis_unresponsive_server_times_out_instead_of_hanging(fresh_redis_server: RedisServer) -> None:
    async def body() -> None:
        store = RedisStore(fresh_redis_server.url, read_timeout_seconds=0.3)
        try:
            assert (await store.reserve("r1", [usd()], Amounts(usd=1), T + 1)).admitted
            fresh_redis_server.proc.send_signal(signal.SIGSTOP)  # accepts on the socket, never answers
            elapsed = await _assert_unavailable_promptly(store.reserve("r2", [usd()], Amounts(usd=1), T + 2))
            assert elapsed >= 0.25  # it did wait for the read timeout: the server was really silent
            fresh_redis_server.proc.send_signal(signal.SIGCONT)
            # Back: the store recovers without being reopened.
            assert (await store.reserve("r3", [usd()], Amounts(usd=1), T + 3)).admitted
        finally:
            await store.close()

    asyncio.run(body())


def test_redis_settlements_ride_along_with_the_next_reservation(redis_server: RedisServer, raw: redis.Redis) -> None:
    """A settlement waits for the next reservation and is done in its round trip; with none to come
    it goes on its own after settle_batch_seconds, and close() never drops one still waiting."""
    prefix = f"ride-{uuid.uuid4().hex[:8]}:"
    budget = usd(limit=10)

    async def body() -> None:
        # Batch window far beyond the hang guard: a settle only finishes in time by riding along.
        store = RedisStore(redis_server.url, prefix=prefix, settle_batch_seconds=3600)
        try:
            assert (await store.reserve("a", [budget], Amounts(usd=4), T + 1)).admitted
            assert (await store.reserve("b", [budget], Amounts(usd=4), T + 2)).admitted
            settle_a = asyncio.ensure_future(store.settle("a", Amounts(usd=1)))
            release_b = asyncio.ensure_future(store.release("b"))
            await asyncio.sleep(0)  # both now wait for a ride
            assert not settle_a.done() and raw.exists(prefix + "res:a") == 1
            # 4 + 4 held of 10: a third reservation of 4 fits only because a and b finish first,
            # inside the same script run.
            admission = await store.reserve("c", [budget], Amounts(usd=8), T + 3)
            assert admission.admitted, admission
            assert await asyncio.wait_for(settle_a, HANG_GUARD) is True
            assert await asyncio.wait_for(release_b, HANG_GUARD) is True
            assert raw.exists(prefix + "res:a") == 0 and raw.exists(prefix + "res:b") == 0
            (state,) = await store.snapshot([budget], T + 4)
            assert state.used == pytest.approx(1 + 8)
            # Settled twice: the second finds nothing open, so nothing is charged twice.
            again = asyncio.ensure_future(store.settle("a", Amounts(usd=5)))
            await asyncio.sleep(0)
            await store.reserve("d", [budget], Amounts(usd=0.5), T + 5)
            assert await asyncio.wait_for(again, HANG_GUARD) is False
            # No reservation comes: close() settles what still waits.
            waiting = asyncio.ensure_future(store.settle("c", Amounts(usd=2)))
            await asyncio.sleep(0)
        finally:
            await store.close()
        assert await asyncio.wait_for(waiting, HANG_GUARD) is True
        assert raw.exists(prefix + "res:c") == 0

        # And with a short window, a lone settlement goes on its own.
        store = RedisStore(redis_server.url, prefix=prefix, settle_batch_seconds=0.01)
        try:
            assert await asyncio.wait_for(store.settle("d", Amounts(usd=0.25)), HANG_GUARD) is True
            (state,) = await store.snapshot([budget], T + 6)
            assert state.used == pytest.approx(1 + 2 + 0.25)
        finally:
            await store.close()

    asyncio.run(body())


def test_redis_waiting_settlement_fails_with_the_reservation_it_rides(fresh_redis_server: RedisServer) -> None:
    async def body() -> None:
        store = RedisStore(fresh_redis_server.url, settle_batch_seconds=3600)
        try:
            assert (await store.reserve("r1", [usd()], Amounts(usd=1), T + 1)).admitted
            waiting = asyncio.ensure_future(store.settle("r1", Amounts(usd=1)))
            await asyncio.sleep(0)
            fresh_redis_server.kill()
            await _assert_unavailable_promptly(store.reserve("r2", [usd()], Amounts(usd=1), T + 2))
            # The caller of settle hears it too (and its reservation is charged as estimated once stale).
            await _assert_unavailable_promptly(waiting)
        finally:
            await store.close()

    asyncio.run(body())


# --- factory ------------------------------------------------------------------------------------


def test_factory_opens_embedded_store_in_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def body() -> None:
        store = open_store("embedded", str(data_dir))
        try:
            assert isinstance(store, EmbeddedStore)
            assert store.path == str(data_dir / "counters.sqlite3")
            assert (await store.reserve("r1", [usd()], Amounts(usd=1), T + 1)).admitted
        finally:
            await store.close()

    asyncio.run(body())
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "counters.sqlite3").stat().st_mode) == 0o600
    # A data dir that cannot be created is the store being unavailable, not a crash elsewhere.
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreUnavailable, match="data directory"):
        open_store("embedded", str(tmp_path / "a-file" / "data"))


def test_factory_opens_redis_store_and_rejects_unknown_specs(tmp_path: Path, redis_server: RedisServer) -> None:
    async def body() -> None:
        store = open_store(redis_server.url, str(tmp_path), stale_after_seconds=30)
        try:
            assert isinstance(store, RedisStore)
            assert store.stale_after_seconds == 30
            assert (await store.snapshot([usd("factory:probe")], T))[0].used == 0
        finally:
            await store.close()

    asyncio.run(body())
    with pytest.raises(ValueError, match="expected 'embedded'"):
        open_store("memcached://127.0.0.1", str(tmp_path))
    with pytest.raises(ValueError, match="unsupported Redis URL option.*health_check_interval"):
        open_store(redis_server.url + "?health_check_interval=5", str(tmp_path))  # refused, not ignored
    assert not (tmp_path / "counters.sqlite3").exists()
