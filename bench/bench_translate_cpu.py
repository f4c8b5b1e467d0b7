"""CPU per translated stream, in process: what the Translate addon spends turning a provider's
stream into Responses events (issue #17).

The stream is the one `bench_overhead.py`'s Anthropic path answers (`fake_upstream.anthropic_events`:
message_start, a text block of N - 5 deltas, message_delta with the usage, message_stop; 50 events
by default), one chunk per event as the fake writes them. Each stream goes through the Translate
addon as mitmproxy drives it for a routed Codex request: `responseheaders` (which builds the
family's `StreamBridge` and installs the stream callable), the stream callable fed chunk by chunk
and then `b""` (end of stream), `response` (usage from the translator). The request is prepared by
the real Anthropic family (`family.prepare` on a Codex-shaped body) outside the clock, like the
flows; CPU by `time.thread_time_ns` around the three calls only, so other processes add noise,
not their own time. Each stream's output is checked (every event, usage read) in the warm-up batch.

    .venv/bin/python bench/bench_translate_cpu.py                  # 7 batches of 400 streams
    .venv/bin/python bench/bench_translate_cpu.py --calls          # calls per stream: no noise at all
    .venv/bin/python bench/bench_translate_cpu.py --profile /tmp/xlate.prof
    .venv/bin/python bench/bench_translate_cpu.py --events 200 --chunk 1400   # longer, network-sized chunks

`--calls` counts the function calls (Python and C: `sys.setprofile`'s call and c_call events) per
stream, split by phase, as `bench_chain_cpu.py --calls` does for the whole chain: the same on every
run and machine.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

from mitmproxy import http
from mitmproxy.test import tflow

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import anthropic_events  # noqa: E402

from codexgate.addons.translate import Translate  # noqa: E402
from codexgate.flowstate import METADATA_KEY, GatewayRequest, Translation  # noqa: E402
from codexgate.policies.schema import AnthropicProvider, SecretRef  # noqa: E402
from codexgate.providers.family import new_context  # noqa: E402
from codexgate.providers.registry import family_for  # noqa: E402

MODEL = "claude-bench"
UPSTREAM_MODEL = "claude-sonnet-4-5"
PROVIDER = "anthropic"


def stream_chunks(number: int, events: int, chunk: int) -> list[bytes]:
    """The fake upstream's Anthropic stream; one chunk per event, or cut into `chunk`-byte pieces."""
    pieces = anthropic_events(UPSTREAM_MODEL, number, events)
    if chunk <= 0:
        return pieces
    data = b"".join(pieces)
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


class Streams:
    """Makes the flows of translated requests as `Translate.responseheaders` finds them."""

    def __init__(self, events: int, chunk: int) -> None:
        self.family = family_for(AnthropicProvider(kind="anthropic", keys=[SecretRef(value="env:UNUSED")]))
        self.events, self.chunk = events, chunk
        self.number = 0

    def flow(self) -> tuple[http.HTTPFlow, list[bytes]]:
        self.number += 1
        body = {"model": MODEL, "input": "Say hello.", "stream": True}  # what bench_overhead.py sends
        flow = tflow.tflow()
        flow.request = http.Request.make(
            "POST", "http://127.0.0.1:4000/v1/responses", json.dumps(body, separators=(",", ":")).encode(),
            {"content-type": "application/json", "accept": "text/event-stream"},
        )  # fmt: skip
        prepared = self.family.prepare(body, UPSTREAM_MODEL, PROVIDER)
        # The policy is not read on the stream path (Translate reads the translation, the id).
        state = GatewayRequest(request_id=f"req-{self.number}", policy=cast(Any, None), mode="gateway", stream=True)
        state.endpoint, state.model, state.provider, state.upstream_model = "responses", MODEL, PROVIDER, UPSTREAM_MODEL
        state.translation = Translation(self.family, prepared, new_context(MODEL, PROVIDER))
        flow.metadata[METADATA_KEY] = state
        response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        response.content = None  # a streamed body: mitmproxy sets no content until the end
        flow.response = response
        return flow, stream_chunks(self.number, self.events, self.chunk)


def run(addon: Translate, flow: http.HTTPFlow, chunks: list[bytes]) -> list[bytes]:
    """One answer through the addon, as mitmproxy drives it; what the client got."""
    addon.responseheaders(flow)
    assert flow.response is not None
    stream = flow.response.stream
    assert callable(stream)
    out: list[bytes] = []
    for chunk in chunks:
        out += stream(chunk)
    out += stream(b"")
    addon.response(flow)
    return out


