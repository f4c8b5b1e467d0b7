"""Every upstream bounded: connect, first-byte, idle and total timeouts on requests mitmproxy
forwards itself (one route), as the failover relay applies them to the requests it carries.

mitmproxy has no such timeouts: a provider that accepts and never answers, or stalls mid-stream,
holds the client until the client gives up. `UpstreamBounds` starts a watch when a governed
request leaves (`request`, after Seal) and, when a deadline passes, records why in
`flow.metadata[UPSTREAM_FAILURE]` and ends the upstream connection the way mitmproxy itself
does (cancelling its handler task); mitmproxy then reports the failure through its HTTP layer,
where `codexgate.mitm_seams` turns it into OpenAI-shaped JSON (or, mid-stream, the API's
`response.failed` event). Its `error` hook settles what such a failure means for the request:
nothing received from the provider → the gateway answered, and the reservation is released
(`Charge` charges nothing). `StreamWatch`, after Meter/Translate, notes the stream's progress
for the idle timeout. A "200" that is not JSON is answered 502 `upstream_invalid_response`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader

from codexgate.addons.meter import UPSTREAM_ERROR_MARKER, failed_event
from codexgate.addons.upstream_watch import WATCH_KEY, UpstreamWatch, loop_clock
from codexgate.bounded import clip
from codexgate.errors import error_response
from codexgate.flowstate import Decision, GatewayRequest, state_of
from codexgate.headers import has_header
from codexgate.metrics import GatewayMetrics
from codexgate.mitm_seams import FAILED_EVENT, UPSTREAM_FAILURE, LiveCallable, UpstreamFailure
from codexgate.usage import StreamUsageReader

logger = logging.getLogger(__name__)

ANSWER_ENDPOINTS = ("responses", "chat")


# asyncio's own loops tell time.monotonic(): `loop.time()` is called directly, without the method's
# frame, where the loop's `time` is this one (as `upstream_watch.loop_clock` does).
_BASE_LOOP_TIME = asyncio.BaseEventLoop.time


def _connected(flow: http.HTTPFlow) -> bool:
    server = flow.server_conn
    return server.timestamp_tcp_setup is not None and server.address == (flow.request.host, flow.request.port)


def close_server(flow: http.HTTPFlow) -> bool:
    """End the flow's upstream connection as mitmproxy's own `close_connection` does: its handler
    task is cancelled, and the HTTP layer sees it close. While it is still connecting, the flow
    does not hold it yet: it is the unconnected server connection to the request's address."""
    proxyserver: Any = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id) if proxyserver else None
    transports: dict[Any, Any] = getattr(handler, "transports", {}) if handler is not None else {}
    if _connected(flow):
        targets = [flow.server_conn]
    else:
        address = (flow.request.host, flow.request.port)
        targets = [
            conn for conn in transports
            if isinstance(conn, connection.Server) and conn.address == address and conn.timestamp_tcp_setup is None
        ]  # fmt: skip
    closed = False
    for target in targets:
        transport = transports.get(target)
        if transport is not None and transport.handler is not None:
            transport.handler.cancel("codexgate: upstream timeout")
            closed = True
    return closed


def stream_failure_event(flow: http.HTTPFlow, message: str) -> bytes:
    """The client API's own failure event for a stream the provider broke off."""
    state = state_of(flow)
    if state is None or state.endpoint not in ANSWER_ENDPOINTS:
        return b""
    reader = state.reader or StreamUsageReader(state.endpoint)
    marker = UPSTREAM_ERROR_MARKER + b"\ndata: " + json.dumps({"message": message}).encode() + b"\n\n"
    # An event the provider cut in half is ended first, so that the failure is an event of its own
    # (the reader has seen every byte the client got).
    cut_mid_event = state.reader is not None and state.reader.mid_event
    return (b"\n\n" if cut_mid_event else b"") + failed_event(state, reader, marker)


# One for every flow: it holds nothing of any one flow.
_STREAM_FAILURE_EVENT = LiveCallable(stream_failure_event)


