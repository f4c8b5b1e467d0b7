"""The per-request record's encoders: byte for byte what `json.dumps` gives, and the audit chain's
one-pass line equal to the canonical form of the record with its hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import random
import types

import pytest

from codexgate import records
from codexgate.audit import canonical, chained_line, record_hash
from codexgate.flowstate import Decision, GatewayRequest
from codexgate.jsonline import _small_number, canonical_line, canonical_text, compact, compact_line
from codexgate.records import (
    AUDIT_FIELDS,
    audit_fields,
    forwarded_entry,
    identity,
    recovered_record,
    usage_fields,
    utc_iso,
)
from codexgate.usage import Usage

RECORDS = [
    {},
    {"a": 1},
    {"zeta": None, "alpha": [1, 2.5, {"y": "é", "x": "\ud800"}], "hash_like": "h", "decision": Decision.FORWARDED},
    {"seq": 3, "prev": "0" * 64, "time": "2026-12-07T05:00:00.000Z", "usage": {"output_tokens": 7, "input_tokens": 11},
     "cost_usd": 1.34e-4, "content": 'a "quoted", text,"key":"x"', "guardrail_findings": ["b", "a"], "ha": True},
    {"seq": 1, "prev": "0" * 64},  # nothing sorts before "hash"
    {"a": 1, "b": 2},  # nothing sorts after "hash"
    # What chained_line's stand-in for the hash looks like, in a string and as a nested member.
    {"content": '"hash":"<hash>"', "error": '{"hash":"<hash>"}', "seq": 2, "prev": "1" * 64},
    {"usage": {"hash": "<hash>"}, "seq": 2, "prev": "1" * 64},
    {"attempts": [{"hash": "<hash>"}], "body_sha256": {"hash": "<hash>", "x": 1}, "seq": 2},
    {"hash_": {"hash": "x"}, "ha": {"hash": "<hash>"}},
    # Where orjson's bytes differ from json.dumps's, and the encoders fall back to the standard form:
    # floats below 1e-4, DEL, ints past 64 bits (and non-string keys, below).
    {"cost_usd": 1.2e-05, "b": -3.5e-07, "c": [1e-05], "d": 0.0001, "e": 1.5e-20, "f": 5e-324, "g": 1e16},
    {"content": "a\x7fb", "n": 2**64, "m": -(2**63) - 1},
    {"content": "numbers in text: :0.00001 ,1e-5 [2e-7", "x": 0.5},
]  # fmt: skip


@pytest.mark.parametrize("record", [*RECORDS, {1: "one", 2: "two"}])
def test_encoders_match_json_dumps(record: dict) -> None:
    assert compact(record) == json.dumps(record, separators=(",", ":"))
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    assert canonical_text(record) == expected


def test_nan_and_infinity_are_written_as_null_and_unencodable_values_refused() -> None:
    # Never the `NaN` that json.dumps would write (not JSON): the records hold no such value (prices
    # are validated finite); were one there, its line is still JSON, and its hash verifies.
    assert canonical_text({"x": math.nan, "y": -math.inf}) == '{"x":null,"y":null}'
    assert compact({"x": math.inf}) == '{"x":null}'
    with pytest.raises(TypeError):
        canonical_text({"x": object()})


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("key", [None, b"secret"])
def test_chained_line_is_the_canonical_record_with_its_hash(record: dict, key: bytes | None) -> None:
    digest, line = chained_line(record, key)
    payload = canonical(record)
    assert digest == (hmac.new(key, payload, hashlib.sha256) if key else hashlib.sha256(payload)).hexdigest()
    assert digest == record_hash(payload, key)
    assert line == canonical({**record, "hash": digest}) + b"\n"


def reference_audit_fields(record: dict, body_sha256: str | None) -> dict:
    """audit_fields as it was first written: one `get` per field."""
    fields = {"time": utc_iso(record["ts"])}
    for name in AUDIT_FIELDS:
        fields[name] = record.get(name)
    fields["body_sha256"] = body_sha256
    if record.get("error") is not None:
        fields["error"] = record["error"]
    if record.get("recovered"):
        fields["recovered"] = True
    return fields


LIVE_RECORD = {
    "request_id": "0f8e7d6c", "mode": "gateway", "endpoint": "responses", "session_id": "s", "key": "alice",
    "team": "platform", "org": "acme", "model_requested": "m", "model": "m", "provider": "openai",
    "upstream_model": "m-1", "ts": 1765000000.123, "transport": "http", "stream": True, "decision": "forwarded",
    "status": 200, "error": None, "stream_outcome": "completed",
    "usage": {"input_tokens": 12, "cached_tokens": 0, "output_tokens": 40, "reasoning_tokens": 0},
    "cost_usd": 0.000415, "charge": "actual", "output_cap": None, "attempts": None, "duration_ms": 1.2, "ttfb_ms": 0.9,
}  # fmt: skip


@pytest.mark.parametrize(
    "record",
    [
        LIVE_RECORD,
        {**LIVE_RECORD, "error": "upstream reset", "decision": "upstream_error", "status": 502, "usage": None},
        recovered_record({"id": "r1", "key": "alice", "stream": True, "ts": 1.5}, 0.25, "crash", 1765000001.0),
    ],
)
@pytest.mark.parametrize("body_sha256", ["ab" * 32, None])
def test_audit_fields_and_their_line_are_what_they_were(record: dict, body_sha256: str | None) -> None:
    """The audit line of a live and of a recovered record (which has no `transport`), byte for byte."""
    fields = audit_fields(record, body_sha256)
    expected = reference_audit_fields(record, body_sha256)
    assert fields == expected
    digest, line = chained_line({**fields, "seq": 7, "prev": "1" * 64}, b"k")
    assert line == canonical({**expected, "seq": 7, "prev": "1" * 64, "hash": digest}) + b"\n"


@pytest.mark.parametrize("epoch", [0.0, 1_765_000_000.0, 1_765_000_000.9995, 1_765_000_000.9999996, 1_765_000_123.4567])
def test_utc_iso_is_datetimes_iso_form_in_milliseconds(epoch: float) -> None:
    expected = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert utc_iso(epoch) == expected


def reference_request_record(state: GatewayRequest, status: int | None, error: str | None, now: float) -> dict:
    """request_record as first written: `identity(state)`, then the outcome's fields."""
    usage = state.usage if state.usage is not None or state.reader is None else state.reader.usage
    record = identity(state)
    record.update(
        ts=round(now, 3), transport=state.transport, stream=state.stream, decision=state.decision.value,
        status=status, error=error, stream_outcome=state.reader.outcome if state.reader is not None else None,
        usage=usage_fields(usage), cost_usd=round(state.cost_usd, 12) if state.cost_usd is not None else None,
        charge=state.charge_basis, output_cap=state.metering.output_cap if state.metering is not None else None,
        attempts=state.attempts, duration_ms=round((now - state.started) * 1000, 1),
        ttfb_ms=round((state.first_byte - state.started) * 1000, 1) if state.first_byte else None,
    )  # fmt: skip
    return record


