"""Where the gateway reaches into mitmproxy's HTTP layer (mitmproxy 12.2), and why.

mitmproxy answers some failures itself, below the addon API, with an HTML page: a body over
`body_size_limit` (413), an upstream it cannot reach or that breaks (502), a request it cannot
parse (400). A governed client reads OpenAI-shaped JSON, so `install()` replaces those pages,
and adds what the addon API cannot express:

- **JSON error pages** (`_http1.make_error_response`, and `format_error` for HTTP/2 and HTTP/3,
  whose `content-type` HTTP/2 sets inline: `Http2Server._handle_event` corrects it):
  `{"error": {...}}` with a code the client can act on, never the internal address mitmproxy
  would print (`upstream_unavailable`, `upstream_invalid_response`, `request_too_large`, ...).
- **Why an upstream failed** (`HttpStream.handle_protocol_error`): a failure on the server side
  is classified into `flow.metadata[UPSTREAM_FAILURE]` before the `error` hook runs (addons
  read it there), and a stream that breaks after its headers gets the API's own failure event
  (`response.failed`) written, and the answer then ends cleanly (`_end_after_failure_event`)
  instead of mitmproxy cutting the client's connection.
- **A refused request's body is read, not kept** (`HttpStream.state_consume_request_body`):
  once `requestheaders` answered a request (no key, too large, ...), its body is discarded as
  it arrives instead of being buffered for a `request` hook that has nothing to do with it.
- **A request head has a size limit** (`Http1Server.read_headers`): mitmproxy buffers header
  lines until the blank line without bound ("FIXME: protect against header size DoS");
  past `codexgate_max_header_bytes` the client gets 431 and the connection is closed.

Each patch keeps mitmproxy's own behaviour for everything it does not concern, and `install()`
is idempotent (several masters in one test process).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import flow as mitmproxy_flow
from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import _http1, _http2, _http3
from mitmproxy.proxy.layers.http._events import ErrorCode, ResponseData, ResponseEndOfMessage, ResponseProtocolError

from codexgate.bounded import clip
from codexgate.errors import error_body

logger = logging.getLogger(__name__)

UPSTREAM_FAILURE = "codexgate.upstream_failure"  # flow.metadata: UpstreamFailure
FAILED_EVENT = "codexgate.failed_event"  # flow.metadata: callable(flow, detail) -> bytes for a broken stream
_MARK = "codexgate-error:"
_INSTALLED = "_codexgate_installed"


class UpstreamFailure:
    """Why an upstream answer did not (fully) arrive, as the client is told."""

    __slots__ = ("status", "code", "message", "received")

    def __init__(self, status: int, code: str, message: str, received: bool = False) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.received = received  # response headers had arrived from the upstream

    def __repr__(self) -> str:
        return f"UpstreamFailure({self.status}, {self.code!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # What mitmproxy serializes (saved flows, mitmweb's dump): plain values.
        return {"status": self.status, "code": self.code, "message": self.message, "received": self.received}


class LiveCallable:
    """A function kept in `flow.metadata` for the live flow only: mitmproxy serializes a deep copy
    of the metadata (saved flows, mitmweb), where it becomes None instead of failing the flow."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None


def marked(status: int, code: str, message: str) -> str:
    """An error message the JSON error page turns into exactly this answer."""
    return _MARK + json.dumps([status, code, message])


# mitmproxy's own messages: which failures are whose. Its text names internal addresses, so it
# is never shown; the code says what happened.
_BY_STATUS = {
    400: ("invalid_request", "the request could not be read as HTTP"),
    413: ("request_too_large", "the request body is larger than the gateway accepts"),
    431: ("request_header_fields_too_large", "the request headers are larger than the gateway accepts"),
    502: ("upstream_unavailable", "the provider could not be reached or closed the connection; try again"),
}


def error_answer(status: int, message: str) -> tuple[int, str, bytes]:
    """(status, code, JSON body) for one of mitmproxy's error pages."""
    if message.startswith(_MARK):
        try:
            status, code, text = json.loads(message[len(_MARK) :])
            return status, code, error_body(status, code, text)
        except (ValueError, TypeError):
            pass
    code, text = _BY_STATUS.get(status, ("gateway_error", "the gateway could not complete the request"))
    if status == 400 and message:
        text = f"{text}: {clip(message, 160)}"
    return status, code, error_body(status, code, text)


def make_error_response(status_code: int, message: str = "") -> bytes:
    status, code, body = error_answer(status_code, message)
    response = http.Response.make(
        status,
        body,
        http.Headers(content_type="application/json", connection="close", x_codexgate_error=code),
    )
    return http1.assemble_response(response)


def format_error(status_code: int, message: str) -> bytes:
    return error_answer(status_code, message)[2]


def classify(flow: http.HTTPFlow, event: ResponseProtocolError) -> UpstreamFailure:
    """What a server-side failure means to the client."""
    received = flow.response is not None
    if event.code == ErrorCode.CONNECT_FAILED:
        return UpstreamFailure(502, "upstream_unavailable", "the provider could not be reached; try again")
    if event.code == ErrorCode.RESPONSE_TOO_LARGE:
        return UpstreamFailure(502, "upstream_invalid_response", "the provider's answer is too large", received)
    if event.code == ErrorCode.RESPONSE_VALIDATION_FAILED or event.message.startswith(
        ("Cannot parse HTTP response", "unexpected server response")
    ):
        return UpstreamFailure(502, "upstream_invalid_response", "the provider did not answer with valid HTTP",
                               received)  # fmt: skip
    if received:
        return UpstreamFailure(502, "stream_broken", "the provider's answer broke off", True)
    return UpstreamFailure(502, "upstream_unavailable", "the provider closed the connection without answering")


