"""Budgets and rate limits: admission reserves, settlement charges.

`Limits` (request phase, after `Route`) builds the counters of every level the request
touches — key, team, org, provider, model — and reserves an estimate in all of them in one
store round trip. `Charge` (after `Meter`) replaces the reservation by the actual cost once
the answer is complete, releases it when the gateway refused the request after all, and
charges the estimate when a stream was cut before usage arrived. Each request is settled
exactly once (the store makes settlement idempotent per request id).

Hard budgets (the default): a request reserves its worst case — its decoded body's bytes as input
tokens (a text token is never shorter than a byte) plus the model's `max_output_tokens` — and when
that does not fit in what remains at some level, its output is capped upstream to what the
remainder can pay for (`output_cap.py`), and the capped worst case is reserved; below
`gateway.hard_budgets.min_output_tokens` it is refused (402). Since a provider stops at the cap,
no hard level passes its limit + `epsilon_usd` (the tolerance, added to the counter's limit).

Soft budgets (`hard: false`): admission passes a request whose *estimate* (input bytes / 4
tokens plus the model's `output_allowance`) fits, so N concurrent requests can overspend a cap by
sum(max(0, actual_i - estimate_i)) over the requests in flight, without a ceiling. With Redis, a
settlement rides along with the instance's next reservation (applied before that one is checked)
or goes alone after `SETTLE_BATCH_SECONDS` (20 ms); so for other instances "in flight" extends to
requests answered within the last 20 ms.

A client that leaves mid-answer is `client_disconnected`: charged the usage the relay could still
read from the provider's stream, else the estimate.

Failover (several candidates, `addons/failover.py`): admission reserves for the first choice;
before the relay tries a candidate on another provider or model, `admit_candidate` moves the
reservation there — on record in the write-ahead log first, then released where it was and
reserved at the candidate's levels and price under `<request id>~<index>`, capped by its hard
budgets like a first choice — or refuses the candidate, which the relay then skips. So no hard
level or rate limit of the provider that answers is passed, and the request is settled (and, after
a crash, recovered) where its reservation last went.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from codexgate.addons.output_cap import cap_body, cap_output
from codexgate.addons.policy_source import PolicySource
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Candidate, Decision, GatewayRequest, Metering, refuse, state_of
from codexgate.headers import header_value, replace_header_fields
from codexgate.metrics import GatewayMetrics
from codexgate.policies.schema import Limited, Price
from codexgate.pricing import Pricer, PriceSource, PriceUnknown
from codexgate.providers.registry import family_of
from codexgate.relay import DRAIN_MAX_SECONDS, Skip
from codexgate.stores.base import Admission, Amounts, Counter, CounterState, CounterStore, Kind, StoreUnavailable
from codexgate.usage import Usage
from codexgate.windows import describe_period, format_reset, window

logger = logging.getLogger(__name__)


def counters_for(levels: list[tuple[str, str, Limited]], now: float, epsilon_usd: float = 0.0) -> list[Counter]:
    counters: list[Counter] = []
    for level, name, limited in levels:
        for budget in limited.budgets:
            span = window(budget.period, now, budget.rolling)
            tolerance = epsilon_usd if budget.hard else 0.0
            counters.append(
                Counter(
                    f"{level}:{name}/usd/{budget.period}{'/rolling' if budget.rolling else ''}",
                    "usd",
                    budget.limit_usd + tolerance,
                    span.bucket_start,
                    span.bucket_seconds,
                    span.span_seconds,
                    span.resets_at,
                    tolerance=tolerance,
                    hard=budget.hard,
                )  # fmt: skip
            )
        for limit in limited.rate_limits:
            kind: Kind = "requests" if limit.requests is not None else "tokens"
            amount = float(limit.requests if limit.requests is not None else limit.tokens or 0)
            span = window(limit.per, now, limit.rolling)
            counters.append(
                Counter(
                    f"{level}:{name}/{kind}/{limit.per}{'/rolling' if limit.rolling else ''}",
                    kind,
                    amount,
                    span.bucket_start,
                    span.bucket_seconds,
                    span.span_seconds,
                    span.resets_at,
                )  # fmt: skip
            )
    return counters


def _level_label(counter: Counter) -> tuple[str, str, str]:
    """("team", "platform", "1M") from "team:platform/usd/1M"."""
    scope, _, rest = counter.counter_id.partition("/")
    level, _, name = scope.partition(":")
    period = rest.split("/")[1] if "/" in rest else rest
    return level, name, period


def refusal_message(counter: Counter, state: CounterState, now: float) -> str:
    level, name, period = _level_label(counter)
    when = describe_period(period)
    if counter.kind == "usd":
        per = f"{'rolling ' if '/rolling' in counter.counter_id else ''}{'monthly' if period == '1M' else when}"
        limit = counter.limit - counter.tolerance
        return (
            f"{level} {name}: {per} budget ${limit:,.2f} used (${state.used:,.2f} of ${limit:,.2f});"
            f" resets {format_reset(counter.resets_at)}"
        )
    wait = max(1, math.ceil(counter.resets_at - now))
    return f"{level} {name}: rate limit of {counter.limit:,.0f} {counter.kind} per {when} reached; retry in {wait} s"


def _duration(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


_RATELIMIT_NAMES = {
    kind: (f"x-ratelimit-limit-{kind}".encode(), f"x-ratelimit-remaining-{kind}".encode(),
           f"x-ratelimit-reset-{kind}".encode())
    for kind in ("requests", "tokens")
}  # fmt: skip
_BUDGET_REMAINING = b"x-codexgate-budget-remaining-usd"


def ratelimit_header_fields(states: list[CounterState], now: float) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers from the tightest requests and tokens counters, and the
    remaining budget of the tightest budget, as header fields (every answer carries them)."""
    tightest: dict[str, CounterState] = {}  # kind -> the state with the least remaining (one pass)
    for state in states:
        known = tightest.get(state.counter.kind)
        if known is None or state.remaining < known.remaining:
            tightest[state.counter.kind] = state
    fields: list[tuple[bytes, bytes]] = []
    for kind, (limit, remaining, reset) in _RATELIMIT_NAMES.items():
        tight = tightest.get(kind)
        if tight is not None:
            fields.append((limit, b"%.0f" % tight.counter.limit))
            fields.append((remaining, b"%.0f" % max(0.0, tight.remaining)))
            fields.append((reset, _duration(tight.counter.resets_at - now).encode()))
    budget = tightest.get("usd")
    if budget is not None:
        fields.append((_BUDGET_REMAINING, b"%.4f" % max(0.0, budget.remaining)))
    return fields


