"""Reading what a client sends without letting it decide how much work that is.

`decode_body` inflates a request body under a cap on the *decoded* size, checked while
decompressing (a 1 MB gzip body can inflate to 1 GiB); `nesting_exceeds` measures JSON nesting
without recursion; `unique_object` refuses a JSON object that names a key twice, and
`canonical_object` reads the common body that cannot name one twice at half the cost; `clip` bounds
a client string before it is written anywhere.
"""

from __future__ import annotations

import zlib
from typing import Any

import brotli
import orjson
import zstandard

# Input is fed to the decompressors in slices this large, so that no single call can produce
# much more than the cap even where a library has no output limit of its own.
_SLICE = 16 * 1024
_PIECE = 1024 * 1024  # output per step: the cap is checked at most this far past it


class BodyTooLarge(ValueError):
    """The decoded body would be larger than the cap."""


def _zlib(raw: bytes, limit: int, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = raw
    while pending:
        # max_length bounds each call's output; the input it did not get to stays in unconsumed_tail.
        piece = inflater.decompress(pending, _PIECE)
        out += piece
        if len(out) > limit:
            raise BodyTooLarge(f"decoded body exceeds {limit} bytes")
        pending = inflater.unconsumed_tail
        if not piece and not pending:
            break
    out += inflater.flush()
    if len(out) > limit:
        raise BodyTooLarge(f"decoded body exceeds {limit} bytes")
    if not inflater.eof:
        raise ValueError("truncated body")
    return bytes(out)


def _brotli(raw: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    out = bytearray()
    view = memoryview(raw)
    for start in range(0, len(raw), _SLICE):
        if not decompressor.can_accept_more_data():
            raise BodyTooLarge(f"decoded body exceeds {limit} bytes")
        out += decompressor.process(view[start : start + _SLICE], output_buffer_limit=_PIECE)
        if len(out) > limit:
            raise BodyTooLarge(f"decoded body exceeds {limit} bytes")
    while not decompressor.is_finished() and not decompressor.can_accept_more_data():
        out += decompressor.process(b"", output_buffer_limit=_PIECE)
        if len(out) > limit:
            raise BodyTooLarge(f"decoded body exceeds {limit} bytes")
    if not decompressor.is_finished():
        raise ValueError("truncated brotli body")
    return bytes(out)


def _zstd(raw: bytes, limit: int) -> bytes:
    out = bytearray()
    with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        while piece := reader.read(_PIECE):
            out += piece
            if len(out) > limit:
                raise BodyTooLarge(f"decoded body exceeds {limit} bytes")
    return bytes(out)


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body with its content-encoding(s) removed, at most `limit` bytes decoded.
    Raises BodyTooLarge past the cap, ValueError for an unknown or broken encoding."""
    encodings = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
    body = raw
    # Encodings are listed in the order they were applied: undo the last one first.
    for encoding in reversed(encodings):
        try:
            if encoding in ("identity", "none"):
                continue
            if encoding in ("gzip", "x-gzip"):
                body = _zlib(body, limit, 16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                try:
                    body = _zlib(body, limit, zlib.MAX_WBITS)
                except zlib.error:  # raw deflate, as some clients send it
                    body = _zlib(body, limit, -zlib.MAX_WBITS)
            elif encoding == "br":
                body = _brotli(body, limit)
            elif encoding == "zstd":
                body = _zstd(body, limit)
            else:
                raise ValueError(f"unsupported content-encoding {encoding!r}")
        except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
            raise ValueError(f"body is not valid {encoding}: {exc}") from None
    if len(body) > limit:
        raise BodyTooLarge(f"body exceeds {limit} bytes")
    return body


class DuplicateKey(Exception):  # not a ValueError: not one of the JSON syntax errors
    """A JSON object names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` of the JSON decoder reading a request body: the object, unless a key
    repeats. JSON leaves a repeated key to the parser (Python's keeps the last value, others the
    first or refuse), and a body the gateway forwards as it came would be checked with one value and
    served with the other: `{"model": "forbidden", "model": "allowed"}`. One dict per object, built
    in C; only its size is compared (~30 % more than the plain decoder on a Codex body)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def canonical_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object `raw` encodes when `raw` is byte for byte what orjson writes for it, else
    None (read it with `unique_object` then). That is the compact form Codex (serde_json), the
    official SDKs (httpx, `JSON.stringify`) send: no spaces, UTF-8 unescaped. Such a body names no
    key twice, since the object written back from a parse that kept one value per key is the body
    itself; and anything orjson would read differently from `json.loads` (a number out of range, an
    escaped character, NaN, a lone surrogate, trailing space) is not written back the same, so it
    takes the strict way. About half the strict way's cost on a Codex body (parse, write, compare);
    a body that starts like one (`{"`) but is not pays both, at most ~1.5 times the strict way."""
    if raw[:2] != b'{"':
        return None
    try:
        body = orjson.loads(raw)
        if orjson.dumps(body) != raw:
            return None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return body  # type: ignore[no-any-return]


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether parsed JSON nests deeper than `limit`: walked level by level (no recursion), each
    level one list comprehension, so a Codex body of a few hundred containers costs microseconds."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
    return bool(level)


def clip(text: str, limit: int = 120) -> str:
    """A client string as it may be written to a log or message: bounded and printable."""
    shown = text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"
    return shown.encode("unicode_escape").decode("ascii") if not shown.isprintable() else shown
