"""The Anthropic stream bridge's shortest path (`TextDeltaBridge`: a text or thinking delta, encoded
by the item's `encoded_delta`) writes the bytes the general path
(`providers.family.StreamBridge`) writes, chunk by chunk, on ordinary and odd streams alike."""

from __future__ import annotations

import json
import random
from typing import Any, cast

import orjson
import pytest

from codexgate.providers import anthropic
from codexgate.providers.anthropic.stream import TextDeltaBridge
from codexgate.providers.family import StreamBridge
from codexgate.providers.responses import MessageItem, ReasoningItem, ResponseContext


def ctx() -> ResponseContext:
    return ResponseContext(
        response_id="resp_bridge01", model="gpt-5.5", provider_name="claude", created_at=1_800_000_000
    )


def sse(event: dict[str, Any] | str, name: str | None = None) -> bytes:
    """One event as Anthropic writes it (`event` as data text when a str: written as it is)."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    kind = name if name is not None else (event["type"] if isinstance(event, dict) else "content_block_delta")
    return f"event: {kind}\ndata: {data}\n\n".encode("utf-8", "surrogatepass")


def start(index: int = 0, kind: str = "text") -> bytes:
    block: dict[str, Any] = {"type": kind, kind if kind != "redacted_thinking" else "data": ""}
    return sse({"type": "content_block_start", "index": index, "content_block": block})


def text(piece: Any, index: Any = 0, kind: str = "text_delta") -> bytes:
    return sse({"type": "content_block_delta", "index": index, "delta": {"type": kind, "text": piece}})


def thinking(piece: Any, index: Any = 0, kind: str = "thinking_delta") -> bytes:
    return sse({"type": "content_block_delta", "index": index, "delta": {"type": kind, "thinking": piece}})


HEAD = [
    sse({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    sse({"type": "ping"}),
]
TAIL = [
    sse({"type": "content_block_stop", "index": 0}),
    sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
    sse({"type": "message_stop"}),
]
ODD_TEXTS = [" ", "\n", "Hello", " wörld", " “quoted” \"and\" \\back\\slash\t", "\U0001f600 ✓", "</script>",
             "\u2028\u2029", "\x00\x1f", "", "   "]  # fmt: skip

STREAMS: dict[str, list[bytes]] = {
    "plain": [*HEAD, start(), *(text(" token") for _ in range(20)), *TAIL],
    "whitespace first, odd texts": [*HEAD, start(), *(text(piece) for piece in ODD_TEXTS), *TAIL],
    # a lone surrogate (a model cut mid-emoji): the standard encoder writes that event
    "lone surrogate": [
        *HEAD,
        start(),
        text("a"),
        sse('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\\ud83d"}}'),
        text("b"),
        *TAIL,
    ],  # fmt: skip
    "odd shapes": [
        *HEAD,
        start(),
        text("a"),
        text("float index", index=0.0),
        text("bool index", index=False),
        text("no block", index=3),
        text(7),
        text(None),
        text(["x"]),
        text("thinking kind", kind="thinking_delta"),
        sse('{"index":0,"delta":{"type":"text_delta","text":"no type"}}'),
        sse('{"type":"content_block_delta","index":0,"delta":"text"}'),
        sse('{"type":"content_block_delta","index":0}'),
        sse(
            '{"type":"message_delta","index":0,"delta":{"type":"text_delta","text":"another type"}}',
            name="content_block_delta",
        ),
        sse('["content_block_delta"]'),
        sse('"text"'),
        sse("7"),
        sse(""),
        sse("  "),
        sse(' {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"spaced"}} '),
        sse('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"nan","x":NaN}}'),
        b'event: content_block_delta\ndata: {"type":"content_block_delta",\n'
        b'data: "index":0,"delta":{"type":"text_delta","text":"two lines"}}\n\n',
        b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"crlf"}}\r\n\r\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"cr"}}\r\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"extra blank"}}\n\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"two in one"}}\n\n' + text("second"),
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"bad \xff utf8"}}\n\n',
        text("last"),
        b"event: content_block_delta\ndata: \xff\xfe\n\n",
        sse("{not json"),
        text("failed"),
        *TAIL,
    ],  # fmt: skip
    "thinking then text then a tool": [
        *HEAD,
        start(0, "thinking"),
        text("hmm", kind="thinking_delta"),
        sse({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        sse({"type": "content_block_stop", "index": 0}),
        start(1),
        text("Sure", 1),
        text(" thing", 1),
        sse({"type": "content_block_stop", "index": 1}),
        sse(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {}},
            }
        ),
        sse({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        text("into a tool", 2),
        sse({"type": "content_block_stop", "index": 2}),
        text("after its stop", 1),
        *TAIL[1:],
    ],  # fmt: skip
    "two text blocks, never stopped": [
        *HEAD,
        start(0),
        text("one"),
        start(1),
        text("two", 1),
        text("three"),
        *TAIL[1:],
    ],  # fmt: skip
    "thinking at length": [
        *HEAD,
        start(0, "thinking"),
        *(thinking(piece) for piece in ODD_TEXTS),
        thinking(3),
        thinking(None),
        thinking("as text", kind="text_delta"),
        text("text into thinking"),
        thinking("by index", index=0.0),
        sse({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}),
        sse('{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"\\udc00"}}'),
        thinking(" more"),
        sse({"type": "content_block_stop", "index": 0}),
        thinking("after its stop"),
        start(1, "redacted_thinking"),
        thinking("into redacted", 1),
        sse({"type": "content_block_stop", "index": 1}),
        start(2),
        thinking("thinking into text", 2),
        text("Done", 2),
        thinking("again", 2),
        text(" here", 2),
        sse({"type": "content_block_stop", "index": 2}),
        *TAIL[1:],
    ],  # fmt: skip
    # two events by SSE (the first one's JSON cut: the answer fails), one JSON object by its text
    "a blank line in the data": [
        *HEAD,
        start(),
        text("a"),
        text("b"),
        b"event: content_block_delta\ndata: "
        b'{"type":"content_block_delta",\n\n"index":0,"delta":{"type":"text_delta",'
        b'"text":"split"}}\n\n',
        text("c"),
        *TAIL,
    ],  # fmt: skip
    "cut short": [*HEAD, start(), text("half"), text(" an answer")],
    "error mid-answer": [
        *HEAD,
        start(),
        text("half"),
        text(" more"),
        sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        text("after the end"),
    ],  # fmt: skip
    "after the end": [*HEAD, start(), text("done"), text("!"), *TAIL, text("late")],
    "a refusal": [
        *HEAD,
        start(),
        text("I"),
        sse({"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 2}}),
        text(" won't"),
        sse({"type": "message_stop"}),
    ],  # fmt: skip
}


def count_shortest(monkeypatch: pytest.MonkeyPatch) -> dict[type, int]:
    """The deltas `encoded_delta` encoded (the shortest path), by the item's type, from now on."""
    taken = {MessageItem: 0, ReasoningItem: 0}
    for item_type in taken:

        def counted(item: Any, piece: str, encoded_delta: Any = item_type.encoded_delta) -> bytes | None:
            out = encoded_delta(item, piece)
            taken[type(item)] += out is not None
            return cast(bytes | None, out)

        monkeypatch.setattr(item_type, "encoded_delta", counted)
    return taken


