"""Routes an admitted request to a provider deployment of its model, and points it there.

Candidates are the model's routes and their keys in weighted order with cooling-down deployments
last, then the model's fallback models. One candidate (or a local mock first): the request goes
straight to it. Several: it goes through the failover relay with every candidate prepared — by its
provider family (`providers/registry.py`), translated anew for each — right before its attempt.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from codexgate.addons.failover import Failover
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Candidate, Decision, GatewayRequest, RelayedRequest, Translation, refuse, state_of
from codexgate.headers import replace_headers
from codexgate.metrics import GatewayMetrics
from codexgate.providers.base import UnsupportedRequest, refuse_stateful
from codexgate.providers.family import CODEX_HEADERS, ProviderFamily, new_context
from codexgate.providers.registry import CLIENT_CREDENTIAL_HEADERS, family_of
from codexgate.relay import Attempt, Plan, Skip, Timeouts
from codexgate.request_target import point_at
from codexgate.usage import StreamUsageReader

logger = logging.getLogger(__name__)

# Never copied onto a relayed attempt: the relay makes its own connection and framing.
HOP_HEADERS = (
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer",
    "proxy-connection", "content-encoding",
)  # fmt: skip


def chat_body_to_responses(body: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions request for a provider reached through the Responses translators."""
    from codexgate.providers import chat_ingress

    return chat_ingress.chat_to_translator_body(body)


class Route:
    def __init__(self, failover: Failover | None = None) -> None:
        self._failover = failover or Failover(GatewayMetrics())

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.model is None or state.body is None:
            return
        if state.model not in state.policy.models_by_name:  # (`lookup_model`, without its frame)
            raise RuntimeError(f"admitted model {state.model} has no entry")
        candidates = await self._failover.order(state)
        policy = state.policy
        if state.endpoint == "responses" and needs_stored_state(state.body):
            # Only OpenAI-style deployments keep responses; a translated one would refuse the
            # request after the relay had already counted it a failed attempt (and tried the next,
            # ending in 502). Such a request goes to the deployments that can serve it, in order.
            servable = [c for c in candidates if _keeps_responses(family_of(policy, c.provider))]
            if not servable:
                refuse(flow, stateful_refusal(state.body, candidates[0].provider), Decision.INVALID_BODY)
                return
            candidates = servable
        first = candidates[0]
        family = policy.families.get(first.provider)  # `family_of`, the frame only on first use
        if family is None:
            family = family_of(policy, first.provider)
        if len(candidates) == 1 or family.answers_locally:
            # One deployment (or a local mock first): mitmproxy forwards the request itself.
            state.provider, state.upstream_model = first.provider, first.upstream_model
            state.key_index = first.key_index
            point(flow, state, family)
            return
        relayable = [c for c in candidates if not family_of(policy, c.provider).answers_locally]
        self._relayed(flow, state, relayable)

    def _release_plan(self, flow: http.HTTPFlow) -> None:
        """Drop the relay plan of a request that never reached the relay — refused by a later
        step (Limits, Credentials, Seal) or failed before it left — instead of holding its
        closure and body until `total_timeout`. A plan the relay took is already gone: no-op."""
        state = state_of(flow)
        relayed = state.relayed if state is not None else None
        if relayed is not None and relayed.token and self._failover.relay is not None:
            self._failover.relay.discard(relayed.token)

    # The hooks are `_release_plan` itself: no frame of their own per request.
    response = _release_plan
    error = _release_plan

    # -- several deployments: the relay tries them in order -------------------------------------------

    def _relayed(self, flow: http.HTTPFlow, state: GatewayRequest, candidates: list[Candidate]) -> None:
        relay = self._failover.relay
        if relay is None:
            raise RuntimeError("the failover relay is not running")
        settings = state.policy.policy.gateway.resilience
        relayed = RelayedRequest(token="", candidates=candidates)
        client_headers = {
            name: value
            for name, value in flow.request.headers.items()
            if name.lower() not in HOP_HEADERS and name.lower() not in CLIENT_CREDENTIAL_HEADERS
        }

        async def build(index: int) -> Attempt | Skip | None:
            if index >= len(candidates):
                return None
            if relayed.admit is not None:
                # Limits moves the reservation to this candidate's provider and model first (or
                # refuses it there: its budget or rate limit is used up) — before it is prepared.
                skip = await relayed.admit(index)
                if skip is not None:
                    return skip
            return await self._attempt(state, candidates[index], index, relayed, client_headers)

        plan = Plan(
            build,
            Timeouts(
                settings.connect_timeout, settings.first_byte_timeout, settings.idle_timeout, settings.total_timeout
            ),
            retry_after_max=settings.retry_after_max,
            label=state.request_id,
        )  # fmt: skip
        plan.drain = functools.partial(_usage_sink, state, relayed)
        plan.drain_seconds = settings.read_after_client_left
        relayed.ended = asyncio.get_running_loop().create_future()
        plan.ended = functools.partial(_resolve_ended, relayed.ended)
        relayed.token = relay.register(plan)
        state.relayed = relayed
        # Limits reserve against the first choice; before each other candidate, `relayed.admit`.
        state.provider, state.upstream_model = candidates[0].provider, candidates[0].upstream_model
        point_at(flow.request, relay.url(relayed.token))
        flow.request.headers["accept-encoding"] = "identity"

    async def _attempt(
        self,
        state: GatewayRequest,
        candidate: Candidate,
        index: int,
        relayed: RelayedRequest,
        client_headers: dict[str, str],
    ) -> Attempt:
        """The request for one candidate, prepared right before it is sent (keys, SigV4)."""
        assert state.body is not None
        family = family_of(state.policy, candidate.provider)
        translation = prepare_translation(state, family, candidate.upstream_model, candidate.provider)
        if translation is None:
            raise ValueError(f"{candidate.provider} cannot serve {state.endpoint}")
        prepared = translation.prepared
        if family.passthrough:
            headers = dict(client_headers)
        else:
            headers = {k: v for k, v in client_headers.items() if k.lower() not in CODEX_HEADERS}
        headers.update(prepared.headers)
        headers.update(await family.credentials(prepared, candidate.key_index, self._failover.secrets))
        headers["content-type"] = "application/json"
        relayed.translations[index] = translation
        body = prepared.body if prepared.body is not None else json.dumps(state.body).encode()
        return Attempt(
            candidate.label,
            prepared.url,
            headers,
            body,
            on_auth_error=functools.partial(family.on_auth_error, prepared),
        )