def ratelimit_headers(states: list[CounterState], now: float) -> dict[str, str]:
    """The same headers as a dict (for refusals, built as error responses)."""
    return {name.decode(): value.decode() for name, value in ratelimit_header_fields(states, now)}


def client_left(flow: http.HTTPFlow) -> bool:
    """The flow ended because its client went away (mitmproxy's HTTP/1 and HTTP/2 messages)."""
    message = flow.error.msg if flow.error is not None else ""
    return message.startswith(("Client disconnected", "stream reset by client"))


def levels_of(state: GatewayRequest, answered_by: Candidate | None = None) -> list[tuple[str, str, Limited]]:
    """The levels a request is counted at: its key, team and org, and the provider and model of
    its route (or of the relay's candidate that answered it)."""
    policy = state.policy.policy
    provider = answered_by.provider if answered_by is not None else state.provider
    model = answered_by.model if answered_by is not None else state.model
    levels: list[tuple[str, str, Limited]] = []
    if state.key is not None:
        levels.append(("key", state.key.name, state.key))
    if state.team and state.team in policy.teams:
        levels.append(("team", state.team, policy.teams[state.team]))
    if state.org and state.org in policy.orgs:
        levels.append(("org", state.org, policy.orgs[state.org]))
    if provider and provider in policy.providers:
        levels.append(("provider", provider, policy.providers[provider]))
    if model and model in policy.models:
        levels.append(("model", model, policy.models[model]))
    return levels


_CAP_FIELDS = ("max_output_tokens", "max_completion_tokens", "max_tokens")


