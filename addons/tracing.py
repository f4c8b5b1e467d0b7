"""OpenTelemetry traces of governed requests, exported over OTLP/HTTP; off unless `codexgate_otlp_endpoint` is set.

One SERVER span per governed request, named and attributed after the GenAI semantic conventions
(`chat gpt-5.5`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...) plus the gateway's own
(`codexgate.key`, `codexgate.decision`, `codexgate.cost_usd`, ...), and one CLIENT child span per upstream
attempt. An incoming W3C `traceparent` is continued. The TracerProvider belongs to the addon (never the
global one) and is flushed in `done()`.

Two hook holders share one `Tracing`, because the span must begin early and end late:

- `Tracing` (options, `requestheaders`): right after `Intake`, which creates the request's state.
- `TraceEnd` (`request`, `response`, `error`): after `Seal` (the request has been cleared and is about to
  leave: the attempt starts) and after `Accounting` (decision, usage and cost are final).

Spans carry no header value, credential or content; with `codexgate_trace_content` the request's input and
the (non-streamed) answer's output are added, scrubbed of every credential the gateway knows of.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
import urllib.parse
import weakref
from types import TracebackType
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from codexgate import __version__
from codexgate.addons.identify import CLIENT_CREDENTIALS_KEY
from codexgate.flowstate import Decision, GatewayRequest, state_of
from codexgate.providers.registry import SECRET_HEADERS

logger = logging.getLogger(__name__)

SCOPE = "codexgate.tracing"
EXPORT_TIMEOUT_S = 5.0
# GenAI operation per gateway endpoint (the Responses API is a chat operation in the conventions).
OPERATIONS = {"responses": "chat", "chat": "chat"}
MAX_CONTENT_CHARS = 32_768
REDACTED = "[redacted]"
# Credential shapes scrubbed from traced content even when the gateway does not know the value.
CREDENTIAL_PATTERN = re.compile(
    r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}|\b(?:sk|rk|pk)-[A-Za-z0-9_-]{12,}|\bAIza[0-9A-Za-z_-]{30,}"
)
_PROPAGATOR = TraceContextTextMapPropagator()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _status_is_error(status: int | None) -> bool:
    return status is not None and status >= 400


class AttemptSpan:
    """One upstream attempt: a CLIENT span, ended once (by `end`, or leaving the `with` block)."""

    __slots__ = ("_span", "_lock")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._lock = threading.Lock()

    @property
    def recording(self) -> bool:
        return self._span is not None

    def end(self, status: int | None = None, error: str | None = None, end: float | None = None) -> None:
        """`status`: the upstream's HTTP status; `error`: a short failure kind (no message, no URL)."""
        with self._lock:
            span, self._span = self._span, None
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None or _status_is_error(status):
            kind = error or str(status)
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end(_ns(end) if end is not None else None)

    def __enter__(self) -> AttemptSpan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end(error=exc_type.__name__ if exc_type is not None else None)


NO_ATTEMPT = AttemptSpan(None)


@dataclasses.dataclass(eq=False)
class _FlowTrace:
    span: Span
    context: Context
    attempts: int = 0
    attempt: AttemptSpan | None = None
    secrets: tuple[str, ...] = ()


