"""Failover across deployments: weighted order, health cooldowns, and the relay that retries.

mitmproxy streams only what it forwards itself and cannot send a request again elsewhere after
a 429/5xx. A request with more than one candidate deployment (several routes or keys, or
fallback models) is therefore pointed at the in-process relay (`codexgate.relay.Relay`),
which tries the candidates in order and streams the first good answer back through mitmproxy.
This addon owns the relay and the health store, plans the candidates (`plan_candidates`, used by
`Route`), and reads back which attempt answered (`responseheaders`).

Budgets and rate limits hold at every candidate: before the relay tries another deployment, the
request's reservation moves to that deployment's provider and model levels (`Limits`), and a
candidate whose levels cannot admit the request is not tried (outcome `skipped_<reason>`). When
none is left, the client gets that refusal (402, 429, ...), as if it had been the first choice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sqlite3
from typing import Any

from mitmproxy import ctx, http

from codexgate.errors import error_response
from codexgate.flowstate import Candidate, Decision, GatewayRequest, state_of
from codexgate.health import HealthStore, MemoryHealth, RedisHealth, weighted_order
from codexgate.health_shared import COOLDOWNS_FILE, SQLiteHealth
from codexgate.metrics import GatewayMetrics
from codexgate.policies.loader import upstream_model
from codexgate.providers.registry import family_for
from codexgate.relay import Relay
from codexgate.secrets import SecretResolver
from codexgate.stores.factory import resolve_store_reference

logger = logging.getLogger(__name__)

# Outcomes after which a deployment is cooled down (the provider, not the request, was at fault).
COOLDOWN_OUTCOMES = frozenset(
    {"rate_limited", "overloaded", "server_error", "connect_error", "connection_reset", "tls_error",
     "connect_timeout", "first_byte_timeout", "idle_timeout", "stream_broken"}
)  # fmt: skip


def candidate_groups(state: GatewayRequest) -> tuple[tuple[tuple[Candidate, int], ...], ...]:
    """(candidate, weight) groups: the asked model's routes (and keys), then each fallback model.
    They depend only on the loaded policy, the model and the key's name (as `allowed_providers`
    does), so they are built once per (model, key) and kept with the policy (a reload drops them);
    tuples of frozen candidates: nothing a request does changes them."""
    assert state.model is not None
    compiled = state.policy
    cache_key = (state.model, state.key.name if state.key is not None else None)
    groups = compiled.candidate_groups.get(cache_key)
    if groups is None:
        groups = compiled.candidate_groups[cache_key] = _candidate_groups(state)
    return groups


def _candidate_groups(state: GatewayRequest) -> tuple[tuple[tuple[Candidate, int], ...], ...]:
    policy = state.policy.policy
    groups: list[tuple[tuple[Candidate, int], ...]] = []
    assert state.model is not None
    # A key (or its team) restricted to some providers never reaches another, not even by fallback.
    allowed = state.policy.allowed_providers(state.key) if state.key is not None else None
    for model_name in [state.model, *policy.models[state.model].fallbacks]:
        entry = policy.models[model_name]
        group: list[tuple[Candidate, int]] = []
        for route in entry.routes:
            if allowed is not None and route.provider not in allowed:
                continue
            upstream = upstream_model(route, model_name)
            # Each of a provider's keys is a deployment of its own, chosen by weight and failed
            # over to like any other; a family without a key list is one deployment.
            key_weights = family_for(policy.providers[route.provider]).key_weights()
            for index, key_weight in enumerate(key_weights):
                label = f"{route.provider}/{upstream}#{index}"
                group.append((Candidate(label, model_name, route.provider, upstream, index), route.weight * key_weight))
            if not key_weights:
                group.append(
                    (Candidate(f"{route.provider}/{upstream}", model_name, route.provider, upstream, 0), route.weight)
                )
        groups.append(tuple(group))
    return tuple(groups)


class Failover:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self.relay: Relay | None = None
        self.health: HealthStore = MemoryHealth()
        self.secrets = SecretResolver()
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cooldown = 30.0
        # (provider, outcome) -> its child of the attempts counter: prometheus' `.labels()` takes a
        # lock and builds its key on every call; attempts report the same few pairs over and over.
        self._attempt_counters: dict[tuple[str, str], Any] = {}

    def configure(self, updated: set[str]) -> None:
        if {"codexgate_store", "codexgate_writer_id", "codexgate_data_dir"} & updated:
            spec = resolve_store_reference(ctx.options.codexgate_store)
            # Cooldowns are shared where limits are: in Redis when several instances run, in the
            # data dir when several workers of one `codexgate up --workers N` share it.
            if spec.startswith(("redis://", "rediss://", "unix://")):
                self.health = RedisHealth(spec)
            elif getattr(ctx.options, "codexgate_writer_id", "") and ctx.options.codexgate_data_dir:
                path = os.path.join(ctx.options.codexgate_data_dir, COOLDOWNS_FILE)
                try:
                    self.health = SQLiteHealth(path)
                except sqlite3.Error as exc:  # advisory: this worker keeps its own cooldowns
                    logger.warning("shared cooldowns %s cannot be opened (%s); this worker keeps its own", path, exc)
                    self.health = MemoryHealth()
            else:
                self.health = MemoryHealth()

    async def running(self) -> None:
        self.relay = Relay(on_attempt=self._on_attempt, on_auth_failure=self._on_auth_failure)
        await self.relay.start()  # it logs where it listens
        relay = self.relay
        self._metrics.relay_plans.set_function(lambda: relay.pending)  # read at scrape time

    async def done(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        close = getattr(self.health, "close", None)
        if close is not None:
            await close()

    async def order(self, state: GatewayRequest) -> list[Candidate]:
        compiled = state.policy
        self._cooldown = compiled.policy.gateway.resilience.cooldown_seconds
        assert state.model is not None
        # `candidate_groups(state)`, its cache looked up here (a frame less per request)
        groups = compiled.candidate_groups.get((state.model, state.key.name if state.key is not None else None))
        if groups is None:
            groups = candidate_groups(state)
        if len(groups) == 1 and len(groups[0]) <= 1:
            return [candidate for candidate, _ in groups[0]]  # one deployment, no fallback: nothing to order
        ordered: list[Candidate] = []
        for group in groups:
            by_label = {candidate.label: candidate for candidate, _ in group}
            ordered += [by_label[label] for label in weighted_order([(c.label, w) for c, w in group], self.rng)]
        if len(ordered) < 2:
            return ordered
        # Cooling deployments go last, behind every healthy one (fallbacks included): a last
        # resort beats refusing outright, since a cooldown may be over-cautious.
        cooling = await self.health.down([c.label for c in ordered])
        return [c for c in ordered if c.label not in cooling] + [c for c in ordered if c.label in cooling]

    def _on_attempt(self, deployment: str, outcome: str, status: int | None, seconds: float) -> None:
        provider = deployment.split("/", 1)[0]
        counter = self._attempt_counters.get((provider, outcome))
        if counter is None:
            if len(self._attempt_counters) >= 1024:
                self._attempt_counters.clear()  # many providers over many reloads: start over
            counter = self._attempt_counters[(provider, outcome)] = self._metrics.attempts.labels(provider, outcome)
        counter.inc()
        if outcome in COOLDOWN_OUTCOMES and self._cooldown > 0:
            logger.warning("deployment %s %s (status %s); cooling it down for %.0f s", deployment, outcome, status,
                           self._cooldown)  # fmt: skip
            self._spawn(self.health.mark_down(deployment, self._cooldown, outcome))

    def _on_auth_failure(self, deployment: str) -> None:
        # A key the provider refuses stays refused: leave it alone much longer than a bad minute.
        logger.error("provider refused the gateway's credentials for %s; cooling it down", deployment)
        self._spawn(self.health.mark_down(deployment, max(self._cooldown, 1.0) * 20, "auth_error"))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """The relay serves the gateway alone: a client cannot reach it through the proxy listener."""
        relay = self.relay
        # (`request.data.port`: what the `port` property returns, without its frame)
        if relay is None or flow.response is not None or flow.request.data.port != getattr(relay, "port", None):
            return
        if flow.request.host in ("127.0.0.1", "localhost", "::1"):
            flow.response = error_response(
                403, "forbidden_destination", "the gateway's internal relay is not reachable"
            )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Which attempt answered: its provider, model and translation become the request's."""
        state = state_of(flow)
        relayed = state.relayed if state is not None else None
        if state is None or relayed is None or flow.response is None or state.answered_locally:
            return  # answered locally: the gateway refused the request before the relay saw it
        headers = flow.response.headers
        try:
            state.attempts = json.loads(headers.get("x-codexgate-attempts", "[]"))
        except ValueError:
            state.attempts = []
        index = headers.get("x-codexgate-attempt")
        if index is None or not index.isdigit() or int(index) >= len(relayed.candidates):
            # Every attempt failed: the relay answered with an OpenAI-shaped summary of them, or with
            # the refusal of a candidate the gateway's limits did not admit (see Limits.admit_candidate).
            state.answered_locally = True
            state.decision = relayed.refusal or Decision.UPSTREAM_EXHAUSTED
            return
        chosen = relayed.answered_by = relayed.candidates[int(index)]
        # The record names what answered: the fallback model (`model_requested` keeps what was asked).
        state.model, state.provider, state.upstream_model = chosen.model, chosen.provider, chosen.upstream_model
        state.translation = relayed.translations.get(int(index))
        if int(index) > 0:
            headers["x-codexgate-fallback"] = chosen.label
