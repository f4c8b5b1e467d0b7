"""The per-request record: built once from a request's state, shared by every log that keeps one.

Three logs keep a line per governed request, each a view of the same facts:

- the write-ahead log (`addons/write_ahead.py`): `forwarded_entry`, before the request leaves;
- the accounting log (`addons/accounting.py`): `request_record`, once the answer is complete;
- the audit log (`addons/audit_log.py`): `audit_fields` of that same record, plus the body's hash.

`request_record` is built once per request (the first of Accounting and AuditLog to run builds it,
the other reuses it), so both logs say the same time, decision and cost, and a request costs one
record's work. A request recovered after a crash gets its record from its write-ahead entry
(`recovered_record`), in the same shape.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import operator
import time
from typing import Any

from codexgate.flowstate import Decision, GatewayRequest
from codexgate.usage import Usage

# What the audit log keeps of a request record (besides `time`, `body_sha256` and, when set,
# `error`, `content` and `guardrail_findings`): who, what was asked, what was served, the cost.
AUDIT_FIELDS = (
    "ts", "request_id", "session_id", "mode", "transport", "endpoint", "key", "team", "org", "model_requested", "model",
    "provider", "upstream_model", "usage", "cost_usd", "charge", "status", "decision",
)  # fmt: skip
# The same names in key order, and all their values in one C call (every field is in a live
# request's record; `audit_fields` falls back to `get` for a recovered one).
_AUDIT_NAMES = tuple(sorted(AUDIT_FIELDS))
_audit_values = operator.itemgetter(*_AUDIT_NAMES)
_AUDIT_KEYS = ("body_sha256", *_AUDIT_NAMES)  # what `audit_fields` builds, in that order


def utc_iso(epoch: float) -> str:
    """2026-12-07T05:00:00.123Z: `datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")`
    (microseconds rounded half to even, then cut to milliseconds), its seconds formatted once a second."""
    seconds = math.floor(epoch)
    micro = round((epoch - seconds) * 1e6)
    if micro >= 1_000_000:
        seconds, micro = seconds + 1, micro - 1_000_000
    return f"{_second(seconds)}.{micro // 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def usage_fields(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def _who(state: GatewayRequest) -> dict[str, Any]:
    """`identity` but the request id: who asked for what, and where it went."""
    key = state.key
    return {
        "mode": state.mode,
        "endpoint": state.endpoint,
        "session_id": state.session_id,
        "key": key.name if key is not None else None,
        "team": state.team,
        "org": state.org,
        "model_requested": state.model_requested,
        "model": state.model,
        "provider": state.provider,
        "upstream_model": state.upstream_model,
    }


def identity(state: GatewayRequest) -> dict[str, Any]:
    """Who asked for what, and where it went: the fields every record of the request carries."""
    return {"request_id": state.request_id, **_who(state)}


def forwarded_entry(state: GatewayRequest, now: float | None = None) -> dict[str, Any]:
    """The write-ahead line of a request about to leave: who, what, and the estimate it reserved.

    `identity(state)` with `request_id` renamed `id` (and so moved after the others), then the
    entry's own fields: one literal, in that order (the line's bytes follow it)."""
    metering = state.metering
    estimate = metering.estimate if metering is not None else None
    return {
        **_who(state),
        "id": state.request_id,
        "ts": round(time.time() if now is None else now, 3),
        "stream": state.stream,
        "reserved": bool(metering is not None and metering.reserved),
        "estimate": [estimate.usd, estimate.requests, estimate.tokens] if estimate is not None else None,
    }


def request_record(state: GatewayRequest, status: int | None, error: str | None) -> dict[str, Any]:
    """The request's record once its answer is complete (or broke): built on the first call and
    kept on the state, so the accounting line and the audit record are one record's views.

    An error while the request was still in flight makes it an `upstream_error` (the state too),
    whichever log asks first."""
    record = state.record
    if record is not None:
        return record
    if error is not None and state.decision.in_flight:
        state.decision = Decision.UPSTREAM_ERROR
    now = time.time()
    usage = state.usage
    if usage is None and state.reader is not None:
        usage = state.reader.usage  # a stream that broke off: what it reported so far
    reader = state.reader
    metering = state.metering
    cost = state.cost_usd
    first_byte = state.first_byte
    # `identity(state)`'s fields first, then the outcome's: one literal (the line's bytes follow this
    # order). `_value_` is the enum member's value as a plain attribute (`.value` is a descriptor:
    # two Python calls).
    record = {
        "request_id": state.request_id,
        **_who(state),
        "ts": round(now, 3),
        "transport": state.transport,
        "stream": state.stream,
        "decision": state.decision._value_,
        "status": status,
        "error": error,
        "stream_outcome": reader.outcome if reader is not None else None,
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "cached_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        },
        "cost_usd": round(cost, 12) if cost is not None else None,
        "charge": state.charge_basis,
        "output_cap": metering.output_cap if metering is not None else None,  # set by a hard budget
        "attempts": state.attempts,
        "duration_ms": round((now - state.started) * 1000, 1),
        "ttfb_ms": round((first_byte - state.started) * 1000, 1) if first_byte else None,
    }
    state.record = record
    return record


def audit_fields(record: dict[str, Any], body_sha256: str | None) -> dict[str, Any]:
    """The audit log's view of a request record (no header, no key material: only the key's name)."""
    try:
        values = _audit_values(record)
    except KeyError:  # a recovered request's record has no `transport`
        values = tuple([record.get(name) for name in _AUDIT_NAMES])
    # Built (nearly) in key order: the canonical form's sort then has little to move. `dict(zip())`
    # and `utc_iso` inline: no function call (a type called is none).
    fields: dict[str, Any] = dict(zip(_AUDIT_KEYS, (body_sha256, *values), strict=True))
    epoch = record["ts"]
    seconds = int(epoch)  # math.floor(epoch) for a finite float, as utc_iso
    if seconds > epoch:
        seconds -= 1
    micro = round((epoch - seconds) * 1e6)
    if micro >= 1_000_000:
        seconds, micro = seconds + 1, micro - 1_000_000
    fields["time"] = f"{_second(seconds)}.{micro // 1000:03d}Z"
    if "error" in record:
        error = record["error"]
        if error is not None:
            fields["error"] = error
    if "recovered" in record and record["recovered"]:
        fields["recovered"] = True
    return fields


def recovered_record(entry: dict[str, Any], cost_usd: float, error: str, now: float) -> dict[str, Any]:
    """The record of a request whose answer a crash lost, from its write-ahead entry."""
    return {
        "ts": round(now, 3),
        "request_id": entry["id"],
        "mode": entry.get("mode"),
        "endpoint": entry.get("endpoint"),
        "session_id": entry.get("session_id"),
        "key": entry.get("key"),
        "team": entry.get("team"),
        "org": entry.get("org"),
        "model_requested": entry.get("model_requested"),
        "model": entry.get("model"),
        "provider": entry.get("provider"),
        "upstream_model": entry.get("upstream_model"),
        "decision": Decision.FORWARDED.value,
        "status": None,
        "usage": None,
        "cost_usd": round(cost_usd, 12),
        "charge": "estimate",
        "recovered": True,
        "error": error,
        "stream": entry.get("stream"),
        "stream_outcome": None,
        "attempts": None,
        "duration_ms": None,
        "ttfb_ms": None,
        "forwarded_ts": entry.get("ts"),
    }
