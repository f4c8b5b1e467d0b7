"""codexgate/sse.py (incremental parser, encoders) and codexgate/usage.py (StreamUsageReader)."""

from __future__ import annotations

import json

import pytest

from codexgate.sse import SSEParser, encode_chat_stream, encode_event, encode_responses_stream
from codexgate.usage import StreamUsageReader, Usage, usage_from_body, usage_from_chat, usage_from_responses

STREAM = (
    b": keep-alive comment\n\n"
    b"event: first\ndata: one\n\n"
    b"event: multi\r\ndata: line 1\r\ndata:line 2\r\ndata:  indented\r\n\r\n"
    b'id: 7\nretry: 100\ndata: {"t": "caf\xc3\xa9 \xe2\x9c\x93"}\n\n'
    b"data:\n\n"
    b"data: incomplete tail"
)
EXPECTED = [
    ("first", "one"),
    ("multi", "line 1\nline 2\n indented"),
    ("", '{"t": "caf\u00e9 \u2713"}'),
    ("", ""),
]


def parse_in_pieces(data: bytes, cuts: list[int]) -> list[tuple[str, str]]:
    parser = SSEParser()
    events = []
    start = 0
    for cut in [*cuts, len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events


def test_parse_whole():
    assert SSEParser().feed(STREAM) == EXPECTED


def test_every_single_split_point():
    for cut in range(len(STREAM) + 1):
        assert parse_in_pieces(STREAM, [cut]) == EXPECTED, cut


def test_every_pair_of_split_points():
    for first in range(0, len(STREAM) + 1, 3):
        for second in range(first, len(STREAM) + 1):
            assert parse_in_pieces(STREAM, [first, second]) == EXPECTED, (first, second)


def test_byte_by_byte_and_tail_completion():
    parser = SSEParser()
    events = []
    for index in range(len(STREAM)):
        events += parser.feed(STREAM[index : index + 1])
    assert events == EXPECTED
    assert parser.feed(b"\r\n\r\n") == [("", "incomplete tail")]


def test_encoders_round_trip():
    events = [
        {"type": "response.created", "response": {"id": "r"}},
        {"type": "response.output_text.delta", "delta": "a\nb"},
    ]
    body = encode_responses_stream(events)
    assert body.startswith(b"event: response.created\ndata: {")
    assert encode_event(events[0]) == body[: len(encode_event(events[0]))]
    assert [(name, json.loads(data)) for name, data in SSEParser().feed(body)] == [(e["type"], e) for e in events]

    chunks = [{"id": "c", "choices": [{"delta": {"content": "x"}}]}]
    chat = encode_chat_stream(chunks)
    assert chat.endswith(b"data: [DONE]\n\n")
    parsed = SSEParser().feed(chat)
    assert [json.loads(parsed[0][1])] == chunks
    assert parsed[1] == ("", "[DONE]")


USAGE = {
    "input_tokens": 500,
    "input_tokens_details": {"cached_tokens": 100},
    "output_tokens": 40,
    "output_tokens_details": {"reasoning_tokens": 30},
    "total_tokens": 540,
}


def responses_stream(terminal: str, named: bool = True, usage=USAGE) -> bytes:
    events = [
        {"type": "response.created", "response": {"id": "resp_9", "status": "in_progress", "usage": None}},
        # a delta mentioning a terminal event must not be taken for one
        {"type": "response.output_text.delta", "delta": 'say "response.completed" and failed"'},
        {"type": terminal, "response": {"id": "resp_9", "usage": usage}},
    ]
    if named:
        return encode_responses_stream(events)
    return b"".join(f"data: {json.dumps(event)}\r\n\r\n".encode() for event in events)


@pytest.mark.parametrize(
    ("terminal", "outcome"),
    [("response.completed", "completed"), ("response.incomplete", "incomplete"), ("response.failed", "failed")],
)
@pytest.mark.parametrize("named", [True, False])
def test_responses_reader_outcomes(terminal, outcome, named):
    data = responses_stream(terminal, named)
    for size in (1, 7, 50, len(data)):
        reader = StreamUsageReader("responses")
        for start in range(0, len(data), size):
            reader.feed(data[start : start + size])
        assert reader.outcome == outcome
        assert reader.response_id == "resp_9"
        assert reader.usage == Usage(input_tokens=500, cached_tokens=100, output_tokens=40, reasoning_tokens=30)
        assert reader.events == 3


def test_responses_reader_cut_short_and_failed_without_usage():
    data = responses_stream("response.completed")
    reader = StreamUsageReader("responses")
    reader.feed(data[: data.index(b"event: response.completed")])
    assert reader.outcome is None
    assert reader.usage is None

    reader = StreamUsageReader("responses")
    reader.feed(responses_stream("response.failed", usage=None))
    assert reader.outcome == "failed"
    assert reader.usage is None


def test_chat_reader_usage_chunk_and_done():
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "usage"}}], "usage": None},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {
            "id": "c",
            "choices": [],
            "usage": {
                "prompt_tokens": 21,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 3},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        },
    ]
    data = encode_chat_stream(chunks).replace(b"\n", b"\r\n")
    for size in (1, 13, len(data)):
        reader = StreamUsageReader("chat")
        for start in range(0, len(data), size):
            reader.feed(data[start : start + size])
        assert reader.outcome == "done"
        assert reader.usage == Usage(input_tokens=21, cached_tokens=3, output_tokens=5, reasoning_tokens=2)

    reader = StreamUsageReader("chat")
    reader.feed(encode_chat_stream(chunks[:2])[: -len(b"data: [DONE]\n\n")])
    assert reader.outcome is None
    assert reader.usage is None


def test_usage_normalisation_rejects_garbage():
    assert usage_from_responses(None) is None
    assert usage_from_chat("x") is None
    assert usage_from_responses({"input_tokens": -5, "output_tokens": "7", "input_tokens_details": None}) == Usage()
    assert usage_from_body("responses", {"usage": USAGE}).input_tokens == 500
    assert usage_from_body("chat", {"usage": {"prompt_tokens": 4}}).input_tokens == 4
    assert usage_from_body("chat", []) is None
    assert Usage(1, 2, 3, 4).as_dict() == {
        "input_tokens": 1,
        "cached_tokens": 2,
        "output_tokens": 3,
        "reasoning_tokens": 4,
    }
