"""Latency of a 10-turn Codex session through the gateway: Responses over WebSocket vs HTTP.

One gateway (full addon chain, base-URL listener) in front of a fake OpenAI upstream in its own
process that streams a short SSE answer. A session is what Codex sends for ten turns: the request
of a real Codex 0.169 turn (tests/fixtures, ~20 KB: instructions, tools, history) whose input grows
by the last answer and a new user message each turn.

- `http`: ten `POST /v1/responses`, each with the whole conversation (Codex over HTTP);
- `ws`: one socket, Codex's warm-up, then ten `response.create` — after the first, each carries
  `previous_response_id` and only the new items (Codex on a reused socket); the gateway expands
  them and serves each as a governed POST through its own listener;
- `direct`: the HTTP session straight to the upstream (the floor: no gateway);
- `ws-layer` (with `--websocket-layer`): `ws` on a second gateway with mitmproxy's `rawtcp` off, so
  mitmproxy's WebSocket layer relays the socket message by message instead of as raw bytes.

Per turn: request sent → `response.completed` received (and → first text delta). Sessions run one
at a time, the three paths taking turns, so drift on a shared machine hits them alike.

    python bench/bench_websocket.py [--sessions 20] [--websocket-layer]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

# One gateway process, as these figures have always been (bench/bench_workers.py measures --workers).
os.environ.setdefault("CODEXGATE_WORKERS", "1")

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-cg-bench-websocket-000000000000000000000000"
UPSTREAM_KEY = "sk-upstream-bench"
TURNS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_upstream(port: int) -> None:
    sys.path.insert(0, str(ROOT))
    from codexgate.policies.schema import MockProvider
    from codexgate.providers import mock
    from codexgate.sse import encode_responses_stream

    settings = MockProvider(kind="mock", output_tokens=24)

    async def answer(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        events = mock.responses_events(body, body["model"], 100, settings)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(encode_responses_stream(events))
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/responses", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def policy(upstream: str) -> str:
    sys.path.insert(0, str(ROOT))
    from codexgate.policies.keys import hash_key

    return f"""\
providers:
  openai: {{kind: openai, base_url: "{upstream}/v1", keys: [{{value: env:BENCH_UPSTREAM_KEY}}]}}
models:
  gpt-bench: {{routes: [{{provider: openai}}], price: {{input_per_mtok: 1, output_per_mtok: 8}}}}
teams: {{bench: {{org: bench}}}}
keys:
  - {{name: bench, team: bench, hash: "{hash_key(KEY)}"}}
