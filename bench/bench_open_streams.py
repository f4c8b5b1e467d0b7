"""Memory of one gateway process holding many open Codex streams, for fleet sizing.

A fake OpenAI upstream (its own process) answers each streamed Responses request with its first
event and then holds the stream open; N clients keep their streams open through the gateway
(base-URL listener, full chain, embedded store, a per-key budget so every request is metered).
The gateway's resident set size (VmRSS) is read after a warm-up and at each step of open streams.

    python bench/bench_open_streams.py [--steps 1000,2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

# One gateway process, as these figures have always been (bench/bench_workers.py measures --workers).
os.environ.setdefault("CODEXGATE_WORKERS", "1")

KEY = "sk-cg-bench-streams-00000000000000000000000000"
UPSTREAM_KEY = "sk-upstream-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_upstream(port: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from codexgate.policies.schema import MockProvider
    from codexgate.providers import mock
    from codexgate.sse import encode_event

    async def held(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        events = mock.responses_events(body, "bench", 20, MockProvider(kind="mock"))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(encode_event(events[0]))
        if body.get("input") == "hold":
            await asyncio.sleep(3600)  # until the bench ends
        for event in events[1:]:
            await response.write(encode_event(event))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", held)
    web.run_app(app, host="127.0.0.1", port=port, print=None, backlog=4096)


def policy(upstream: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from codexgate.policies.keys import hash_key

    return f"""\
providers:
  up: {{kind: openai, base_url: "{upstream}/v1", keys: [{{value: env:BENCH_UPSTREAM_KEY}}]}}
models:
  bench: {{routes: [{{provider: up}}], price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
teams: {{bench: {{org: bench, budgets: [{{limit_usd: 1000000, period: 1M}}]}}}}
keys:
  - {{name: bench, team: bench, hash: "{hash_key(KEY)}"}}
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def open_stream(session: aiohttp.ClientSession, url: str, opened: asyncio.Queue[int]) -> None:
    body = {"model": "bench", "input": "hold", "stream": True}
    async with session.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200, await response.text()
        await response.content.readuntil(b"\n\n")  # the first event: the stream is open end to end
        await opened.put(1)
        await asyncio.sleep(3600)


async def measure(base_url: str, pid: int, steps: list[int]) -> list[tuple[int, float]]:
    url = f"{base_url}/responses"
    results = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        for _ in range(20):  # warm-up: complete streams
            body = {"model": "bench", "input": "warm", "stream": True}
            async with session.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}) as response:
                await response.read()
        await asyncio.sleep(1)
        results.append((0, rss_mb(pid)))
        opened: asyncio.Queue[int] = asyncio.Queue()
        tasks = []
        total = 0
        for step in steps:
            for _ in range(step - total):
                tasks.append(asyncio.create_task(open_stream(session, url, opened)))
            while opened.qsize() < step:
                await asyncio.sleep(0.1)
                for task in tasks:
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            total = step
            await asyncio.sleep(1)
            results.append((step, rss_mb(pid)))
        for task in tasks:
            task.cancel()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1000,2000", help="open streams at each measurement, ascending")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
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
        gateway = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", gateway_port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            time.sleep(1)
            results = asyncio.run(measure(f"http://127.0.0.1:{gateway_port}/v1", gateway.pid, steps))
        finally:
            gateway.kill()
            upstream.kill()
    base = results[0][1]
    print("open streams | gateway RSS MB | MB per 1,000 streams over idle")
    for count, rss in results:
        per = f"{(rss - base) / count * 1000:.0f}" if count else "-"
        print(f"{count:12d} | {rss:14.0f} | {per}")


if __name__ == "__main__":
    main()