def _patched_handle_protocol_error(original: Callable[..., Any]) -> Callable[..., Any]:
    def handle_protocol_error(self: Any, event: Any) -> Generator[Any, Any, None]:
        flow: http.HTTPFlow = self.flow
        if isinstance(event, ResponseProtocolError) and event.code != ErrorCode.KILL:
            failure = flow.metadata.get(UPSTREAM_FAILURE)
            if not isinstance(failure, UpstreamFailure):
                failure = classify(flow, event)
                flow.metadata[UPSTREAM_FAILURE] = failure
            failed_event = flow.metadata.get(FAILED_EVENT)
            if (
                failure.received
                and callable(failed_event)
                and flow.response is not None
                and flow.response.stream
                and self.client_state != self.state_errored
            ):
                # The stream's own failure event, then a clean end of the answer (not a cut connection).
                try:
                    data = failed_event(flow, failure.message)
                except Exception:
                    logger.exception("cannot write the failure event of %s", flow.id)
                    data = b""
                if data:
                    yield http_layer.SendHttp(ResponseData(self.stream_id, data), self.context.client)
                    return (yield from _end_after_failure_event(self, marked(failure.status, failure.code,
                                                                             failure.message)))  # fmt: skip
            event = ResponseProtocolError(event.stream_id, marked(failure.status, failure.code, failure.message),
                                          event.code)  # fmt: skip
        return (yield from original(self, event))

    return handle_protocol_error


def _end_after_failure_event(stream: Any, message: str) -> Generator[Any, Any, None]:
    """The client's answer ends cleanly after its failure event (the last chunk of a chunked
    HTTP/1 body, END_STREAM on HTTP/2): the stream said how it ended, so the client reads a whole
    answer instead of a cut connection (SDKs raise on a cut and drop what they read). Otherwise
    what mitmproxy's `handle_protocol_error` does for a broken server side: the flow's error, the
    `error` hook (accounting, audit), the stream dropped — without its ResponseProtocolError to
    the client, which would close the connection after the complete answer."""
    flow: http.HTTPFlow = stream.flow
    yield http_layer.SendHttp(ResponseEndOfMessage(stream.stream_id), stream.context.client)
    flow.error = mitmproxy_flow.Error(message)
    yield http_layer.HttpErrorHook(flow)
    if (yield from stream.check_killed(False)):
        return
    stream.server_state = stream.state_errored
    stream.client_state = stream.state_done
    flow.live = False
    yield http_layer.DropStream(stream.stream_id)


def _patched_consume_request_body(original: Callable[..., Any]) -> Callable[..., Any]:
    def state_consume_request_body(self: Any, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, http_layer.RequestData) and self.flow.response is not None:
            return  # answered at requestheaders: read the body, keep none of it
        yield from original(self, event)

    return state_consume_request_body


def _patched_read_headers(original: Callable[..., Any]) -> Callable[..., Any]:
    def read_headers(self: Any, event: Any) -> Generator[Any, Any, None]:
        yield from original(self, event)
        if self.state == self.read_headers and isinstance(event, events.DataReceived):
            limit = getattr(self.context.options, "codexgate_max_header_bytes", 0)
            if limit and len(self.buf) > limit:
                logger.warning("request head over %d bytes from %s; connection closed", limit, self.conn.peername)
                yield commands.SendData(
                    self.conn,
                    make_error_response(
                        431,
                        marked(
                            431, "request_header_fields_too_large", f"the request headers exceed {limit} bytes"
                        ),  # fmt: skip
                    ),
                )
                yield commands.CloseConnection(self.conn)
                self.state = self.done

    return read_headers


def _patched_h2_server_event(original: Callable[..., Any]) -> Callable[..., Any]:
    """HTTP/2 writes its error page's headers inline (`content-type: text/html`); for the moment
    it writes one, its connection's `send_headers` says JSON instead."""

    def _handle_event(self: Any, event: Any) -> Generator[Any, Any, None]:
        if not isinstance(event, ResponseProtocolError):
            return (yield from original(self, event))
        connection = self.h2_conn
        send_headers = connection.send_headers

        def json_headers(stream_id: int, headers: list[tuple[bytes, bytes]], *args: Any, **kwargs: Any) -> Any:
            headers = [(n, b"application/json") if n == b"content-type" else (n, v) for n, v in headers]
            return send_headers(stream_id, headers, *args, **kwargs)

        connection.send_headers = json_headers
        try:
            return (yield from original(self, event))
        finally:
            del connection.send_headers

    return _handle_event


def install() -> None:
    """Patch mitmproxy's HTTP layer (once per process)."""
    if getattr(http_layer, _INSTALLED, False):
        return
    _http1.make_error_response = make_error_response  # type: ignore[assignment]
    _http2.format_error = format_error  # type: ignore[attr-defined]
    _http3.format_error = format_error  # type: ignore[attr-defined]
    stream = http_layer.HttpStream
    stream.handle_protocol_error = _patched_handle_protocol_error(stream.handle_protocol_error)  # type: ignore[method-assign]
    stream.state_consume_request_body = _patched_consume_request_body(  # type: ignore[method-assign]
        stream.state_consume_request_body
    )
    server = _http1.Http1Server
    server.read_headers = _patched_read_headers(server.read_headers)  # type: ignore[method-assign]
    h2_server = _http2.Http2Server
    h2_server._handle_event = _patched_h2_server_event(h2_server._handle_event)  # type: ignore[method-assign]
    setattr(http_layer, _INSTALLED, True)
