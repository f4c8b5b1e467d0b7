"""What the gateway knows about one governed request, carried on `flow.metadata`."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import enum
import time
from typing import TYPE_CHECKING, Any, Literal

from mitmproxy import http

from codexgate.headers import single_values
from codexgate.pricing import PriceSource
from codexgate.stores.base import Admission, Amounts, Counter
from codexgate.usage import StreamUsageReader, Usage

if TYPE_CHECKING:  # (request state sits above providers and policies; annotations only, no import cycle)
    from collections.abc import Awaitable, Callable

    from codexgate.policies.loader import CompiledPolicy
    from codexgate.policies.schema import VirtualKey
    from codexgate.providers.family import Prepared, ProviderFamily, StreamBridge
    from codexgate.providers.responses import ResponseContext
    from codexgate.relay import Skip

METADATA_KEY = "codexgate"


class Decision(enum.StrEnum):
    """What became of a governed request. A `StrEnum`: it is written to the accounting and audit
    logs, metrics labels and span attributes as its plain value."""

    PENDING = "pending"  # on its way through the chain
    FORWARDED = "forwarded"  # cleared by every step and sent to the provider (Seal)
    ANSWERED = "answered"  # served by the gateway itself (model list, mock provider)
    CLIENT_DISCONNECTED = "client_disconnected"  # the client left before the answer was complete
    # the provider's side failed
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_EXHAUSTED = "upstream_exhausted"
    UPSTREAM_INVALID_RESPONSE = "upstream_invalid_response"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    STREAM_BROKEN = "stream_broken"
    # refused by the gateway
    MISSING_KEY = "missing_key"
    UNKNOWN_KEY = "unknown_key"
    KEY_DISABLED = "key_disabled"
    KEY_EXPIRED = "key_expired"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    ENDPOINT_NOT_SUPPORTED = "endpoint_not_supported"
    INVALID_JSON = "invalid_json"
    INVALID_BODY = "invalid_body"
    INVALID_MODEL = "invalid_model"
    MISSING_MODEL = "missing_model"
    UNKNOWN_MODEL = "unknown_model"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    PROVIDER_NOT_ALLOWED = "provider_not_allowed"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PRICE_UNKNOWN = "price_unknown"
    REQUEST_TOO_LARGE = "request_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    GUARDRAIL_BLOCKED = "guardrail_blocked"
    BUDGET_EXCEEDED = "budget_exceeded"
    RATE_LIMITED = "rate_limited"
    STORE_UNAVAILABLE = "store_unavailable"
    RECORD_UNAVAILABLE = "record_unavailable"
    WEBSOCKET_REFUSED = "websocket_refused"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL_ERROR = "internal_error"

    @property
    def in_flight(self) -> bool:
        """Not decided yet: still in the chain, or sent and not answered."""
        return self in _IN_FLIGHT

    @property
    def allowed(self) -> bool:
        """Nothing refused it (so far): in flight or answered by the gateway."""
        return self in _ALLOWED

    @property
    def refusal(self) -> bool:
        """Refused by the gateway or failed upstream (what the refusals metric counts); a client
        that left is neither."""
        return self not in _ALLOWED and self is not Decision.CLIENT_DISCONNECTED


_IN_FLIGHT = frozenset({Decision.PENDING, Decision.FORWARDED})
_ALLOWED = frozenset({Decision.PENDING, Decision.FORWARDED, Decision.ANSWERED})
# What a finished request's record counts as served (`codexgate usage`): the rest were refused.
SERVED_DECISIONS = frozenset({Decision.FORWARDED, Decision.ANSWERED, Decision.CLIENT_DISCONNECTED})

GuardrailAction = Literal["block", "redact", "log"]


@dataclasses.dataclass(eq=False)
class Translation:
    """How a routed request was prepared for its provider, and how its answer is translated."""

    family: ProviderFamily[Any]  # of the provider it was prepared for
    prepared: Prepared
    context: ResponseContext | None  # None when the answer is not translated
    bridge: StreamBridge | None = None  # once a stream is being translated
    chat_model: str | None = None  # set when the client speaks Chat Completions: answers go back as Chat
    chat_usage: bool = False  # the Chat client asked for a usage chunk


@dataclasses.dataclass
class Metering:
    """What admission decided for one request (addons/limits.py); settlement reads it."""

    price: PriceSource | None
    estimate: Amounts
    counters: list[Counter]
    reservation: Amounts = dataclasses.field(default_factory=Amounts)  # what is held: the worst case under hard budgets
    output_cap: int | None = None  # the output cap a hard budget set on the request upstream
    reserved: bool = False
    unmetered: bool = False  # the store was down and the policy says fail open
    admission: Admission | None = None
    settled: bool = False
    # The deployment the reservation was made for; a relay that failed over to another one makes
    # Charge settle into that one's counters, at its price.
    provider: str | None = None
    model: str | None = None
    reservation_id: str = ""  # the store's id of what is held ("": the request id; a failover moves it)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One deployment a relayed request may go to."""

    label: str  # "provider/upstream-model#key": what attempts headers, logs and health use
    model: str  # the policy model it serves (the asked one, or a fallback)
    provider: str
    upstream_model: str
    key_index: int


