"""What the gateway knows about one governed request, carried on `flow.metadata`."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mitmproxy import http

from codexgate.policies.loader import CompiledPolicy
from codexgate.policies.schema import VirtualKey
from codexgate.usage import StreamUsageReader, Usage

METADATA_KEY = "codexgate"


@dataclasses.dataclass(eq=False)
class Translation:
    """A request routed to a provider that speaks another API: how to translate its answer."""

    adapter: Any  # providers.adapters.Adapter
    prepared: Any  # providers.adapters.Prepared
    context: Any  # providers.base.ResponseContext
    bridge: Any = None  # providers.adapters.StreamBridge, once a stream is being translated
    chat_model: str | None = None  # set when the client speaks Chat Completions: answers go back as Chat
    chat_usage: bool = False  # the Chat client asked for a usage chunk


@dataclasses.dataclass(eq=False)
class GatewayRequest:
    request_id: str
    policy: CompiledPolicy
    mode: str  # "gateway" (base-URL listener) or "proxy"
    transport: str = "http"  # "ws": a response.create on a Responses WebSocket (addons/websocket.py)
    started: float = dataclasses.field(default_factory=time.time)
    endpoint: str | None = None  # responses / chat / models
    body: dict[str, Any] | None = None
    stream: bool = False
    session_id: str | None = None
    key: VirtualKey | None = None
    team: str | None = None
    org: str | None = None
    model_requested: str | None = None
    model: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    cleared: bool = False  # every policy step passed: the request may leave the gateway
    answered_locally: bool = False
    decision: str = "pending"
    reader: StreamUsageReader | None = None
    usage: Usage | None = None
    first_byte: float | None = None
    received_at: float | None = None  # when the whole request had arrived (Intake)
    forwarded_at: float | None = None  # when Seal let the request leave for the provider
    accounted: bool = False
    translation: Translation | None = None
    key_index: int = 0  # which of the provider's keys
    relayed: Any = None  # addons.resilience.RelayedRequest when the failover relay carries the request
    attempts: list[dict[str, Any]] | None = None  # what the relay tried, as it reported
    metering: Any = None  # addons.limits.Metering, once admission priced the request
    cost_usd: float | None = None
    charge_basis: str | None = None  # actual / estimate / upstream_error / release
    notes: list[str] = dataclasses.field(default_factory=list)


def state_of(flow: http.HTTPFlow) -> GatewayRequest | None:
    state = flow.metadata.get(METADATA_KEY)
    return state if isinstance(state, GatewayRequest) else None


def answer_locally(flow: http.HTTPFlow, response: http.Response, decision: str = "answered") -> None:
    """Answer a governed request from the gateway itself, without forwarding it, and remember the
    decision: "answered" when it was served (model list, mock provider), else why it was refused."""
    flow.response = response
    state = state_of(flow)
    if state is not None:
        state.decision = decision
        state.answered_locally = True


def refuse(flow: http.HTTPFlow, response: http.Response, decision: str) -> None:
    """Answer a governed request with a refusal and remember why."""
    answer_locally(flow, response, decision)
