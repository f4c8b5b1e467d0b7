"""What the gateway knows about one governed request, carried on `flow.metadata`."""

from __future__ import annotations

import copy
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
    """How a routed request was prepared for its provider, and how its answer is translated."""

    family: Any  # providers.family.ProviderFamily of the provider it was prepared for
    prepared: Any  # providers.family.Prepared
    context: Any  # providers.responses.ResponseContext; None when the answer is not translated
    bridge: Any = None  # providers.family.StreamBridge, once a stream is being translated
    chat_model: str | None = None  # set when the client speaks Chat Completions: answers go back as Chat
    chat_usage: bool = False  # the Chat client asked for a usage chunk


@dataclasses.dataclass(eq=False)
class GatewayRequest:
    """The live state of one governed request, in `flow.metadata["codexgate"]` (see `state_of`).

    mitmproxy copies `flow.metadata` with `copy.deepcopy` whenever it serializes a flow
    (`save_stream_file`, mitmweb's flow dump, `flow.copy()`); its flow files hold only plain
    values. A deep copy of this object is therefore its *record*, `as_record()`: plain values
    (key name, team, model, decision, cost, ...), never the policy, the body (the prompt) or a
    credential. The object itself stays on the live flow, unchanged, for the chain."""

    request_id: str
    policy: CompiledPolicy = dataclasses.field(repr=False)
    mode: str  # "gateway" (base-URL listener) or "proxy"
    transport: str = "http"  # "ws": a response.create on a Responses WebSocket (addons/websocket.py)
    started: float = dataclasses.field(default_factory=time.time)
    endpoint: str | None = None  # responses / chat / models
    body: dict[str, Any] | None = dataclasses.field(default=None, repr=False)  # the prompt: never in a log line
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
    translation: Translation | None = dataclasses.field(default=None, repr=False)
    key_index: int = 0  # which of the provider's keys
    relayed: Any = dataclasses.field(default=None, repr=False)  # addons.failover.RelayedRequest (relay)
    attempts: list[dict[str, Any]] | None = None  # what the relay tried, as it reported
    metering: Any = None  # addons.limits.Metering, once admission priced the request
    cost_usd: float | None = None
    charge_basis: str | None = None  # actual / estimate / upstream_error / release
    notes: list[str] = dataclasses.field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """The request in plain values, for flow files and mitmweb's dump (no body, no secret)."""
        usage = self.usage if self.usage is not None else (self.reader.usage if self.reader is not None else None)
        estimate = getattr(getattr(self.metering, "estimate", None), "usd", None)
        return {
            "request_id": self.request_id,
            "mode": self.mode,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "session_id": self.session_id,
            "key": self.key.name if self.key is not None else None,
            "team": self.team,
            "org": self.org,
            "model_requested": self.model_requested,
            "model": self.model,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "decision": self.decision,
            "usage": usage.as_dict() if usage is not None else None,
            "estimate_usd": estimate if isinstance(estimate, float | int) else None,
            "cost_usd": self.cost_usd,
            "charge": self.charge_basis,
            "attempts": copy.deepcopy(self.attempts),
            "started": self.started,
            "forwarded_at": self.forwarded_at,
            "first_byte": self.first_byte,
            "notes": list(self.notes),
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # See the class docstring: this is how mitmproxy's flow serialization sees the request.
        return self.as_record()


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
