"""Reads token usage from answers: streamed ones as they pass (bytes unchanged), others whole."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable

from mitmproxy import http

from codexgate.addons.upstream_watch import UpstreamWatch, counted_watch
from codexgate.flowstate import GatewayRequest, state_of
from codexgate.headers import header_value, lowered_names
from codexgate.metrics import GatewayMetrics, counter_cell
from codexgate.sse import decode_json
from codexgate.usage import StreamUsageReader, usage_from_body

logger = logging.getLogger(__name__)


UPSTREAM_ERROR_MARKER = b"event: codexgate.upstream_error"


def failed_event(state: GatewayRequest, reader: StreamUsageReader, marker: bytes) -> bytes:
    """The relay's in-band note that the provider broke mid-stream, as the client's API says it."""
    message = "the provider's stream broke off"
    for line in marker.split(b"\n"):
        if line.startswith(b"data:"):
            with contextlib.suppress(ValueError):
                message = f"{message}: {json.loads(line[5:]).get('message', '')}".rstrip(": ")
    error = {"code": "server_error", "message": message}
    if state.endpoint == "chat":
        return f"data: {json.dumps({'error': dict(error, type='server_error')})}\n\n".encode()
    response = {
        "id": reader.response_id or f"resp_{state.request_id.replace('-', '')}", "object": "response",
        "created_at": int(state.started), "status": "failed", "model": state.model_requested, "output": [],
        "error": error, "incomplete_details": None, "instructions": None, "metadata": {}, "parallel_tool_calls": True,
        "temperature": None, "tool_choice": "auto", "tools": [], "top_p": None,
    }  # fmt: skip
    event = {"type": "response.failed", "sequence_number": reader.events, "response": response}
    return f"event: response.failed\ndata: {json.dumps(event)}\n\n".encode()


# Chunks a pass-through stream hands the usage reader between two readings: a reading is a few C
# calls over their bytes joined, instead of a Python call per chunk.
READ_EVERY = 32


def _pass_through(
    state: GatewayRequest, reader: StreamUsageReader, watch: UpstreamWatch | None
) -> Callable[[bytes], bytes]:
    """A provider's stream forwarded by mitmproxy itself, the bytes unchanged. Runs once per chunk,
    so it does no more than hand the chunk to the usage reader unread (read every READ_EVERY
    chunks, and whenever anyone asks the reader) and count it: the idle timeout reads the count
    (`watch`, when the request is watched), not a clock per chunk."""
    hand_over = reader.unread.append
    settle = reader.settle
    chunks = 0

    def observe(chunk: bytes) -> bytes:
        nonlocal chunks
        if state.first_byte is None and chunk:
            state.first_byte = time.time()
        hand_over(chunk)
        chunks += 1
        if not chunks % READ_EVERY:
            settle()
        return chunk

    def progress() -> int:
        return chunks

    if watch is not None:
        watch.progress = progress
    return observe


def _observer(state: GatewayRequest, reader: StreamUsageReader) -> Callable[[bytes], bytes]:
    """A stream the failover relay carries: also turns the relay's in-band error marker into the
    client API's failure event (only the relay writes it: a provider's own bytes pass unchanged)."""

    def observe(chunk: bytes) -> bytes:
        if state.first_byte is None and chunk:
            state.first_byte = time.time()
        if UPSTREAM_ERROR_MARKER in chunk:
            # The relay writes its marker whole and last: everything before it passes as it came.
            head, _, tail = chunk.partition(UPSTREAM_ERROR_MARKER)
            reader.feed(head)
            failure = failed_event(state, reader, UPSTREAM_ERROR_MARKER + tail)
            reader.feed(failure)
            return head + failure
        try:
            reader.feed(chunk)
        except Exception:  # a reading problem must never disturb the stream itself
            logger.exception("usage reader failed on request %s", state.request_id)
        return chunk

    return observe


def _is_event_stream(fields: tuple[tuple[bytes, bytes], ...]) -> bool:
    """`"text/event-stream" in response.headers.get("content-type", "")` (every content-type field),
    from the raw fields (`response.headers.fields`): a name is lower-cased only where its value names
    an event stream, so a JSON answer is told without a call."""
    for name, value in fields:  # noqa: SIM110 (a loop: no generator frame resumed per field)
        if b"text/event-stream" in value and name.lower() == b"content-type":
            return True
    return False


class Meter:
    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self._metrics = metrics or GatewayMetrics()
        # The gauge's value itself (`Gauge.inc` checks it is observable first: 5 calls a stream).
        self._active_streams = counter_cell(self._metrics.active_streams)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is None or state.answered_locally or flow.response is None or state.endpoint is None:
            return
        if state.translation is not None and state.translation.prepared.translate:
            return  # Translate reads usage from its own translator
        if _is_event_stream(flow.response.headers.fields):
            state.reader = StreamUsageReader(state.endpoint)
            if state.relayed is not None:
                flow.response.stream = _observer(state, state.reader)  # the relay bounds what it carries
            else:
                flow.response.stream = _pass_through(state, state.reader, counted_watch(flow))
            self._active_streams.inc(1)
            state.notes.append("stream")

    def error(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and "stream" in state.notes:
            state.notes.remove("stream")
            self._active_streams.inc(-1)

    def response(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is None:
            return
        if "stream" in state.notes:
            state.notes.remove("stream")
            self._active_streams.inc(-1)
        response = flow.response
        if response is None or state.endpoint not in ("responses", "chat"):
            return
        if state.translation is not None and state.translation.prepared.translate:
            return
        try:
            if state.reader is not None:
                state.usage = state.reader.usage
                return
            if state.first_byte is None:
                state.first_byte = response.timestamp_start
            if state.answered_locally and response.status_code >= 400:
                return  # the gateway's own refusal: nothing was used
            # `get_content(strict=False)`, without its `Headers.get` when nothing is encoded.
            headers = response.headers
            fields = headers.fields
            encoded = b"content-encoding" in lowered_names(fields) and header_value(headers, b"content-encoding")
            content = (response.get_content(strict=False) if encoded else response.raw_content) or b""
            if _is_event_stream(fields):
                reader = StreamUsageReader(state.endpoint)
                reader.feed(content)
                state.reader = reader
                state.usage = reader.usage
            else:
                state.usage = usage_from_body(state.endpoint, decode_json(content))
        except Exception:
            logger.exception("cannot read usage of request %s", state.request_id)
