"""Route (destination and upstream model) and Credentials (key swap)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest
from mitmproxy.test import taddons
from unit_support import KEYS, UPSTREAM_ENV, error_of, governed, make_flow, policy_yaml

from codexgate.addons.credentials import Credentials
from codexgate.addons.route import Route, prepare_translation
from codexgate.policies.loader import load_policy
from codexgate.providers.registry import family_for

pytest_plugins = ["unit_support"]


@pytest.fixture
def route():
    addon = Route()
    with taddons.context(addon):
        yield addon


@pytest.fixture
def credentials():
    addon = Credentials()
    with taddons.context(addon):
        yield addon


def routed(route, compiled, body, endpoint="responses", model=None, stream=None, headers=None):
    path = "/v1/responses" if endpoint == "responses" else "/v1/chat/completions"
    flow = make_flow(
        url="http://127.0.0.1:4000" + path, body=body, headers={"host": "127.0.0.1:4000", **(headers or {})}
    )
    stream = body.get("stream", False) if stream is None else stream
    state = governed(flow, compiled, key="alice", body=dict(body), endpoint=endpoint, stream=stream)
    state.model = model or compiled.lookup_model(body["model"])[0]
    asyncio.run(route.request(flow))
    return flow, state


def test_url_points_at_provider_and_model_is_rewritten(route, compiled):
    body = {"model": "gpt-5.5", "stream": True, "input": "hi"}
    flow, state = routed(route, compiled, body)
    assert flow.response is None
    assert flow.request.url == "https://upstream.example.net:8443/openai/v1/responses"
    assert flow.request.host_header == "upstream.example.net:8443"
    assert state.provider == "openai"
    assert state.upstream_model == "gpt-5.5-2026-01-01"
    sent = json.loads(flow.request.content)
    assert sent == {**body, "model": "gpt-5.5-2026-01-01"}
    assert flow.request.headers["accept-encoding"] == "identity"


def test_same_upstream_model_keeps_the_bytes(route, compiled):
    raw = b'{"model":  "gpt-5.4-mini",   "input": "hi"}'
    flow = make_flow(url="http://127.0.0.1:4000/responses", body=raw)
    state = governed(flow, compiled, key="alice", body=json.loads(raw))
    state.model = "gpt-5.4-mini"
    asyncio.run(route.request(flow))
    assert flow.request.url == "https://upstream.example.net:8443/openai/v1/responses"
    assert flow.request.content == raw
    assert state.upstream_model == "gpt-5.4-mini"
    assert "accept-encoding" not in flow.request.headers


def test_chat_endpoint_path_and_include_usage(route, compiled):
    body = {"model": "gpt-5.4-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    flow, state = routed(route, compiled, body, endpoint="chat")
    assert flow.request.url == "https://upstream.example.net:8443/openai/v1/chat/completions"
    sent = json.loads(flow.request.content)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == body["messages"]


def test_chat_stream_options_kept_and_extended(route, compiled):
    body = {"model": "gpt-5.4-mini", "stream": True, "messages": [], "stream_options": {"include_obfuscation": False}}
    flow, _ = routed(route, compiled, body, endpoint="chat")
    sent = json.loads(flow.request.content)
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_chat_without_stream_gets_no_stream_options(route, compiled):
    body = {"model": "gpt-5.4-mini", "messages": []}
    flow, _ = routed(route, compiled, body, endpoint="chat")
    assert "stream_options" not in json.loads(flow.request.content)


def test_mock_route_leaves_url_and_names_provider(route, compiled):
    body = {"model": "mock", "input": "hi"}
    flow, state = routed(route, compiled, body)
    assert flow.request.url == "http://127.0.0.1:4000/v1/responses"
    assert state.provider == "local"
    assert state.upstream_model == "mock-model"
    assert state.translation.family.answers_locally  # answered by MockUpstream with the upstream model


def swapped(credentials, compiled, headers, model="gpt-5.5", provider="openai"):
    flow = make_flow(
        url="https://upstream.example.net:8443/openai/v1/responses", body={"model": model}, headers=headers
    )
    state = governed(flow, compiled, key="alice", body={"model": model}, model=model)
    state.provider = provider
    family = family_for(compiled.policy.providers[provider])
    state.translation = prepare_translation(state, family, model, provider)  # what Route leaves
    asyncio.run(credentials.request(flow))
    return flow, state


ALL_CLIENT_CREDENTIALS = {
    "authorization": f"Bearer {KEYS['alice']}",
    "x-api-key": KEYS["alice"],
    "api-key": KEYS["alice"],
    "proxy-authorization": "Basic " + base64.b64encode(f"u:{KEYS['alice']}".encode()).decode(),
    "openai-organization": "org-client",
    "openai-project": "proj-client",
}


def test_client_credentials_replaced_by_provider_key(credentials, compiled, upstream_env):
    flow, state = swapped(credentials, compiled, {**ALL_CLIENT_CREDENTIALS, "x-other": "kept"})
    assert flow.response is None
    assert state.cleared
    assert flow.request.headers.get_all("authorization") == [f"Bearer {upstream_env}"]
    for name in ("x-api-key", "api-key", "proxy-authorization", "openai-organization", "openai-project"):
        assert name not in flow.request.headers, name
    assert flow.request.headers["x-other"] == "kept"
    assert not any(KEYS["alice"] in value for value in flow.request.headers.values())


def test_duplicate_authorization_headers_all_removed(credentials, compiled, upstream_env):
    flow = make_flow(url="https://upstream.example.net:8443/openai/v1/responses", body={"model": "gpt-5.5"})
    flow.request.headers.add("authorization", f"Bearer {KEYS['alice']}")
    flow.request.headers.add("authorization", f"Bearer {KEYS['dave']}")
    state = governed(flow, compiled, key="alice", body={"model": "gpt-5.5"}, model="gpt-5.5")
    state.provider = "openai"
    state.translation = prepare_translation(state, family_for(compiled.policy.providers["openai"]), "gpt-5.5", "openai")
    asyncio.run(credentials.request(flow))
    assert flow.request.headers.get_all("authorization") == [f"Bearer {upstream_env}"]


def test_virtual_key_in_cookie_never_reaches_provider(credentials, compiled, upstream_env):
    flow, _ = swapped(
        credentials, compiled, {"authorization": f"Bearer {KEYS['alice']}", "cookie": f"k={KEYS['alice']}"}
    )
    assert not any(KEYS["alice"] in value for value in flow.request.headers.values())


def test_mock_provider_cleared_without_credentials(credentials, compiled):
    flow, state = swapped(credentials, compiled, dict(ALL_CLIENT_CREDENTIALS), model="mock-model", provider="local")
    assert flow.response is None
    assert state.cleared
    assert not any(name in flow.request.headers for name in ALL_CLIENT_CREDENTIALS)


def test_missing_env_secret_is_503_without_secrets(credentials, compiled, monkeypatch):
    monkeypatch.delenv(UPSTREAM_ENV, raising=False)
    monkeypatch.setenv("SOME_OTHER_SECRET", "sk-proj-never-show-me")
    flow, state = swapped(credentials, compiled, {"authorization": f"Bearer {KEYS['alice']}"})
    assert flow.response.status_code == 503
    error = error_of(flow)
    assert error["code"] == "provider_credentials_unavailable"
    assert "openai" in error["message"]
    text = flow.response.get_text()
    assert KEYS["alice"] not in text
    assert "sk-proj" not in text
    assert not state.cleared
    assert state.decision == "provider_unavailable"


def test_file_secret_is_read_and_reread(credentials, tmp_path: Path, monkeypatch):
    secret_file = tmp_path / "openai.key"
    secret_file.write_text("sk-proj-from-file-1\n")
    policy_path = tmp_path / "file-policy.yaml"
    policy_path.write_text(policy_yaml().replace(f"env:{UPSTREAM_ENV}", f"file:{secret_file}"))
    compiled = load_policy(policy_path)
    flow, state = swapped(credentials, compiled, {"authorization": f"Bearer {KEYS['alice']}"})
    assert flow.request.headers["authorization"] == "Bearer sk-proj-from-file-1"

    secret_file.write_text("sk-proj-from-file-2-longer\n")
    os.utime(secret_file, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    flow, _ = swapped(credentials, compiled, {"authorization": f"Bearer {KEYS['alice']}"})
    assert flow.request.headers["authorization"] == "Bearer sk-proj-from-file-2-longer"

    secret_file.write_text("")
    os.utime(secret_file, ns=(2_000_000_001_000_000_000, 2_000_000_001_000_000_000))
    flow, _ = swapped(credentials, compiled, {"authorization": f"Bearer {KEYS['alice']}"})
    assert flow.response.status_code == 503
    assert "sk-proj" not in flow.response.get_text()
