"""The contract every counter store keeps; `tests/stores` runs one suite against each store.

A *counter* is one limit at one level: "key:alice" may have a USD budget per calendar month,
60 requests per minute and 200k tokens per minute — three counters. Admission checks every
counter of a request and reserves an estimate in all of them in ONE atomic step (one Redis
round trip running a Lua script, one SQLite transaction), so concurrent requests cannot
both pass the last free dollar. Settlement later replaces the reservation by the actual
amounts; release removes it. Both are idempotent per request id, so a request is charged
once however often settle/release are called.

Windows: the caller computes each counter's current window (`bucket_start`, `bucket_seconds`)
— calendar-aligned buckets (UTC day, ISO week, month, year) or fixed buckets for rolling
limits. A rolling limit is `span_seconds` long and sums every bucket of the counter whose
start lies in (now - span_seconds, now]. A calendar limit has span_seconds == bucket_seconds
and counts only its own bucket (months differ in length: February's spend must not count
again on 1 March).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

Kind = Literal["usd", "requests", "tokens"]


@dataclasses.dataclass(frozen=True)
class Counter:
    counter_id: str  # stable id, e.g. "key:alice/usd/1M" — names the level for error messages
    kind: Kind
    limit: float
    bucket_start: float  # epoch seconds, start of the bucket the amount goes into
    bucket_seconds: float  # bucket length
    span_seconds: float  # window the limit applies to (== bucket_seconds for calendar windows)
    resets_at: float  # epoch seconds when room frees up (calendar: bucket end; rolling: oldest bucket + span)
    # A hard budget: `limit` includes this tolerance (gateway.hard_budgets.epsilon_usd); messages
    # name the limit without it. Stores see only `limit`.
    tolerance: float = 0.0
    hard: bool = False


@dataclasses.dataclass(frozen=True)
class Amounts:
    usd: float = 0.0
    requests: float = 0.0
    tokens: float = 0.0

    def of(self, kind: Kind) -> float:
        return getattr(self, kind)


@dataclasses.dataclass(frozen=True)
class CounterState:
    counter: Counter
    used: float  # settled + currently reserved, within the window, before this request
    remaining: float  # limit - used - this request's amount (may be negative when refused)


@dataclasses.dataclass(frozen=True)
class Admission:
    admitted: bool
    refused_by: Counter | None  # the first counter (in the order given) that had no room
    states: list[CounterState]  # one per counter, in the order given


class StoreUnavailable(Exception):
    """The store cannot be reached or answered wrongly; the caller applies fail-closed/open."""


class CounterStore(Protocol):
    async def reserve(self, request_id: str, counters: list[Counter], amounts: Amounts, now: float) -> Admission:
        """Atomically: if every counter has room for `amounts`, add them to all counters as a
        reservation held under `request_id`; otherwise change nothing. A request id that
        already holds a reservation is admitted again without adding anything (retry-safe)."""
        ...

    async def settle(self, request_id: str, actual: Amounts) -> bool:
        """Replace the reservation of `request_id` by `actual` in every counter it touched.
        Returns False (and changes nothing) if there is no open reservation (already settled,
        released, or never made) — so a request is charged at most once."""
        ...

    async def settle_to(self, request_id: str, actual: Amounts, counters: list[Counter], now: float) -> bool:
        """Like `settle`, for a request answered elsewhere than it reserved (failover to another
        provider or model): atomically, the reservation leaves every counter it touched and
        `actual` is added to `counters` (their buckets at `now`) instead, without a room check —
        the spend happened. False (and no change) if there is no open reservation."""
        ...

    async def release(self, request_id: str) -> bool:
        """Remove the reservation of `request_id` entirely (request refused or never sent)."""
        ...

    async def snapshot(self, counters: list[Counter], now: float) -> list[CounterState]:
        """Current use of each counter (for remaining-headers and metrics), no change."""
        ...

    async def close(self) -> None: ...
