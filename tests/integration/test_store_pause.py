"""Two gateways share a redis-server that stops answering for a while under load (SIGSTOP) and
then resumes (SIGCONT): requests refused meanwhile (503) leave nothing charged, settlements that
failed meanwhile still land, so after the settle window the store holds exactly what the served
requests cost — no phantom reservation, no lost settlement."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes.gateway import Gateway
from fakes.redis_server import RedisServer

from codexgate.addons.limits import counters_for
from codexgate.policies.keys import hash_key
from codexgate.policies.schema import Budget, Limited
from codexgate.stores.redis_store import RedisStore

KEY = "sk-cg-store-pause-key-0000000000000000000000000"
BODY = json.dumps({"model": "mock-model", "input": "under load"}).encode()
SETTLE_WINDOW = 30.0  # seconds: a bound for the wait, not a pass/fail criterion


def policy() -> str:
    return f"""\
providers:
  local: {{kind: mock, output_tokens: 100, latency_ms: 20}}
models:
  mock-model:
    routes: [{{provider: local}}]
    price: {{input_per_mtok: 1000, output_per_mtok: 1000}}
    output_allowance: 100
    max_output_tokens: 100
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: loader, team: platform, hash: "{hash_key(KEY)}", budgets: [{{limit_usd: 1000, period: 1d}}]}}
"""


def store_used(url: str) -> float:
    now = time.time()
    counters = counters_for([("key", "loader", Limited(budgets=[Budget(limit_usd=1000, period="1d")]))], now)

    async def read() -> float:
        store = RedisStore(url)
        try:
            (state,) = await store.snapshot(counters, now)
            return state.used
        finally:
            await store.close()

    return asyncio.run(read())


def test_paused_redis_leaves_exactly_the_served_requests_charged(
    tmp_path: Path, fresh_redis_server: RedisServer
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy())
    gateways = []
    for name in ("one", "two"):
        gateway = Gateway(path, tmp_path / name)
        gateway.store = fresh_redis_server.url
        gateways.append(gateway.start())
    stop = threading.Event()
    statuses: list[int] = []

    def load(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                answer = client.post(
                    f"{gateways[worker % 2].base_url}/responses",
                    content=BODY,
                    headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
                )
                statuses.append(answer.status_code)

    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            workers = [pool.submit(load, i) for i in range(6)]
            deadline = time.monotonic() + 30
            while statuses.count(200) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            fresh_redis_server.proc.send_signal(signal.SIGSTOP)
            time.sleep(1.5)  # the pause (three read timeouts): callers give up and answer 503
            fresh_redis_server.proc.send_signal(signal.SIGCONT)
            served_before = statuses.count(200)
            while statuses.count(200) < served_before + 20 and time.monotonic() < deadline + 30:
                time.sleep(0.05)
            stop.set()
            for worker in workers:
                worker.result()
        assert 503 in statuses and statuses.count(200) >= 40
        deadline = time.monotonic() + SETTLE_WINDOW
        while True:
            lines = [line for g in gateways for line in g.accounting()]
            served = sum(line["cost_usd"] or 0 for line in lines if line["status"] == 200)
            used = store_used(fresh_redis_server.url)
            if (len(lines) >= len(statuses) and used == pytest.approx(served)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(lines) == len(statuses)
        assert all(line["cost_usd"] in (None, 0) for line in lines if line["status"] == 503)
        assert used == pytest.approx(served, rel=1e-9)
    finally:
        stop.set()
        fresh_redis_server.proc.send_signal(signal.SIGCONT)
        for gateway in gateways:
            gateway.stop()