class Tracing:
    """Owns the tracer; the early hook (`requestheaders`) and the API the late hooks and fallbacks use."""

    def __init__(self) -> None:
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._content = False
        # Per-flow spans live here, not on flow.metadata (which mitmproxy deep-copies and serialises).
        self._traces: weakref.WeakKeyDictionary[http.HTTPFlow, _FlowTrace] = weakref.WeakKeyDictionary()

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    # -- options ---------------------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_otlp_endpoint",
            str,
            "",
            "OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces (empty: tracing off).",
        )
        loader.add_option(
            "codexgate_trace_content",
            bool,
            False,
            "Put request input and response output in trace spans (credentials are always scrubbed).",
        )
        loader.add_option("codexgate_service_name", str, "codexgate", "service.name of the gateway's traces.")

    def configure(self, updated: set[str]) -> None:
        if "codexgate_trace_content" in updated:
            self._content = bool(ctx.options.codexgate_trace_content)
        if not {"codexgate_otlp_endpoint", "codexgate_service_name"} & updated:
            return
        endpoint = ctx.options.codexgate_otlp_endpoint.strip()
        service = ctx.options.codexgate_service_name.strip()
        if not service:
            raise exceptions.OptionsError("codexgate_service_name must not be empty")
        shown = ""
        if endpoint:
            parts = urllib.parse.urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise exceptions.OptionsError(
                    "codexgate_otlp_endpoint must be an http(s) URL such as http://127.0.0.1:4318/v1/traces"
                )
            try:
                port = parts.port
            except ValueError:
                raise exceptions.OptionsError("codexgate_otlp_endpoint has an invalid port") from None
            shown = f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}{parts.path}"
        self._stop(wait=False)
        if not endpoint:
            return
        resource = Resource.create({"service.name": service, "service.version": __version__})
        provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)))
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE, __version__)
        logger.info("tracing to %s as %s", shown, service)

    def _stop(self, wait: bool) -> None:
        provider, self._provider, self._tracer = self._provider, None, None
        self._traces = weakref.WeakKeyDictionary()
        if provider is None:
            return
        if wait:
            provider.shutdown()
        else:  # a reconfiguration must not hold the event loop while the old batch is flushed
            threading.Thread(target=provider.shutdown, name="codexgate-trace-shutdown", daemon=True).start()

    def flush(self, timeout_ms: int = 5_000) -> bool:
        return self._provider.force_flush(timeout_ms) if self._provider is not None else True

    def done(self) -> None:
        self._stop(wait=True)

    # -- the request's span ----------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self._tracer is None:
            return
        try:
            self.begin(flow)
        except Exception:
            logger.exception("tracing failed to begin request %s", flow.id)

    def begin(self, flow: http.HTTPFlow) -> _FlowTrace | None:
        """The request's span, started at `state.started` (once; later calls return it)."""
        tracer = self._tracer
        if tracer is None:
            return None
        found = self._traces.get(flow)
        if found is not None:
            return found
        state = state_of(flow)
        if state is None:
            return None
        traceparent = flow.request.headers.get("traceparent")
        # Only traceparent is read: tracestate is an opaque header value and never enters a span.
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        span = tracer.start_span(
            OPERATIONS.get(state.endpoint or "", state.endpoint or flow.request.method),
            context=parent,
            kind=SpanKind.SERVER,
            start_time=_ns(state.started),
        )
        found = _FlowTrace(span, trace.set_span_in_context(span))
        self._traces[flow] = found
        return found

    def finish(self, flow: http.HTTPFlow, status: int | None, error: str | None = None) -> None:
        """End the request's span (and an attempt still open) with the request's outcome."""
        if self._tracer is None:
            return
        state = state_of(flow)
        if state is None:
            return
        found = self.begin(flow)
        if found is None:
            return
        self._traces.pop(flow, None)
        end = time.time()
        if flow.response is not None and flow.response.timestamp_end and error is None:
            end = max(flow.response.timestamp_end, state.started)
        elif flow.error is not None and flow.error.timestamp:
            end = max(flow.error.timestamp, state.started)
        if found.attempt is not None:
            found.attempt.end(status=status if error is None else None, error=error, end=end)
            found.attempt = None
        span = found.span
        operation = OPERATIONS.get(state.endpoint or "")
        name = operation or state.endpoint or flow.request.method
        model = state.model_requested
        span.update_name(f"{name} {model}" if model else name)
        span.set_attributes(self._request_attributes(state, operation, status))
        if state.first_byte is not None:
            ttfb = max(state.first_byte - state.started, 0.0)
            span.set_attribute("codexgate.ttfb_ms", round(ttfb * 1000, 3))
            span.add_event("first_byte", timestamp=_ns(max(state.first_byte, state.started)))
        if self._content:
            self._add_output(span, flow, state, found.secrets)
        refused = not state.decision.allowed
        if refused or error is not None or _status_is_error(status):
            kind = state.decision if refused else (error or str(status))
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end(_ns(end))

    def _request_attributes(self, state: GatewayRequest, operation: str | None, status: int | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "codexgate.request_id": state.request_id,
            "codexgate.mode": state.mode,
            "codexgate.decision": state.decision,
            "codexgate.stream": state.stream,
        }
        if operation:
            attributes["gen_ai.operation.name"] = operation
        if status is not None:
            attributes["http.response.status_code"] = status
        kind = self._provider_kind(state)
        optional: dict[str, Any] = {
            "codexgate.endpoint": state.endpoint,
            "gen_ai.provider.name": kind,
            "gen_ai.system": kind,
            "codexgate.provider": state.provider,
            "gen_ai.request.model": state.model_requested,
            "codexgate.model": state.model,
            "gen_ai.response.model": state.upstream_model,
            "codexgate.key": state.key.name if state.key is not None else None,
            "codexgate.team": state.team,
            "codexgate.org": state.org,
            "codexgate.session_id": state.session_id,
            "gen_ai.conversation.id": state.session_id,
            "codexgate.cost_usd": state.cost_usd,
            "codexgate.charge": state.charge_basis,
            "codexgate.stream_outcome": state.reader.outcome if state.reader is not None else None,
        }
        if state.usage is not None:
            optional.update(
                {
                    "gen_ai.usage.input_tokens": state.usage.input_tokens,
                    "gen_ai.usage.output_tokens": state.usage.output_tokens,
                    "gen_ai.usage.cache_read.input_tokens": state.usage.cached_tokens,
                    "gen_ai.usage.reasoning.output_tokens": state.usage.reasoning_tokens,
                }
            )
        attributes.update({name: value for name, value in optional.items() if value is not None})
        return attributes

    @staticmethod
    def _provider_kind(state: GatewayRequest) -> str | None:
        if state.provider is None:
            return None
        provider = state.policy.policy.providers.get(state.provider)
        return getattr(provider, "kind", None) or state.provider

    # -- upstream attempts -----------------------------------------------------------------------------

    def attempt(
        self,
        flow: http.HTTPFlow,
        provider: str,
        address: tuple[str, int] | None = None,
        *,
        start: float | None = None,
    ) -> AttemptSpan:
        """Start a CLIENT span for one attempt of `flow` at `provider` (`address`: the upstream's host and port,
        default: where the request points now). An attempt still open on the flow is ended first, without a
        status. End it with `AttemptSpan.end(status=...)` or a `with` block; the request's
        end ends it otherwise. With tracing off this returns a no-op attempt."""
        if self._tracer is None:
            return NO_ATTEMPT
        try:
            return self._attempt(flow, provider, address, start)
        except Exception:
            logger.exception("tracing failed to start an attempt of request %s", flow.id)
            return NO_ATTEMPT

    def _attempt(
        self, flow: http.HTTPFlow, provider: str, address: tuple[str, int] | None, start: float | None
    ) -> AttemptSpan:
        assert self._tracer is not None
        found = self.begin(flow)
        state = state_of(flow)
        if found is None or state is None:
            return NO_ATTEMPT
        if found.attempt is not None:
            found.attempt.end(end=start)
        host, port = address if address is not None else (flow.request.host, flow.request.port)
        found.attempts += 1
        kind = self._provider_kind(state) if state.provider == provider else None
        settings = state.policy.policy.providers.get(provider)
        kind = kind or getattr(settings, "kind", None) or provider
        attributes: dict[str, Any] = {
            "server.address": host,
            "server.port": port,
            "http.request.method": flow.request.method,
            "codexgate.provider": provider,
            "codexgate.attempt": found.attempts,
            "gen_ai.provider.name": kind,
            "gen_ai.system": kind,
        }
        operation = OPERATIONS.get(state.endpoint or "")
        if operation:
            attributes["gen_ai.operation.name"] = operation
        if state.upstream_model:
            attributes["gen_ai.request.model"] = state.upstream_model
        span = self._tracer.start_span(
            f"{provider} attempt",
            context=found.context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(start) if start is not None else None,
        )
        found.attempt = AttemptSpan(span)
        return found.attempt

    # -- content (codexgate_trace_content only) --------------------------------------------------------

    def _add_input(self, found: _FlowTrace, flow: http.HTTPFlow, state: GatewayRequest) -> None:
        """Called as the request leaves: the upstream credential is in the headers now, and is remembered
        (in memory, until the request ends) so that no content attribute can carry it."""
        secrets: set[str] = set()
        saved = flow.metadata.get(CLIENT_CREDENTIALS_KEY) or []
        values = [value for _name, value in saved] + [
            value for name in SECRET_HEADERS for value in flow.request.headers.get_all(name)
        ]
        for value in values:
            secrets.add(value)
            secrets.update(part for part in value.split() if len(part) >= 8)
        found.secrets = tuple(sorted((s for s in secrets if len(s) >= 8), key=len, reverse=True))
        body = state.body
        if not isinstance(body, dict):
            return
        messages = body.get("input") if state.endpoint == "responses" else body.get("messages")
        if messages is not None:
            found.span.set_attribute("gen_ai.input.messages", _content(messages, found.secrets))
        instructions = body.get("instructions")
        if instructions is not None:
            found.span.set_attribute("gen_ai.system_instructions", _content(instructions, found.secrets))

    @staticmethod
    def _add_output(span: Span, flow: http.HTTPFlow, state: GatewayRequest, secrets: tuple[str, ...]) -> None:
        response = flow.response
        if response is None or state.stream or "json" not in response.headers.get("content-type", ""):
            return  # a streamed answer is not kept by mitmproxy
        try:
            body = json.loads(response.get_content(strict=False) or b"")
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        output = body.get("output") if state.endpoint == "responses" else body.get("choices")
        if output is not None:
            span.set_attribute("gen_ai.output.messages", _content(output, secrets))


