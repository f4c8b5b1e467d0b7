"""The per-request record's encoders: byte for byte what `json.dumps` gives, and the audit chain's
one-pass line equal to the canonical form of the record with its hash."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from codexgate.audit import canonical, chained_line, record_hash
from codexgate.flowstate import Decision
from codexgate.jsonline import canonical_text, compact
from codexgate.records import utc_iso

RECORDS = [
    {},
    {"a": 1},
    {"zeta": None, "alpha": [1, 2.5, {"y": "é", "x": "\ud800"}], "hash_like": "h", "decision": Decision.FORWARDED},
    {"seq": 3, "prev": "0" * 64, "time": "2026-12-07T05:00:00.000Z", "usage": {"output_tokens": 7, "input_tokens": 11},
     "cost_usd": 1.34e-4, "content": 'a "quoted", text,"key":"x"', "guardrail_findings": ["b", "a"], "ha": True},
    {"seq": 1, "prev": "0" * 64},  # nothing sorts before "hash"
    {"a": 1, "b": 2},  # nothing sorts after "hash"
]  # fmt: skip


@pytest.mark.parametrize("record", RECORDS)
def test_encoders_match_json_dumps(record: dict) -> None:
    assert compact(record) == json.dumps(record, separators=(",", ":"))
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    assert canonical_text(record) == expected


def test_canonical_refuses_nan_and_unencodable_values() -> None:
    with pytest.raises(ValueError):
        canonical_text({"x": math.nan})
    with pytest.raises(TypeError):
        canonical_text({"x": object()})


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("key", [None, b"secret"])
def test_chained_line_is_the_canonical_record_with_its_hash(record: dict, key: bytes | None) -> None:
    digest, line = chained_line(record, key)
    assert digest == record_hash(canonical(record), key)
    assert line == canonical({**record, "hash": digest}) + b"\n"


@pytest.mark.parametrize("epoch", [0.0, 1_765_000_000.0, 1_765_000_000.9995, 1_765_000_000.9999996, 1_765_000_123.4567])
def test_utc_iso_is_datetimes_iso_form_in_milliseconds(epoch: float) -> None:
    expected = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert utc_iso(epoch) == expected
