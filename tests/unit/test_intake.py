"""Intake: which requests are governed, and what a governed request asks for."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from unit_support import error_of, make_flow

from codexgate.addons.intake import Intake
from codexgate.addons.intake_limits import RequestLimits
from codexgate.flowstate import state_of

pytest_plugins = ["unit_support"]

BODY = {"model": "gpt-5.5", "stream": True, "input": "hi"}


def run(intake: Intake, flow) -> None:
    intake.requestheaders(flow)
    intake.request(flow)


@pytest.fixture
def intake(source) -> Intake:
    return Intake(source)


def test_gateway_listener_governs_and_reads_the_body(intake, source):
    flow = make_flow(body=BODY, headers={"session-id": "s" * 300})
    run(intake, flow)
    assert flow.response is None
    state = state_of(flow)
    assert state is not None
    assert state.mode == "gateway"
    assert state.endpoint == "responses"
    assert state.model_requested == "gpt-5.5"
    assert state.stream is True
    assert state.body == BODY
    assert state.session_id == "s" * 128
    assert state.policy is source.current()


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/v1/responses", "responses"),
        ("POST", "/responses", "responses"),
        ("POST", "/v1/responses/", "responses"),
        ("POST", "/v1/chat/completions", "chat"),
        ("POST", "/chat/completions?x=1", "chat"),
        ("GET", "/v1/models", "models"),
        ("GET", "/models", "models"),
        ("GET", "/v1/models/gpt-5.5", "models"),
        ("GET", "/models/gpt-5.5", "models"),
    ],
)
def test_endpoints_with_and_without_v1(intake, method, path, endpoint):
    flow = make_flow(method, "http://127.0.0.1:4000" + path, body=BODY if method == "POST" else None)
    run(intake, flow)
    assert flow.response is None
    assert state_of(flow).endpoint == endpoint


def test_proxy_mode_governs_only_governed_hosts(intake):
    governed_flow = make_flow(url="https://api.openai.com/v1/responses", body=BODY, mode="regular")
    run(intake, governed_flow)
    assert state_of(governed_flow) is not None
    assert state_of(governed_flow).mode == "proxy"
    assert state_of(governed_flow).endpoint == "responses"

    # a provider host is governed on its own port only
    provider_flow = make_flow(url="https://upstream.example.net:8443/openai/v1/responses", body=BODY, mode="regular")
    run(intake, provider_flow)
    assert state_of(provider_flow) is not None

    for url in (
        "https://example.org/v1/responses",
        "https://upstream.example.net/v1/responses",  # port 443: not the provider's port
        "https://chatgpt.com/backend-api/codex/models",  # guard host: not governed
    ):
        other = make_flow(url=url, body=b"not json", mode="regular")
        run(intake, other)
        assert state_of(other) is None, url
        assert other.response is None, url


def test_websocket_upgrade_of_responses_is_left_to_the_websocket_addon(intake):
    # ResponsesWebSocket (addons/websocket.py) serves it or answers 426: tests/integration/test_websocket.py
    flow = make_flow(
        "GET",
        "http://127.0.0.1:4000/v1/responses",
        headers={"connection": "Upgrade", "upgrade": "WebSocket", "sec-websocket-version": "13"},
    )
    intake.requestheaders(flow)
    assert flow.response is None
    assert state_of(flow).endpoint == "responses_websocket"


def test_unknown_endpoint_is_404_naming_what_is_served(intake):
    flow = make_flow("POST", "http://127.0.0.1:4000/v1/embeddings", body={"model": "x", "input": "y"})
    run(intake, flow)
    assert flow.response.status_code == 404
    error = error_of(flow)
    assert error["code"] == "unknown_endpoint"
    assert "/v1/embeddings" in error["message"]
    assert "/v1/responses" in error["message"]


def test_get_on_responses_is_unknown(intake):
    flow = make_flow("GET", "http://127.0.0.1:4000/v1/responses")
    run(intake, flow)
    assert flow.response.status_code == 404


@pytest.mark.parametrize(
    ("content", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b"", "invalid_json", None),
        (json.dumps({"input": "hi"}).encode(), "missing_model", "model"),
        (json.dumps({"model": "", "input": "hi"}).encode(), "missing_model", "model"),
        (json.dumps({"model": 5}).encode(), "missing_model", "model"),
        (json.dumps({"model": "gpt-5.5", "stream": "true"}).encode(), "invalid_stream", "stream"),
        (json.dumps({"model": "gpt-5.5", "stream": 1}).encode(), "invalid_stream", "stream"),
    ],
)
def test_bad_bodies_are_400(intake, content, code, param):
    flow = make_flow(body=content)
    run(intake, flow)
    assert flow.response is not None
    assert flow.response.status_code == 400
    error = error_of(flow)
    assert error["code"] == code
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert state_of(flow).answered_locally


def test_stream_defaults_to_false(intake):
    flow = make_flow(body={"model": "gpt-5.5", "input": "hi"})
    run(intake, flow)
    assert flow.response is None
    assert state_of(flow).stream is False


def test_gzip_body_is_decoded(intake):
    flow = make_flow(body=BODY)
    flow.request.encode("gzip")
    assert flow.request.raw_content != flow.request.content
    run(intake, flow)
    assert flow.response is None
    assert state_of(flow).body == BODY


def test_flow_already_answered_is_left_alone(intake):
    flow = make_flow(body=b"{broken")
    flow.response = http.Response.make(204)
    run(intake, flow)
    assert flow.response.status_code == 204
    assert state_of(flow) is None


@pytest.mark.parametrize(
    ("fields", "session"),
    [
        ([(b"Session-Id", b"a")], "a"),
        ([(b"session-id", b""), (b"X-Session-Id", b"b")], "b"),
        ([(b"session-id", b"a"), (b"SESSION-ID", b"b")], "a, b"),  # repeated: folded as Headers.get folds it
        ([(b"x-session-id", b"\xff")], "\udcff"),
    ],
)
def test_session_id_is_read_as_headers_get_reads_it(intake, fields, session):
    flow = make_flow(body=BODY)
    flow.request.headers.fields = flow.request.headers.fields + tuple(fields)
    run(intake, flow)
    assert state_of(flow).session_id == session


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ([(b"Content-Length", b"999999999999")], True),
        ([(b"content-length", b"999999999999"), (b"CONTENT-LENGTH", b"1")], False),  # the last one counts
        ([(b"content-length", b"1"), (b"Content-Length", b" 999999999999 ")], True),
        ([(b"x-content-length", b"999999999999")], False),
    ],
)
def test_request_limits_read_the_declared_length_of_the_last_field(source, fields, refused):
    limits = RequestLimits(source)
    flow = make_flow(body=BODY)
    flow.request.headers.fields = tuple(f for f in flow.request.headers.fields if f[0].lower() != b"content-length")
    flow.request.headers.fields += tuple(fields)
    Intake(source, limits).requestheaders(flow)
    limits.requestheaders(flow)
    assert (flow.response is not None and flow.response.status_code == 413) is refused


def test_request_limits_count_every_header_byte(source):
    limits = RequestLimits(source)
    limits._max_header_bytes = 100
    flow = make_flow(body=BODY)
    size = sum(len(name) + len(value) + 4 for name, value in flow.request.headers.fields)
    flow.request.headers.fields += ((b"x-pad", b"p" * (100 - size - 9)),)  # exactly 100 bytes
    limits.requestheaders(flow)
    assert flow.response is None
    flow.request.headers.fields += ((b"x", b""),)
    limits.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 431


M = b'"model": "m"'
BODIES = [
    b'{"model": "m", "n": 123456789012345678901234567890, "f": 1e400, "z": -0.0}',
    b'{"model": "m", "x": NaN, "y": -Infinity}',
    b'{"model": "m", "a": 1, "a": 2}',
    b'{"model": "m"}  \r\n\t',  # whitespace after the object
    b'{"model": "m"} x',  # extra data
    b'{"model": "m"}{}',
    b"{" + M + b', "s": "\xed\xa0\x80"}',  # an encoded lone surrogate (json.loads decodes with surrogatepass)
    b"{" + M + b', "s": "\xff"}',  # invalid UTF-8
    b"{" + M + b', "s": "\\ud800"}',
    b"{" + M + b', "s": "\x01"}',  # a control character in a string
    b"\xef\xbb\xbf{" + M + b"}",  # a UTF-8 byte order mark
    '{"model": "m"}'.encode("utf-16-le"),
    '{"model": "m"}'.encode("utf-16"),
    b"{",
    b"{}",
    b'{"model": "m", "d": ' + b"[" * 2000 + b"]" * 2000 + b"}",  # deeper than json.loads reads
    b'{"model": "m", "d": ' + b"[" * 150 + b"]" * 150 + b"}",
    b' {"model": "m"}',
]
# The same edge cases written compactly, as Codex and the SDKs write a body (`canonical_object`'s
# fast read), and what that read must hand back to the strict one: a number orjson reads otherwise
# (`1e5`, beyond 64 bits, infinite), an escape it writes otherwise, NaN, a surrogate, a repeat.
COMPACT_BODIES = [
    b'{"model":"m","n":123456789012345678901234567890,"f":1e400,"z":-0.0}',
    b'{"model":"m","n":18446744073709551615,"i":-9223372036854775809,"e":1e5,"g":1e+16,"h":0.1}',
    b'{"model":"m","x":NaN}',
    b'{"model":"m","a":1,"a":2}',
    b'{"model":"m","a":{"b":1,"b":1}}',  # the same value twice is still a repeat
    b'{"model":"m","\\u00e9":1,"\xc3\xa9":2}',  # one key, escaped once
    b'{"model":"m"} ',
    b'{"model":"m"}{}',
    b'{"model":"m","s":"\xed\xa0\x80"}',
    b'{"model":"m","s":"\\ud800"}',
    b'{"model":"m","s":"\\u00e9\\/"}',
    b'{"model":"m","s":"\\u001f\\b\\n\\u2028\xe2\x80\xa8\x7f"}',
    b'{"model":"m","s":"\x01"}',
    b'{"model":"m","d":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"model":"m","d":' + b"[" * 150 + b"]" * 150 + b"}",
    b'{"model":"m","d":[[],{},[{}],""],"t":true,"f":false,"n":null}',
    b'{"":1}',
]


class _Repeated(Exception):
    pass


def _refuse_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Repeated
    return dict(pairs)


@pytest.mark.parametrize("raw", BODIES + COMPACT_BODIES)
def test_the_body_is_read_exactly_as_json_loads_reads_it(intake, raw):
    """As `json.loads` reads it, but for an object naming a key twice (refused: see below)."""
    flow = make_flow(body=raw)
    run(intake, flow)
    try:
        expected = json.loads(raw, object_pairs_hook=_refuse_repeats)
    except _Repeated:
        assert error_of(flow)["code"] == "duplicate_key"
        return
    except RecursionError:
        assert error_of(flow)["code"] == "json_too_deep"
        return
    except ValueError as exc:
        error = error_of(flow)
        assert error["code"] == "invalid_json" and str(exc)[:60] in error["message"]
        return
    if flow.response is not None:
        assert error_of(flow)["code"] in ("json_too_deep", "missing_model")
        return
    assert repr(state_of(flow).body) == repr(expected)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        # What the gateway would check, and what a parser keeping the first value would serve.
        (b'{"model": "gpt-forbidden", "input": "hi", "model": "gpt-5.5"}', "model"),
        (b'{"model": "gpt-5.5", "stream": false, "input": "hi", "stream": true}', "stream"),
        (b'{"model": "gpt-5.5", "service_tier": "priority", "service_tier": "default"}', "service_tier"),
        # Nested: a guardrail reads one content, the provider could get the other.
        (b'{"model": "gpt-5.5", "input": [{"role": "user", "content": "secret", "content": "clean"}]}', "content"),
        (b'{"model": "gpt-5.5", "reasoning": {"effort": "high", "effort": "low"}}', "effort"),
        (b' {"model": "gpt-5.5", "model": "gpt-5.5"}', "model"),  # json.loads' own path (leading space)
        (b'{"model": "gpt-5.5", "\\u00e9": 1, "\xc3\xa9": 2}', "\\u00e9"),  # the same key, escaped once
        # Keys one to Go's encoding/json (case-insensitive, Unicode simple folding): the request's own fields.
        (b'{"model": "gpt-5.5", "input": "hi", "Model": "gpt-forbidden"}', "Model"),
        (b'{"stream": false, "model": "gpt-5.5", "\xc5\xbftream": true}', "\\u017ftream"),  # a long s
    ],
)
@pytest.mark.parametrize("compact", [False, True], ids=["spaced", "compact"])  # compact: the fast read's
def test_an_object_naming_a_key_twice_is_refused(intake, raw, key, compact):
    if compact:
        raw = raw.replace(b'": ', b'":').replace(b', "', b',"')
    flow = make_flow(body=raw)
    run(intake, flow)
    assert flow.response is not None and flow.response.status_code == 400
    error = error_of(flow)
    assert error["code"] == "duplicate_key"
    assert error["type"] == "invalid_request_error"
    assert repr(json.loads(f'"{key}"')) in error["message"]
    assert state_of(flow).answered_locally


def test_keys_differing_only_in_case_inside_nested_objects_are_left_alone(intake):
    body = {"model": "gpt-5.5", "metadata": {"Env": "a", "env": "b"}}  # the client's own labels
    flow = make_flow(body=body)
    run(intake, flow)
    assert flow.response is None and state_of(flow).body == body


def test_the_same_key_in_different_objects_is_not_a_repeat(intake):
    body = {"model": "gpt-5.5", "input": [{"type": "message", "content": "a"}, {"type": "message", "content": "b"}],
            "reasoning": {"effort": "low"}, "text": {"format": {"type": "text"}}}  # fmt: skip
    flow = make_flow(body=body)
    run(intake, flow)
    assert flow.response is None
    assert state_of(flow).body == body


def test_a_repeated_key_is_named_clipped(intake):
    long_key = "k" * 5000
    flow = make_flow(body=b'{"model": "gpt-5.5", "' + long_key.encode() + b'": 1, "' + long_key.encode() + b'": 2}')
    run(intake, flow)
    message = error_of(flow)["message"]
    assert error_of(flow)["code"] == "duplicate_key" and len(message) < 200 and "5000 chars" in message


@pytest.mark.parametrize(
    ("raw", "key", "meant"),
    [
        (b'{"model": "gpt-5.5", "input": "hi", "STREAM": true}', "STREAM", "stream"),
        (b'{"model": "gpt-5.5", "\xc5\xbftream": true}', "\u017ftream", "stream"),  # a long s
        (b'{"model": "gpt-5.5", "Service_Tier": "priority"}', "Service_Tier", "service_tier"),
    ],
)
def test_a_key_that_folds_to_an_api_field_is_refused(intake, raw, key, meant):
    """Alone: to a Go host (encoding/json matches case-insensitively) it is that field; to the gateway it is not."""
    flow = make_flow(body=raw)
    run(intake, flow)
    error = error_of(flow)
    assert flow.response.status_code == 400 and error["code"] == "ambiguous_key"
    assert repr(json.loads(f'"{key}"')) in error["message"] and repr(meant) in error["message"]


def test_other_keys_in_any_case_are_forwarded(intake):
    body = {"model": "gpt-5.5", "input": "hi", "topK": 5, "X-Vendor": {"Model": "kept"}}  # vendor extras, nested
    flow = make_flow(body=body)
    run(intake, flow)
    assert flow.response is None and state_of(flow).body == body


def test_api_fields_are_the_sdk_request_fields_casefolded():
    from openai.types.chat import completion_create_params
    from openai.types.responses import response_create_params

    from codexgate.addons.intake import API_FIELDS

    sdk = set(response_create_params.ResponseCreateParamsStreaming.__annotations__)
    sdk |= set(completion_create_params.CompletionCreateParamsStreaming.__annotations__)
    assert sdk <= API_FIELDS, f"fields the SDK sends that Intake does not know: {sorted(sdk - API_FIELDS)}"
    assert all(field == field.casefold() for field in API_FIELDS)
