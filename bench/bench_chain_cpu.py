"""CPU per request of codexgate's whole chain, in process: the per-request cost over mitmproxy's core.

`bench_overhead.py` measures the chain end to end (codexgate minus `mitmproxy-core`, same run); on
the shared 2-core machine that difference moves by hundreds of µs from run to run. This script
measures the chain itself: the real default chain (`addons.chain(shown=False)`: the Pipeline of every
step, embedded store, accounting, audit with its group commit, write-ahead log,
metrics), configured as `codexgate up` configures it (data dir, policy with a virtual key), called
as mitmproxy calls it for one request and its answer — requestheaders, request, responseheaders,
the stream callable fed a 50-event Responses stream chunk by chunk (streamed kind), response —
on real flows inside a running event loop. CPU by `time.thread_time` around the hooks only (flows
and answers are made before the clock starts), so other processes add noise, not their own time.
The group commit's fsyncs run in worker threads, which thread time does not count, as in the
gateway (they are off the event loop there too).

    .venv/bin/python bench/bench_chain_cpu.py                       # both kinds, 7 batches of 300
    .venv/bin/python bench/bench_chain_cpu.py --kinds sse --profile /tmp/chain.prof
    .venv/bin/python bench/bench_chain_cpu.py --limits              # + budgets and rate limits
    .venv/bin/python bench/bench_chain_cpu.py --calls               # calls per step: no noise at all

`--calls` counts the function calls (Python and C: `sys.setprofile`'s call and c_call events) each
step makes per request, by hook, and the stream callable's per answer. A count is the same on
every run and machine, so a change's effect on the chain's work shows without the 2-core machine's
noise; CPU follows it roughly (a C call is cheaper than a Python one).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import response_body, sse_events  # noqa: E402

from codexgate.policies.keys import hash_key  # noqa: E402

MODEL = "gpt-bench"
VIRTUAL_KEY = "sk-cg-bench-000000000000000000000000000000"
UPSTREAM_ENV = "BENCH_CHAIN_UPSTREAM_KEY"


def policy_yaml(limits: bool) -> str:
    org = team = ""
    if limits:
        org = ", budgets: [{limit_usd: 1000000, period: 1M}]"
        team = ", budgets: [{limit_usd: 1000000, period: 1d}], rate_limits: [{requests: 100000000, per: 1m}]"
    return f"""
gateway:
  intercept_hosts: [api.openai.com]
providers:
  openai:
    kind: openai
    base_url: http://127.0.0.1:9/v1
    keys: [{{value: "env:{UPSTREAM_ENV}"}}]
models:
  {MODEL}:
    routes: [{{provider: openai}}]
    price: {{input_per_mtok: 1.25, output_per_mtok: 10.0, cached_input_per_mtok: 0.125}}
orgs:
  bench: {{description: Benchmark{org}}}
teams:
  bench: {{org: bench{team}}}
keys:
  - {{name: bench, team: bench, hash: {hash_key(VIRTUAL_KEY)}}}
"""


def request_body(stream: bool, body_file: str | None) -> bytes:
    """The request as Codex and the SDKs write it (compact): the bench's small one, or a whole
    Codex turn from a file (e.g. tests/fixtures/codex_request_tool_round_trip.json)."""
    request: dict[str, Any] = {"model": MODEL, "input": "Say hello.", "stream": stream}
    if body_file:
        request = dict(json.loads(Path(body_file).read_text()), model=MODEL, stream=stream)
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()


def make_flow(stream: bool, body: bytes) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@4000")
    headers: dict[str | bytes, str | bytes] = {
        "content-type": "application/json", "authorization": f"Bearer {VIRTUAL_KEY}",
        "user-agent": "codex_cli_rs/0.169", "session-id": "bench", "originator": "codex_cli_rs",
    }  # fmt: skip
    if stream:
        headers["accept"] = "text/event-stream"
    flow.request = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", body, headers)
    flow.request.timestamp_start = flow.request.timestamp_end = time.time()
    return flow


def make_answer(stream: bool, number: int) -> tuple[http.Response, list[bytes]]:
    if stream:
        response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        response.content = None  # a streamed body: mitmproxy sets no content until the end
        return response, sse_events(MODEL, number, 50)
    return http.Response.make(200, response_body(MODEL, number), {"content-type": "application/json"}), []


async def one_request(addons: list[Any], flow: http.HTTPFlow, answer: http.Response, chunks: list[bytes]) -> None:
    """The hooks mitmproxy calls for one request and its answer, on every addon of the chain."""
    for hook in ("requestheaders", "request"):
        for addon in addons:
            function = getattr(addon, hook, None)
            if function is not None:
                result = function(flow)
                if asyncio.iscoroutine(result):
                    await result
    if flow.response is not None:
        raise RuntimeError(f"the chain answered the request itself: {flow.response.status_code} {flow.response.text}")
    flow.response = answer
    for addon in addons:
        function = getattr(addon, "responseheaders", None)
        if function is not None:
            result = function(flow)
            if asyncio.iscoroutine(result):
                await result
    stream = flow.response.stream
    if chunks:
        if not callable(stream):
            raise RuntimeError("the chain did not set a stream callable for an SSE answer")
        for chunk in chunks:
            stream(chunk)
        stream(b"")
        flow.response.content = b"".join(chunks)  # what mitmproxy leaves after streaming? (unused by the chain)
    for addon in addons:
        function = getattr(addon, "response", None)
        if function is not None:
            result = function(flow)
            if asyncio.iscoroutine(result):
                await result


class CallCounter:
    """Counts the calls made while it is installed (`sys.setprofile`), into `counts[label]`."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._calls = 0

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self._calls += 1

    def start(self) -> None:
        self._calls = 0
        sys.setprofile(self._profile)

    def stop(self, label: tuple[str, str]) -> None:
        sys.setprofile(None)
        self.counts[label] += self._calls - 1  # sys.setprofile(None) itself is a c_call


