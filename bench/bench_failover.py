"""Time to first token on the failover path vs the primary path, measured side by side.

Three models on one gateway (full addon chain, base-URL listener), each streaming the same SSE
answer from a fake OpenAI upstream that runs in its own process:

- `direct`   one deployment: mitmproxy forwards the request itself (no relay);
- `primary`  two deployments, the first answers: the request goes through the failover relay;
- `fallback` two deployments, the first answers 503 at once, the second answers: the relay's
             failover path (cooldown off, so every request pays the failed attempt).

Time to first token = request sent → first `response.output_text.delta` byte received.
Requests are sequential (one at a time), interleaved across the three models.

    python bench/bench_failover.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

# One gateway process, as these figures have always been (bench/bench_workers.py measures --workers).
os.environ.setdefault("CODEXGATE_WORKERS", "1")

KEY = "sk-cg-bench-failover-0000000000000000000000000"
UPSTREAM_KEY = "sk-upstream-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sse_answer() -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from codexgate.policies.schema import MockProvider
    from codexgate.providers import mock
    from codexgate.sse import encode_responses_stream

    body = {"model": "bench", "input": "stream a short answer please", "stream": True}
    return encode_responses_stream(mock.responses_events(body, "bench", 20, MockProvider(kind="mock")))


def run_upstream(port: int) -> None:
    answer = sse_answer()

    async def ok(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(answer)
        await response.write_eof()
        return response

    async def down(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=503)

    app = web.Application()
    app.router.add_post("/ok/v1/responses", ok)
    app.router.add_post("/down/v1/responses", down)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def policy(upstream: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from codexgate.policies.keys import hash_key

    key = "keys: [{value: env:BENCH_UPSTREAM_KEY}]"
    price = "price: {input_per_mtok: 0, output_per_mtok: 0}"
    return f"""\
gateway: {{resilience: {{cooldown_seconds: 0}}}}
providers:
  good: {{kind: openai, base_url: "{upstream}/ok/v1", {key}}}
  good2: {{kind: openai, base_url: "{upstream}/ok/v1", {key}}}
  bad: {{kind: openai, base_url: "{upstream}/down/v1", {key}}}
models:
  direct: {{routes: [{{provider: good}}], {price}}}
  primary: {{routes: [{{provider: good, weight: 1}}], fallbacks: [backup], {price}}}
  fallback: {{routes: [{{provider: bad}}], fallbacks: [backup], {price}}}
  backup: {{routes: [{{provider: good2}}], {price}}}
teams: {{bench: {{org: bench}}}}
keys:
  - {{name: bench, team: bench, hash: "{hash_key(KEY)}"}}
"""


async def ttft(session: aiohttp.ClientSession, url: str, model: str) -> float:
    body = {"model": model, "input": "stream a short answer please", "stream": True}
    started = time.perf_counter()
    async with session.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200, (model, response.status, await response.text())
        first = None
        async for chunk in response.content.iter_any():
            if first is None and b"response.output_text.delta" in chunk:
                first = time.perf_counter() - started
        assert first is not None
        return first


async def measure(base_url: str, requests: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"direct": [], "primary": [], "fallback": []}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for model in results:  # warm-up
            for _ in range(10):
                await ttft(session, f"{base_url}/responses", model)
        for _ in range(requests):
            for model in results:
                results[model].append(await ttft(session, f"{base_url}/responses", model))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per model")
    args = parser.parse_args()
    upstream_port, proxy_port, gateway_port = free_port(), free_port(), free_port()
    upstream = multiprocessing.Process(target=run_upstream, args=(upstream_port,), daemon=True)
    upstream.start()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "policy.yaml").write_text(policy(f"http://127.0.0.1:{upstream_port}"))
        env = {**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
        command = [
            sys.executable, "-m", "codexgate.cli", "up", "--policy", str(root / "policy.yaml"),
            "--data-dir", str(root / "data"), "--proxy-port", str(proxy_port), "--gateway-port", str(gateway_port),
            "--metrics-port", "0",
        ]  # fmt: skip
        log = (root / "gateway.log").open("wb")
        gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while b"codexgate ready" not in (root / "gateway.log").read_bytes():
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise SystemExit((root / "gateway.log").read_text())
                time.sleep(0.1)
            results = asyncio.run(measure(f"http://127.0.0.1:{gateway_port}/v1", args.requests))
        finally:
            gateway.terminate()
            gateway.wait(10)
            upstream.terminate()
    direct = statistics.median(results["direct"])
    print(f"{args.requests} streamed requests per model, sequential, interleaved\n")
    print("| path | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | p50 added vs direct ms |")
    print("|---|---:|---:|---:|---:|")
    for model, values in results.items():
        ordered = sorted(values)
        p50, p90, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 for q in (0.5, 0.9, 0.99))
        added = (statistics.median(ordered) - direct) * 1000
        print(f"| {model} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {added:+.2f} |")
    print("\n" + json.dumps({m: round(statistics.median(v) * 1000, 3) for m, v in results.items()}))


if __name__ == "__main__":
    main()
