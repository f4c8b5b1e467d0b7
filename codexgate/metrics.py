"""Prometheus metrics of the gateway, in one registry per gateway process.

Label values come from the policy (key, team, org, model, provider names) or from a fixed set
(decisions, reasons, operations), never from raw client input, so cardinality stays bounded.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.values import MutexValue

EGRESS_REFUSAL_REASONS = (
    "not_allowed", "denied", "internal_address", "gateway_itself", "unresolvable", "sni_mismatch",
    "destination_mismatch",
    "proxy_auth_required", "proxy_auth_invalid",
)  # fmt: skip


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "codexgate_requests", "Governed requests by outcome.",
            ["org", "team", "key", "model", "provider", "decision", "status"], registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "codexgate_tokens", "Tokens used, by kind (input includes cached, output includes reasoning).",
            ["org", "team", "key", "model", "provider", "kind"], registry=self.registry,
        )  # fmt: skip
        self.cost = Counter(
            "codexgate_cost_usd", "Spend charged in US dollars.", ["org", "team", "key", "model", "provider"],
            registry=self.registry,
        )  # fmt: skip
        self.refusals = Counter(
            "codexgate_refusals", "Requests refused by the gateway, by reason.", ["reason", "team"],
            registry=self.registry,
        )  # fmt: skip
        self.store_errors = Counter(
            "codexgate_store_errors", "Counter store operations that failed.", ["operation", "policy"],
            registry=self.registry,
        )  # fmt: skip
        self.policy_reloads = Counter(
            "codexgate_policy_reloads", "Policy reloads by result.", ["result"], registry=self.registry
        )
        self.budget_remaining = Gauge(
            "codexgate_budget_remaining_usd", "Budget left at the last admission, per counter.",
            ["level", "name", "period"], registry=self.registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.ttfb = Histogram(
            "codexgate_time_to_first_byte_seconds", "From the request's arrival to the first byte of the answer.",
            ["provider"], registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
        )  # fmt: skip
        self.upstream_latency = Histogram(
            "codexgate_upstream_duration_seconds", "From the request leaving the gateway to the end of the answer.",
            ["provider"], registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )  # fmt: skip
        self.overhead = Histogram(
            "codexgate_gateway_overhead_seconds", "Time the gateway spent on a request before forwarding it.",
            registry=self.registry, buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
        )  # fmt: skip
        # The gauges' multiprocess modes only matter under `codexgate up --workers N` (codexgate/workers.py).
        self.active_streams = Gauge(
            "codexgate_active_streams", "Streamed answers in flight.", registry=self.registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        # Read at scrape time from this process's relay; under `--workers N` it is on each worker's
        # own admin port only (a function gauge has no multiprocess file to be summed from).
        self.relay_plans = Gauge(
            "codexgate_relay_plans", "Failover plans registered with the relay and not yet used, discarded or expired.",
            registry=self.registry,
        )  # fmt: skip
        self.attempts = Counter(
            "codexgate_upstream_attempts", "Upstream attempts by outcome (ok, http_<status>, error).",
            ["provider", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.audit_breaks = Counter(
            "codexgate_audit_chain_breaks", "Times the audit writer found its file replaced, truncated or deleted "
            "and started a new segment.", registry=self.registry,
        )  # fmt: skip
        self.audit_failures = Counter(
            "codexgate_audit_write_failures",
            "Audit and write-ahead records that could not be written.",
            registry=self.registry,
        )
        self.recovered = Counter(
            "codexgate_recovered_requests", "Forwarded requests recorded at start-up from the write-ahead log, "
            "by what was missing (answer: no record at all; settlement: only the store's).", ["missing"],
            registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "codexgate_request_duration_seconds", "Time from request to the end of the answer.", ["provider"],
            registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )  # fmt: skip
        self.egress_refusals = Counter(
            "codexgate_egress_refusals", "Proxy-listener connections and requests refused, by fixed reason.",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.keys_scrubbed = Counter(
            "codexgate_virtual_keys_scrubbed", "Virtual keys removed from flows to ungoverned hosts, by where.",
            ["where"], registry=self.registry,
        )  # fmt: skip
        # Label sets known in advance are exported from the start, at zero, so alerts and the
        # dashboard see them before the first event.
        for reason in EGRESS_REFUSAL_REASONS:
            self.egress_refusals.labels(reason)
        for where in ("header", "query", "path", "body"):
            self.keys_scrubbed.labels(where)
        for result in ("ok", "failed"):
            self.policy_reloads.labels(result)
        for missing in ("answer", "settlement"):
            self.recovered.labels(missing)
        for operation in ("reserve", "settle"):
            for policy in ("closed", "open"):
                self.store_errors.labels(operation, policy)


class CounterCell(Protocol):
    def inc(self, amount: float) -> None: ...


class HistogramCell(Protocol):
    def observe(self, amount: float) -> None: ...


class _LoopValue:
    """A metric value written from the event loop's thread only, without prometheus-client's lock.

    `MutexValue.inc` takes a `threading.Lock` around `+=`: two calls per increment, ~30 a request
    over the counters and histograms `Accounting` keeps. Every write to these values happens on the
    event loop's one thread (the steps, the in-process relays); the admin server's thread only reads
    them (`get`, under the lock, a float read the GIL makes whole). So the increment needs no lock."""

    __slots__ = ("_target",)

    def __init__(self, target: MutexValue) -> None:
        self._target = target

    def inc(self, amount: float) -> None:
        self._target._value += amount


def _unlocked(value: Any) -> Any:
    """`value` as a `_LoopValue` where it is prometheus-client's plain in-process `MutexValue`;
    unchanged otherwise (a multiprocess value under `codexgate up --workers N` keeps its own `inc`,
    which writes the worker's file)."""
    return _LoopValue(value) if type(value) is MutexValue else value


def counter_cell(child: Counter | Gauge) -> CounterCell:
    """Where an observable counter (a labelled child, or a counter without labels) keeps its value.

    `Counter.inc` runs two Python-level checks before the value's own `inc` (the child has its
    labels; the amount is not negative): callers of the cell make sure of both, and write from the
    event loop's thread only (`_LoopValue`). The value is prometheus-client's value class, so its
    multiprocess mode (`codexgate up --workers N`) is kept. A client without that attribute gets the
    child itself, which has the same `inc`."""
    value = getattr(child, "_value", None)
    return cast(CounterCell, _unlocked(value) if callable(getattr(value, "inc", None)) else child)


class _BisectedHistogram:
    """An observable histogram's storage, observed with a binary search: prometheus-client's
    `observe` walks the bounds in a Python loop. The sample lands in the same bucket (the first
    whose bound is >= it, none for NaN) and the sum moves the same, so the exposition is the same."""

    __slots__ = ("_sum", "_buckets", "_bounds")

    def __init__(self, sum_value: CounterCell, buckets: list[CounterCell], bounds: list[float]) -> None:
        self._sum = sum_value
        self._buckets = buckets
        self._bounds = bounds

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        index = bisect_left(self._bounds, amount)  # the last bound is +Inf: always one, but for NaN
        if amount <= self._bounds[index]:
            self._buckets[index].inc(1)


class _LoopHistogram(_BisectedHistogram):
    """`_BisectedHistogram` over in-process values (`MutexValue`) written from the event loop's
    thread only, as `_LoopValue` writes them: the sum and the bucket moved without a call each."""

    __slots__ = ()

    def observe(self, amount: float) -> None:
        self._sum._value += amount  # type: ignore[attr-defined]
        index = bisect_left(self._bounds, amount)  # the last bound is +Inf: always one, but for NaN
        if amount <= self._bounds[index]:
            self._buckets[index]._value += 1  # type: ignore[attr-defined]


def histogram_cell(child: Histogram) -> HistogramCell:
    """Where an observable histogram keeps its sum and buckets, observed by `_BisectedHistogram`
    (the child itself with a prometheus-client that keeps them otherwise)."""
    sum_value = getattr(child, "_sum", None)
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    if (
        callable(getattr(sum_value, "inc", None))
        and isinstance(buckets, list)
        and isinstance(bounds, list)
        and len(buckets) == len(bounds)
        and bounds == sorted(bounds)
        and bounds[-1] == float("inf")
    ):
        if type(sum_value) is MutexValue and all(type(bucket) is MutexValue for bucket in buckets):
            return _LoopHistogram(sum_value, buckets, bounds)  # type: ignore[arg-type]
        return _BisectedHistogram(sum_value, buckets, bounds)  # type: ignore[arg-type]
    return child


class Cells[Cell](dict[tuple[Any, ...], Cell]):
    """The cells of one labelled metric by label values, each child made on first use:
    `cells[labels].inc(amount)`. prometheus-client's `labels()` costs ~10 µs a call; a dict
    lookup is what the per-request path pays. Label values come from the policy or fixed sets,
    so this stays as bounded as the metric itself. A label set appears in the exposition from its
    first use, as with `labels()`."""

    def __init__(self, metric: Any, make: Callable[[Any], Cell]) -> None:
        super().__init__()
        self._metric = metric
        self._make: Callable[[Any], Cell] = make

    def __missing__(self, labels: tuple[Any, ...]) -> Cell:
        cell = self[labels] = self._make(self._metric.labels(*labels))
        return cell