async def counted_request(
    steps: list[Any], counter: CallCounter, flow: http.HTTPFlow, answer: http.Response, chunks: list[bytes]
) -> None:
    """`one_request`, with each step's hook (and the stream callable) counted on its own."""

    async def call(hook: str) -> None:
        for step in steps:
            function = getattr(step, hook, None)
            if function is None:
                continue
            counter.start()
            result = function(flow)
            if asyncio.iscoroutine(result):
                await result
            counter.stop((hook, type(step).__name__))

    await call("requestheaders")
    await call("request")
    if flow.response is not None:
        raise RuntimeError(f"the chain answered the request itself: {flow.response.status_code} {flow.response.text}")
    flow.response = answer
    await call("responseheaders")
    if chunks:
        stream = flow.response.stream
        assert callable(stream)
        counter.start()
        for chunk in chunks:
            stream(chunk)
        stream(b"")
        counter.stop(("stream", f"callable ({len(chunks)} chunks)"))
        flow.response.content = b"".join(chunks)
    await call("response")


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    from codexgate.addons import chain

    results: dict[str, list[float]] = {kind: [] for kind in args.kinds}
    bodies = {kind: request_body(kind == "sse", args.body_file) for kind in args.kinds}
    os.environ[UPSTREAM_ENV] = "sk-bench-upstream"
    with tempfile.TemporaryDirectory() as work:
        policy_file = Path(work) / "policy.yaml"
        policy_file.write_text(policy_yaml(args.limits))
        data_dir = Path(work) / "data"
        data_dir.mkdir(mode=0o700)
        addons = chain(shown=False)
        with taddons.context(*addons) as tctx:
            tctx.options.update(codexgate_policy=str(policy_file), codexgate_data_dir=str(data_dir))
            for addon in addons:
                running = getattr(addon, "running", None)
                if running is not None:
                    result = running()
                    if asyncio.iscoroutine(result):
                        await result
            number = 0
            if args.calls:
                steps = [step for addon in addons for step in getattr(addon, "steps", [addon])]  # in chain order
                for kind in args.kinds:
                    counter = CallCounter()
                    for index in range(args.per_batch + 20):  # 20 unreported: caches and first-use paths
                        number += 1
                        stream = kind == "sse"
                        answer, chunks = make_answer(stream, number)
                        if index == 20:
                            counter.counts.clear()
                        await counted_request(steps, counter, make_flow(stream, bodies[kind]), answer, chunks)
                        await asyncio.sleep(0.001)
                    results[kind] = [sum(counter.counts.values()) / args.per_batch]
                    print(f"{kind}: {results[kind][0]:.0f} calls per request; by step and hook (>= 2 per request):")
                    for (hook, step), count in counter.counts.most_common():
                        if count / args.per_batch >= 2:
                            print(f"  {count / args.per_batch:7.1f}  {hook:<16} {step}")
                args.batches = -1  # no timed batches
            profiler = cProfile.Profile() if args.profile else None
            for batch in range(args.batches + 1):  # the first batch warms up, unreported
                for kind in args.kinds:
                    stream = kind == "sse"
                    flows = [make_flow(stream, bodies[kind]) for _ in range(args.per_batch)]
                    answers = []
                    for _ in range(args.per_batch):
                        number += 1
                        answers.append(make_answer(stream, number))
                    if profiler is not None and batch > 0:
                        profiler.enable()
                    start = time.thread_time_ns()
                    for flow, (answer, chunks) in zip(flows, answers, strict=True):
                        await one_request(addons, flow, answer, chunks)
                    elapsed = time.thread_time_ns() - start
                    if profiler is not None:
                        profiler.disable()
                    if batch > 0:
                        results[kind].append(elapsed / args.per_batch / 1000)
                    await asyncio.sleep(0.06)  # lets the group commits and deferred settlements run
            for addon in reversed(addons):
                done = getattr(addon, "done", None)
                if done is not None:
                    result = done()
                    if asyncio.iscoroutine(result):
                        await result
            lines = (data_dir / "accounting.jsonl").read_text().splitlines()
            expected = (args.batches + 1) * args.per_batch * len(args.kinds)
            if args.calls:
                expected = (args.per_batch + 20) * len(args.kinds)
            if len(lines) != expected or any('"decision":"forwarded"' not in line for line in lines):
                raise RuntimeError(f"expected {expected} forwarded accounting lines, found {len(lines)}")
            if profiler is not None:
                profiler.dump_stats(args.profile)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_lines)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kinds", default="sse,json", help="sse (50 events per answer) and/or json")
    parser.add_argument("--batches", type=int, default=7, help="measured batches per kind (interleaved)")
    parser.add_argument("--per-batch", type=int, default=300, help="requests per batch")
    parser.add_argument("--limits", action="store_true", help="a policy with budgets and rate limits (store path)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured batches into FILE and print the top")
    parser.add_argument("--profile-lines", type=int, default=45)
    parser.add_argument("--body-file", help="send this JSON request body (a whole Codex turn) instead of the small one")
    parser.add_argument("--calls", action="store_true", help="count the calls per step and hook instead of timing")
    args = parser.parse_args()
    args.kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    results = asyncio.run(measure(args))
    if args.calls:
        return
    for kind, values in results.items():
        ordered = sorted(values)
        print(
            f"{kind}: chain CPU per request {statistics.median(ordered):.0f} µs (median of {len(ordered)} batches of "
            f"{args.per_batch}; min {ordered[0]:.0f}, max {ordered[-1]:.0f})"
            + (" [cProfile on: inflated]" if args.profile else "")
        )


if __name__ == "__main__":
    main()