def run(bridge_type: type[StreamBridge], chunks: list[bytes]) -> tuple[list[bytes], StreamBridge]:
    bridge = bridge_type(anthropic.StreamDecoder(), anthropic.StreamTranslator(ctx()))
    out = [bridge.feed(chunk) for chunk in chunks]
    out.append(bridge.feed(b"") + bridge.finish())
    out.append(bridge.finish())  # nothing after the terminal event
    return out, bridge


def rechunk(chunks: list[bytes], seed: int) -> list[bytes]:
    raw, sizes, pieces, at = b"".join(chunks), random.Random(seed), [], 0
    while at < len(raw):
        size = sizes.choice([1, 7, 64, 300, len(raw)])
        pieces.append(raw[at : at + size])
        at += size
    return pieces


@pytest.mark.parametrize("name", list(STREAMS))
def test_the_shortest_path_writes_the_general_paths_bytes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = count_shortest(monkeypatch)
    for chunks in [STREAMS[name], *(rechunk(STREAMS[name], seed) for seed in range(4))]:
        general, general_bridge = run(StreamBridge, chunks)
        fast, fast_bridge = run(TextDeltaBridge, chunks)
        assert fast == general
        assert fast_bridge.events_out == general_bridge.events_out
        assert (fast_bridge.usage, fast_bridge.outcome) == (general_bridge.usage, general_bridge.outcome)
        assert fast_bridge.translator.response == general_bridge.translator.response
    assert (
        taken[MessageItem] + taken[ReasoningItem] > 0
    )  # the shortest path was taken (one event per chunk, past the first text)


@pytest.mark.parametrize("whole", [False, True], ids=["a chunk per event", "one chunk"])
def test_every_text_delta_but_the_first_takes_the_shortest_path(whole: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = count_shortest(monkeypatch)
    chunks = [b"".join(STREAMS["plain"])] if whole else STREAMS["plain"]
    assert run(TextDeltaBridge, chunks)[0] == run(StreamBridge, chunks)[0]
    assert taken == {MessageItem: 19, ReasoningItem: 0}  # of 20 deltas: the first announces the message


def test_thinking_deltas_take_the_shortest_path_too(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = count_shortest(monkeypatch)
    chunks = [*HEAD, start(0, "thinking"), *(thinking(f" step {n}") for n in range(10)), *TAIL]
    assert run(TextDeltaBridge, chunks)[0] == run(StreamBridge, chunks)[0]
    assert taken == {MessageItem: 0, ReasoningItem: 9}  # of 10: the first opens the summary


@pytest.mark.parametrize("name", list(STREAMS))
def test_each_events_data_is_decoded_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delta the shortest path reads and leaves (a tool's arguments, a signature, the first text
    of a message, an odd shape) goes to the general path with what orjson read of it, not read
    again: as many orjson reads as the general path makes (one per event), chunk by chunk."""
    from codexgate.providers.anthropic import stream

    reads = [0]

    class CountedOrjson:
        def __getattr__(self, attribute: str) -> Any:
            return getattr(orjson, attribute)

        @staticmethod
        def loads(data: Any) -> Any:
            reads[0] += 1
            return orjson.loads(data)

    monkeypatch.setattr(stream, "orjson", CountedOrjson())
    for chunks in [STREAMS[name], rechunk(STREAMS[name], 1)]:
        reads[0] = 0
        run(StreamBridge, chunks)
        general = reads[0]
        reads[0] = 0
        run(TextDeltaBridge, chunks)
        assert reads[0] == general
