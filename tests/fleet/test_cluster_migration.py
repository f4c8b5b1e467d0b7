"""The counter store while Redis Cluster moves the store's slot to another master (resharding):
the source answers TRYAGAIN (a script's keys are split between the nodes) or ASK (all of them
have left), the target MOVED until the slot is handed over. Admission must fail closed or wait and
be retried, never run against half the counters; settlement must land exactly once, on whichever
node holds all of a reservation's keys. Real redis-server processes, a three-master cluster, the
slot migrated with CLUSTER SETSLOT … IMPORTING/MIGRATING and MIGRATE as redis-cli does it."""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fakes.redis_topology import RedisCluster, SlotMigration, wait_until

from codexgate.stores.base import Amounts, Counter, StoreUnavailable
from codexgate.stores.redis_store import RedisStore

DAY = 86400.0
ESTIMATE = Amounts(usd=1.0, requests=1)
ACTUAL = Amounts(usd=0.25, requests=1)
BOUND = 60.0  # seconds: only a store that never settles waits this long


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    made = RedisCluster(tmp_path_factory.mktemp("cluster-migration"))
    yield made
    made.kill()


def _counter(now: float, counter_id: str, kind: str = "usd") -> Counter:
    start = now - now % DAY
    return Counter(counter_id, kind, 1e9, start, DAY, DAY, start + DAY)  # type: ignore[arg-type]


def _prefix() -> str:
    # Each test its own hash tag, so its own slot (the production prefix has the tag {counters}).
    return f"cg:{{mig-{uuid.uuid4().hex[:12]}}}:"


def _store(cluster: RedisCluster, prefix: str, **kwargs: float) -> RedisStore:
    return RedisStore(cluster.url, prefix=prefix, **kwargs)


def _leftover_reservations(cluster: RedisCluster, prefix: str) -> list[str]:
    found: list[str] = []
    for port in cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        found += [str(key) for key in node.keys(prefix + "res:*")]
        found += [str(member) for key in node.keys(prefix + "open") for member in node.zrange(key, 0, -1)]
        node.close()
    return found


@pytest.mark.parametrize("order", ["counters-first", "reservations-first"])
def test_admissions_during_a_slot_migration_are_metered_exactly_once(
    cluster: RedisCluster, tmp_path: Path, order: str
) -> None:
    """Eight clients keep reserving and settling (each request held open for a while, as a stream
    is) while the store's slot moves key by key. Every admitted request must end up charged its
    actual cost exactly once at every level; a reservation refused during the move is a 503, never
    an admission without a charge."""
    now = time.time()
    prefix = _prefix()
    names = [f"k{i}" for i in range(8)]
    team, org = _counter(now, "team:platform/usd/1d"), _counter(now, "org:acme/requests/1d", "requests")
    counters = {name: [_counter(now, f"key:{name}/usd/1d"), team, org] for name in names}
    admitted: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    rng = random.Random(16)

    async def client(store: RedisStore, name: str, migrated: asyncio.Event) -> None:
        for number in range(100_000):  # bounded; ends a few admissions after the migration
            request_id = f"{name}-{number}"
            try:
                admission = await store.reserve(request_id, counters[name], ESTIMATE, now)
            except StoreUnavailable:
                outcomes["reserve refused: store unavailable"] += 1
                await asyncio.sleep(0.02)
                continue
            assert admission.admitted, admission
            admitted[name] += 1
            if migrated.is_set() and admitted[name] >= 3:
                await store.settle(request_id, ACTUAL)
                return
            await asyncio.sleep(rng.uniform(0.05, 1.0))  # the request runs
            try:
                await store.settle(request_id, ACTUAL)
                outcomes["settled at once"] += 1
            except StoreUnavailable:
                outcomes["settle retried by the store"] += 1  # the store keeps trying it (idempotent)

    refusals_before: list[int] = []

    def refusals(migration: SlotMigration) -> int:
        return migration.error_count(migration.source, "TRYAGAIN") + migration.error_count(migration.source, "ASK")

    def migrate() -> SlotMigration:
        migration = cluster.begin_migration(prefix + "x")
        refusals_before.append(refusals(migration))
        keys = migration.keys_left()
        records = [key for key in keys if ":c:" not in key]
        by_counter = [key for key in keys if ":c:" in key]
        first, then = (by_counter, records) if order == "counters-first" else (records, by_counter)
        for key in first + then:  # one at a time: the slot spends a while split between the nodes
            migration.move([key])
            time.sleep(0.15)
        return migration

    async def main() -> tuple[SlotMigration, dict[str, float]]:
        store = _store(cluster, prefix)
        migrated = asyncio.Event()
        try:
            tasks = [asyncio.create_task(client(store, name, migrated)) for name in names]
            # Requests in flight on every client before the slot starts moving.
            async with asyncio.timeout(BOUND):
                while min(admitted[name] for name in names) < 2:
                    await asyncio.sleep(0.02)
            migration = await asyncio.to_thread(migrate)
            assert refusals(migration) > refusals_before[0]  # the clients did meet the migration
            await asyncio.to_thread(migration.finish)
            migrated.set()
            async with asyncio.timeout(BOUND):
                await asyncio.gather(*tasks)
        finally:
            await store.close()  # settles what is still pending
        reader = _store(cluster, prefix)
        try:
            every = [*(counters[name][0] for name in names), team, org]
            states = await reader.snapshot(every, now)
        finally:
            await reader.close()
        return migration, {state.counter.counter_id: state.used for state in states}

    migration, used = asyncio.run(main())
    total = sum(admitted.values())
    for name in names:
        assert used[f"key:{name}/usd/1d"] == pytest.approx(ACTUAL.usd * admitted[name], abs=1e-9), (name, outcomes)
    assert used["team:platform/usd/1d"] == pytest.approx(ACTUAL.usd * total, abs=1e-9), outcomes
    assert used["org:acme/requests/1d"] == total, outcomes
    assert _leftover_reservations(cluster, prefix) == []


