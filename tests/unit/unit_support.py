"""Helpers and fixtures for the unit tests (a plugin, not a conftest: `from conftest import` in other test
directories must keep finding tests/conftest.py): a small real policy file, flows on either listener."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from codexgate.addons.policy_source import PolicySource
from codexgate.flowstate import METADATA_KEY, GatewayRequest
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import CompiledPolicy, load_policy

GATEWAY_MODE = "reverse:https://api.openai.com@4000"
UPSTREAM_ENV = "CODEXGATE_UNIT_UPSTREAM_KEY"
UPSTREAM_SECRET = "sk-proj-upstream-secret-0123456789"

KEYS = {
    "alice": "sk-cg-alice-0000000000000000000000000000",
    "bob": "sk-cg-bob-11111111111111111111111111111111",
    "carol": "sk-cg-carol-222222222222222222222222222222",
    "dave": "sk-cg-dave-3333333333333333333333333333333",
    # a key without the sk-cg- prefix: only its hash identifies it
    "erin": "custom-erin-key-4444444444444444444444444",
}


def policy_yaml(upstream_env: str = UPSTREAM_ENV, extra_models: str = "") -> str:
    return f"""\
# unit-test policy
gateway:
  intercept_hosts: [api.openai.com]
  guard_hosts: [chatgpt.com]

providers:
  openai:
    kind: openai
    base_url: https://upstream.example.net:8443/openai/v1
    keys:
      - value: env:{upstream_env}
  local:
    kind: mock
    output_tokens: 7
    input_tokens: 11

models:
  gpt-5.5:
    routes: [{{provider: openai, model: gpt-5.5-2026-01-01}}]
    price: {{input_per_mtok: 1.25, output_per_mtok: 10}}
  gpt-5.4-mini:
    routes: [{{provider: openai}}]
    price: {{input_per_mtok: 0.25, output_per_mtok: 2}}
  mock-model:
    routes: [{{provider: local}}]
    aliases: [mock]
    price: {{input_per_mtok: 0, output_per_mtok: 0}}
  o9-secret:
    routes: [{{provider: openai}}]
    price: {{input_per_mtok: 15, output_per_mtok: 60}}
{extra_models}
orgs:
  acme: {{}}

teams:
  platform: {{org: acme}}

keys:
  - {{name: alice, team: platform, hash: {hash_key(KEYS["alice"])}, models: [gpt-5*, mock]}}
  - {{name: bob, team: platform, hash: {hash_key(KEYS["bob"])}, disabled: true}}
  - {{name: carol, team: platform, hash: {hash_key(KEYS["carol"])}, expires_at: 2020-01-01T00:00:00Z}}
  - {{name: dave, team: platform, hash: {hash_key(KEYS["dave"])}, models: [mock-model]}}
  - {{name: erin, team: platform, hash: {hash_key(KEYS["erin"])}}}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(), encoding="utf-8")
    return path


@pytest.fixture
def compiled(policy_file: Path) -> CompiledPolicy:
    return load_policy(policy_file)


@pytest.fixture
def upstream_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(UPSTREAM_ENV, UPSTREAM_SECRET)
    return UPSTREAM_SECRET


@pytest.fixture
def source(policy_file: Path, tmp_path: Path) -> Iterator[PolicySource]:
    """A PolicySource configured with the unit policy, inside a live taddons context."""
    addon = PolicySource()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, codexgate_policy=str(policy_file), codexgate_data_dir=str(tmp_path / "data"))
        yield addon


def make_flow(
    method: str = "POST",
    url: str = "http://127.0.0.1:4000/v1/responses",
    body: Any = None,
    headers: dict[str, str] | None = None,
    mode: str = GATEWAY_MODE,
) -> http.HTTPFlow:
    """A flow as mitmproxy hands it to the request hooks, on the listener `mode` names."""
    if body is None:
        content = b""
    elif isinstance(body, bytes):
        content = body
    else:
        content = json.dumps(body).encode()
    all_headers = {"content-type": "application/json"} if content else {}
    all_headers.update(headers or {})
    flow = tflow.tflow()
    flow.request = http.Request.make(method, url, content, all_headers)
    flow.client_conn.proxy_mode = ProxyMode.parse(mode)
    return flow


def governed(
    flow: http.HTTPFlow,
    policy: CompiledPolicy,
    *,
    endpoint: str | None = "responses",
    key: str | None = None,
    model: str | None = None,
    body: dict[str, Any] | None = None,
    stream: bool = False,
    mode: str = "gateway",
) -> GatewayRequest:
    """Attach the state the earlier addons would have left on a governed flow."""
    state = GatewayRequest(request_id=flow.id, policy=policy, mode=mode, endpoint=endpoint)
    if key is not None:
        state.key = policy.keys_by_hash[hash_key(KEYS[key])]
        state.team = state.key.team
        state.org = "acme"
    if body is not None:
        state.body = body
        state.model_requested = body.get("model")
        state.stream = stream
    if model is not None:
        state.model = model
    flow.metadata[METADATA_KEY] = state
    return state


def error_of(flow: http.HTTPFlow) -> dict[str, Any]:
    """The OpenAI-shaped error a refused flow was answered with."""
    assert flow.response is not None, "expected the flow to be answered"
    assert flow.response.headers.get("content-type") == "application/json"
    payload = json.loads(flow.response.get_text())
    assert set(payload) == {"error"}
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload["error"]
