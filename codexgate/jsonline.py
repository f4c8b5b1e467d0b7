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
  substring test and, when one occurs, checked to start a number (not to be inside a string);
- values orjson refuses (ints beyond 64 bits, lone surrogates, non-string keys): its exception;
- NaN and infinities, which orjson writes as `null` where `json.dumps` writes `NaN` (compact) or
  raises (canonical): the records hold none (prices are validated finite and non-negative), so
  these are not looked for; a line orjson writes is JSON either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

import orjson


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _standard(*, sort_keys: bool, ensure_ascii: bool, allow_nan: bool) -> Callable[[Any], str]:
    """`json.dumps` with these settings, its C encoder made once (json.dumps builds a JSONEncoder
    and a C encoder on every call). No circular-reference check (records are trees)."""
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the standard way
        return lambda obj: json.dumps(
            obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan
        )
    strings = _json_encoder.encode_basestring_ascii if ensure_ascii else _json_encoder.encode_basestring
    encode = make(None, _unencodable, strings, None, ":", ",", sort_keys, False, allow_nan)

    def dumps(obj: Any) -> str:
        return "".join(encode(obj, 0))

    return dumps


_NUMBER_STARTS = b":,["  # what comes before a number in compact JSON (or before its minus sign)
_MANTISSA = b"0123456789."


def _starts_number(line: bytes, at: int) -> bool:
    """Whether a number starts at `line[at]` (a digit there): the byte before it, past a minus sign,
    ends a key, an item or opens an array; inside a string it is anything else (a UUID's hex)."""
    before = line[at - 1] if at > 0 else 0
    if before == 45:  # "-"
        before = line[at - 2] if at > 1 else 0
    return before in _NUMBER_STARTS


def _small_number(line: bytes) -> bool:
    """Whether a number in `line` is below 1e-4 in magnitude as orjson writes it: `0.0000...` or a
    mantissa with a negative exponent. Found by substring, then checked to be a number's (a
    string holding `e-` is common: a UUID, a model name)."""
    at = line.find(b"0.0000")
    while at >= 0:
        if _starts_number(line, at):
            return True
        at = line.find(b"0.0000", at + 6)
    at = line.find(b"e-")
    while at >= 0:
        start = at
        while start > 0 and line[start - 1] in _MANTISSA:
            start -= 1
        if start < at and _starts_number(line, start):
            return True
        at = line.find(b"e-", at + 2)
    return False


def _fast(option: int, standard: Callable[[Any], str]) -> Callable[[Any], str]:
    dumps = orjson.dumps

    def encode(obj: Any) -> str:
        try:
            line = dumps(obj, option=option)
        except TypeError:  # orjson.JSONEncodeError: what it cannot encode, the standard encoder says
            return standard(obj)
        if not line.isascii() or b"\x7f" in line or ((b"0.0000" in line or b"e-" in line) and _small_number(line)):
            return standard(obj)
        return line.decode("ascii")

    return encode


# json.dumps(obj, separators=(",", ":")): the accounting line and the write-ahead entry.
compact = _fast(0, _standard(sort_keys=False, ensure_ascii=True, allow_nan=True))
# json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False): the
# audit log's canonical form (codexgate.audit.canonical).
canonical_text = _fast(orjson.OPT_SORT_KEYS, _standard(sort_keys=True, ensure_ascii=True, allow_nan=False))
