"""Accounting's metrics go through cells (a labelled child's value, a histogram by bisection) rather
than prometheus-client's `labels().inc()` / `observe()`: the exposition must be the same, sample for
sample, for any set of requests."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from codexgate.addons import accounting as accounting_module
from codexgate.addons.accounting import Accounting
from codexgate.flowstate import Decision, GatewayRequest
from codexgate.metrics import Cells, GatewayMetrics, counter_cell, histogram_cell
from codexgate.usage import Usage

HERE = Path(__file__).resolve().parent
NOW = 1_765_000_100.0
BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Every bound exactly, either side of each, zero, negative, beyond the last bound, infinite, NaN.
AMOUNTS = [
    *BOUNDS,
    *(bound * 0.999 for bound in BOUNDS),
    *(bound * 1.001 for bound in BOUNDS),
    0.0, -0.0, -1.0, 1e-9, 301.0, 1e12, math.inf, math.nan,
]  # fmt: skip


def exposition(registry: CollectorRegistry) -> list[str]:
    """The exposition without the `_created` samples (the time each child was made)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_cells_expose_what_the_client_api_does() -> None:
    def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Histogram]:
        return (
            Counter("c", "c", ["a", "b"], registry=registry),
            Histogram("h", "h", ["p"], registry=registry, buckets=BOUNDS),
            Histogram("u", "u", registry=registry, buckets=(0.0001, 0.001, 1)),
        )

    expected, got = CollectorRegistry(), CollectorRegistry()
    counter, histogram, unlabelled = metrics(expected)
    fast_counter, fast_histogram, fast_unlabelled = metrics(got)
    counters, histograms = Cells(fast_counter, counter_cell), Cells(fast_histogram, histogram_cell)
    fast_plain = histogram_cell(fast_unlabelled)
    for index, amount in enumerate(AMOUNTS):
        provider = ("openai", "azure", "")[index % 3]
        histogram.labels(provider).observe(amount)
        histograms[(provider,)].observe(amount)
        unlabelled.observe(amount)
        fast_plain.observe(amount)
        if amount >= 0 and not math.isnan(amount):
            counter.labels(provider, str(index % 2)).inc(amount)
            counters[(provider, str(index % 2))].inc(amount)
    assert exposition(got) == exposition(expected)
    # In process, the cells write the values themselves (no prometheus-client method, no lock).
    assert type(fast_plain).__name__ == "_LoopHistogram"
    assert type(counters[("openai", "0")]).__name__ == "_LoopValue"


def test_cells_fall_back_to_the_child_without_the_clients_internals() -> None:
    """A prometheus-client that keeps its values otherwise: the public methods, still correct."""
    counter = types.SimpleNamespace(inc=lambda amount: None)
    histogram = types.SimpleNamespace(observe=lambda amount: None)
    assert counter_cell(counter) is counter  # type: ignore[arg-type]
    assert histogram_cell(histogram) is histogram  # type: ignore[arg-type]


class PublicApiAccounting(Accounting):
    """Accounting._observe as first written: `labels()` and the client's own inc/observe."""

    def _observe(self, state: GatewayRequest, status: int) -> None:
        metrics = self._metrics
        key = state.key.name if state.key else ""
        labels = (state.org or "", state.team or "", key, state.model or "", state.provider or "")
        metrics.requests.labels(*labels, state.decision, str(status)).inc()
        if state.decision.refusal:
            metrics.refusals.labels(state.decision, state.team or "").inc()
        usage = state.usage
        if usage is not None:
            for kind, value in (
                ("input", usage.input_tokens), ("cached", usage.cached_tokens),
                ("output", usage.output_tokens), ("reasoning", usage.reasoning_tokens),
            ):  # fmt: skip
                if value:
                    metrics.tokens.labels(*labels, kind).inc(value)
        if state.cost_usd:
            metrics.cost.labels(*labels).inc(state.cost_usd)
        if state.provider:
            now = accounting_module.time.time()
            metrics.duration.labels(state.provider).observe(now - state.started)
            if state.first_byte is not None:
                metrics.ttfb.labels(state.provider).observe(max(0.0, state.first_byte - state.started))
            if state.forwarded_at is not None and state.attempts is None:
                metrics.upstream_latency.labels(state.provider).observe(max(0.0, now - state.forwarded_at))
                metrics.overhead.observe(max(0.0, state.forwarded_at - (state.received_at or state.started)))
                failed = state.decision is Decision.UPSTREAM_ERROR
                outcome = "error" if failed else "ok" if status < 400 else f"http_{status}"
                metrics.attempts.labels(state.provider, outcome).inc()