class UpstreamBounds:
    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self._metrics = metrics or GatewayMetrics()
        self.enabled = True

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_upstream_bounds", bool, True,
            "Apply gateway.resilience connect/first-byte/idle timeouts to single-route requests and answer a "
            "non-JSON 200 with 502. Off only to measure what they cost.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if "codexgate_upstream_bounds" in updated:
            self.enabled = ctx.options.codexgate_upstream_bounds

    # -- the watch --------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.enabled or flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or not state.cleared or state.relayed is not None:
            return  # the relay bounds what it carries itself
        settings = state.policy.policy.gateway.resilience
        loop = asyncio.get_running_loop()
        watch = UpstreamWatch(settings.connect_timeout, settings.first_byte_timeout, settings.idle_timeout,
                       settings.total_timeout,
                       time.monotonic() if type(loop).time is _BASE_LOOP_TIME else loop.time())  # fmt: skip
        flow.metadata[WATCH_KEY] = watch
        flow.metadata[FAILED_EVENT] = _STREAM_FAILURE_EVENT
        first = watch.first_byte if watch.first_byte < watch.connect else watch.connect  # min(), without its call
        watch.timer = loop.call_at(watch.started + first, self._check, flow, watch)

    def _check(self, flow: http.HTTPFlow, watch: UpstreamWatch) -> None:
        watch.timer = None
        if watch.done:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if watch.stage == "connect":
            if not _connected(flow) and flow.response is None:
                self._expire(flow, watch, "connect_timeout",
                             f"the provider did not accept a connection within {watch.connect:g} s")  # fmt: skip
                return
            if flow.response is None:
                watch.stage = "first_byte"
        if watch.stage == "first_byte":
            if now < watch.started + watch.first_byte:
                watch.timer = loop.call_at(watch.started + watch.first_byte, self._check, flow, watch)
                return
            message = f"the provider sent no answer within {watch.first_byte:g} s"
            self._expire(flow, watch, "first_byte_timeout", message)
            return
        if watch.stage == "idle":
            end = watch.started + watch.total
            due = watch.last_data + watch.idle
            if watch.progress is not None:  # a counted stream: chunks since the last look are data now
                chunks = watch.progress()
                if chunks != watch.seen:
                    watch.seen, watch.last_data = chunks, now
                    due = now + watch.idle
                due = min(due, now + watch.idle / 4)  # the next look
            if now >= end:
                self._expire(flow, watch, "total_timeout", f"the provider's answer took longer than {watch.total:g} s")
            elif now < watch.last_data + watch.idle:
                watch.timer = loop.call_at(min(due, end), self._check, flow, watch)
            else:
                self._expire(flow, watch, "idle_timeout", f"the provider's answer stalled for {watch.idle:g} s")

    def _expire(self, flow: http.HTTPFlow, watch: UpstreamWatch, outcome: str, message: str) -> None:
        watch.timer = None
        received = flow.response is not None
        status = 502 if received else 504
        flow.metadata[UPSTREAM_FAILURE] = UpstreamFailure(status, "upstream_timeout", message, received)
        state = state_of(flow)
        provider = state.provider if state else None
        logger.warning("request %s: %s (provider %s); upstream connection closed", flow.id, outcome, provider)
        self._metrics.attempts.labels(provider or "", outcome).inc()
        if not close_server(flow):
            logger.error("request %s: cannot close its upstream connection after %s", flow.id, outcome)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(WATCH_KEY)
        if isinstance(watch, UpstreamWatch):
            # From here on the answer may not go quiet for longer than idle_timeout; a whole
            # (unstreamed) answer must complete within it. StreamWatch notes a stream's progress.
            watch.stage = "idle"
            loop = asyncio.get_running_loop()
            watch.last_data = time.monotonic() if type(loop).time is _BASE_LOOP_TIME else loop.time()

    # -- the outcome ---------------------------------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(WATCH_KEY)
        if isinstance(watch, UpstreamWatch):
            watch.cancel()
        if not self.enabled:
            return
        state = state_of(flow)
        response = flow.response
        if state is None or response is None or state.answered_locally or state.endpoint not in ANSWER_ENDPOINTS:
            return
        if response.status_code != 200 or response.stream:
            return
        if not _is_json(response):
            state.answered_locally = True
            state.decision = Decision.UPSTREAM_INVALID_RESPONSE
            content_type = response.headers.get("content-type", "no content-type")
            logger.warning("request %s: provider %s answered 200 without a JSON body (%s); answering 502",
                           flow.id, state.provider, clip(content_type, 60))  # fmt: skip
            self._metrics.attempts.labels(state.provider or "", "invalid_response").inc()
            flow.response = error_response(
                502, "upstream_invalid_response", "the provider's answer was not valid JSON; try again"
            )

    def error(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(WATCH_KEY)
        if isinstance(watch, UpstreamWatch):
            watch.cancel()
        failure = flow.metadata.get(UPSTREAM_FAILURE)
        state = state_of(flow)
        if not isinstance(failure, UpstreamFailure) or state is None:
            return
        if flow.error is not None:
            flow.error.msg = f"{failure.code}: {failure.message}"
        _settle_failure(state, failure)
        logger.warning("request %s to provider %s: %s (%s)", flow.id, state.provider, failure.code, failure.message)
        if failure.code != "upstream_timeout":  # timeouts are counted where they fire
            outcome = "stream_broken" if failure.received else failure.code
            self._metrics.attempts.labels(state.provider or "", outcome).inc()


def _settle_failure(state: GatewayRequest, failure: UpstreamFailure) -> None:
    if not failure.received:
        # Nothing came back from the provider: the gateway answered, and nothing is charged.
        state.answered_locally = True
        state.decision = Decision(failure.code)


def _is_json(response: http.Response) -> bool:
    """Whether the answer is a JSON document: by its ends (an error page, a captive portal or a
    text answer fails at once; a full parse is Meter's, which reads the usage from it)."""
    content = response.raw_content
    if content is None:
        return False
    headers = response.headers
    names = b"\n".join([name for name, _ in headers.fields]).lower()  # `lowered_names`, inline
    if b"content-encoding" in names and has_header(headers, b"content-encoding"):
        try:
            content = response.get_content(strict=True) or b""
        except ValueError:
            return False
    head, tail = content[:64].lstrip()[:1], content[-64:].rstrip()[-1:]
    return (head, tail) in ((b"{", b"}"), (b"[", b"]"))


class StreamWatch:
    """Runs after Meter and Translate have set up the stream: notes its progress for the idle timeout."""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(WATCH_KEY)
        if not isinstance(watch, UpstreamWatch) or watch.done or watch.noted or flow.response is None:
            return  # noted: the gateway's stream callable counts its chunks itself (Meter, Translate)
        inner = flow.response.stream
        if not inner:
            return
        clock = loop_clock()
        # Runs once per chunk: no more than the clock, and the inner callable chosen here rather
        # than tested each time.
        if callable(inner):

            def watched(chunk: bytes) -> Any:
                watch.last_data = clock()
                return inner(chunk)

        else:

            def watched(chunk: bytes) -> Any:
                watch.last_data = clock()
                return chunk

        flow.response.stream = watched
