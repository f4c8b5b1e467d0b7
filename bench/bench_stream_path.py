"""CPU per chunk of codexgate's stream callables on an OpenAI pass-through stream, in process.

The real addons (Meter, then StreamWatch, as the chain orders them) set `flow.response.stream`
on a test flow at `responseheaders`, exactly as in the gateway; the callable they leave is fed
the events of `bench/fake_upstream.py`'s streamed answer, one chunk per event, and then the end
of the stream (`b""`), as mitmproxy calls it. CPU is `time.thread_time`, so other processes on
the machine do not count (they still slow caches). Printed: µs per chunk and per 50-event
stream, best and median of `--repeat` runs; the usage read is checked each stream.

    .venv/bin/python bench/bench_stream_path.py [--streams 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import sse_events  # noqa: E402
from mitmproxy import http  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

from codexgate.addons.meter import Meter  # noqa: E402
from codexgate.addons.upstream_bounds import WATCH_KEY, StreamWatch, _Watch  # noqa: E402
from codexgate.flowstate import METADATA_KEY, GatewayRequest  # noqa: E402
from codexgate.metrics import GatewayMetrics  # noqa: E402


def set_up_stream(meter: Meter | None, watch: StreamWatch | None) -> tuple[http.HTTPFlow, GatewayRequest]:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["content-type"] = "text/event-stream"
    state = GatewayRequest(request_id="bench", policy=None, mode="gateway", endpoint="responses")  # type: ignore[arg-type]
    flow.metadata[METADATA_KEY] = state
    flow.metadata[WATCH_KEY] = _Watch(10, 60, 300, 3600, time.monotonic(), stage="idle")
    if meter is not None:
        meter.responseheaders(flow)
    if watch is not None:
        watch.responseheaders(flow)
    if not flow.response.stream:
        flow.response.stream = True
    return flow, state


def run(label: str, make: Callable[[], tuple[http.HTTPFlow, GatewayRequest]], chunks: list[bytes], streams: int,
        check: bool) -> float:  # fmt: skip
    """CPU seconds for `streams` streams through the callable left on the flow."""
    spent = 0.0
    for _ in range(streams):
        flow, state = make()
        assert flow.response is not None
        stream: Any = flow.response.stream
        start = time.thread_time()
        if callable(stream):
            for chunk in chunks:
                stream(chunk)
            stream(b"")
        spent += time.thread_time() - start
        if check and (state.reader is None or state.reader.usage is None or state.reader.outcome != "completed"):
            raise SystemExit(f"{label}: usage not read")
    return spent


async def main_async(args: argparse.Namespace) -> None:
    chunks = sse_events("gpt-bench", 1, args.events)
    metrics = GatewayMetrics()
    cases: dict[str, tuple[Callable[[], tuple[http.HTTPFlow, GatewayRequest]], bool]] = {
        "Meter only": (lambda: set_up_stream(Meter(metrics), None), True),
        "Meter + StreamWatch (the chain)": (lambda: set_up_stream(Meter(metrics), StreamWatch()), True),
    }
    results: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(args.repeat):
        for label, (make, check) in cases.items():  # interleaved, so drifts hit every case alike
            results[label].append(run(label, make, chunks, args.streams, check))
    print(f"{args.events} events per stream, one chunk each (+ the end); {args.streams} streams x {args.repeat} runs")
    print("| stream callable | µs per chunk, best / median | µs per stream, best / median |")
    print("|---|---:|---:|")
    for label, spent in results.items():
        per_stream = [1e6 * s / args.streams for s in spent]
        per_chunk = [p / (args.events + 1) for p in per_stream]
        print(
            f"| {label} | {min(per_chunk):.2f} / {statistics.median(per_chunk):.2f} "
            f"| {min(per_stream):.1f} / {statistics.median(per_stream):.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
