"""Counter-store microbenchmark: the embedded and the Redis store, as the gateway uses them.

Each request checks three counters, as a key with a USD month budget, 60 requests/min and
200k tokens/min would (the per-minute ones rolling, in 1 s buckets). The fake clock advances
10 ms per request, so the rolling counters carry ~60 live buckets as in steady traffic.
Sequential: one request at a time; the reservation is awaited (its latency is reported), the
settlement is not (as in the gateway; with Redis it rides along with the next reservation), and
the CPU per request covers both. "redis, settle alone" is the Redis store with each settlement
in its own round trip, for comparison. Concurrent: `--concurrency` requests in flight through
one store, throughput in reserve+settle pairs per second.

    .venv/bin/python bench/bench_stores.py                 # starts its own redis-server
    .venv/bin/python bench/bench_stores.py -n 5000 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from codexgate.stores.base import Amounts, Counter, CounterStore
from codexgate.stores.embedded import EmbeddedStore
from codexgate.stores.redis_store import RedisStore

T0 = 1_700_000_000.0
MONTH = 30 * 86400.0


def counters_at(now: float) -> list[Counter]:
    second = math.floor(now)
    return [
        Counter("key:bench/usd/1M", "usd", 1e12, T0, MONTH, MONTH, T0 + MONTH),
        Counter("key:bench/requests/60s", "requests", 1e12, second, 1.0, 60.0, second + 60.0),
        Counter("key:bench/tokens/60s", "tokens", 1e12, second, 1.0, 60.0, second + 60.0),
    ]


def percentile(sorted_values: list[float], q: float) -> float:
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def sequential(store: CounterStore, n: int) -> tuple[list[float], float]:
    """One request at a time, as the gateway does it: the reservation is awaited (it is on the
    request's path), the settlement is not (the answer need not wait for it; with Redis it rides
    along with the next reservation). Returns the reserve latencies (µs) and the CPU per request
    (µs, reserve and settle together)."""
    latencies: list[float] = []
    settlements: list[asyncio.Future[bool]] = []
    estimate, actual = Amounts(usd=0.05, requests=1, tokens=4000), Amounts(usd=0.01, requests=1, tokens=900)
    cpu_started = time.process_time()
    for i in range(n):
        now = T0 + i * 0.01
        t0 = time.perf_counter()
        admission = await store.reserve(f"seq-{i}", counters_at(now), estimate, now)
        latencies.append((time.perf_counter() - t0) * 1e6)
        assert admission.admitted
        settlements.append(asyncio.ensure_future(store.settle(f"seq-{i}", actual)))
        await asyncio.sleep(0)  # the settlement task starts, as it would in the gateway
    assert all(await asyncio.gather(*settlements))
    return latencies, (time.process_time() - cpu_started) / n * 1e6


async def concurrent(store: CounterStore, n: int, concurrency: int) -> float:
    estimate, actual = Amounts(usd=0.05, requests=1, tokens=4000), Amounts(usd=0.01, requests=1, tokens=900)
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            now = T0 + 3600 + i * 0.01
            assert (await store.reserve(f"conc-{i}", counters_at(now), estimate, now)).admitted
            assert await store.settle(f"conc-{i}", actual)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


@contextlib.contextmanager
def local_redis(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not on PATH: pass --redis-url or --skip-redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


async def bench(name: str, store: CounterStore, n: int, concurrency: int) -> str:
    try:
        await sequential(store, 200)  # warm-up: script loading, page cache, connection
        latencies, cpu_per_request = await sequential(store, n)
        throughput = await concurrent(store, n, concurrency)
    finally:
        await store.close()
    latencies.sort()
    return (
        f"{name:<22} {percentile(latencies, 50):>9.0f} {percentile(latencies, 99):>9.0f} {latencies[-1]:>9.0f}"
        f" {cpu_per_request:>9.0f} {throughput:>10.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000, help="requests per measurement (default 3000)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight for the throughput run")
    parser.add_argument("--redis-url", help="benchmark this Redis instead of starting a local redis-server")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()

    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp:
        store = EmbeddedStore(str(Path(tmp) / "counters.sqlite3"))
        rows.append(asyncio.run(bench("embedded", store, args.n, args.concurrency)))
        if not args.skip_redis:
            with contextlib.ExitStack() as stack:
                url = args.redis_url or stack.enter_context(local_redis(Path(tmp)))
                prefix = f"bench-{uuid.uuid4().hex[:8]}:"
                rows.append(asyncio.run(bench("redis", RedisStore(url, prefix=prefix), args.n, args.concurrency)))
                # For comparison: each settlement its own round trip (what the store did before).
                alone = RedisStore(url, prefix=prefix + "alone:", settle_batch_seconds=0)
                rows.append(asyncio.run(bench("redis, settle alone", alone, args.n, args.concurrency)))

    print(f"{args.n} requests x 3 counters; throughput with {args.concurrency} in flight")
    print(f"{'store':<22} {'reserve':>9} {'reserve':>9} {'reserve':>9} {'CPU µs':>9} {'pairs/s':>10}")
    print(f"{'':<22} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>9} {'per req':>9} {'':>10}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
