"""Identify: the virtual key of a governed request, wherever the client put it."""

from __future__ import annotations

import base64

import pytest
from mitmproxy.test import taddons
from unit_support import KEYS, error_of, governed, make_flow

from codexgate.addons.identify import Identify, key_from_proxy_authorization
from codexgate.flowstate import state_of

pytest_plugins = ["unit_support"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def identify():
    addon = Identify()
    with taddons.context(addon):
        yield addon


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEYS['alice']}"},
        {"authorization": f"bearer   {KEYS['alice']}  "},
        {"x-api-key": KEYS["alice"]},
        {"api-key": KEYS["alice"]},
        {"proxy-authorization": basic("codex", KEYS["alice"])},
        {"proxy-authorization": basic(KEYS["alice"], "")},
    ],
    ids=["bearer", "bearer-lowercase-spaces", "x-api-key", "api-key", "proxy-basic-password", "proxy-basic-user"],
)
def test_key_found_in_every_supported_place(identify, compiled, headers):
    flow = make_flow(body={"model": "gpt-5.5"}, headers=headers)
    state = governed(flow, compiled)
    identify.requestheaders(flow)
    assert flow.response is None
    assert state.key is not None and state.key.name == "alice"
    assert state.team == "platform"
    assert state.org == "acme"


def test_key_without_prefix_identified_by_hash(identify, compiled):
    flow = make_flow(body={"model": "gpt-5.5"}, headers={"authorization": f"Bearer {KEYS['erin']}"})
    state = governed(flow, compiled)
    identify.requestheaders(flow)
    assert state.key.name == "erin"


def test_key_given_on_connect_identifies_later_requests_of_that_connection(identify, compiled):
    connect = make_flow("CONNECT", "http://api.openai.com:443/", mode="regular")
    connect.request.headers["proxy-authorization"] = basic("codex", KEYS["dave"])
    identify.http_connect(connect)

    flow = make_flow(url="https://api.openai.com/v1/responses", body={"model": "mock"}, mode="regular")
    flow.client_conn = connect.client_conn
    state = governed(flow, compiled, mode="proxy")
    identify.requestheaders(flow)
    assert flow.response is None
    assert state.key.name == "dave"

    # another client connection did not authenticate
    other = make_flow(url="https://api.openai.com/v1/responses", body={"model": "mock"}, mode="regular")
    governed(other, compiled, mode="proxy")
    identify.requestheaders(other)
    assert other.response.status_code == 401
    assert error_of(other)["code"] == "missing_api_key"


def test_header_key_wins_over_connect_key(identify, compiled):
    connect = make_flow("CONNECT", "http://api.openai.com:443/", mode="regular")
    connect.request.headers["proxy-authorization"] = basic("codex", KEYS["dave"])
    identify.http_connect(connect)
    flow = make_flow(url="https://api.openai.com/v1/responses", headers={"authorization": f"Bearer {KEYS['alice']}"})
    flow.client_conn = connect.client_conn
    state = governed(flow, compiled, mode="proxy")
    identify.requestheaders(flow)
    assert state.key.name == "alice"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer "},
        {"authorization": "Basic Zm9vOg=="},
        {"x-api-key": "   "},
        {"proxy-authorization": "Basic !!!not-base64!!!"},
        {"proxy-authorization": "Digest username=x"},
    ],
)
def test_missing_key_is_401(identify, compiled, headers):
    flow = make_flow(body={"model": "gpt-5.5"}, headers=headers)
    state = governed(flow, compiled)
    identify.requestheaders(flow)
    assert flow.response is not None
    assert flow.response.status_code == 401
    error = error_of(flow)
    assert error["code"] == "missing_api_key"
    assert "Authorization: Bearer" in error["message"]
    assert state.key is None
    assert state.decision == "missing_key"


def test_unknown_key_is_401_and_not_echoed(identify, compiled):
    unknown = "sk-cg-unknown-999999999999999999999"
    flow = make_flow(body={"model": "gpt-5.5"}, headers={"authorization": f"Bearer {unknown}"})
    state = governed(flow, compiled)
    identify.requestheaders(flow)
    assert flow.response.status_code == 401
    error = error_of(flow)
    assert error["code"] == "invalid_api_key"
    assert unknown not in flow.response.get_text()
    assert state.key is None
    assert state.decision == "unknown_key"


def test_ungoverned_flow_untouched(identify):
    flow = make_flow(url="https://example.org/", mode="regular")
    identify.requestheaders(flow)
    assert flow.response is None
    assert state_of(flow) is None


def test_proxy_authorization_parsing():
    assert key_from_proxy_authorization(basic("u", "p")) == "p"
    assert key_from_proxy_authorization(basic("u", "")) == "u"
    assert key_from_proxy_authorization(basic("", "")) is None
    assert key_from_proxy_authorization("Bearer abc") is None
    assert key_from_proxy_authorization("Basic " + base64.b64encode(b"\xff\xfe:x").decode()) is None