def prepare_translation(
    state: GatewayRequest, family: ProviderFamily[Any], upstream: str, provider: str
) -> Translation | None:
    """The upstream request for one provider, None when it cannot serve the client's endpoint.
    Chat Completions clients of a family that speaks only Responses go through the Responses
    translators and get their answer back as Chat Completions."""
    assert state.body is not None
    endpoint = state.endpoint or "responses"
    chat_model: str | None = None
    body = state.body
    if endpoint in family.endpoints:
        if not family.passthrough and not family.answers_locally:
            body = dict(body, stream=state.stream)
    elif endpoint == "chat" and "responses" in family.endpoints:
        body = dict(chat_body_to_responses(body), stream=state.stream)
        chat_model = state.model_requested
    else:
        return None
    prepared = family.prepare(body, upstream, provider, endpoint if chat_model is None else "responses")
    context = new_context(state.model_requested or upstream, provider) if prepared.translate else None
    translation = Translation(family, prepared, context)
    if chat_model is not None:
        from codexgate.providers import chat_ingress

        translation.chat_model = chat_model
        translation.chat_usage = chat_ingress.wants_usage(state.body)
    return translation


def point(flow: http.HTTPFlow, state: GatewayRequest, family: ProviderFamily[Any], *, rewrite: bool = False) -> None:
    """Point a directly routed request at its provider, prepared by its family from `state.body`
    (`rewrite`: the body changed since the client sent it, e.g. capped by a hard budget)."""
    assert state.body is not None and state.provider is not None
    upstream = state.upstream_model or state.model or ""
    try:
        translation = prepare_translation(state, family, upstream, state.provider)
    except ValueError as exc:  # a Chat Completions request the Responses API cannot express
        body = getattr(exc, "body", None)
        refuse(
            flow,
            http.Response.make(400, json.dumps(body()).encode(), {"content-type": "application/json"})
            if callable(body)
            else error_response(400, "invalid_request", str(exc)),
            Decision.INVALID_BODY,
        )
        return
    if translation is None:
        refuse(flow, unsupported_chat(state.provider), Decision.ENDPOINT_NOT_SUPPORTED)
        return
    state.translation = translation
    if family.answers_locally:
        return  # answered in the gateway (MockUpstream): nothing leaves
    prepared = translation.prepared
    headers = flow.request.data.headers  # (what the `headers` property returns, without its frame)
    if not family.passthrough:
        for name in CODEX_HEADERS:
            headers.pop(name, None)
        headers.pop("content-encoding", None)
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # the answer is translated as it passes
    point_at(flow.request, prepared.url)  # as `flow.request.url = ...`, without parsing it per request
    if prepared.body is not None:
        flow.request.content = prepared.body  # (sets content-length too)
    elif rewrite:
        flow.request.content = json.dumps(state.body).encode()
    if prepared.headers:
        replace_headers(headers, prepared.headers)  # one pass over the fields (Headers.update: several per name)
    if prepared.dropped_tools:
        logger.info("request %s to %s: tools it cannot serve were dropped: %s", state.request_id,
                    state.provider, ", ".join(prepared.dropped_tools))  # fmt: skip
    if prepared.dropped_params:
        logger.info("request %s to %s: parameters it has no counterpart for were dropped: %s", state.request_id,
                    state.provider, ", ".join(prepared.dropped_params))  # fmt: skip


