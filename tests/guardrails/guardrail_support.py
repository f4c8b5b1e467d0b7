"""Helpers for the guardrail tests: fake secrets (assembled at run time, so that secret scanners
do not flag this repository), the Codex fixture, and governed flows with a real policy."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow

from codexgate.flowstate import METADATA_KEY, GatewayRequest
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import CompiledPolicy, parse_policy

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "codex_request_tool_round_trip.json"

# Shaped like the real thing, random-looking, never valid anywhere.
AWS_KEY_ID = "AKIA" + "Z3MHQW7TESTKEY42"
AWS_TEMP_KEY_ID = "ASIA" + "Q5RT7UVWXY2Z3ABC"
AWS_SECRET = "k3Jq9" + "Zx/7Lm2Pq8Rt5Vw1Yb4Nc6Hd0Gf+" + "Ue2Sa9T"
GITHUB_PAT_CLASSIC = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
GITHUB_OAUTH = "gho_" + "Z9y8X7w6" * 4 + "V5u4"
GITHUB_PAT_FINE = "github_pat_" + "11ABCDEFG0" + "abcdefghijklmnopqrstuvwxyz_0123456789ABCDEFGHIJ"
OPENAI_KEY = "sk-proj-" + "Tq3vR8xW2yZ5aB7cD9eF1gH4jK6mN0pQ"
OPENAI_LEGACY_KEY = "sk-" + "4fG7hJ9kL2mN5pQ8rS1tU3vW6xY0zA2bC4dE6fG8hJ0kL2mN"
ANTHROPIC_KEY = "sk-ant-api03-" + "Xy7Zw3Vu9Ts5Rq1Po8Nm4Lk2Jh6Gf0Ed" + "-AAAA"
GOOGLE_KEY = "AIza" + "SyD3f5G7h9J1k3L5m7N9p1Q3r5S7t9V1w3X"
SLACK_BOT_TOKEN = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_WEBHOOK = "https://hooks.slack.com/services/" + "T0123ABCD/B0456EFGH/" + "aBcDeFgHiJkLmNoPqRsTuVwX"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ."
    + ("SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
)
PEM_BODY = "\n".join(["MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" + "x" * 12] + ["Q" * 64] * 3 + ["AbC="])
PRIVATE_KEY = "-----BEGIN " + "PRIVATE KEY-----\n" + PEM_BODY + "\n-----END " + "PRIVATE KEY-----"
RSA_PRIVATE_KEY = PRIVATE_KEY.replace("BEGIN ", "BEGIN RSA ").replace("END ", "END RSA ")

CLIENT_KEYS = {
    "alice": "sk-cg-alice-guardrails-000000000000000000",
    "rita": "sk-cg-rita-guardrails-1111111111111111111",
}

POLICY = f"""\
providers:
  local: {{kind: mock, output_tokens: 5}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
orgs: {{acme: {{}}}}
teams:
  platform: {{org: acme}}
  research: {{org: acme}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(CLIENT_KEYS["alice"])}"}}
  - {{name: rita, team: research, hash: "{hash_key(CLIENT_KEYS["rita"])}"}}
"""


@functools.cache
def _fixture_text() -> str:
    return FIXTURE.read_text(encoding="utf-8")


def codex_body() -> dict[str, Any]:
    """A fresh copy of the real Codex request body (tool round trip, ~40 KB)."""
    return json.loads(_fixture_text())


def compiled_policy() -> CompiledPolicy:
    return parse_policy(POLICY)


def governed_flow(
    body: dict[str, Any], *, key: str = "alice", endpoint: str = "responses", policy: CompiledPolicy | None = None
) -> tuple[http.HTTPFlow, GatewayRequest]:
    """A flow as the chain hands it to Guardrails: parsed by Intake, identified by Identify."""
    policy = policy or compiled_policy()
    flow = tflow.tflow()
    path = "/v1/responses" if endpoint == "responses" else "/v1/chat/completions"
    headers: dict[str | bytes, str | bytes] = {
        "content-type": "application/json",
        "authorization": f"Bearer {CLIENT_KEYS[key]}",
    }
    flow.request = http.Request.make("POST", f"http://127.0.0.1:4000{path}", json.dumps(body).encode(), headers)
    state = GatewayRequest(request_id=flow.id, policy=policy, mode="gateway", endpoint=endpoint)
    state.body = copy.deepcopy(body)
    state.model_requested = body.get("model")
    state.stream = bool(body.get("stream"))
    state.key = policy.keys_by_hash[hash_key(CLIENT_KEYS[key])]
    state.team, state.org = state.key.team, "acme"
    flow.metadata[METADATA_KEY] = state
    return flow, state


def with_tool_output(body: dict[str, Any], output: str, index: int = 5) -> dict[str, Any]:
    """The Codex body with the function_call_output at `index` replaced by `output`."""
    assert body["input"][index]["type"] == "function_call_output"
    body["input"][index]["output"] = output
    return body