def check(flow: http.HTTPFlow, out: list[bytes], events: int) -> int:
    """The translated answer is a whole Responses stream with the upstream's usage; its event count."""
    body = b"".join(out)
    blocks = [block for block in body.split(b"\n\n") if block]
    kinds = [block.split(b"\n", 1)[0].removeprefix(b"event: ").decode() for block in blocks]
    datas = [json.loads(block.split(b"\ndata: ", 1)[1]) for block in blocks]
    expected_deltas = events - 5
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:2]
    assert kinds[-1] == "response.completed", kinds[-1]
    assert kinds.count("response.output_text.delta") == expected_deltas, kinds
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    assert datas[-1]["response"]["output"][0]["content"][0]["text"] == " token" * expected_deltas
    state = flow.metadata[METADATA_KEY]
    assert state.usage is not None and (state.usage.input_tokens, state.usage.output_tokens) == (12, 7), state.usage
    return len(blocks)


class CallCounter:
    """Counts the calls made while it is installed (`sys.setprofile`): call and c_call events."""

    def __init__(self) -> None:
        self.calls = 0

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self.calls += 1

    def start(self) -> None:
        sys.setprofile(self._profile)

    def stop(self) -> None:
        sys.setprofile(None)
        self.calls -= 1  # sys.setprofile(None) itself is a c_call


def count_calls(streams: Streams, runs: int) -> None:
    addon = Translate()
    phases: collections.Counter[str] = collections.Counter()
    for index in range(runs + 20):  # 20 unreported: caches and first-use paths
        flow, chunks = streams.flow()
        counter = CallCounter()
        assert flow.response is not None
        counter.start()
        addon.responseheaders(flow)
        counter.stop()
        phases["responseheaders"] += counter.calls if index >= 20 else 0
        stream = flow.response.stream
        assert callable(stream)
        counter = CallCounter()
        counter.start()
        for chunk in chunks:
            stream(chunk)
        stream(b"")
        counter.stop()
        phases[f"stream callable ({len(chunks)} chunks + end)"] += counter.calls if index >= 20 else 0
        counter = CallCounter()
        counter.start()
        addon.response(flow)
        counter.stop()
        phases["response"] += counter.calls if index >= 20 else 0
    total = sum(phases.values()) / runs
    print(f"{total:.0f} calls per translated stream ({streams.events} Anthropic events):")
    for phase, count in phases.items():
        print(f"  {count / runs:7.1f}  {phase}")


def measure(args: argparse.Namespace) -> None:
    streams = Streams(args.events, args.chunk)
    if args.calls:
        count_calls(streams, args.per_batch)
        return
    addon = Translate()
    profiler = cProfile.Profile() if args.profile else None
    whole: list[float] = []
    callable_only: list[float] = []
    events_out = 0
    for batch in range(args.batches + 1):  # the first batch warms up, unreported, and checks the output
        work = [streams.flow() for _ in range(args.per_batch)]
        if batch == 0:
            for flow, chunks in work:
                events_out = check(flow, run(addon, flow, chunks), args.events)
            continue
        if profiler is not None:
            profiler.enable()
        clock = time.thread_time_ns
        total = stream_total = 0
        for flow, chunks in work:
            start = clock()
            addon.responseheaders(flow)
            stream = flow.response.stream  # type: ignore[union-attr]
            began = clock()
            for chunk in chunks:
                stream(chunk)  # type: ignore[operator]
            stream(b"")  # type: ignore[operator]
            ended = clock()
            addon.response(flow)
            total += clock() - start
            stream_total += ended - began
        if profiler is not None:
            profiler.disable()
        whole.append(total / args.per_batch / 1000)
        callable_only.append(stream_total / args.per_batch / 1000)
    chunks_per_stream = len(stream_chunks(1, args.events, args.chunk))
    print(
        f"{args.events} Anthropic events in {chunks_per_stream} chunks -> {events_out} Responses events per stream; "
        f"median of {args.batches} batches of {args.per_batch}" + (" [cProfile on: inflated]" if profiler else "")
    )
    for label, values in (("stream callable", callable_only), ("responseheaders + callable + response", whole)):
        median = statistics.median(values)
        print(
            f"  {label}: {median:.1f} µs per stream, {median / args.events:.2f} µs per upstream event "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=50, help="Anthropic events per stream (>= 6)")
    parser.add_argument("--chunk", type=int, default=0, help="cut the stream into N-byte chunks (0: one per event)")
    parser.add_argument("--batches", type=int, default=7, help="measured batches")
    parser.add_argument("--per-batch", type=int, default=400, help="streams per batch")
    parser.add_argument("--calls", action="store_true", help="count the calls per stream instead of timing")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured batches into FILE and print the top")
    parser.add_argument("--profile-lines", type=int, default=40)
    args = parser.parse_args()
    if args.events < 6:
        parser.error("--events must be >= 6")
    measure(args)


if __name__ == "__main__":
    main()