def _content(value: Any, secrets: tuple[str, ...]) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = CREDENTIAL_PATTERN.sub(REDACTED, text)
    if len(text) > MAX_CONTENT_CHARS:
        text = text[:MAX_CONTENT_CHARS] + "…[truncated]"
    return text


class TraceEnd:
    """The late hooks: the upstream attempt as the request leaves, the span's end with the final outcome."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def request(self, flow: http.HTTPFlow) -> None:
        tracing = self.tracing
        if tracing._tracer is None:  # `not tracing.enabled`, without the property's frame
            return
        try:
            state = state_of(flow)
            if state is None:
                return
            found = tracing.begin(flow)
            if found is None:
                return
            if tracing._content:
                tracing._add_input(found, flow, state)
            leaving = flow.response is None and flow.error is None and state.decision is Decision.FORWARDED
            if leaving and state.provider and found.attempt is None and found.attempts == 0:
                tracing.attempt(flow, state.provider, start=time.time())
        except Exception:
            logger.exception("tracing failed on request %s", flow.id)

    def response(self, flow: http.HTTPFlow) -> None:
        if self.tracing._tracer is None:  # `not self.tracing.enabled`, without the property's frame
            return
        try:
            self.tracing.finish(flow, flow.response.status_code if flow.response is not None else None)
        except Exception:
            logger.exception("tracing failed to end request %s", flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        if self.tracing._tracer is None:  # `not self.tracing.enabled`, without the property's frame
            return
        try:
            state = state_of(flow)
            if state is not None and state.decision is Decision.CLIENT_DISCONNECTED:
                # Charge.error (before this step) found the client left: not the provider's failure.
                # 499 before any answer started, as the accounting line says.
                status = flow.response.status_code if flow.response is not None else 499
                self.tracing.finish(flow, status, error="client_disconnected")
                return
            status = flow.response.status_code if flow.response is not None else 502
            self.tracing.finish(flow, status, error="upstream_error")
        except Exception:
            logger.exception("tracing failed to end request %s", flow.id)