def test_a_reservation_waits_out_tryagain_and_is_admitted_once_the_slot_has_moved(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """TRYAGAIN means "the keys are moving, ask again shortly": the reservation is sent again (no
    reservation can have been made: the node refuses before running the script) and admitted once
    the move is done, charged once."""
    now = time.time()
    prefix = _prefix()
    counters = [_counter(now, "key:alice/usd/1d"), _counter(now, "team:platform/usd/1d")]

    async def main() -> tuple[bool, list[float]]:
        store = _store(cluster, prefix, slot_migration_wait_seconds=BOUND)
        try:
            assert (await store.reserve("before", counters, ESTIMATE, now)).admitted
            assert await store.settle("before", ACTUAL)
            migration = cluster.begin_migration(prefix + "x")
            migration.move([prefix + "c:key:alice/usd/1d"])  # split: team's counter still on the source
            tries_before = migration.error_count(migration.source, "TRYAGAIN")
            reserving = asyncio.create_task(store.reserve("during", counters, ESTIMATE, now))
            await asyncio.to_thread(
                wait_until,
                "the source to answer TRYAGAIN",
                lambda: migration.error_count(migration.source, "TRYAGAIN") > tries_before + 1,
            )
            assert not reserving.done()  # still waiting: neither admitted nor refused
            await asyncio.to_thread(migration.finish)
            admission = await reserving
            assert await store.settle("during", ACTUAL)
            return admission.admitted, [state.used for state in await store.snapshot(counters, now)]
        finally:
            await store.close()

    admitted, used = asyncio.run(main())
    assert admitted
    assert used == [0.5, 0.5]


def test_settlement_follows_ask_to_the_target_once_every_key_has_moved(cluster: RedisCluster, tmp_path: Path) -> None:
    """All of a reservation's keys on the target, the slot not yet handed over: the source answers
    ASK, and the settlement runs there (after ASKING), exactly once."""
    now = time.time()
    prefix = _prefix()
    counters = [_counter(now, "key:alice/usd/1d"), _counter(now, "team:platform/usd/1d")]

    async def main() -> tuple[bool, list[float], list[float]]:
        store = _store(cluster, prefix)
        try:
            assert (await store.reserve("r1", counters, ESTIMATE, now)).admitted
            migration = cluster.begin_migration(prefix + "x")
            migration.move(migration.keys_left())  # everything moved, slot still MIGRATING/IMPORTING
            asks_before = migration.error_count(migration.source, "ASK")
            settled = await store.settle("r1", ACTUAL)
            during = [state.used for state in await store.snapshot(counters, now)]
            assert migration.error_count(migration.source, "ASK") > asks_before
            await asyncio.to_thread(migration.finish)
            return settled, during, [state.used for state in await store.snapshot(counters, now)]
        finally:
            await store.close()

    settled, during, after = asyncio.run(main())
    assert settled
    assert during == [0.25, 0.25]
    assert after == [0.25, 0.25]
    assert _leftover_reservations(cluster, prefix) == []


def test_a_script_the_ask_target_never_saw_is_loaded_there_with_eval(cluster: RedisCluster, tmp_path: Path) -> None:
    """The ASK target answers NOSCRIPT when it never ran the store's scripts (a node that joined,
    or one whose script cache was flushed). That error is a reply, not a dropped connection: the
    store sends EVAL, which follows the same ASK, and the settlement lands once."""
    now = time.time()
    prefix = _prefix()
    counters = [_counter(now, "key:alice/usd/1d"), _counter(now, "team:platform/usd/1d")]

    async def main() -> tuple[bool, list[float], int]:
        store = _store(cluster, prefix)
        try:
            assert (await store.reserve("r1", counters, ESTIMATE, now)).admitted
            migration = cluster.begin_migration(prefix + "x")
            migration.move(migration.keys_left())
            target = redis.Redis(host="127.0.0.1", port=migration.target, decode_responses=True)
            target.script_flush()
            noscript_before = migration.error_count(migration.target, "NOSCRIPT")
            settled = await store.settle("r1", ACTUAL)
            during = [state.used for state in await store.snapshot(counters, now)]
            noscripts = migration.error_count(migration.target, "NOSCRIPT") - noscript_before
            target.close()
            await asyncio.to_thread(migration.finish)
            return settled, during, noscripts
        finally:
            await store.close()

    settled, during, noscripts = asyncio.run(main())
    assert noscripts >= 2  # the settlement's and the snapshot's EVALSHA both met the empty cache
    assert settled
    assert during == [0.25, 0.25]
    assert _leftover_reservations(cluster, prefix) == []


def test_settlement_never_runs_on_the_target_while_its_counters_are_still_on_the_source(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """The reservation record and the index moved, the counters not yet: a settlement sent to the
    target after ASKING would read the counters as absent there and drop the record without its
    correction (the estimate would stay charged). The store declares every key it touches, so the
    source answers TRYAGAIN instead of ASK, and the settlement lands once the counters are there."""
    now = time.time()
    prefix = _prefix()
    counters = [_counter(now, "key:alice/usd/1d"), _counter(now, "team:platform/usd/1d")]

    async def main() -> list[float]:
        store = _store(cluster, prefix)
        try:
            assert (await store.reserve("r1", counters, ESTIMATE, now)).admitted
            migration = cluster.begin_migration(prefix + "x")
            migration.move([key for key in migration.keys_left() if ":c:" not in key])
            asks = migration.error_count(migration.source, "ASK")
            tries = migration.error_count(migration.source, "TRYAGAIN")
            with pytest.raises(StoreUnavailable):
                await store.settle("r1", ACTUAL)  # not yet: the store tries it again by itself
            # The source refuses it (its keys are split), rather than sending it to the target (ASK).
            assert migration.error_count(migration.source, "TRYAGAIN") > tries
            assert migration.error_count(migration.source, "ASK") == asks
            await asyncio.to_thread(migration.finish)
            reader = _store(cluster, prefix)
            try:

                async def settled() -> list[float]:
                    return [state.used for state in await reader.snapshot(counters, now)]

                async with asyncio.timeout(BOUND):
                    while (used := await settled()) != [0.25, 0.25]:
                        assert used == [1.0, 1.0], used  # the estimate until then, never anything else
                        await asyncio.sleep(0.05)
                return used
            finally:
                await reader.close()
        finally:
            await store.close()

    assert asyncio.run(main()) == [0.25, 0.25]
    assert _leftover_reservations(cluster, prefix) == []


def test_a_store_that_did_not_make_a_reservation_settles_it_with_its_keys_declared(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """After a restart the write-ahead log settles reservations an earlier process made, whose
    counter keys this process never saw: the store learns them from the record and declares them,
    so the settlement is as safe under migration as any other."""
    now = time.time()
    prefix = _prefix()
    counters = [_counter(now, "key:alice/usd/1d"), _counter(now, "team:platform/usd/1d")]

    async def main() -> tuple[bool, bool, list[float]]:
        first = _store(cluster, prefix)
        try:
            assert (await first.reserve("r1", counters, ESTIMATE, now)).admitted
        finally:
            await first.close()
        second = _store(cluster, prefix)
        try:
            settled = await second.settle("r1", ACTUAL)
            again = await second.settle("r1", ACTUAL)
            return settled, again, [state.used for state in await second.snapshot(counters, now)]
        finally:
            await second.close()

    settled, again, used = asyncio.run(main())
    assert (settled, again) == (True, False)
    assert used == [0.25, 0.25]


def test_a_failed_over_settlement_by_another_process_declares_the_reservations_keys(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """`settle_to` (a failed-over request charged to the provider that answered) of a reservation
    another process made: the store reads the record's counters and declares them, so the first
    choice's reservation is released (not left charged at its estimate) and the answering
    provider's counter charged, once."""
    now = time.time()
    prefix = _prefix()
    key = _counter(now, "key:alice/usd/1d")
    first_choice, answering = _counter(now, "provider:first/usd/1d"), _counter(now, "provider:second/usd/1d")

    async def main() -> tuple[bool, bool, list[float]]:
        first = _store(cluster, prefix)
        try:
            assert (await first.reserve("r1", [key, first_choice], ESTIMATE, now)).admitted
        finally:
            await first.close()
        second = _store(cluster, prefix)
        try:
            settled = await second.settle_to("r1", ACTUAL, [key, answering], now)
            again = await second.settle_to("r1", ACTUAL, [key, answering], now)
            states = await second.snapshot([key, first_choice, answering], now)
            return settled, again, [state.used for state in states]
        finally:
            await second.close()

    settled, again, used = asyncio.run(main())
    assert (settled, again) == (True, False)
    assert used == [ACTUAL.usd, 0, ACTUAL.usd]


def test_a_batch_of_settlements_is_all_or_nothing_when_one_counter_has_moved(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """Two settlements travel in one script run; one's counter already moved. Redis runs a script
    whose declared keys are all on the node and does not roll back what it wrote before a call that
    fails: the first settlement's record would be deleted without its correction written. Declared
    keys make the source refuse the whole run (TRYAGAIN) before anything is written."""
    now = time.time()
    prefix = _prefix()
    team = _counter(now, "team:platform/usd/1d")
    alice, bob = [_counter(now, "key:alice/usd/1d"), team], [_counter(now, "key:bob/usd/1d"), team]

    async def main() -> list[float]:
        store = _store(cluster, prefix)
        try:
            assert (await store.reserve("alice-1", alice, ESTIMATE, now)).admitted
            assert (await store.reserve("bob-1", bob, ESTIMATE, now)).admitted
            migration = cluster.begin_migration(prefix + "x")
            migration.move([prefix + "c:key:bob/usd/1d"])
            # Both wait for the same batch: alice's first, then bob's (whose counter has moved).
            results = await asyncio.gather(
                store.settle("alice-1", ACTUAL), store.settle("bob-1", ACTUAL), return_exceptions=True
            )
            assert all(isinstance(result, StoreUnavailable) for result in results), results
            await asyncio.to_thread(migration.finish)
        finally:
            await store.close()  # what failed is settled now, on the target
        reader = _store(cluster, prefix)
        try:
            return [state.used for state in await reader.snapshot([alice[0], bob[0], team], now)]
        finally:
            await reader.close()

    assert asyncio.run(main()) == [0.25, 0.25, 0.5]
    assert _leftover_reservations(cluster, prefix) == []