@pytest.mark.parametrize("full", [True, False])
def test_request_record_is_identity_then_the_outcome(monkeypatch: pytest.MonkeyPatch, full: bool) -> None:
    """The accounting line's fields and their order: identity's first (the write-ahead entry's)."""
    now = 1_765_000_000.4567
    monkeypatch.setattr(records, "time", types.SimpleNamespace(time=lambda: now))
    state = GatewayRequest(request_id="r-1", policy=None, mode="gateway", started=now - 1.25)  # type: ignore[arg-type]
    if full:
        state.endpoint, state.session_id, state.team, state.org = "responses", "s", "platform", "acme"
        state.key = types.SimpleNamespace(name="alice")  # type: ignore[assignment]
        state.model_requested, state.model, state.provider, state.upstream_model = "m", "m", "openai", "m-1"
        state.decision, state.stream, state.transport = Decision.FORWARDED, True, "ws"
        state.usage, state.cost_usd, state.charge_basis = Usage(5, 1, 9, 2), 0.00012345678901234, "actual"
        state.first_byte, state.attempts = now - 1.0, [{"provider": "openai", "status": 200}]
    record = records.request_record(state, 200 if full else None, None if full else "reset")
    expected = reference_request_record(state, 200 if full else None, None if full else "reset", now)
    assert compact(record) == compact(expected)
    assert list(record)[: len(identity(state))] == list(identity(state))


