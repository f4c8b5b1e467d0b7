"""The real Codex CLI (npm @openai/codex) through a real gateway, in both modes, with a tool round trip."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.codex_cli import gateway_errors, log_db_errors, run_codex
from fakes.gateway import ALICE_KEY, Gateway

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("mode", ["base-url", "proxy"])
def test_codex_turn_with_tool_round_trip(gateway: Gateway, mode: str, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex[:10]}"
    before = len(gateway.accounting())
    result = run_codex(gateway, mode, f"please run `echo {marker}` and tell me what it printed", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Codex ran the command the mock model asked for, sent its output back, and printed the answer.
    assert f"echo {marker}" in output
    assert "The command finished. Its output was:" in result.stdout
    assert marker in result.stdout
    records = [r for r in gateway.accounting()[before:] if r["endpoint"] == "responses" and r["decision"] == "answered"]
    assert len(records) >= 2, records  # the request asking for the tool, and the one carrying its output
    assert {r["key"] for r in records} == {"alice"} and {r["mode"] for r in records} == {
        "gateway" if mode == "base-url" else "proxy"
    }
    assert all(r["session_id"] for r in records)  # Codex's session-id header attributes the usage
    if mode == "proxy":
        # Codex asks chatgpt.com for its model catalog with the key; the gateway answered it itself.
        assert "Codex model catalog for key alice served" in gateway.log_text()
    # No gateway-related ERROR, neither on Codex's stderr nor in its log database.
    assert gateway_errors(result.stderr.splitlines()) == []
    assert gateway_errors(log_db_errors(tmp_path / "codexgate-home" / "codex-home")) == []


def limited_policy(tmp_path: Path) -> Path:
    from codexgate.policies.keys import hash_key

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  local: {{kind: mock, output_tokens: 20}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 1.25, output_per_mtok: 10}}}}
teams:
  platform: {{org: acme, budgets: [{{limit_usd: 0.001, period: 1M}}]}}
  paced: {{org: acme}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
  - {{name: pacer, team: paced, hash: "{hash_key(PACED_KEY)}", rate_limits: [{{requests: 1, per: 6s}}]}}
"""
    )
    return policy


PACED_KEY = "sk-cg-paced-e2e-key-00000000000000000000000000"


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[Gateway]:
    gateway = Gateway(limited_policy(tmp_path), tmp_path / "data").start()
    yield gateway
    gateway.stop()


def test_codex_waits_out_a_rate_limit_then_succeeds(limited_gateway: Gateway, tmp_path: Path) -> None:
    marker = f"paced-{uuid.uuid4().hex[:8]}"
    # The limit is one request per calendar-aligned 6 s window: start early in a window so both
    # requests of the turn fall into the same one (otherwise the second may simply find room).
    while time.time() % 6 > 1.0:
        time.sleep(0.02)
    result = run_codex(limited_gateway, "base-url", f"please run `echo {marker}` and tell me", tmp_path, key=PACED_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker in result.stdout and "The command finished." in result.stdout
    decisions = [r["decision"] for r in limited_gateway.accounting() if r["endpoint"] == "responses"]
    # The follow-up request carrying the tool output was over the limit, got 429 + Retry-After,
    # and Codex's own retry after that wait was answered.
    assert "rate_limited" in decisions and decisions.count("answered") >= 2, decisions
    assert decisions[-1] == "answered"


def test_codex_stops_on_a_budget_with_its_name(limited_gateway: Gateway, tmp_path: Path) -> None:
    result = run_codex(limited_gateway, "base-url", "hello " * 400, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "team platform: monthly budget $0.00 used" in output, output
    refusals = [r for r in limited_gateway.accounting() if r["decision"] == "budget_exceeded"]
    # Codex 0.169 retries a 402 five times (about 6 s) before it prints it; none is charged.
    assert 1 <= len(refusals) <= 6 and all(not r["cost_usd"] for r in refusals)
    # (The launcher's own check, GET /v1/models, is answered; no Responses request is.)
    assert not [r for r in limited_gateway.accounting() if r["decision"] == "answered" and r["endpoint"] != "models"]


PROXY_AUTH_POLICY = """\
gateway: {{proxy_auth: required}}
providers:
  local: {{kind: mock, output_tokens: 20}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{alice}"}}
"""


@pytest.fixture
def proxy_auth_gateway(tmp_path: Path) -> Iterator[Gateway]:
    from codexgate.policies.keys import hash_key

    policy = tmp_path / "policy.yaml"
    policy.write_text(PROXY_AUTH_POLICY.format(alice=hash_key(ALICE_KEY)))
    gateway = Gateway(policy, tmp_path / "data").start()
    yield gateway
    gateway.stop()


def test_codex_through_a_proxy_that_requires_the_key(proxy_auth_gateway: Gateway, tmp_path: Path) -> None:
    """`gateway.proxy_auth: required`: the launcher sees the 407, gives Codex the key as proxy
    credentials, and the commands Codex runs get the proxy without them."""
    marker = f"proxied-{uuid.uuid4().hex[:8]}"
    result = run_codex(
        proxy_auth_gateway, "proxy", f"please run `echo {marker} && env > env-of-tools.txt` and tell me", tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert marker in result.stdout and "The command finished." in result.stdout
    records = [r for r in proxy_auth_gateway.accounting() if r["endpoint"] == "responses"]
    assert [r["decision"] for r in records].count("answered") >= 2 and {r["mode"] for r in records} == {"proxy"}
    seen = (tmp_path / "work" / "env-of-tools.txt").read_text()
    assert ALICE_KEY not in seen and f"HTTPS_PROXY={proxy_auth_gateway.proxy_url}\n" in seen
    # Nor in any file Codex or the gateway wrote (logs, log database, accounting, audit), but the
    # overlay's own sign-in.
    holding = [p for p in tmp_path.rglob("*") if p.is_file() and ALICE_KEY.encode() in p.read_bytes()]
    assert holding == [tmp_path / "codexgate-home" / "codex-home" / "auth.json"], holding
    assert gateway_errors(result.stderr.splitlines()) == []
    assert gateway_errors(log_db_errors(tmp_path / "codexgate-home" / "codex-home")) == []
