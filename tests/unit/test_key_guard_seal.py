"""KeyGuard (a virtual key never leaves for an ungoverned host) and Seal (the backstop)."""

from __future__ import annotations

import base64

import pytest
from mitmproxy import http
from unit_support import KEYS, error_of, governed, make_flow

from codexgate.addons.key_guard import KeyGuard
from codexgate.addons.seal import Seal
from codexgate.flowstate import state_of

pytest_plugins = ["unit_support"]


@pytest.fixture
def guard(source) -> KeyGuard:
    return KeyGuard(source)


@pytest.fixture
def seal(source) -> Seal:
    return Seal(source)


def outbound(url: str, headers: dict[str, str]):
    return make_flow("GET", url, headers=headers, mode="regular")


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEYS['alice']}"},
        {"x-api-key": KEYS["alice"]},
        {"api-key": KEYS["erin"]},  # no prefix: recognised by its hash
        {"authorization": f"Bearer {KEYS['erin']}"},
        {"cookie": f"session={KEYS['alice']}"},
        {"authorization": "Bearer sk-cg-not-in-policy-but-looks-virtual"},
    ],
)
def test_virtual_key_removed_from_ungoverned_flow(guard, headers):
    flow = outbound("https://github.com/openai/codex", {**headers, "accept": "*/*"})
    guard.requestheaders(flow)
    assert flow.response is None  # not a guard host: the request goes on, without the key
    for name in headers:
        assert name not in flow.request.headers
    assert flow.request.headers["accept"] == "*/*"
    assert "virtual key removed" in (flow.comment or "")


@pytest.mark.parametrize("host", ["chatgpt.com", "CHATGPT.com", "api.chatgpt.com"])
def test_guard_host_answered_403_locally(guard, host):
    flow = outbound(f"https://{host}/backend-api/codex/models", {"authorization": f"Bearer {KEYS['alice']}"})
    guard.requestheaders(flow)
    assert flow.response is not None
    assert flow.response.status_code == 403
    error = error_of(flow)
    assert error["code"] == "virtual_key_not_forwarded"
    assert KEYS["alice"] not in flow.response.get_text()
    assert "authorization" not in flow.request.headers


def test_lookalike_of_guard_host_is_not_guarded(guard):
    flow = outbound("https://notchatgpt.com/x", {"authorization": f"Bearer {KEYS['alice']}"})
    guard.requestheaders(flow)
    assert flow.response is None
    assert "authorization" not in flow.request.headers


@pytest.mark.parametrize("host", ["github.com", "chatgpt.com"])
def test_real_credentials_untouched(guard, host):
    headers = {"authorization": "Bearer sk-proj-real-openai-key", "cookie": "a=b", "x-api-key": "anthropic-real"}
    flow = outbound(f"https://{host}/x", headers)
    guard.requestheaders(flow)
    assert flow.response is None
    for name, value in headers.items():
        assert flow.request.headers[name] == value
    assert not flow.comment


def test_governed_flow_left_to_the_policy_chain(guard, compiled):
    flow = make_flow(headers={"authorization": f"Bearer {KEYS['alice']}"})
    governed(flow, compiled)
    guard.requestheaders(flow)
    assert flow.request.headers["authorization"] == f"Bearer {KEYS['alice']}"
    assert flow.response is None


def test_virtual_key_in_proxy_basic_auth_removed(guard):
    value = "Basic " + base64.b64encode(f"codex:{KEYS['alice']}".encode()).decode()
    flow = outbound("http://telemetry.example.org/v1/events", {"proxy-authorization": value})
    guard.requestheaders(flow)
    assert "proxy-authorization" not in flow.request.headers


def test_seal_refuses_uncleared_governed_flow(seal, compiled):
    flow = make_flow(body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"})
    seal.request(flow)
    assert flow.response.status_code == 500
    assert error_of(flow)["code"] == "gateway_internal_error"
    assert state.decision == "internal_error"
    assert state.answered_locally


def test_seal_passes_cleared_flow(seal, compiled):
    flow = make_flow(body={"model": "gpt-5.5"})
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"})
    state.cleared = True
    seal.request(flow)
    assert flow.response is None
    assert state.decision == "forwarded"


def test_seal_refuses_governed_host_without_state(seal):
    # Intake never ran (or crashed before leaving state): the host alone says it is governed.
    flow = make_flow(url="https://api.openai.com/v1/responses", body={"model": "gpt-5.5"}, mode="regular")
    seal.request(flow)
    assert flow.response.status_code == 500
    assert state_of(flow) is None


def test_seal_passes_ungoverned_host(seal):
    flow = make_flow("GET", "https://github.com/", mode="regular")
    seal.request(flow)
    assert flow.response is None


def test_seal_keeps_an_existing_refusal(seal, compiled):
    flow = make_flow(body={"model": "gpt-5.5"})
    governed(flow, compiled)
    flow.response = http.Response.make(401, b"{}")
    seal.request(flow)
    assert flow.response.status_code == 401
