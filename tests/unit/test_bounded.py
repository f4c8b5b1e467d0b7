"""Bounded reading of client input: decoding under a cap, nesting without recursion, clipping."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import brotli
import pytest
import zstandard

from codexgate.bounded import BodyTooLarge, canonical_object, clip, decode_body, nesting_exceeds

BODY = json.dumps({"model": "gpt-test", "input": "hello " * 2000}).encode()
ENCODED = {
    "gzip": gzip.compress(BODY),
    "deflate": zlib.compress(BODY),
    "br": brotli.compress(BODY),
    "zstd": zstandard.ZstdCompressor().compress(BODY),
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_each_encoding_decodes_under_the_cap_and_refuses_over_it(encoding: str) -> None:
    assert decode_body(ENCODED[encoding], encoding, len(BODY)) == BODY
    with pytest.raises(BodyTooLarge):
        decode_body(ENCODED[encoding], encoding, len(BODY) - 1)


def test_raw_deflate_stacked_encodings_and_identity() -> None:
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = raw_deflate.compress(BODY) + raw_deflate.flush()
    assert decode_body(data, "deflate", len(BODY)) == BODY
    assert decode_body(gzip.compress(zlib.compress(BODY)), "deflate, gzip", len(BODY)) == BODY
    assert decode_body(BODY, "identity", len(BODY)) == BODY


def test_a_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(bytes(64 * 1024 * 1024))
    with pytest.raises(BodyTooLarge):
        decode_body(bomb, "gzip", 1024 * 1024)


@pytest.mark.parametrize(("data", "encoding"), [(b"not gzip", "gzip"), (gzip.compress(BODY)[:-12], "gzip"),
                                                (b"x", "compress")])  # fmt: skip
def test_broken_or_unknown_encodings_are_value_errors(data: bytes, encoding: str) -> None:
    with pytest.raises(ValueError) as raised:
        decode_body(data, encoding, 10**6)
    assert not isinstance(raised.value, BodyTooLarge)


def test_nesting_is_measured_without_recursion() -> None:
    deep = json.loads("[" * 900 + "]" * 900)
    assert nesting_exceeds(deep, 100)
    assert not nesting_exceeds(deep, 900)
    assert nesting_exceeds({"a": {"b": [1]}}, 2) and not nesting_exceeds({"a": {"b": [1]}}, 3)
    assert not nesting_exceeds("scalar", 1)


def test_clip_bounds_and_escapes() -> None:
    assert clip("short") == "short"
    clipped = clip("x" * 10_000, 50)
    assert len(clipped) < 80 and clipped.endswith("(10000 chars)")
    assert "\n" not in clip("line\nbreak")


CODEX_BODY = json.loads((Path(__file__).parents[1] / "fixtures" / "codex_request_tool_round_trip.json").read_text())


def _compact(value: object) -> bytes:
    """As serde_json (Codex), httpx (the Python SDK) and `JSON.stringify` (the Node SDK) write it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_compact_codex_body_is_read_fast_and_as_json_loads_reads_it() -> None:
    raw = _compact(CODEX_BODY)
    body = canonical_object(raw)
    assert body is not None and repr(body) == repr(json.loads(raw))


@pytest.mark.parametrize(
    "raw",
    [
        _compact(CODEX_BODY).replace(b'"model":', b'"model": ', 1),  # one space: not as orjson writes it
        json.dumps(CODEX_BODY).encode(),  # Python's default spacing
        json.dumps(CODEX_BODY, separators=(",", ":")).encode(),  # non-ASCII escaped
        b'{"model":"a","model":"b"}',  # a repeat: written back, it is one key shorter
        b'{"model":"a","input":[{"content":"x","content":"x"}]}',
        b'{"model":"a","\\u006dodel":"b"}',  # the same key once escaped
        b'{"n":1e5}',
        b'{"n":12345678901234567890123}',  # beyond 64 bits: orjson reads a float
        b'{"x":NaN}',
        b'{"s":"\\/"}',
        b'{"s":"\xed\xa0\x80"}',
        b'{"a":1}\n',
        b"[1]",
        b"{}",  # not `{"`: the strict read (no fast path to save)
    ],
)
def test_anything_not_written_back_the_same_is_left_to_the_strict_read(raw: bytes) -> None:
    assert canonical_object(raw) is None
