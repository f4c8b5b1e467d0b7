"""CPU the gateway's Python spends on admission and settlement per request (Limits.request, then
Charge and the store's settlement), against a real store: the embedded one or a redis-server.

Measures the process's CPU time over the whole loop, building each request's flow included (not
wall time), so a busy machine disturbs it less than a latency benchmark; to compare two versions of the code on the same
machine, alternate runs of each:

    .venv/bin/python bench/bench_limits_cpu.py --store redis://127.0.0.1:6379/0 --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import tflow

from codexgate.addons.limits import Charge, Limits
from codexgate.addons.policy_source import PolicySource
from codexgate.flowstate import METADATA_KEY, GatewayRequest
from codexgate.metrics import GatewayMetrics
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import load_policy
from codexgate.stores.factory import open_store
from codexgate.usage import Usage

KEY = "sk-cg-bench-cpu-key-000000000000000000000000000"
# The same levels as bench_overhead.py's limits policy: 4 counters per request.
POLICY = f"""\
providers:
  openai: {{kind: openai, base_url: "http://127.0.0.1:9/v1", keys: [{{value: "env:HOME"}}]}}
models:
  gpt-bench:
    routes: [{{provider: openai}}]
    price: {{input_per_mtok: 1.25, output_per_mtok: 10}}
    rate_limits: [{{tokens: 1000000000, per: 1m}}]
orgs: {{acme: {{budgets: [{{limit_usd: 1000000, period: 1M}}]}}}}
teams:
  platform:
    org: acme
    budgets: [{{limit_usd: 1000000, period: 1d}}]
    rate_limits: [{{requests: 100000000, per: 1m}}]
keys:
  - {{name: bench, team: platform, hash: "{hash_key(KEY)}"}}
"""
BODY = json.dumps({"model": "gpt-bench", "input": "x" * 2000, "stream": False}).encode()


async def run(store_spec: str, data_dir: str, requests: int) -> float:
    path = Path(data_dir) / "policy.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    metrics = GatewayMetrics()
    limits = Limits(PolicySource(metrics), metrics)
    limits.settle_delay_seconds = 0
    limits.store = open_store(store_spec, data_dir)
    charge = Charge(limits, metrics)
    key = policy.keys_by_hash[hash_key(KEY)]
    started = time.process_time()
    for _ in range(requests):
        flow = tflow.tflow()
        flow.request = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", BODY,
                                         {"content-type": "application/json"})  # fmt: skip
        state = GatewayRequest(request_id=flow.id, policy=policy, mode="gateway", endpoint="responses")
        state.key, state.team, state.org = key, "platform", "acme"
        state.body = json.loads(BODY)
        state.model = state.model_requested = "gpt-bench"
        state.provider, state.upstream_model = "openai", "gpt-bench"
        state.cleared = True
        flow.metadata[METADATA_KEY] = state
        await limits.request(flow)
        flow.response = http.Response.make(200, b"{}")
        state.usage = Usage(input_tokens=500, output_tokens=100)
        await charge.response(flow)
        await asyncio.sleep(0)  # the deferred settlement starts
        if limits.pending_settlements:
            await asyncio.gather(*limits.pending_settlements)
    cpu = time.process_time() - started
    await limits.done()
    return cpu / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="embedded", help="embedded or a redis:// URL")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as data_dir:
            results.append(asyncio.run(run(args.store, data_dir, args.requests)))
    print(
        f"{args.store}: {statistics.median(results):.1f} µs CPU per request (median of {args.repeat};"
        f" {', '.join(f'{r:.1f}' for r in results)})"
    )


if __name__ == "__main__":
    sys.exit(main())