def _keeps_responses(family: ProviderFamily[Any]) -> bool:
    """Whether a deployment can serve what relies on stored responses (see `refuse_stateful`)."""
    return family.passthrough or family.answers_locally


def needs_stored_state(body: dict[str, Any]) -> bool:
    """A Responses request that relies on OpenAI keeping responses (see `refuse_stateful`)."""
    return body.get("previous_response_id") is not None or body.get("background") is True


def stateful_refusal(body: dict[str, Any], provider: str) -> http.Response:
    """The 400 a translated provider gives such a request, naming the parameter."""
    try:
        refuse_stateful(body, provider)
    except UnsupportedRequest as refusal:
        return http.Response.make(400, json.dumps(refusal.body()).encode(), {"content-type": "application/json"})
    raise AssertionError("needs_stored_state and refuse_stateful disagree")


def unsupported_chat(provider: str | None) -> http.Response:
    return error_response(
        400, "endpoint_not_supported", f"provider {provider} is reached through POST /v1/responses only"
    )


def _usage_sink(state: GatewayRequest, relayed: RelayedRequest, index: int) -> Callable[[bytes], bool] | None:
    """What the relay feeds the rest of an answer to once the client left: the provider's usage
    is read from it, so the request is charged what was produced rather than its estimate."""
    translation = relayed.translations.get(index)
    if translation is not None and translation.prepared.translate:
        return None  # a translated stream's usage needs the translator's state from its start: closed
    reader = StreamUsageReader(state.endpoint or "responses")

    def sink(chunk: bytes) -> bool:
        if chunk:
            reader.feed(chunk)
        if reader.usage is not None:
            relayed.drained_usage = reader.usage
        return reader.usage is not None

    return sink


def _resolve_ended(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


def reprepare(flow: http.HTTPFlow, state: GatewayRequest) -> None:
    """Prepares a directly routed request anew from `state.body` (a hard budget capped its output)."""
    assert state.provider is not None
    point(flow, state, family_of(state.policy, state.provider), rewrite=True)
