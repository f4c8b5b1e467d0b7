"""JSON encoders for the lines the gateway writes per request (write-ahead entry, accounting line,
audit record): the standard library's bytes, at orjson's speed.

The lines' form is `json.dumps`'s (compact separators, ASCII escapes; the audit log's canonical form
also sorts keys) and must stay so: the audit chain's hashes are over that form, and `verify`
recomputes it from the parsed line. orjson writes the same bytes for nearly every record, 5-10x
faster; where it would not, the line is encoded the standard way instead, so the output is byte
for byte `json.dumps`'s (tests/unit/test_records.py checks it). orjson differs on:

- non-ASCII text (orjson writes UTF-8) and U+007F (orjson leaves it unescaped): the line is not
  pure ASCII without DEL, checked on the bytes;
- floats below 1e-4 (orjson writes `0.00001` and `1.5e-7` where Python writes `1e-05` and
  `1.5e-07`): a number in the line starting `0.0000`, or with a negative exponent, found by a
  substring test and, when one occurs, checked by one regex search to start a number (not to be
  inside a string);
- values orjson refuses (ints beyond 64 bits, lone surrogates, non-string keys): its exception;
- NaN and infinities, which orjson writes as `null` where `json.dumps` writes `NaN` (compact) or
  raises (canonical): the records hold none (prices are validated finite and non-negative), so
  these are not looked for; a line orjson writes is JSON either way.

Each form comes as text (`compact`, `canonical_text`) and as the line a log writes, ASCII bytes
ending in a newline (`compact_line`, `canonical_line`): orjson's own bytes, with no decode and
encode per line (the per-request cost is in calls: each one costs ~1 µs end to end).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

import orjson


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder(*, sort_keys: bool, allow_nan: bool) -> Callable[[Any, int], Any] | None:
    """The C encoder `json.dumps` makes on every call with these settings (compact separators,
    ASCII), made once; None without the C accelerator. No circular-reference check (records are
    trees). `"".join(encoder(obj, 0))` is the text."""
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:
        return None
    return make(None, _unencodable, _json_encoder.encode_basestring_ascii, None, ":", ",", sort_keys, False, allow_nan)  # type: ignore[no-any-return]


def _standard(*, sort_keys: bool, allow_nan: bool) -> Callable[[Any], str]:
    """`json.dumps(obj, separators=(",", ":"), ensure_ascii=True, ...)` with these settings."""
    encode = _c_encoder(sort_keys=sort_keys, allow_nan=allow_nan)
    if encode is None:  # no C accelerator: the standard way
        return lambda obj: json.dumps(
            obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=True, allow_nan=allow_nan
        )

    def dumps(obj: Any) -> str:
        return "".join(encode(obj, 0))

    return dumps


# A number below 1e-4 as orjson writes it: `0.0000...` or a mantissa with a negative exponent, after
# what starts a number in compact JSON (`:`, `,` or `[`, then an optional minus sign); inside a
# string a `0.0000` or `e-` follows anything else (a UUID's hex) and does not count. The mantissa
# run `[0-9.]+` is the whole run before `e-` (neither a start byte nor a minus sign is part of it).
_MANTISSA = b"0123456789."
_NUMBER_START = (b":", b",", b"[")


def _small_number(line: bytes) -> bool:
    """Whether a number in `line` is below 1e-4 in magnitude as orjson writes it: `0.0000...` or a
    mantissa with a negative exponent (a string holding `e-` is common: a UUID, a model name; it
    does not count). What the pattern `[:,\\[]-?(?:0\\.0000|[0-9.]+e-)` finds, looked for from each
    occurrence of the two markers (C `find`s and a strip), not by a regex trying every position of
    the line (3.9 µs on a 600-byte record; tests/unit/test_records.py checks they agree)."""
    at = line.find(b"e-")
    while at != -1:
        before = line[:at].rstrip(_MANTISSA)
        if len(before) != at:  # a mantissa run ends right at `e-`
            if before[-1:] == b"-":
                before = before[:-1]
            if before[-1:] in _NUMBER_START:
                return True
        at = line.find(b"e-", at + 2)
    at = line.find(b"0.0000")
    while at != -1:
        before = line[:at]
        if before[-1:] == b"-":
            before = before[:-1]
        if before[-1:] in _NUMBER_START:
            return True
        at = line.find(b"0.0000", at + 1)
    return False


def _fast(option: int, standard: Callable[[Any], str]) -> Callable[[Any], str]:
    dumps = orjson.dumps

    def encode(obj: Any) -> str:
        try:
            line = dumps(obj, option=option)
        except TypeError:  # orjson.JSONEncodeError: what it cannot encode, the standard encoder says
            return standard(obj)
        # The substring tests cost no call; the search runs only when one of them holds.
        if not line.isascii() or b"\x7f" in line or ((b"0.0000" in line or b"e-" in line) and _small_number(line)):
            return standard(obj)
        return line.decode("ascii")

    return encode


def _fast_line(option: int, sort_keys: bool, allow_nan: bool) -> Callable[[Any], bytes]:
    """`(encode(obj) + "\n").encode("ascii")` of `_fast`'s encoder with these settings, as orjson's
    bytes when they are the standard form (no decode and encode again: the line goes to `os.write`
    as bytes); otherwise the C encoder's text, called inline."""
    dumps = orjson.dumps
    option |= orjson.OPT_APPEND_NEWLINE
    c_encoder = _c_encoder(sort_keys=sort_keys, allow_nan=allow_nan)
    if c_encoder is None:  # no C accelerator: json.dumps's text, as one part
        slow = _standard(sort_keys=sort_keys, allow_nan=allow_nan)
        c_encoder = lambda obj, _indent: (slow(obj),)  # noqa: E731
    standard = c_encoder

    def encode_line(obj: Any) -> bytes:
        try:
            line = dumps(obj, option=option)
        except TypeError:  # orjson.JSONEncodeError: what it cannot encode, the standard encoder says
            return ("".join(standard(obj, 0)) + "\n").encode("ascii")
        if not line.isascii() or b"\x7f" in line or ((b"0.0000" in line or b"e-" in line) and _small_number(line)):
            return ("".join(standard(obj, 0)) + "\n").encode("ascii")
        return line

    return encode_line


# json.dumps(obj, separators=(",", ":")): the accounting line and the write-ahead entry.
compact = _fast(0, _standard(sort_keys=False, allow_nan=True))
# json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False): the
# audit log's canonical form (codexgate.audit.canonical).
canonical_text = _fast(orjson.OPT_SORT_KEYS, _standard(sort_keys=True, allow_nan=False))
# The same two forms as ASCII bytes with a newline: one line of a log, ready for os.write.
compact_line = _fast_line(0, sort_keys=False, allow_nan=True)
canonical_line = _fast_line(orjson.OPT_SORT_KEYS, sort_keys=True, allow_nan=False)
