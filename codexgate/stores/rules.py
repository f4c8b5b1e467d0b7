"""What every counter store computes the same way (the embedded store in Python, the Redis store
partly in its Lua scripts): input checks, the windows a counter's limit covers, the admission
rule, the admission answer, and how long buckets and stale reservations are kept."""

from __future__ import annotations

import math

from codexgate.stores.base import Admission, Amounts, Counter, CounterState, Kind

# Buckets are kept this long past the end of the last window that can include them, so a
# process whose clock runs a little behind still sees every bucket its window covers.
PRUNE_MARGIN_SECONDS = 60.0

# Stale reservations settled per reserve: bounds the work one admission can be made to do.
STALE_SWEEP_LIMIT = 100

_KINDS: tuple[Kind, ...] = ("usd", "requests", "tokens")


def check_request(counters: list[Counter], amounts: Amounts) -> None:
    """Refuse inputs no store can charge correctly: they are programming errors, not refusals."""
    ids = [c.counter_id for c in counters]
    if len(set(ids)) != len(ids):
        # Two entries for one counter would each check the room before the other's amount is added.
        raise ValueError(f"duplicate counter ids in one request: {ids}")
    check_amounts(amounts)


def check_amounts(amounts: Amounts) -> None:
    for kind in _KINDS:
        value = amounts.of(kind)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"amount {kind}={value!r} must be a finite number >= 0")


def has_room(used: float, amount: float, limit: float) -> bool:
    """The admission rule, kept identical in the Redis Lua script.

    A counter already at its limit has no room even for a zero amount (an estimate of 0 must
    not slip through a spent budget); the tolerance absorbs float sums such as ten times 0.1.
    An infinite limit always has room; a NaN limit never (every comparison is false).
    """
    if limit == math.inf:
        return True
    eps = 1e-9 * max(1.0, abs(limit))
    return used + amount <= limit + eps and used < limit - eps


def window(counter: Counter, now: float) -> tuple[float, float]:
    """(lo, hi]: the bucket starts counted against the counter's limit at `now`.

    Rolling limits: starts in (now - span, now], as base.py says (widened to include the
    counter's own bucket should the caller's clock run behind it). Calendar limits (span ==
    bucket) count their own bucket only: read literally, (now - span, now] would also count
    the previous period whenever it was shorter — February's spend again on March 1-3.
    """
    hi = max(now, counter.bucket_start)
    if counter.span_seconds <= counter.bucket_seconds:
        return math.nextafter(counter.bucket_start, -math.inf), hi
    return now - counter.span_seconds, hi


def build_admission(
    counters: list[Counter],
    amounts: Amounts,
    used: list[float],
    held: list[float] | None,
    refused_index: int | None,
) -> Admission:
    """`held` is set when the request already had a reservation: its amounts are what it charges."""
    states = []
    for i, counter in enumerate(counters):
        charged = held[i] if held is not None else amounts.of(counter.kind)
        states.append(CounterState(counter=counter, used=used[i], remaining=counter.limit - used[i] - charged))
    refused_by = counters[refused_index] if refused_index is not None else None
    return Admission(admitted=refused_by is None, refused_by=refused_by, states=states)
