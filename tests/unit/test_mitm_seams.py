"""The JSON answers that replace mitmproxy's HTML error pages, and how upstream failures are named."""

from __future__ import annotations

import json

from mitmproxy.proxy.layers.http._events import ErrorCode, ResponseProtocolError
from mitmproxy.test import tflow

from codexgate.mitm_seams import classify, error_answer, make_error_response, marked


def test_mitmproxy_messages_never_reach_the_client() -> None:
    status, code, body = error_answer(502, "Connection refused: 10.0.0.7:8443 (internal-host.local)")
    assert (status, code) == (502, "upstream_unavailable")
    assert b"10.0.0.7" not in body and b"internal-host" not in body
    assert json.loads(body)["error"]["type"] == "server_error"
    assert error_answer(413, "Request body exceeds mitmproxy's body_size_limit.")[1] == "request_too_large"


def test_a_marked_message_is_answered_exactly() -> None:
    status, code, body = error_answer(502, marked(504, "upstream_timeout", "no answer within 2 s"))
    assert (status, code) == (504, "upstream_timeout")
    assert json.loads(body)["error"]["message"] == "no answer within 2 s"


def test_http1_page_is_json_and_closes() -> None:
    raw = make_error_response(400, "Bad request line: " + "x" * 5000)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    assert len(body) < 600  # the client's bytes are clipped


def test_upstream_failures_are_classified() -> None:
    flow = tflow.tflow()
    flow.response = None
    failed = classify(flow, ResponseProtocolError(1, "Connection refused", ErrorCode.CONNECT_FAILED))
    assert (failed.code, failed.received) == ("upstream_unavailable", False)
    not_http = ResponseProtocolError(1, "Cannot parse HTTP response: SSH", ErrorCode.GENERIC_SERVER_ERROR)
    garbage = classify(flow, not_http)
    assert garbage.code == "upstream_invalid_response"
    flow.response = tflow.tresp()
    cut = classify(flow, ResponseProtocolError(1, "server closed connection", ErrorCode.GENERIC_SERVER_ERROR))
    assert (cut.code, cut.received) == ("stream_broken", True)
