"""codexgate/sse.py (incremental parser, encoders) and codexgate/usage.py (StreamUsageReader)."""

from __future__ import annotations

import json

import pytest

from codexgate.sse import (
    SSEParser,
    decode_json,
    encode_chat_stream,
    encode_event,
    encode_json,
    encode_responses_stream,
)
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


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.output_text.delta", "delta": "cut mid-emoji \ud83d!"},  # a lone surrogate
        {"type": "response.completed", "response": {"usage": {"input_tokens": 2**70}}},  # beyond 64 bits
        {"type": "response.output_item.done", "item": {1: "a non-str key"}},
    ],
)
def test_encoder_writes_what_orjson_refuses_as_the_stdlib_did(event):
    """The hot path's orjson refuses these; the event still goes out, as the stdlib wrote it."""
    expected = f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
    assert encode_event(event) == expected
    assert encode_json(event) == json.dumps(event, separators=(",", ":")).encode()


def test_encoder_writes_utf8_and_the_same_json():
    event = {"type": "response.output_text.delta", "delta": 'café ✓ 😀 "q" \\ \n\u2028', "n": 1.5e-07}
    data = encode_event(event)
    assert "café ✓ 😀".encode() in data  # UTF-8, not \\u escapes: SSE is UTF-8
    assert [(name, json.loads(text)) for name, text in SSEParser().feed(data)] == [(event["type"], event)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a":NaN,"b":-Infinity}', "nan-inf"),  # orjson refuses both
        (b'{"t":"\\ud83d!"}', {"t": "\ud83d!"}),  # a lone surrogate escape
        (b'{"t":"caf\xe9"}', {"t": "caf\ufffd"}),  # invalid UTF-8: replaced, as the parser's decode did
        (b'{"t":"caf\xc3\xa9","n":[1,2.5,null,true]}', {"t": "café", "n": [1, 2.5, None, True]}),
        ('{"t":"str in"}', {"t": "str in"}),
    ],
)
def test_decoder_reads_what_the_stdlib_read(data, expected):
    value = decode_json(data)
    if expected == "nan-inf":
        assert value["a"] != value["a"] and value["b"] == float("-inf")
    else:
        assert value == expected


def test_decoder_raises_value_error_on_garbage():
    for garbage in (b"{not json", b"", b"\xff\xfe", "[1,"):
        with pytest.raises(ValueError):
            decode_json(garbage)


def test_raw_feed_gives_the_data_bytes_undecoded():
    parser = SSEParser()
    assert parser.feed_raw(STREAM[:48]) == [("first", b"one")]
    assert parser.feed_raw(STREAM[48:]) == [(name, data.encode()) for name, data in EXPECTED[1:]]
    assert parser.pending == b"data: incomplete tail"


def _reference_events(data: bytes) -> list[tuple[str, bytes]]:
    """SSE read line by line (what the parser's shortcuts for the usual shapes must agree with)."""
    events = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n")[:-1]:
        name, lines = "", []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                lines.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                name = line[6:].decode("utf-8", "replace").strip()
        if lines or name:
            events.append((name, b"\n".join(lines)))
    return events


SHAPES = (
    b"data: one\n\ndata:two\n\ndata:  three\n\ndata:\n\ndata: \n\ndata:\tx\n\n"
    b"event: a\ndata: one\n\nevent:b\ndata:two\n\nevent: c \ndata:  three\n\nevent: d\ndata:\n\n"
    b"event: e\ndata: \n\nevent: f\n\nevent:\ndata: x\n\nevent: g\ndata: y\ndata: z\n\n"
    b"event: h\r\ndata: crlf\r\n\r\nevent: \xff\ndata: \xfe\n\nevent: i\nid: 3\ndata: j\n\nevent: k\ndata:"
)


def test_the_usual_shapes_read_as_line_by_line_at_every_split():
    expected = _reference_events(SHAPES)
    assert len(expected) == 17
    for cut in range(len(SHAPES) + 1):
        parser = SSEParser()
        assert parser.feed_raw(SHAPES[:cut]) + parser.feed_raw(SHAPES[cut:]) == expected, cut
        assert parser.pending == b"event: k\ndata:"


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


def reference_reading(data: bytes) -> tuple[int, str | None, str | None, Usage | None]:
    """(events, response id, outcome, usage) read the slow, obvious way: every event parsed."""
    events = SSEParser().feed(data)
    response_id = outcome = usage = None
    for _name, text in events:
        try:
            event = json.loads(text)
        except ValueError:
            continue
        kind = event.get("type")
        if kind == "response.created" and response_id is None:
            response_id = event["response"]["id"]
        terminal = {"response.completed": "completed", "response.incomplete": "incomplete"}
        if kind in terminal or kind == "response.failed":
            outcome = terminal.get(kind, "failed")
            response_id = event["response"]["id"]
            usage = usage_from_responses(event["response"].get("usage")) or usage
    return len(events), response_id, outcome, usage