@dataclasses.dataclass
class RelayedRequest:
    """A request sent through the failover relay: its candidates and, per attempt, how to translate."""

    token: str
    candidates: list[Candidate]
    translations: dict[int, Translation] = dataclasses.field(default_factory=dict)
    ended: asyncio.Future[None] | None = None  # resolved once the relay is done with it (reading on included)
    drained_usage: Usage | None = None  # usage read after the client left, when the provider still sent it
    answered_by: Candidate | None = None  # the candidate whose answer the client got
    # Set by Limits: asked before attempt i; moves the reservation there, or says why not (a Skip).
    admit: Callable[[int], Awaitable[Skip | None]] | None = dataclasses.field(default=None, repr=False)
    refusal: Decision | None = None  # why the first skipped candidate was refused (the answer if none answers)


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
    decision: Decision = Decision.PENDING
    reader: StreamUsageReader | None = None
    usage: Usage | None = None
    first_byte: float | None = None
    received_at: float | None = None  # when the whole request had arrived (Intake)
    forwarded_at: float | None = None  # when Seal let the request leave for the provider
    accounted: bool = False
    translation: Translation | None = dataclasses.field(default=None, repr=False)
    key_index: int = 0  # which of the provider's keys
    relayed: RelayedRequest | None = dataclasses.field(default=None, repr=False)
    attempts: list[dict[str, Any]] | None = None  # what the relay tried, as it reported
    metering: Metering | None = None  # once admission priced the request
    cost_usd: float | None = None
    charge_basis: str | None = None  # actual / estimate / upstream_error / release
    notes: list[str] = dataclasses.field(default_factory=list)
    guardrail_findings: list[str] = dataclasses.field(default_factory=list)  # rule names, never content
    guardrail_action: GuardrailAction | None = None
    guardrail_header: str | None = None  # x-codexgate-guardrail on the answer
    audited: bool = False  # the audit log has its record (never a second one)
    record: dict[str, Any] | None = dataclasses.field(default=None, repr=False)  # codexgate.records, once built
    # `head_values`' last reading: (the fields tuple it read, what it found). Holds credentials: never shown.
    head: tuple[tuple[tuple[bytes, bytes], ...], dict[bytes, bytes] | None] | None = dataclasses.field(
        default=None, repr=False
    )

    def head_values(self, fields: tuple[tuple[bytes, bytes], ...]) -> dict[bytes, bytes] | None:
        """`headers.single_values(fields)`, read once for the steps that read the same head in turn.
        mitmproxy's `Headers` replaces its `fields` tuple on every change (a tuple cannot change),
        so the same tuple object means the same fields; holding it keeps its id from being reused.
        Never change the dict it returns."""
        head = self.head
        if head is not None and head[0] is fields:
            return head[1]
        found = single_values(fields)
        self.head = (fields, found)
        return found

    def as_record(self) -> dict[str, Any]:
        """The request in plain values, for flow files and mitmweb's dump (no body, no secret)."""
        from codexgate.records import identity, usage_fields

        usage = self.usage if self.usage is not None else (self.reader.usage if self.reader is not None else None)
        record = identity(self)
        record.update(
            stream=self.stream,
            decision=self.decision.value,  # a plain str in a flow file
            usage=usage_fields(usage),
            estimate_usd=self.metering.estimate.usd if self.metering is not None else None,
            cost_usd=self.cost_usd,
            charge=self.charge_basis,
            attempts=copy.deepcopy(self.attempts),
            started=self.started,
            forwarded_at=self.forwarded_at,
            first_byte=self.first_byte,
            notes=list(self.notes),
        )
        return record

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # See the class docstring: this is how mitmproxy's flow serialization sees the request.
        return self.as_record()


def state_of(flow: http.HTTPFlow) -> GatewayRequest | None:
    """The flow's governed-request state; None for a flow the gateway does not govern, or one
    loaded from a flow file (its metadata holds the plain-value record, not the state)."""
    state = flow.metadata.get(METADATA_KEY)
    # An exact class test by attribute, not `isinstance`: every step calls this, several times a
    # request, and nothing subclasses GatewayRequest.
    return state if state.__class__ is GatewayRequest else None


def answer_locally(flow: http.HTTPFlow, response: http.Response, decision: Decision = Decision.ANSWERED) -> None:
    """Answer a governed request from the gateway itself, without forwarding it, and remember the
    decision: "answered" when it was served (model list, mock provider), else why it was refused."""
    flow.response = response
    state = state_of(flow)
    if state is not None:
        state.decision = decision
        state.answered_locally = True


def refuse(flow: http.HTTPFlow, response: http.Response, decision: Decision) -> None:
    """Answer a governed request with a refusal and remember why."""
    answer_locally(flow, response, decision)