@pytest.mark.parametrize("record", [*RECORDS, {1: "one", 2: "two"}])
def test_line_encoders_are_the_text_encoders_with_a_newline(record: dict) -> None:
    assert compact_line(record) == (compact(record) + "\n").encode("ascii")
    assert canonical_line(record) == (canonical_text(record) + "\n").encode("ascii")


def reference_small_number(line: bytes) -> bool:
    """The small-number check as first written: each `0.0000` and `e-` found, then a scan back
    over the mantissa and the byte before the number (past a minus sign)."""

    def starts_number(at: int) -> bool:
        before = line[at - 1] if at > 0 else 0
        if before == 45:  # "-"
            before = line[at - 2] if at > 1 else 0
        return before in b":,["

    at = line.find(b"0.0000")
    while at >= 0:
        if starts_number(at):
            return True
        at = line.find(b"0.0000", at + 6)
    at = line.find(b"e-")
    while at >= 0:
        start = at
        while start > 0 and line[start - 1] in b"0123456789.":
            start -= 1
        if start < at and starts_number(start):
            return True
        at = line.find(b"e-", at + 2)
    return False


def test_small_number_search_is_the_scan_it_replaced() -> None:
    lines = [
        b'{"a":1.5e-7}', b'{"a":-1e-5}', b'[1e-5]', b'{"id":"ab1e-5"}', b'{"a":"x:0.00001"}', b'{"a":0.0001}',
        b'{"a":-0.00001,"b":2}', b'{"a":"-e-"}', b'{"a":.e-1}', b'0.00001', b'e-', b'{"a":0.0000.0000}',
    ]  # fmt: skip
    generator = random.Random(17)
    lines += [bytes(generator.choice(b':,[-0.e5a"{}') for _ in range(generator.randint(0, 14))) for _ in range(50_000)]
    for line in lines:
        assert _small_number(line) == reference_small_number(line), line


def reference_forwarded_entry(state: GatewayRequest, now: float) -> dict:
    """forwarded_entry as first written: `identity(state)`, `request_id` renamed `id`, then its own fields."""
    entry = identity(state)
    entry["id"] = entry.pop("request_id")
    metering = state.metering
    estimate = metering.estimate if metering is not None else None
    entry.update(
        ts=round(now, 3), stream=state.stream, reserved=bool(metering is not None and metering.reserved),
        estimate=[estimate.usd, estimate.requests, estimate.tokens] if estimate is not None else None,
    )  # fmt: skip
    return entry


@pytest.mark.parametrize("full", [True, False])
def test_forwarded_entry_is_identity_then_its_own_fields(full: bool) -> None:
    now = 1_765_000_000.4567
    state = GatewayRequest(request_id="r-1", policy=None, mode="gateway", started=now - 1.25)  # type: ignore[arg-type]
    if full:
        state.endpoint, state.session_id, state.team, state.org = "responses", "s", "platform", "acme"
        state.key = types.SimpleNamespace(name="alice")  # type: ignore[assignment]
        state.model_requested, state.model, state.provider, state.upstream_model = "m", "m", "openai", "m-1"
        state.stream = True
        estimate = types.SimpleNamespace(usd=0.0000125, requests=1.0, tokens=4096.0)
        state.metering = types.SimpleNamespace(estimate=estimate, reserved=True)  # type: ignore[assignment]
    entry = forwarded_entry(state, now)
    expected = reference_forwarded_entry(state, now)
    assert list(entry) == list(expected)
    assert compact_line(entry) == (json.dumps(expected, separators=(",", ":")) + "\n").encode("ascii")