MIXED_STREAM = (
    encode_event({"type": "response.created", "response": {"id": "resp_mixed", "usage": None}})
    + encode_event({"type": "response.output_text.delta", "delta": "one"})
    + b"\n\n"  # a run of blank lines is no event
    + encode_event({"type": "response.output_text.delta", "delta": 'quoting "response.completed" in text'})
    + encode_event({"type": "response.output_item.done", "item": {"status": "completed"}})
    + b'data: {"type":"response.output_text.delta","delta":"unnamed"}\n\n'
    + encode_event({"type": "response.completed", "response": {"id": "resp_mixed", "usage": USAGE}})
)


def test_responses_reader_agrees_with_reading_every_event_at_every_split():
    """The reader skips most events unparsed: wherever a chunk ends, it counts and reads the same."""
    expected = reference_reading(MIXED_STREAM)
    assert expected == (6, "resp_mixed", "completed", Usage(500, 100, 40, 30))
    for first in range(0, len(MIXED_STREAM) + 1, 5):
        for second in range(first, len(MIXED_STREAM) + 1, 3):
            reader = StreamUsageReader("responses")
            for piece in (MIXED_STREAM[:first], MIXED_STREAM[first:second], MIXED_STREAM[second:]):
                reader.feed(piece)
            assert (reader.events, reader.response_id, reader.outcome, reader.usage) == expected, (first, second)


@pytest.mark.parametrize("variant", ["comments", "crlf"])
def test_responses_reader_comments_and_crlf_still_counted_exactly(variant):
    data = MIXED_STREAM.replace(b"event: response.output_item.done", b": ping\n\nevent: response.output_item.done")
    if variant == "crlf":
        data = MIXED_STREAM.replace(b"\n", b"\r\n")
    expected = reference_reading(data)
    pieces = [part + b"\n\n" for part in data.split(b"\n\n") if part]
    if variant == "crlf":
        pieces = [data[:40], data[40:]]
    reader = StreamUsageReader("responses")
    for piece in pieces:
        reader.feed(piece)
    assert (reader.events, reader.response_id, reader.outcome, reader.usage) == expected


def test_responses_reader_one_event_per_chunk_and_cut_after_the_first():
    """The usual shape (one chunk per event): counted one by one; a stream cut before its end
    still knows its id (from response.created) for the failure event, and has no usage."""
    events = [part + b"\n\n" for part in MIXED_STREAM.split(b"\n\n") if part]
    reader = StreamUsageReader("responses")
    for event in events[:-1]:
        reader.feed(event)
    assert (reader.events, reader.outcome, reader.usage) == (5, None, None)
    assert reader.response_id == "resp_mixed"
    reader.feed(events[-1])
    assert (reader.events, reader.response_id, reader.outcome) == (6, "resp_mixed", "completed")


@pytest.mark.parametrize(
    "response", [{"id": "resp_first", "status": "in_progress"}, {"status": "in_progress", "id": "resp_first"}]
)
def test_responses_reader_takes_the_id_from_response_created_wherever_it_is(response):
    reader = StreamUsageReader("responses")
    reader.feed(encode_event({"type": "response.created", "sequence_number": 0, "response": response}))
    assert reader.response_id == "resp_first"


@pytest.mark.parametrize(
    ("chunks", "mid_event"),
    [
        ([], False),
        ([b'event: response.output_text.delta\ndata: {"delta":"a"}\n\n'], False),  # counted without parsing
        ([b'event: response.output_text.delta\ndata: {"del'], True),  # cut inside the data line
        ([b'event: response.output_text.delta\ndata: {"delta":"a"}\n'], True),  # its blank line not yet sent
        ([b'event: response.output_text.delta\ndata: {"delta":"a"}\n\nevent: response.output_'], True),
        ([b'event: response.output_text.delta\r\ndata: {"delta":"a"}\r\n'], True),  # exact parsing (\r\n)
        ([b'event: response.output_text.delta\r\ndata: {"delta":"a"}\r\n\r\n'], False),
        ([b": keep-alive\n\n", b'event: response.output_text.delta\ndata: {"de'], True),  # exact parsing (comment)
        ([b'event: response.output_text.delta\ndata: {"delta":"a"}\n\n\n'], False),  # a spare blank line ends nothing
    ],
)
def test_the_reader_knows_whether_the_bytes_so_far_stop_inside_an_event(chunks: list[bytes], mid_event: bool) -> None:
    """What a cut stream's failure event is prefixed with depends on it (a blank line when the client
    got half an event), and the reader has seen every byte the client got."""
    reader = StreamUsageReader("responses")
    for chunk in chunks:
        reader.feed(chunk)
    assert reader.mid_event is mid_event


def test_responses_reader_one_chunk_with_a_crlf_event_then_an_lf_event():
    """One `\\n\\n`, at the chunk's end, is not one event when an earlier one ended `\\r\\n\\r\\n` (a
    run of chunks read at once, as the pass-through reads them, can hold both)."""
    delta = b'event: response.output_text.delta\r\ndata: {"type":"response.output_text.delta","delta":"x"}\r\n\r\n'
    completed = encode_event({"type": "response.completed", "response": {"id": "resp_c", "usage": USAGE}})
    reader = StreamUsageReader("responses")
    reader.feed(delta + completed)
    assert (reader.events, reader.outcome, reader.usage) == (2, "completed", Usage(500, 100, 40, 30))
