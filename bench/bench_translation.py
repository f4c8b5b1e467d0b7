"""Per-event cost of translating a long streamed answer into Responses API events.

For each provider family, a realistic long answer (N text deltas, then usage and the stop) is
encoded in the provider's own wire format — SSE for Anthropic, Gemini and Chat Completions,
AWS event-stream frames for Bedrock — by the SDK-validated fakes in tests/fakes, cut into
network-sized chunks, and pushed through the gateway's `StreamBridge` (decoder + translator +
SSE encoder), exactly as the `Translate` addon does per chunk. The pass-through reader
(`StreamUsageReader`, used for OpenAI answers) is measured on the same kind of stream.

    python bench/bench_translation.py [--deltas 2000] [--repeat 5] [--chunk 1400]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import anthropic_upstream as anthropic_fake  # noqa: E402
from fakes import bedrock_upstream as bedrock_fake  # noqa: E402
from fakes import chat_upstream as chat_fake  # noqa: E402
from fakes import gemini_upstream as gemini_fake  # noqa: E402

from codexgate.policies.schema import (  # noqa: E402
    AnthropicProvider,
    BedrockProvider,
    ChatProvider,
    GeminiProvider,
    MockProvider,
    SecretRef,
)
from codexgate.providers import mock  # noqa: E402
from codexgate.providers.family import new_context  # noqa: E402
from codexgate.providers.registry import family_for  # noqa: E402
from codexgate.sse import encode_responses_stream  # noqa: E402
from codexgate.usage import StreamUsageReader  # noqa: E402

WORD = "token "
KEY = [SecretRef(value="env:UNUSED")]


def request_body() -> dict[str, Any]:
    return {"model": "bench", "stream": True, "input": "write a long answer", "tools": []}


def anthropic_stream(deltas: int) -> bytes:
    reply = anthropic_fake.Reply(content=[{"type": "text", "text": WORD * deltas}])
    message = anthropic_fake.build_message(reply, "claude-sonnet-4-5")
    events = anthropic_fake.message_events(message, reply)
    # The fake streams a text block in a few big pieces; a real answer has one delta per token.
    expanded: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"].get("type") == "text_delta":
            continue
        expanded.append(event)
        if event["type"] == "content_block_start" and event["content_block"]["type"] == "text":
            expanded += [
                {"type": "content_block_delta", "index": event["index"], "delta": {"type": "text_delta", "text": WORD}}
                for _ in range(deltas)
            ]
    return anthropic_fake.encode_sse(expanded)


def gemini_stream(deltas: int) -> bytes:
    chunks = [gemini_fake.chunk([gemini_fake.text_part(WORD)]) for _ in range(deltas - 1)]
    chunks.append(gemini_fake.chunk([gemini_fake.text_part(WORD)], "STOP", gemini_fake.usage_metadata(900, deltas)))
    return b"".join(f"data: {json.dumps(chunk)}\r\n\r\n".encode() for chunk in chunks)


def bedrock_stream(deltas: int) -> bytes:
    events = bedrock_fake.stream_events([bedrock_fake.Text(WORD * deltas)], "end_turn")
    return bedrock_fake.encode_stream(events)


def chat_stream(deltas: int) -> bytes:
    chunks = [chat_fake.chunk({"role": "assistant", "content": ""})]
    chunks += [chat_fake.chunk({"content": WORD}) for _ in range(deltas)]
    chunks += [chat_fake.chunk({}, "stop"), chat_fake.chunk(empty_choices=True, usage=chat_fake.usage(900, deltas))]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def openai_stream(deltas: int) -> bytes:
    settings = MockProvider(kind="mock", output_tokens=deltas)
    events = mock.responses_events(request_body(), "gpt-5.5", 900, settings)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    at = events.index(delta)
    others = [e for e in events if e["type"] != "response.output_text.delta"]
    stream = others[:at] + [dict(delta, delta=WORD) for _ in range(deltas)] + others[at:]
    for number, event in enumerate(stream):
        event["sequence_number"] = number
    return encode_responses_stream(stream)


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_bridge(family: Any, upstream_model: str, chunks: list[bytes]) -> tuple[float, int]:
    prepared = family.prepare(request_body(), upstream_model, "bench")
    bridge = family.stream(prepared, new_context("bench", "bench"))
    start = time.perf_counter()
    for chunk in chunks:
        bridge.feed(chunk)
    bridge.finish()
    elapsed = time.perf_counter() - start
    assert bridge.outcome == "completed", bridge.outcome
    return elapsed, bridge.events_out


def run_reader(chunks: list[bytes]) -> tuple[float, int]:
    reader = StreamUsageReader("responses")
    start = time.perf_counter()
    for chunk in chunks:
        reader.feed(chunk)
    elapsed = time.perf_counter() - start
    assert reader.outcome == "completed"
    return elapsed, reader.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deltas", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=1400, help="network chunk size in bytes")
    args = parser.parse_args()

    families: list[tuple[str, Callable[[], tuple[float, int]]]] = []
    cases = [
        ("anthropic", family_for(AnthropicProvider(kind="anthropic", keys=KEY)), "claude-sonnet-4-5",
         anthropic_stream),
        ("gemini", family_for(GeminiProvider(kind="gemini", keys=KEY)), "gemini-2.5-flash", gemini_stream),
        ("bedrock", family_for(BedrockProvider(kind="bedrock", region="us-east-1")),
         "anthropic.claude-sonnet-4-5-20250929-v1:0", bedrock_stream),
        ("chat (groq)", family_for(ChatProvider(kind="chat", preset="groq", keys=KEY)), "llama-3.3-70b", chat_stream),
    ]  # fmt: skip
    for name, family, model, make in cases:
        chunks = cut(make(args.deltas), args.chunk)
        families.append((name, functools.partial(run_bridge, family, model, chunks)))
    openai_chunks = cut(openai_stream(args.deltas), args.chunk)
    families.append(("openai pass-through (usage reader)", lambda: run_reader(openai_chunks)))

    print(f"{args.deltas} text deltas per answer, {args.chunk}-byte chunks, best and median of {args.repeat} runs\n")
    print("| family | Responses events out | µs/event (best) | µs/event (median) | ms per answer (median) |")
    print("|---|---|---|---|---|")
    for name, run in families:
        run()  # warm-up
        results = [run() for _ in range(args.repeat)]
        events = results[0][1]
        per_event = [elapsed / events * 1e6 for elapsed, _ in results]
        print(
            f"| {name} | {events} | {min(per_event):.1f} | {statistics.median(per_event):.1f} | "
            f"{statistics.median(e for e, _ in results) * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