def requests() -> list[tuple[dict[str, Any], int]]:
    """A mix of what Accounting sees: served, refused, failed, relayed, local answers, odd timings."""
    made: list[tuple[dict[str, Any], int]] = []
    decisions = [
        (Decision.FORWARDED, 200), (Decision.FORWARDED, 429), (Decision.FORWARDED, 503), (Decision.ANSWERED, 200),
        (Decision.UPSTREAM_ERROR, 502), (Decision.BUDGET_EXCEEDED, 429), (Decision.UNKNOWN_MODEL, 400),
        (Decision.CLIENT_DISCONNECTED, 499), (Decision.RATE_LIMITED, 429),
    ]  # fmt: skip
    for index in range(120):
        decision, status = decisions[index % len(decisions)]
        spent = AMOUNTS[index % len(AMOUNTS)]
        spent = 0.5 if math.isnan(spent) or math.isinf(spent) else spent
        fields: dict[str, Any] = {
            "decision": decision,
            "team": ("platform", None, "data")[index % 3],
            "org": ("acme", None)[index % 2],
            "key": types.SimpleNamespace(name=("alice", "bob")[index % 2]) if index % 5 else None,
            "model": ("gpt-x", None, "gpt-y")[index % 3],
            "provider": ("openai", "azure", None, "local")[index % 4],
            "started": NOW - spent,
            "usage": Usage(index % 7, index % 3, (index * 13) % 11, index % 2) if index % 4 else None,
            "cost_usd": (None, 0.0, 0.00042, 1.5)[index % 4],
            "first_byte": (NOW - spent / 2) if index % 3 else None,
            "received_at": (NOW - spent + 0.0001) if index % 2 else None,
            "forwarded_at": (NOW - spent + 0.0003 * (index % 5)) if index % 6 else None,
            "attempts": [{"provider": "openai"}] if index % 9 == 0 else None,
        }
        made.append((fields, status))
    # A first byte and a sending time after the end (clock steps): clamped to 0.
    made.append(({"decision": Decision.FORWARDED, "provider": "openai", "started": NOW + 1, "first_byte": NOW + 2,
                  "forwarded_at": NOW + 3, "received_at": NOW + 4}, 200))  # fmt: skip
    return made


@pytest.mark.parametrize("subset", [slice(0, 1), slice(0, 9), slice(None)])
def test_accounting_metrics_expose_what_they_did(monkeypatch: pytest.MonkeyPatch, subset: slice) -> None:
    monkeypatch.setattr(accounting_module, "time", types.SimpleNamespace(time=lambda: NOW))
    expected, got = PublicApiAccounting(GatewayMetrics()), Accounting(GatewayMetrics())
    for fields, status in requests()[subset]:
        for accounting in (expected, got):
            state = GatewayRequest(request_id="r", policy=None, mode="gateway")  # type: ignore[arg-type]
            for name, value in fields.items():
                setattr(state, name, value)
            accounting._observe(state, status)
    assert exposition(got._metrics.registry) == exposition(expected._metrics.registry)


MULTIPROCESS_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from codexgate.metrics import Cells, GatewayMetrics, counter_cell, histogram_cell
from test_accounting_metrics import AMOUNTS
metrics = GatewayMetrics()
cells = sys.argv[1] == "cells"
durations, attempts = Cells(metrics.duration, histogram_cell), Cells(metrics.attempts, counter_cell)
overhead = histogram_cell(metrics.overhead)
for index, amount in enumerate(AMOUNTS):
    provider = ("openai", "azure")[index % 2]
    if cells:
        durations[(provider,)].observe(amount)
        overhead.observe(amount)
        attempts[(provider, "ok")].inc(1)
    else:
        metrics.duration.labels(provider).observe(amount)
        metrics.overhead.observe(amount)
        metrics.attempts.labels(provider, "ok").inc()
"""


def test_cells_write_prometheus_multiprocess_files(tmp_path: Path) -> None:
    """Under `codexgate up --workers N` a worker's values live in prometheus-client's mmap files,
    which the supervisor collects: the cells write there, the same samples as the client API."""
    from prometheus_client import multiprocess

    collected = {}
    for how in ("public", "cells"):
        directory = tmp_path / how
        directory.mkdir()
        environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_SCRIPT, how, str(HERE)], env=environment, check=True, timeout=60
        )
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
        # In the order of the files' entries, and a gauge's pid label names the process.
        collected[how] = sorted(re.sub(r'pid="\d+"', 'pid=""', line) for line in exposition(registry))
    assert any(line.startswith("codexgate_request_duration_seconds_bucket") for line in collected["cells"])
    assert collected["cells"] == collected["public"]