"""


def base_request() -> dict[str, Any]:
    request = json.loads((ROOT / "tests" / "fixtures" / "codex_request_tool_round_trip.json").read_text())
    request["model"] = "gpt-bench"
    request.pop("client_metadata", None)
    return dict(request)


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


class Turn:
    __slots__ = ("completed", "first_delta", "output", "response_id")

    def __init__(self) -> None:
        self.first_delta: float | None = None
        self.completed = 0.0
        self.output: list[Any] = []
        self.response_id = ""

    def see(self, event: dict[str, Any], started: float) -> bool:
        kind = event.get("type")
        if kind == "response.output_text.delta" and self.first_delta is None:
            self.first_delta = time.perf_counter() - started
        elif kind == "response.output_item.done":
            self.output.append(event["item"])
        elif kind in ("response.completed", "response.failed", "error"):
            assert kind == "response.completed", event
            self.completed = time.perf_counter() - started
            self.response_id = event["response"]["id"]
            return True
        return False


async def http_session(http: aiohttp.ClientSession, url: str, session_id: str) -> list[Turn]:
    from codexgate.sse import SSEParser

    request, turns = base_request(), []
    headers = {"authorization": f"Bearer {KEY}", "session-id": session_id}
    for number in range(TURNS):
        request["input"] = [*request["input"], user(f"turn {number}: tell me more")]
        turn, parser, started = Turn(), SSEParser(), time.perf_counter()
        async with http.post(url, data=json.dumps(request), headers=headers) as answer:
            assert answer.status == 200, await answer.text()
            async for chunk in answer.content.iter_any():
                for _, data in parser.feed(chunk):
                    turn.see(json.loads(data), started)
        assert turn.completed, "no response.completed"
        request["input"] = [*request["input"], *turn.output]
        turns.append(turn)
    return turns


async def ws_session(http: aiohttp.ClientSession, url: str, session_id: str) -> list[Turn]:
    """As Codex on one socket: warm-up, then each turn as previous_response_id + the new item."""
    request, turns = base_request(), []
    headers = {"authorization": f"Bearer {KEY}", "session-id": session_id}
    async with http.ws_connect(url, headers=headers, max_msg_size=0) as connection:

        async def send(message: dict[str, Any]) -> Turn:
            turn, started = Turn(), time.perf_counter()
            await connection.send_str(json.dumps({"type": "response.create", **message}))
            while True:
                received = await connection.receive(timeout=60)
                assert received.type == aiohttp.WSMsgType.TEXT, received
                if turn.see(json.loads(received.data), started):
                    return turn

        previous = (await send({**request, "generate": False})).response_id
        for number in range(TURNS):
            turn = await send({**request, "previous_response_id": previous, "input": [user(f"turn {number}: more")]})
            previous = turn.response_id
            turns.append(turn)
    return turns


async def ws_path(http: aiohttp.ClientSession, url: str, label: str, number: int) -> list[Turn]:
    return await ws_session(http, url, f"{label}-{number}")


async def measure(gateways: dict[str, str], upstream: str, sessions: int) -> dict[str, list[list[Turn]]]:
    """gateways: label -> base URL; the first serves `http` and `ws`, others `ws` under their label."""
    async with aiohttp.ClientSession(trust_env=False) as http:
        main_url = next(iter(gateways.values()))
        runs: dict[str, Callable[[int], Awaitable[list[Turn]]]] = {
            "direct": lambda n: http_session(http, f"{upstream}/v1/responses", f"direct-{n}"),
            "http": lambda n: http_session(http, f"{main_url}/v1/responses", f"http-{n}"),
        }
        for label, url in gateways.items():
            runs[label] = functools.partial(ws_path, http, f"{url.replace('http://', 'ws://')}/v1/responses", label)
        results: dict[str, list[list[Turn]]] = {path: [] for path in runs}
        for run in runs.values():  # warm-up
            await run(-1)
        for number in range(sessions):
            for path, run in runs.items():
                results[path].append(await run(number))
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_gateway(root: Path, upstream: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir()
    (root / "policy.yaml").write_text(policy(upstream))
    proxy_port, gateway_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "codexgate.cli", "up", "--policy", str(root / "policy.yaml"),
        "--data-dir", str(root / "data"), "--proxy-port", str(proxy_port), "--gateway-port", str(gateway_port),
        "--metrics-port", "0", *extra,
    ]  # fmt: skip
    with (root / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
        )
    deadline = time.monotonic() + 30
    while b"codexgate ready" not in (root / "gateway.log").read_bytes():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit((root / "gateway.log").read_text())
        time.sleep(0.1)
    return process, gateway_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="10-turn sessions per path")
    parser.add_argument(
        "--websocket-layer", action="store_true",
        help="also path `ws-layer`: a second gateway with rawtcp off, so mitmproxy's WebSocket layer relays the socket",
    )  # fmt: skip
    args = parser.parse_args()
    upstream_port = free_port()
    upstream_process = multiprocessing.Process(target=run_upstream, args=(upstream_port,), daemon=True)
    upstream_process.start()
    upstream = f"http://127.0.0.1:{upstream_port}"
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        try:
            gateways: dict[str, str] = {}
            variants: dict[str, list[str]] = {"ws": []}
            if args.websocket_layer:
                variants["ws-layer"] = ["--set", "rawtcp=false"]
            for label, extra in variants.items():
                process, port = start_gateway(root / label, upstream, extra)
                processes.append(process)
                gateways[label] = f"http://127.0.0.1:{port}"
            sys.path.insert(0, str(ROOT))
            results = asyncio.run(measure(gateways, upstream, args.sessions))
            accounted = [
                json.loads(line) for line in (root / "ws" / "data" / "accounting.jsonl").read_text().splitlines()
            ]
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
            upstream_process.terminate()
    ws_lines = [line for line in accounted if line["transport"] == "ws"]
    expected = (args.sessions + 1) * TURNS
    assert len(ws_lines) == expected, f"{len(ws_lines)} ws accounting lines, expected {expected}"
    body = len(json.dumps(base_request()))
    print(f"{args.sessions} sessions of {TURNS} turns per path, one session at a time, paths taking turns;")
    print(f"first request body {body / 1024:.0f} KB, growing each turn\n")
    print("| path | turn p50 ms | turn p90 ms | turn p99 ms | first delta p50 ms | session p50 ms | turn p50 vs http |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    http_p50 = statistics.median(t.completed for s in results["http"] for t in s)
    summary = {}
    for path, sessions in results.items():
        turns = [t.completed for s in sessions for t in s]
        deltas = [t.first_delta for s in sessions for t in s if t.first_delta is not None]
        totals = [sum(t.completed for t in s) for s in sessions]
        p50 = statistics.median(turns)
        summary[path] = round(p50 * 1000, 3)
        print(
            f"| {path} | {p50 * 1000:.2f} | {percentile(turns, 0.9) * 1000:.2f} | {percentile(turns, 0.99) * 1000:.2f}"
            f" | {statistics.median(deltas) * 1000:.2f} | {statistics.median(totals) * 1000:.1f}"
            f" | {(p50 - http_p50) * 1000:+.2f} |"
        )
    # Sessions ran in turns (direct, http, ws, ...): the difference within each round is what drift
    # on a shared machine disturbs least.
    for path in [p for p in results if p.startswith("ws")]:
        paired = [
            statistics.median(w.completed for w in ws) - statistics.median(h.completed for h in http)
            for http, ws in zip(results["http"], results[path], strict=True)
        ]
        difference = statistics.median(paired) * 1000
        summary[f"{path}_minus_http_paired_ms"] = round(difference, 3)
        print(f"\n{path} − http, median over rounds of each round's turn p50 difference: {difference:+.2f} ms", end="")
    print()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
