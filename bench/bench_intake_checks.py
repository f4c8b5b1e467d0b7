"""CPU per request of the intake limits and upstream bounds (issue #12), checks on vs off, in one run.

The end-to-end comparison (`bench_overhead.py --checks-off --paired codexgate~checks-off,codexgate`)
measures latency through real gateway processes; on this shared 2-core machine its noise is
±0.5 ms, far above the ≤ 30 µs the checks may cost. This script measures what the checks add to
the gateway's event loop directly: the hooks of the steps that carry them (`RequestLimits`,
`Intake`, `UpstreamBounds`, `StreamWatch`), called as mitmproxy calls them for one request
(requestheaders, request, responseheaders, response) on a real flow with a real body, inside a
running event loop, with the options on and then off, interleaved batch by batch; CPU time by
`time.thread_time`, so other processes on the machine only add noise, not their own time.

    .venv/bin/python bench/bench_intake_checks.py                       # a small body
    .venv/bin/python bench/bench_intake_checks.py --body-file tests/fixtures/codex_request_tool_round_trip.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from codexgate.addons.intake import Intake
from codexgate.addons.intake_limits import RequestLimits
from codexgate.addons.policy_source import PolicySource
from codexgate.addons.upstream_bounds import StreamWatch, UpstreamBounds
from codexgate.metrics import GatewayMetrics

POLICY = """\
providers:
  openai: {kind: openai, base_url: "http://127.0.0.1:9/v1", keys: [{value: "env:BENCH_NOT_USED"}]}
models:
  gpt-bench: {routes: [{provider: openai}], price: {input_per_mtok: 1, output_per_mtok: 1}}
"""
ANSWER = json.dumps(
    {"id": "resp_1", "object": "response", "status": "completed", "output": [],
     "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}
).encode()  # fmt: skip


def make_flow(body: bytes) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@4000")
    headers: dict[str | bytes, str | bytes] = {
        "content-type": "application/json", "authorization": "Bearer sk-cg-bench",
        "user-agent": "codex_cli_rs/0.169", "session-id": "bench", "accept": "text/event-stream",
        "originator": "codex_cli_rs",
    }  # fmt: skip
    flow.request = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", body, headers)
    return flow


async def one_request(steps: dict[str, Any], flow: http.HTTPFlow, answer: http.Response) -> None:
    """The hooks mitmproxy calls for one request and its answer, in chain order, for the checked steps."""
    client = flow.client_conn
    steps["limits"].client_connected(client)
    steps["intake"].requestheaders(flow)
    steps["limits"].requestheaders(flow)
    steps["intake"].request(flow)
    steps["limits"].request(flow)
    state = flow.metadata["codexgate"]
    state.cleared = True  # what the policy steps between would leave
    steps["bounds"].request(flow)
    flow.response = answer
    steps["bounds"].responseheaders(flow)
    steps["watch"].responseheaders(flow)
    steps["bounds"].response(flow)
    steps["limits"].response(flow)
    steps["limits"].client_disconnected(client)


async def measure(body: bytes, batches: int, per_batch: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as work:
        policy_file = Path(work) / "policy.yaml"
        policy_file.write_text(POLICY)
        metrics = GatewayMetrics()
        policy = PolicySource(metrics)
        limits = RequestLimits(policy, metrics)
        steps = {"limits": limits, "intake": Intake(policy, limits), "bounds": UpstreamBounds(metrics),
                 "watch": StreamWatch()}  # fmt: skip
        with taddons.context(policy, limits, steps["bounds"]) as tctx:
            tctx.configure(policy, codexgate_policy=str(policy_file))
            for _ in range(batches):
                for label, enabled in (("on", True), ("off", False)):
                    tctx.configure(limits, codexgate_intake_limits=enabled)
                    tctx.configure(steps["bounds"], codexgate_upstream_bounds=enabled)
                    limits.running()
                    # Flows are made before the clock starts: only the hooks are timed.
                    flows = [make_flow(body) for _ in range(per_batch)]
                    answers = [http.Response.make(200, ANSWER, {"content-type": "application/json"})
                               for _ in range(per_batch)]  # fmt: skip
                    start = time.thread_time_ns()
                    for flow, answer in zip(flows, answers, strict=True):
                        await one_request(steps, flow, answer)
                    results[label].append((time.thread_time_ns() - start) / per_batch / 1000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--body-file", help="JSON request body (its model replaced); default: a small body")
    parser.add_argument("--batches", type=int, default=40, help="interleaved on/off batches")
    parser.add_argument("--per-batch", type=int, default=200, help="requests per batch")
    args = parser.parse_args()
    if args.body_file:
        body = json.dumps(dict(json.loads(Path(args.body_file).read_text()), model="gpt-bench", stream=False))
    else:
        body = json.dumps({"model": "gpt-bench", "input": "Say hello.", "stream": False})
    results = asyncio.run(measure(body.encode(), args.batches, args.per_batch))
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    differences = sorted(a - b for a, b in zip(results["on"], results["off"], strict=True))
    print(f"body {len(body)} bytes; {args.batches} batches of {args.per_batch} requests, on/off interleaved")
    print(f"CPU per request of the checked steps (median of batches): checks on {on:.1f} µs, off {off:.1f} µs")
    print(
        f"checks cost: {on - off:+.1f} µs per request (median of per-batch differences "
        f"{statistics.median(differences):+.1f}; middle half {differences[len(differences) // 4]:+.1f} to "
        f"{differences[3 * len(differences) // 4]:+.1f})"
    )


if __name__ == "__main__":
    main()
