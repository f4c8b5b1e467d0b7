"""Records one accounting line per governed request: JSONL in the data dir, a log line,
response headers naming the decision, and the mitmweb flow comment."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest, state_of
from codexgate.headers import replace_header_fields
from codexgate.jsonline import compact_line
from codexgate.metrics import Cells, GatewayMetrics, counter_cell, histogram_cell
from codexgate.records import request_record

logger = logging.getLogger(__name__)

ACCOUNTING_FILE = "accounting.jsonl"
# `Decision.allowed` and `Decision.refusal` as sets: a membership test is no call, a property is.
_ALLOWED = frozenset(decision for decision in Decision if decision.allowed)
_REFUSALS = frozenset(decision for decision in Decision if decision.refusal)


class _Encoded(dict[str, bytes]):
    """Header values by text (provider and model names), encoded once: a hit is a dict lookup,
    no `str.encode` call. Bounded: an upstream model name may come from the client (passthrough),
    so past `LIMIT` names it starts over."""

    LIMIT = 1024

    def __missing__(self, text: str) -> bytes:
        if len(self) >= self.LIMIT:
            self.clear()
        value = self[text] = text.encode("utf-8", "surrogateescape")
        return value


def accounting_file(writer_id: str) -> str:
    """The accounting log of one writer: the single gateway's `accounting.jsonl`, or each worker of
    `codexgate up --workers N` its own `accounting-<writer>.jsonl`. Lines of several processes are
    never appended to one file (a line longer than the text buffer would be several `write()`s,
    which another process's line could split); `codexgate usage` reads them all."""
    return f"accounting-{writer_id}.jsonl" if writer_id else ACCOUNTING_FILE


class Accounting:
    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self._metrics = metrics = metrics or GatewayMetrics()
        # The per-request metrics' cells, by label values (see `Cells`: a child per label set, made once).
        self._requests = Cells(metrics.requests, counter_cell)
        self._refusals = Cells(metrics.refusals, counter_cell)
        self._tokens = Cells(metrics.tokens, counter_cell)
        self._cost = Cells(metrics.cost, counter_cell)
        self._attempts = Cells(metrics.attempts, counter_cell)
        self._duration = Cells(metrics.duration, histogram_cell)
        self._ttfb = Cells(metrics.ttfb, histogram_cell)
        self._upstream_latency = Cells(metrics.upstream_latency, histogram_cell)
        self._overhead = histogram_cell(metrics.overhead)
        self._fd: int | None = None
        self._encoded = _Encoded()
        self.records = 0

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_accounting", bool, True, "Write one JSON line per governed request to the data dir."
        )

    def configure(self, updated: set[str]) -> None:
        if {"codexgate_data_dir", "codexgate_accounting", "codexgate_writer_id"} & updated:
            self._close()
            data_dir = ctx.options.codexgate_data_dir
            if data_dir and ctx.options.codexgate_accounting:
                path = os.path.join(data_dir, accounting_file(getattr(ctx.options, "codexgate_writer_id", "") or ""))
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # `state_of(flow)`, the `headers` property and `Decision.allowed`, inline (once per request).
        state = flow.metadata.get(METADATA_KEY)
        response = flow.response
        if not isinstance(state, GatewayRequest) or response is None:
            return
        # One pass over the answer's header fields (mitmproxy's `headers[name] = ...` is one per name);
        # the list grown by `+=` (an operator, not an `append` call per field).
        fields = [
            (b"x-codexgate-request-id", state.request_id.encode()),
            (b"x-codexgate-decision", b"allowed" if state.decision in _ALLOWED else b"refused"),
        ]
        if state.provider:
            fields += ((b"x-codexgate-provider", self._encoded[state.provider]),)
        if state.upstream_model:
            fields += ((b"x-codexgate-model", self._encoded[state.upstream_model]),)
        if state.attempts is not None:
            fields += ((b"x-codexgate-attempt-count", str(len(state.attempts)).encode()),)
        replace_header_fields(response.data.headers, fields)

    def response(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(METADATA_KEY)
        response = flow.response
        if isinstance(state, GatewayRequest) and response is not None:
            self._record(flow, state, response.data.status_code, None)

    def error(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None:
            if state.reader is not None and state.usage is None:
                state.usage = state.reader.usage
            status = flow.response.status_code if flow.response else 502
            if state.decision is Decision.CLIENT_DISCONNECTED and flow.response is None:
                status = 499  # the client closed the request before an answer started (nginx's code)
            self._record(flow, state, status, flow.error.msg if flow.error else "unknown error")

    def _record(self, flow: http.HTTPFlow, state: GatewayRequest, status: int, error: str | None) -> None:
        if state.accounted:
            return
        state.accounted = True
        record = request_record(state, status, error)  # the audit record is a view of it
        usage = record["usage"]
        tokens_in, tokens_out = (usage["input_tokens"], usage["output_tokens"]) if usage else (0, 0)
        self._observe(state, status)
        decision = state.decision
        flow.comment = (
            f"codexgate {decision}: key={record['key']} team={record['team']} model={record['model_requested']}"
            f" provider={record['provider']} status={status} tokens={tokens_in}in/{tokens_out}out"
        )
        # Refusals and failures are worth a line in the log; allowed traffic is in the accounting
        # file (a log line per request costs ~0.1 ms of mitmproxy's single loop). Asked first
        # whether the level is on: `logger.log` asks too, so a line not logged costs one call.
        allowed = decision in (Decision.FORWARDED, Decision.ANSWERED) and status < 400
        level = logging.DEBUG if allowed else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "%s %s key=%s team=%s model=%s provider=%s status=%s in=%s out=%s ms=%s",
                state.request_id[:8],
                decision,
                record["key"],
                record["team"],
                record["model_requested"],
                record["provider"],
                status,
                tokens_in,
                tokens_out,
                record["duration_ms"],
            )
        if self._fd is not None:
            try:
                self._write(record)
            except OSError:
                logger.exception("cannot write accounting line for %s", state.request_id)

    @property
    def path(self) -> str | None:
        data_dir = ctx.options.codexgate_data_dir
        writer_id = getattr(ctx.options, "codexgate_writer_id", "") or ""
        return os.path.join(data_dir, accounting_file(writer_id)) if data_dir else None

    def append_record(self, record: dict[str, Any]) -> bool:
        """A line not made from a live flow (a request recovered after a crash); False if the log is off."""
        if self._fd is None:
            return False
        self._write(record)
        return True

    def _write(self, record: dict[str, Any]) -> None:
        """One line, one write(2) (ASCII: non-ASCII is escaped), no buffer in between."""
        assert self._fd is not None
        line = compact_line(record)
        rest = line[os.write(self._fd, line) :]
        while rest:  # a short write (signal, full disk): the rest, or the error
            rest = rest[os.write(self._fd, rest) :]
        self.records += 1

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def _observe(self, state: GatewayRequest, status: int) -> None:
        # A counter's cell takes no negative amount (it skips the check `Counter.inc` raises on):
        # token counts are >= 0 by construction (codexgate.usage); a cost counts when positive.
        provider = state.provider or ""
        team = state.team or ""
        labels = (state.org or "", team, state.key.name if state.key else "", state.model or "", provider)
        decision = state.decision
        self._requests[(*labels, decision, str(status))].inc(1)
        if decision in _REFUSALS:  # `decision.refusal`, without the property's call
            self._refusals[(decision, team)].inc(1)
        usage = state.usage
        if usage is not None:
            for kind, value in (
                ("input", usage.input_tokens), ("cached", usage.cached_tokens),
                ("output", usage.output_tokens), ("reasoning", usage.reasoning_tokens),
            ):  # fmt: skip
                if value:
                    self._tokens[(*labels, kind)].inc(value)
        cost = state.cost_usd
        if cost is not None and cost > 0:
            self._cost[labels].inc(cost)
        if provider:
            now = time.time()
            key = (provider,)
            self._duration[key].observe(now - state.started)
            # `x if x > 0.0 else 0.0` is max(0.0, x) (0.0 for NaN too), without a call per sample.
            if state.first_byte is not None:
                ttfb = state.first_byte - state.started
                self._ttfb[key].observe(ttfb if ttfb > 0.0 else 0.0)
            if state.forwarded_at is not None and state.attempts is None:
                upstream = now - state.forwarded_at
                self._upstream_latency[key].observe(upstream if upstream > 0.0 else 0.0)
                overhead = state.forwarded_at - (state.received_at or state.started)
                self._overhead.observe(overhead if overhead > 0.0 else 0.0)
                failed = decision is Decision.UPSTREAM_ERROR
                outcome = "error" if failed else "ok" if status < 400 else f"http_{status}"
                self._attempts[(provider, outcome)].inc(1)  # relayed ones count in the relay

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def done(self) -> None:
        self._close()