@dataclasses.dataclass
class Sizing:
    """What admission measured of a request, kept for reserving it again at a failover candidate."""

    body_bytes: int  # the decoded body's length: a hard budget's bound on its input tokens
    input_tokens: int  # the estimate's
    client_cap: int | None  # the output cap the client set itself
    client_caps: dict[str, Any]  # the body's output-cap fields as the client sent them
    # The deployment (provider, model, upstream model) the request's reservation is held for; None
    # while nothing is held (a failover candidate was refused).
    target: tuple[str, str, str] | None = None
    # The first choice's own refusal, when admission found only its provider or model full and
    # left the other candidates to the relay (see Limits.request).
    first_refusal: Skip | None = None

    @classmethod
    def of(cls, flow: http.HTTPFlow, state: GatewayRequest) -> Sizing:
        # The body's length as the provider reads it (decoded when it came compressed: a gzipped
        # prompt is as many tokens as the plain one), and the output cap the client set itself.
        # `request.data` is what the `headers` and `raw_content` properties return.
        data = flow.request.data
        encoding: str | None = None
        for name, _ in data.headers.fields:  # `header_value(headers, b"content-encoding")`
            if name.lower() == b"content-encoding":
                encoding = header_value(data.headers, b"content-encoding")
                break
        if encoding is not None and (stripped := encoding.strip().lower()) and stripped != "identity":
            body_bytes = len(flow.request.get_content(strict=False) or b"")
        else:
            body_bytes = len(data.content or b"")
        body = state.body or {}
        caps = {name: body[name] for name in _CAP_FIELDS if name in body}
        client_cap: int | None = None
        for field in ("max_completion_tokens", "max_tokens") if state.endpoint == "chat" else ("max_output_tokens",):
            cap = body.get(field)
            if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
                client_cap = cap if client_cap is None else min(client_cap, cap)
        return cls(body_bytes, max(1, body_bytes // 4), client_cap, caps)

    def ceiling(self, max_output_tokens: int) -> int:
        """The most output the answer can have: the model's limit, or the client's smaller cap."""
        return max_output_tokens if self.client_cap is None else min(max_output_tokens, self.client_cap)

    def cap(self, state: GatewayRequest, tokens: int | None) -> None:
        """A relayed request's body with this output cap (None: as the client sent it): every attempt
        is prepared from `state.body`, so the next one carries it (see output_cap.py)."""
        body = state.body
        if body is None:
            return
        for name in _CAP_FIELDS:
            body.pop(name, None)
        body.update(self.client_caps)
        if tokens is not None:
            cap_body(body, state.endpoint, tokens)
            logger.info("request %s: output capped at %d tokens by a hard budget", state.request_id, tokens)


@dataclasses.dataclass(frozen=True)
class Switch:
    """A relayed request's reservation about to move to another candidate (see admit_candidate)."""

    request_id: str
    reservation_id: str  # the store id the candidate's reservation is made under
    candidate: Candidate
    estimate: Amounts  # what it is charged there if its usage never arrives
    reserving: bool  # the candidate's levels have counters (a reservation is made)


def price_unknown(state: GatewayRequest) -> http.Response:
    return error_response(
        403,
        "model_price_unknown",
        f"model {state.model_requested} has no known price and this gateway does not serve unpriced models;"
        " the platform team can set models.<name>.price in the policy",
    )  # fmt: skip


def store_unavailable() -> http.Response:
    return error_response(503, "store_unavailable",
                          "codexgate cannot check budgets and rate limits right now; try again shortly",
                          headers={"retry-after": "5"})  # fmt: skip


def record_unavailable() -> http.Response:
    return error_response(503, "record_unavailable",
                          "codexgate cannot put this request on record right now (its write-ahead log failed);"
                          " retry shortly", headers={"retry-after": "5"})  # fmt: skip


def request_ended() -> http.Response:
    """(Nobody reads it: the request had ended — the client left — before that deployment's turn.)"""
    return error_response(503, "request_ended", "the request ended before this deployment was tried")


# Levels that belong to one candidate of a relayed request (counter ids start "<level>:"): when only
# these are full at the first choice, the others are asked before the request is refused.
CANDIDATE_LEVELS = ("provider:", "model:")


def _skip_reason(decision: Decision) -> str:
    return "budget_exceeded" if decision is Decision.BUDGET_EXCEEDED else "rate_limit_exceeded"


def _message_of(response: http.Response) -> str:
    try:
        return str(json.loads(response.content or b"{}")["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"refused ({response.status_code})"


COUNTERS_CACHE_SIZE = 10_000
# Reservations tried with a smaller output cap when a hard budget cannot pay the worst case (each
# try uses the remainder the store reported; concurrent requests may take it meanwhile).
HARD_CAP_TRIES = 3
# A settlement starts this long after the response hook: mitmproxy writes the answer a few loop
# turns after its response hooks return, so a settlement started on the next turn (call_soon) still
# ran before the answer left; with the embedded store that put a SQLite transaction on every
# answer's path (+0.2 to +0.3 ms p50, bench_overhead.py --paired, docs/benchmarks.md). For these
# milliseconds the request counts as in flight, as the overspend bound in the README says.
SETTLE_DELAY_SECONDS = 0.005
# What asyncio's loop allows a timer early (`BaseEventLoop._clock_resolution`).
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution


@dataclasses.dataclass(frozen=True)
class CachedCounters:
    policy: Any  # the CompiledPolicy they were built from (a reload makes a new one)
    counters: tuple[Counter, ...]
    valid_from: float  # every window of these counters holds for now in [valid_from, valid_until)
    valid_until: float


class Limits:
    def __init__(self, policy: PolicySource, metrics: GatewayMetrics) -> None:
        self._policy = policy
        self._metrics = metrics
        self.pricer = Pricer()
        self.store: CounterStore | None = None
        self.pending_settlements: set[asyncio.Task[None]] = set()
        self.settle_delay_seconds = SETTLE_DELAY_SECONDS
        # Settlements not started yet, (when, start) in the order they are due (the delay is the same
        # for each), and one timer for the first of them: not a TimerHandle (and heap push) per answer.
        self._deferred: collections.deque[tuple[float, Callable[[], None]]] = collections.deque()
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._deferred_loop: asyncio.AbstractEventLoop | None = None  # the timer's
        self._store_spec: tuple[str, str] | None = None
        # A request's counters change only when one of their windows rolls over or the policy is
        # reloaded, so they are built once per (policy, levels, windows), not per request.
        self._counters_cache: dict[tuple[int, str | None, str | None, str | None, str | None, str | None],
                                   CachedCounters] = {}  # fmt: skip
        self._budget_gauges: dict[str, Any] = {}
        # Called before a relayed request's reservation moves to another candidate (WriteAhead puts
        # it on record); one that raises keeps that candidate from being tried.
        self.on_switch: list[Callable[[Switch], None]] = []

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_store", str, "embedded",
            "Counter store for budgets and rate limits: 'embedded' (SQLite in the data dir, one instance) "
            "or a redis:// URL shared by several instances.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if not {"codexgate_store", "codexgate_data_dir"} & updated:
            return
        from codexgate.stores.factory import open_store

        spec = (ctx.options.codexgate_store, ctx.options.codexgate_data_dir)
        if spec == self._store_spec:
            return
        if spec[0] == "embedded" and not spec[1]:
            raise exceptions.OptionsError("codexgate_store=embedded needs codexgate_data_dir")
        try:
            self.store = open_store(spec[0], spec[1])
        except (ValueError, StoreUnavailable) as exc:
            raise exceptions.OptionsError(f"codexgate_store: {exc}") from None
        self._store_spec = spec

    def defer_settlement(self, start: Callable[[], None]) -> None:
        """Calls `start` once the answer has left (settle_delay_seconds later), or at shutdown."""
        loop = asyncio.get_running_loop()
        when = loop.time() + self.settle_delay_seconds
        self._deferred.append((when, start))
        # (another loop than the timer's: that loop ended, e.g. a test's asyncio.run; this one takes over)
        if self._deferred_timer is None or self._deferred_loop is not loop:
            self._deferred_timer, self._deferred_loop = loop.call_at(self._deferred[0][0], self._start_due), loop

    def _start_due(self) -> None:
        """Starts every deferred settlement that is due, as the loop would run a timer of its own for
        each (one is due once its time is less than a clock resolution away), and waits for the next."""
        self._deferred_timer = None
        loop = asyncio.get_running_loop()
        deferred = self._deferred
        end = loop.time() + _CLOCK_RESOLUTION
        while deferred and deferred[0][0] < end:
            _, start = deferred.popleft()
            try:
                start()
            except Exception:
                logger.exception("a deferred settlement could not start")
        if deferred:
            self._deferred_timer, self._deferred_loop = loop.call_at(deferred[0][0], self._start_due), loop

    async def done(self) -> None:
        # Settlements still on their way land before the store closes: nothing half-written.
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        deferred, self._deferred = self._deferred, collections.deque()
        for _, start in deferred:
            start()
        if self.pending_settlements:
            await asyncio.gather(*self.pending_settlements, return_exceptions=True)
        if self.store is not None:
            await self.store.close()

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.provider is None or state.model is None:
            return
        try:
            price = self.price_of(state, state.provider, state.model, state.upstream_model or state.model)
        except PriceUnknown:
            refuse(flow, price_unknown(state), Decision.PRICE_UNKNOWN)
            return
        sizing = Sizing.of(flow, state)
        now = time.time()
        counters = self._counters(state, now)
        metering = self._metering(state, price, counters, sizing, state.provider, state.model)
        metering.reservation_id = state.request_id
        state.metering = metering
        if state.relayed is not None:
            # The relay asks before each other candidate (addons/route.py): see admit_candidate.
            sizing.target = (state.provider, state.model, state.upstream_model or state.model)
            state.relayed.admit = functools.partial(self.admit_candidate, state, sizing)
        if not counters:
            return
        if self.store is None:
            raise RuntimeError("no counter store configured")
        try:
            admission = await self._reserve(state, metering, sizing, now)
        except StoreUnavailable as exc:
            self._metrics.store_errors.labels("reserve", state.policy.policy.gateway.on_store_error).inc()
            if state.policy.policy.gateway.on_store_error == "open":
                logger.error(
                    "counter store unavailable (%s); admitting %s unmetered (on_store_error: open)",
                    exc,
                    state.request_id,
                )
                metering.unmetered = True
                metering.output_cap = None
                return
            logger.error("counter store unavailable (%s); refusing %s (on_store_error: closed)", exc, state.request_id)
            refuse(flow, store_unavailable(), Decision.STORE_UNAVAILABLE)
            return
        metering.admission = admission
        self._set_gauges(admission)
        if admission.admitted:
            metering.reserved = True
            if metering.output_cap is not None:
                cap_output(flow, state, metering.output_cap)
            return
        response, decision = self._refusal(state, metering, sizing, admission, now)
        relayed, refused_by = state.relayed, admission.refused_by
        if (
            relayed is not None
            and len(relayed.candidates) > 1
            and refused_by is not None
            and (refused_by.counter_id.startswith(CANDIDATE_LEVELS))
        ):
            # Only the first choice's own provider or model is full (the key, team and org had
            # room: they come first): another candidate may have room there. The relay asks each in
            # turn (admit_candidate, which gives this refusal for the first choice without asking
            # the store again) and answers this refusal if none admits the request.
            sizing.target = None
            sizing.first_refusal = self._skip(
                state, relayed.candidates[0], _skip_reason(decision), _message_of(response), response, decision
            )
            return
        refuse(flow, response, decision)

    async def admit_candidate(self, state: GatewayRequest, sizing: Sizing, index: int) -> Skip | None:
        """Asked by the relay before it tries candidate `index` of a relayed request: the request's
        reservation moves to that candidate's levels (its provider and model, at its price), checked
        as if it had been the first choice. None: go ahead. A Skip: that candidate's own levels do not
        admit the request (budget, rate limit) or cannot be checked (store down, fail closed); the
        relay tries the next one, and answers with the first such refusal if none answers.

        At most one reservation is held at any moment (no level counts the request twice): the one
        held is released before the candidate's is made, under an id of its own (`<request id>~<i>`),
        which settlement and crash recovery then use. It goes on record in the write-ahead log
        before it is made (`on_switch`), so recovery after a crash charges the candidate that was
        answering. Another key of the deployment already counted (or a retry) changes nothing."""
        relayed, metering = state.relayed, state.metering
        if relayed is None or metering is None or metering.unmetered:
            return None  # not metered (fail open): nothing to move
        candidate = relayed.candidates[index]
        target = (candidate.provider, candidate.model, candidate.upstream_model)
        if metering.settled:  # the request ended meanwhile (the client left): nothing is sent now
            return self._skip(state, candidate, "settled", "the request already ended", request_ended())
        if index == 0 and sizing.first_refusal is not None:
            return sizing.first_refusal  # admission found its provider or model full (see request)
        if target == sizing.target:
            return None
        try:
            price = self.price_of(state, candidate.provider, candidate.model, candidate.upstream_model)
        except PriceUnknown:
            return self._skip(state, candidate, "model_price_unknown", "it has no known price", price_unknown(state),
                              Decision.PRICE_UNKNOWN)  # fmt: skip
        now = time.time()
        counters = self._counters(state, now, candidate)
        moved = self._metering(state, price, counters, sizing, candidate.provider, candidate.model)
        moved.reservation_id = f"{state.request_id}~{index}"
        switch = Switch(state.request_id, moved.reservation_id, candidate, moved.estimate, bool(counters))
        try:
            for hook in self.on_switch:
                hook(switch)  # on record before anything changes
        except Exception:
            logger.error("request %s: failing over to %s not put on record; not tried", state.request_id,
                         candidate.label, exc_info=True)  # fmt: skip
            return self._skip(state, candidate, "record_unavailable", "its write-ahead record failed",
                              record_unavailable(), Decision.RECORD_UNAVAILABLE)  # fmt: skip
        on_store_error = state.policy.policy.gateway.on_store_error
        try:
            if metering.reserved:
                if self.store is None:
                    raise RuntimeError("no counter store configured")
                await self.store.release(metering.reservation_id)
                metering.reserved = False
            sizing.target = None  # nothing held from here until the candidate's reservation is made
            for field in dataclasses.fields(Metering):
                if field.name not in ("settled", "unmetered"):
                    setattr(metering, field.name, getattr(moved, field.name))
            if not counters:
                sizing.target = target
                sizing.cap(state, None)
                return None
            if self.store is None:
                raise RuntimeError("no counter store configured")
            admission = await self._reserve(state, metering, sizing, now)
        except StoreUnavailable as exc:
            self._metrics.store_errors.labels("reserve", on_store_error).inc()
            if on_store_error == "open":
                logger.error("counter store unavailable (%s); request %s goes on to %s unmetered"
                             " (on_store_error: open)", exc, state.request_id, candidate.label)  # fmt: skip
                metering.unmetered = True
                sizing.cap(state, None)
                return None
            logger.error("counter store unavailable (%s); request %s: %s not tried (on_store_error: closed)",
                         exc, state.request_id, candidate.label)  # fmt: skip
            return self._skip(state, candidate, "store_unavailable", "the counter store is unavailable",
                              store_unavailable(), Decision.STORE_UNAVAILABLE)  # fmt: skip
        if metering.settled:
            # Charge settled the request while this reservation was being made (the flow ended; it
            # found nothing held): nothing may stay held for it.
            if admission.admitted:
                self._spawn_release(metering.reservation_id)
            return self._skip(state, candidate, "settled", "the request already ended", request_ended())
        metering.admission = admission
        self._set_gauges(admission)
        if admission.admitted:
            metering.reserved = True
            sizing.target = target
            sizing.cap(state, metering.output_cap)
            logger.info("request %s: failing over to %s; its reservation moved there", state.request_id,
                        candidate.label)  # fmt: skip
            return None
        response, decision = self._refusal(state, metering, sizing, admission, now)
        return self._skip(state, candidate, _skip_reason(decision), _message_of(response), response, decision)

    def _skip(
        self,
        state: GatewayRequest,
        candidate: Candidate,
        reason: str,
        detail: str,
        response: http.Response,
        decision: Decision | None = None,
    ) -> Skip:
        logger.warning("request %s: %s not tried: %s", state.request_id, candidate.label, detail)
        relayed = state.relayed
        if relayed is not None and relayed.refusal is None and decision is not None:
            relayed.refusal = decision  # the first one is the answer if no candidate answers
        headers = {name: value for name, value in response.headers.items()}
        return Skip(candidate.label, reason, detail, response.status_code, headers, response.content or b"")

    def _spawn_release(self, reservation_id: str) -> None:
        store = self.store
        if store is None:
            return

        async def release() -> None:
            try:
                await store.release(reservation_id)
            except StoreUnavailable as exc:
                logger.error("cannot release %s yet (%s); the store retries it, else it is charged as held",
                             reservation_id, exc)  # fmt: skip

        task = asyncio.get_running_loop().create_task(release())
        self.pending_settlements.add(task)
        task.add_done_callback(self.pending_settlements.discard)

    def _metering(
        self, state: GatewayRequest, price: PriceSource, counters: list[Counter], sizing: Sizing,
        provider: str, model: str,
    ) -> Metering:  # fmt: skip
        """What a request reserves at these counters, for `model` at `price` (nothing reserved yet)."""
        entry = state.policy.policy.models[model]
        hard = any([counter.hard for counter in counters]) if counters else False
        output_tokens = sizing.ceiling(entry.max_output_tokens) if hard else entry.output_allowance
        estimate = self._amounts(price, sizing.input_tokens, entry.output_allowance, output_tokens)
        metering = Metering(
            price=price, estimate=estimate, counters=counters, reservation=estimate, provider=provider, model=model,
        )  # fmt: skip
        if hard:
            # The worst case: every byte of the body a token (a text token is never shorter than one
            # byte, and the body carries all the text) and the most output the answer can have.
            metering.reservation = Amounts(
                usd=self.pricer.estimate(price, max(1, sizing.body_bytes), output_tokens),
                requests=1,
                tokens=metering.estimate.tokens,
            )
        return metering

    async def _reserve(self, state: GatewayRequest, metering: Metering, sizing: Sizing, now: float) -> Admission:
        """Reserves `metering.reservation` under `metering.reservation_id`; a hard budget that cannot
        pay the worst case caps the output (metering.output_cap) to what it can pay, if that is enough."""
        assert self.store is not None and metering.price is not None and metering.model is not None
        price = metering.price
        entry = state.policy.policy.models[metering.model]
        hard = any([counter.hard for counter in metering.counters])
        ceiling = sizing.ceiling(entry.max_output_tokens)
        output_tokens = ceiling if hard else entry.output_allowance
        hard_settings = state.policy.policy.gateway.hard_budgets
        admission = await self.store.reserve(metering.reservation_id, metering.counters, metering.reservation, now)
        # A hard budget whose remainder cannot pay the worst case: the output is capped to what it
        # can pay, and that is reserved instead (again atomically: another request may have taken
        # the room meanwhile, so a few tries with what the store then reports).
        for _ in range(HARD_CAP_TRIES if hard else 0):
            refused_by = admission.refused_by
            if refused_by is None or refused_by.kind != "usd":
                break
            cap = self._affordable_output(price, max(1, sizing.body_bytes), admission)
            if cap < min(hard_settings.min_output_tokens, ceiling) or cap >= output_tokens:
                break
            output_tokens = cap
            metering.output_cap = cap
            metering.estimate = self._amounts(price, sizing.input_tokens, entry.output_allowance, cap)
            metering.reservation = Amounts(
                usd=self.pricer.estimate(price, max(1, sizing.body_bytes), cap), requests=1,
                tokens=metering.estimate.tokens,
            )  # fmt: skip
            admission = await self.store.reserve(metering.reservation_id, metering.counters, metering.reservation, now)
        return admission

    def _refusal(
        self, state: GatewayRequest, metering: Metering, sizing: Sizing, admission: Admission, now: float
    ) -> tuple[http.Response, Decision]:
        """The 402 (budget) or 429 (rate limit) of a request `admission` did not admit."""
        counter = admission.refused_by
        assert counter is not None and metering.model is not None
        refused_state = next(s for s in admission.states if s.counter == counter)
        message = refusal_message(counter, refused_state, now)
        headers = ratelimit_headers(admission.states, now)
        if counter.kind == "usd":
            hard = any(c.hard for c in metering.counters)
            if hard and refused_state.used < counter.limit:
                ceiling = sizing.ceiling(state.policy.policy.models[metering.model].max_output_tokens)
                min_output = state.policy.policy.gateway.hard_budgets.min_output_tokens
                message += (
                    f"; what remains cannot pay for this request's input and {min(min_output, ceiling):,} output tokens"
                )
            return error_response(402, "budget_exceeded", message, headers=headers), Decision.BUDGET_EXCEEDED
        headers["retry-after"] = str(max(1, math.ceil(counter.resets_at - now)))
        return error_response(429, "rate_limit_exceeded", message, headers=headers), Decision.RATE_LIMITED

    def _set_gauges(self, admission: Admission) -> None:
        gauges = self._budget_gauges
        for counter_state in admission.states:
            counter = counter_state.counter
            if counter.kind == "usd":
                gauge = gauges.get(counter.counter_id)  # (`_budget_gauge`'s frame only for a new one)
                if gauge is None:
                    gauge = self._budget_gauge(counter)
                gauge.set(max(0.0, counter_state.remaining))

    def price_of(self, state: GatewayRequest, provider: str, model: str, upstream_model: str) -> PriceSource:
        """The price of `model` served by `provider` as `upstream_model` (raises PriceUnknown).
        It depends only on the loaded policy (and genai-prices' bundled data, which the pricer
        caches for good), so it is kept with the policy; an unknown price is asked again each time."""
        compiled = state.policy
        cache_key = (provider, model, upstream_model)
        found: PriceSource | None = compiled.prices.get(cache_key)
        if found is None:
            found = compiled.prices[cache_key] = self._price_of(state, provider, model, upstream_model)
        return found

    def _price_of(self, state: GatewayRequest, provider: str, model: str, upstream_model: str) -> PriceSource:
        policy = state.policy.policy
        default_price: Price | None = None if policy.gateway.unknown_price == "deny" else policy.gateway.unknown_price
        return self.pricer.source(
            family_of(state.policy, provider).price_id(), upstream_model, policy.models[model].price, default_price
        )

    def answered_elsewhere(self, state: GatewayRequest, metering: Metering) -> Candidate | None:
        """The relay's candidate that answered, when it is another provider or model than the one
        admission reserved for (its counters and price are then the ones to charge)."""
        relayed = state.relayed
        chosen = relayed.answered_by if relayed is not None else None
        if chosen is None or (chosen.provider == metering.provider and chosen.model == metering.model):
            return None
        return chosen

    def counters_of(self, state: GatewayRequest, now: float, answered_by: Candidate | None = None) -> list[Counter]:
        return self._counters(state, now, answered_by)

    def _amounts(self, price: PriceSource, input_tokens: int, allowance: int, output_tokens: int) -> Amounts:
        """What a request is charged when its usage never arrives (and reserves, under soft budgets)."""
        output = min(allowance, output_tokens)
        return Amounts(usd=self.pricer.estimate(price, input_tokens, output), requests=1, tokens=input_tokens + output)

    def _affordable_output(self, price: PriceSource, input_bound: int, admission: Admission) -> int:
        """The most output tokens every budget of the request can still pay for, with its input."""
        room = min((s.counter.limit - s.used for s in admission.states if s.counter.kind == "usd"), default=math.inf)
        per_output = self.pricer.estimate(price, 0, 1)
        if per_output <= 0 or room == math.inf:
            return -1  # free output (or no budget): the input itself does not fit
        cap = math.floor((room - self.pricer.estimate(price, input_bound, 0)) / per_output)
        while cap > 0 and self.pricer.estimate(price, input_bound, cap) > room:
            cap -= max(1, cap // 1_000_000)  # float rounding: a token or two at most
        return cap

    def _counters(self, state: GatewayRequest, now: float, answered_by: Candidate | None = None) -> list[Counter]:
        # The levels (`levels_of`) are a function of the loaded policy, the key's name (as every
        # per-key cache of the policy assumes), team, org, provider and model: the cache is keyed by
        # those, so a hit builds no levels at all.
        compiled, key = state.policy, state.key
        if answered_by is None:
            provider, model = state.provider, state.model
        else:
            provider, model = answered_by.provider, answered_by.model
        cache_key = (id(compiled), key.name if key is not None else None, state.team, state.org, provider, model)
        cached = self._counters_cache.get(cache_key)
        if cached is not None and cached.policy is compiled and cached.valid_from <= now < cached.valid_until:
            return list(cached.counters)
        levels = levels_of(state, answered_by)
        counters = counters_for(levels, now, state.policy.policy.gateway.hard_budgets.epsilon_usd)
        if len(self._counters_cache) >= COUNTERS_CACHE_SIZE:
            self._counters_cache.clear()  # policy reloads and many keys: start over rather than grow
        self._counters_cache[cache_key] = CachedCounters(
            state.policy,
            tuple(counters),
            max((c.bucket_start for c in counters), default=-math.inf),
            min((c.resets_at for c in counters), default=math.inf),
        )
        return counters

    def _budget_gauge(self, counter: Counter) -> Any:
        gauge = self._budget_gauges.get(counter.counter_id)
        if gauge is None:
            if len(self._budget_gauges) >= COUNTERS_CACHE_SIZE:
                self._budget_gauges.clear()
            gauge = self._metrics.budget_remaining.labels(*_level_label(counter))
            self._budget_gauges[counter.counter_id] = gauge
        return gauge

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        metering = state.metering if state is not None else None
        if flow.response is None or metering is None:
            return
        if metering.unmetered:
            flow.response.headers["x-codexgate-metering"] = "unavailable"
        elif metering.admission is not None and metering.reserved:
            fields = ratelimit_header_fields(metering.admission.states, time.time())
            replace_header_fields(flow.response.headers, fields)


def actual_amounts(usage: Usage, cost: float) -> Amounts:
    return Amounts(usd=cost, requests=1, tokens=usage.input_tokens + usage.output_tokens)


class Charge:
    """Settles each request's reservation once its answer is complete (or broken)."""

    def __init__(self, limits: Limits, metrics: GatewayMetrics) -> None:
        self._limits = limits
        self._metrics = metrics

    async def error(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and client_left(flow) and state.decision.in_flight:
            # Not the provider's failure: its own outcome, charged what the provider produced when
            # its usage can still be read (the relay reads a stream on after the client left).
            state.decision = Decision.CLIENT_DISCONNECTED
            await self._usage_after_client_left(state)
        await self._settle(flow, broken=True)

    @staticmethod
    async def _usage_after_client_left(state: GatewayRequest) -> None:
        if state.usage is None and state.reader is not None and state.reader.usage is not None:
            state.usage = state.reader.usage  # it had passed before the client went
        relayed = state.relayed
        if state.usage is not None or relayed is None or relayed.ended is None or state.forwarded_at is None:
            return  # (a request that never left never reached the relay: nothing to wait for)
        try:
            # The relay bounds its reading on (read_after_client_left); this bound is only a backstop.
            await asyncio.wait_for(asyncio.shield(relayed.ended), DRAIN_MAX_SECONDS + 5)
        except TimeoutError:
            logger.warning("request %s: the relay did not finish reading after the client left", state.request_id)
        if relayed.drained_usage is not None:
            state.usage = relayed.drained_usage

    async def _settle(self, flow: http.HTTPFlow, broken: bool = False) -> None:
        state = state_of(flow)
        metering = state.metering if state is not None else None
        if state is None or metering is None or metering.settled:
            return
        metering.settled = True
        # A relay that failed over: the provider (and model) that answered is charged, at its price.
        # Normally the reservation moved there before that attempt (admit_candidate) and is settled
        # as it is; only when it could not move (the store was down, fail open) does it move now.
        elsewhere = self._limits.answered_elsewhere(state, metering) if state.relayed is not None else None
        price = metering.price
        if elsewhere is not None:
            try:
                price = self._limits.price_of(state, elsewhere.provider, elsewhere.model, elsewhere.upstream_model)
            except PriceUnknown:
                logger.warning("request %s: no price for %s; charged at the first choice's", state.request_id,
                               elsewhere.label)  # fmt: skip
        try:
            amounts, how = self._amounts(flow, state, metering, broken, price)
        except Exception:
            logger.exception("cannot price request %s; charging its estimate", state.request_id)
            amounts, how = metering.estimate, "estimate"
        state.cost_usd = amounts.usd
        state.charge_basis = how
        if not metering.reserved or self._limits.store is None:
            return
        counters = None
        if elsewhere is not None and how != "release":
            counters = self._limits.counters_of(state, time.time(), elsewhere)
        # What is held: the request's own reservation, or a failover candidate's (admit_candidate).
        reservation_id = metering.reservation_id or state.request_id
        # The answer need not wait for the store: the cost is known (the accounting line and the
        # audit record have it), and settling is idempotent and awaited at shutdown. It starts
        # after the answer is written (see SETTLE_DELAY_SECONDS).
        self._limits.defer_settlement(
            functools.partial(self._start_settle, state, reservation_id, amounts, how, counters)
        )

    def _start_settle(
        self, state: GatewayRequest, reservation_id: str, amounts: Amounts, how: str, counters: list[Counter] | None
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._store_settle(state, reservation_id, amounts, how, counters))
        self._limits.pending_settlements.add(task)
        task.add_done_callback(self._limits.pending_settlements.discard)

    async def _store_settle(
        self, state: GatewayRequest, reservation_id: str, amounts: Amounts, how: str, counters: list[Counter] | None
    ) -> None:
        assert self._limits.store is not None
        try:
            if how == "release":
                await self._limits.store.release(reservation_id)
            elif counters is not None:
                await self._limits.store.settle_to(reservation_id, amounts, counters, time.time())
            else:
                await self._limits.store.settle(reservation_id, amounts)
        except StoreUnavailable as exc:
            # The store tries again for a while (settling is idempotent); if it never gets through,
            # the reservation stays and is charged at what it holds once it is stale.
            self._metrics.store_errors.labels("settle", state.policy.policy.gateway.on_store_error).inc()
            logger.error(
                "cannot settle %s yet (%s); the store retries it, else its reservation is charged as held",
                state.request_id,
                exc,
            )
        except Exception:
            logger.exception("settling %s failed", state.request_id)

    # The hook is `_settle` itself (an answer that arrived whole): no frame of its own per request.
    response = _settle

    @staticmethod
    def _amounts(
        flow: http.HTTPFlow, state: GatewayRequest, metering: Metering, broken: bool, price: PriceSource | None
    ) -> tuple[Amounts, str]:
        if state.answered_locally and state.decision is not Decision.ANSWERED:
            return Amounts(), "release"  # refused by the gateway after admission: nothing used
        if state.usage is not None and price is not None:
            usage = state.usage  # (`actual_amounts`, inline)
            return Amounts(usd=price.cost(usage), requests=1, tokens=usage.input_tokens + usage.output_tokens), "actual"
        status = flow.response.status_code if flow.response is not None else None
        if not broken and status is not None and status >= 400:
            return Amounts(requests=1), "upstream_error"  # the provider refused: it charges nothing
        # Cut short before usage arrived (or no usage reported): never zero.
        return metering.estimate, "estimate"
