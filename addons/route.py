"""Routes an admitted request to a provider deployment of its model, and points it there.

Candidates are the model's routes (and, for OpenAI-style providers, their keys) in weighted
order with cooling-down deployments last, then the model's fallback models. One candidate (or a
local mock first): the request goes straight to it. Several: it goes through the failover relay
with every candidate prepared — translated anew for each provider — right before its attempt.
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
from codexgate.headers import CLIENT_CREDENTIAL_HEADERS
from codexgate.metrics import GatewayMetrics
from codexgate.policies.schema import MockProvider, OpenAIProvider
from codexgate.providers.adapters import CODEX_HEADERS, Adapter, adapter_for, new_context
from codexgate.providers.base import UnsupportedRequest, refuse_stateful
from codexgate.providers.openai import auth_headers, upstream_target
from codexgate.relay import Attempt, Plan, Timeouts
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
        if state.policy.lookup_model(state.model) is None:
            raise RuntimeError(f"admitted model {state.model} has no entry")
        candidates = await self._failover.order(state)
        providers = state.policy.policy.providers
        if state.endpoint == "responses" and needs_stored_state(state.body):
            # Only OpenAI-style deployments keep responses; a translated one would refuse the
            # request after the relay had already counted it a failed attempt (and tried the next,
            # ending in 502). Such a request goes to the deployments that can serve it, in order.
            servable = [c for c in candidates if adapter_for(providers[c.provider]) is None]
            if not servable:
                refuse(flow, stateful_refusal(state.body, candidates[0].provider), Decision.INVALID_BODY)
                return
            candidates = servable
        first = candidates[0]
        if len(candidates) == 1 or isinstance(providers[first.provider], MockProvider):
            self._direct(flow, state, first)
            return
        relayable = [c for c in candidates if not isinstance(providers[c.provider], MockProvider)]
        self._relayed(flow, state, relayable)

    def response(self, flow: http.HTTPFlow) -> None:
        self._release_plan(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._release_plan(flow)

    def _release_plan(self, flow: http.HTTPFlow) -> None:
        """Drop the relay plan of a request that never reached the relay — refused by a later
        step (Limits, Credentials, Seal) or failed before it left — instead of holding its
        closure and body until `total_timeout`. A plan the relay took is already gone: no-op."""
        state = state_of(flow)
        relayed = state.relayed if state is not None else None
        if relayed is not None and relayed.token and self._failover.relay is not None:
            self._failover.relay.discard(relayed.token)

    # -- one deployment: mitmproxy forwards the request itself ---------------------------------------

    def _direct(self, flow: http.HTTPFlow, state: GatewayRequest, chosen: Candidate) -> None:
        assert state.body is not None
        state.provider, state.upstream_model = chosen.provider, chosen.upstream_model
        state.key_index = chosen.key_index
        provider = state.policy.policy.providers[chosen.provider]
        adapter = adapter_for(provider)
        if adapter is not None:
            self._translated(flow, state, adapter)
            return
        body = state.body
        rewrite = False
        if body.get("model") != chosen.upstream_model:
            body["model"] = chosen.upstream_model
            rewrite = True
        if state.endpoint == "chat" and state.stream and not (body.get("stream_options") or {}).get("include_usage"):
            # Without it a Chat stream carries no usage and the request could not be accounted.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            rewrite = True
        if isinstance(provider, OpenAIProvider):
            scheme, host, port, path = upstream_target(provider.base_url, state.endpoint or "responses")
            flow.request.url = f"{scheme}://{host}:{port}{path}"
            if state.stream:
                # The stream is read as it passes; a compressed stream could not be.
                flow.request.headers["accept-encoding"] = "identity"
            if rewrite:
                flow.request.content = json.dumps(body).encode()

    @staticmethod
    def _translated(flow: http.HTTPFlow, state: GatewayRequest, adapter: Adapter) -> None:
        """Point the request at a provider that speaks another API, with its body translated."""
        assert state.body is not None and state.provider is not None
        upstream = state.upstream_model or state.model or ""
        try:
            translation = prepare_translation(state, adapter, upstream, state.provider)
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
        prepared = translation.prepared
        headers = flow.request.headers
        for name in CODEX_HEADERS:
            headers.pop(name, None)
        headers.pop("content-encoding", None)
        flow.request.url = prepared.url
        flow.request.content = prepared.body  # (sets content-length too)
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # the answer is translated as it passes
        headers.update(prepared.headers)
        state.translation = translation
        if prepared.dropped_tools:
            logger.info("request %s to %s: tools it cannot serve were dropped: %s", state.request_id,
                        state.provider, ", ".join(prepared.dropped_tools))  # fmt: skip
        if prepared.dropped_params:
            logger.info("request %s to %s: parameters it has no counterpart for were dropped: %s", state.request_id,
                        state.provider, ", ".join(prepared.dropped_params))  # fmt: skip

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

        def build(index: int) -> Attempt | None:
            if index >= len(candidates):
                return None
            return self._attempt(state, candidates[index], index, relayed, client_headers)

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
        # Limits are reserved against the first choice; the answering attempt is recorded later.
        state.provider, state.upstream_model = candidates[0].provider, candidates[0].upstream_model
        flow.request.url = relay.url(relayed.token)
        flow.request.headers["accept-encoding"] = "identity"

    def _attempt(
        self,
        state: GatewayRequest,
        candidate: Candidate,
        index: int,
        relayed: RelayedRequest,
        client_headers: dict[str, str],
    ) -> Attempt:
        """The request for one candidate, prepared right before it is sent (keys, SigV4)."""
        assert state.body is not None
        provider = state.policy.policy.providers[candidate.provider]
        secrets = self._failover.secrets
        adapter = adapter_for(provider)
        if adapter is not None:
            translation = prepare_translation(state, adapter, candidate.upstream_model, candidate.provider)
            if translation is None:
                raise ValueError(f"{candidate.provider} cannot serve {state.endpoint}")
            headers = {k: v for k, v in client_headers.items() if k.lower() not in CODEX_HEADERS}
            headers.update(translation.prepared.headers)
            headers.update(adapter.credentials(translation.prepared, secrets))
            headers["content-type"] = "application/json"
            relayed.translations[index] = translation
            return Attempt(candidate.label, translation.prepared.url, headers, translation.prepared.body)
        if not isinstance(provider, OpenAIProvider):
            raise ValueError(f"provider {candidate.provider} cannot be relayed")
        body = dict(state.body, model=candidate.upstream_model)
        if state.endpoint == "chat" and state.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        scheme, host, port, path = upstream_target(provider.base_url, state.endpoint or "responses")
        headers = dict(client_headers)
        headers.update(auth_headers(secrets.resolve(provider.keys[candidate.key_index].value)))
        headers["content-type"] = "application/json"
        return Attempt(candidate.label, f"{scheme}://{host}:{port}{path}", headers, json.dumps(body).encode())


def prepare_translation(state: GatewayRequest, adapter: Adapter, upstream: str, provider: str) -> Translation | None:
    """The translated request for one provider; Chat Completions clients go through the
    Responses translators and get their answer back as Chat Completions."""
    assert state.body is not None
    chat_model: str | None = None
    body = state.body
    if state.endpoint == "chat":
        body = chat_body_to_responses(body)
        chat_model = state.model_requested
    elif state.endpoint != "responses":
        return None
    prepared = adapter.prepare(dict(body, stream=state.stream), upstream, provider)
    translation = Translation(adapter, prepared, new_context(state.model_requested or upstream, provider))
    if chat_model is not None:
        from codexgate.providers import chat_ingress

        translation.chat_model = chat_model
        translation.chat_usage = chat_ingress.wants_usage(state.body)
    return translation


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
    if index in relayed.translations:
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


def retranslate(flow: http.HTTPFlow, state: GatewayRequest) -> None:
    """Translates a directly routed request anew from `state.body` (a hard budget capped its output)."""
    assert state.provider is not None
    adapter = adapter_for(state.policy.policy.providers[state.provider])
    if adapter is None:
        raise RuntimeError(f"provider {state.provider} has no translator")
    Route._translated(flow, state, adapter)
