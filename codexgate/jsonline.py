"""JSON encoders made once, for the lines the gateway writes per request.

`json.dumps(obj, separators=..., sort_keys=...)` builds a `JSONEncoder` and then a C encoder on
every call; for the small flat records written per request (write-ahead entry, accounting line,
audit record) that set-up is a good part of the encoding. These are the same C encoder, made
once: the output is byte for byte what `json.dumps` gives with the same settings
(tests/unit/test_records.py checks it). No circular-reference check (records are trees).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make(*, sort_keys: bool, ensure_ascii: bool, allow_nan: bool) -> Callable[[Any], str]:
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


# json.dumps(obj, separators=(",", ":")): the accounting line and the write-ahead entry.
compact = _make(sort_keys=False, ensure_ascii=True, allow_nan=True)
# json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False): the
# audit log's canonical form (codexgate.audit.canonical).
canonical_text = _make(sort_keys=True, ensure_ascii=True, allow_nan=False)
