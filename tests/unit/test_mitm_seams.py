"""The JSON answers that replace mitmproxy's HTML error pages, and how upstream failures are named."""

from __future__ import annotations

import json

import pytest
from mitmproxy.http import Headers
from mitmproxy.proxy.layers.http._events import ErrorCode, ResponseProtocolError
from mitmproxy.test import tflow

from codexgate.flowstate import GatewayRequest
from codexgate.headers import lowered_names, single_values
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


HEADS = [
    [(b"Host", b"gw"), (b"Content-Length", b"12"), (b"Authorization", b"Bearer k")],
    [(b"content-length", b"1"), (b"Content-Length", b"2")],  # repeated: read field by field
    [(b"a\nb", b"x"), (b"c", b"y")],  # a name holding the separator
    [(b"TRANSFER-ENCODING", b"gzip, Chunked"), (b"x-content-length", b"9")],
    [],
]


@pytest.mark.parametrize("fields", HEADS)
def test_single_values_reads_as_headers_get(fields: list[tuple[bytes, bytes]]) -> None:
    headers = Headers(fields)
    by_name = single_values(headers.fields)
    names = [name.lower() for name, _ in headers.fields]
    if by_name is None:
        assert len(set(names)) != len(names) or any(b"\n" in name for name in names) or not names
        return
    assert by_name == {name.lower(): value for name, value in headers.fields}
    for name in names:
        assert by_name[name].decode() == headers.get(name.decode())
    state = GatewayRequest(request_id="r", policy=None, mode="gateway")  # type: ignore[arg-type]
    shared = state.head_values(headers.fields)
    assert shared == by_name
    assert state.head_values(headers.fields) is shared  # the same tuple: read once for the steps
    headers["x-new"] = "1"  # a change replaces the tuple: read again
    assert state.head_values(headers.fields) == {**by_name, b"x-new": b"1"}


@pytest.mark.parametrize("fields", HEADS)
def test_lowered_names_finds_every_name(fields: list[tuple[bytes, bytes]]) -> None:
    names = lowered_names(Headers(fields).fields)
    for name, _ in fields:
        assert name.lower() in names
    assert (b"content-encoding" in names) == any(name.lower() == b"content-encoding" for name, _ in fields)
