"""Provider restrictions (the seed article's fourth virtual-key rule): keys and teams name the
providers they may reach; routing, weighted choice and fallbacks never carry a request elsewhere."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest
from fakes.gateway import Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

ONLY_B = "sk-cg-only-b-key-000000000000000000000000000000"
ONLY_A = "sk-cg-only-a-key-000000000000000000000000000000"
BOTH = "sk-cg-both-key-00000000000000000000000000000000"
NONE_LEFT = "sk-cg-none-left-key-0000000000000000000000000000"
NARROW_TEAM = "sk-cg-narrow-team-key-00000000000000000000000000"


def restricted_policy(a: FakeOpenAI, b: FakeOpenAI) -> str:
    key = '[{value: "env:CG_TEST_UPSTREAM_KEY"}]'
    price = "price: {input_per_mtok: 1, output_per_mtok: 8}"
    return f"""\
gateway: {{resilience: {{cooldown_seconds: 0, first_byte_timeout: 5}}}}
providers:
  prov-a: {{kind: openai, base_url: "{a.url}", keys: {key}}}
  prov-b: {{kind: openai, base_url: "{b.url}", keys: {key}}}
  local: {{kind: mock, output_tokens: 3}}
models:
  gpt-split: {{routes: [{{provider: prov-a, weight: 100}}, {{provider: prov-b, weight: 1}}], {price}}}
  gpt-a: {{routes: [{{provider: prov-a}}], fallbacks: [gpt-b], {price}}}
  gpt-b: {{routes: [{{provider: prov-b}}], {price}}}
  mock-model: {{routes: [{{provider: local}}], {price}}}
orgs: {{acme: {{}}}}
teams:
  platform: {{org: acme}}
  vendors: {{org: acme, providers: [prov-a, prov-b], models: ["gpt-*"]}}
keys:
  - {{name: only-b, team: platform, hash: "{hash_key(ONLY_B)}", providers: [prov-b]}}
  - {{name: only-a, team: platform, hash: "{hash_key(ONLY_A)}", providers: [prov-a]}}
  - {{name: both, team: platform, hash: "{hash_key(BOTH)}", providers: [prov-a, prov-b]}}
  - {{name: none-left, team: platform, hash: "{hash_key(NONE_LEFT)}", providers: [local], models: ["gpt-*"]}}
  - {{name: narrow, team: vendors, hash: "{hash_key(NARROW_TEAM)}"}}
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    a, b = FakeOpenAI().start(), FakeOpenAI().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("restricted")
    policy = root / "policy.yaml"
    policy.write_text(restricted_policy(*upstreams))
    gateway = Gateway(policy, root / "data").start()
    yield gateway
    gateway.stop()


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=20)


def test_weighted_choice_skips_a_disallowed_route(
    restricted: Gateway, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = upstreams
    before = (len(a.received), len(b.received))
    for _ in range(6):  # prov-a carries weight 100 of 101: without the restriction almost all go there
        assert sdk(restricted, ONLY_B).responses.create(model="gpt-split", input="hi").status == "completed"
    assert (len(a.received) - before[0], len(b.received) - before[1]) == (0, 6)


def test_a_fallback_chain_never_reaches_a_disallowed_provider(
    restricted: Gateway, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = upstreams
    before_b = len(b.received)
    a.failures.append((500, {}))
    with pytest.raises(openai.InternalServerError):
        sdk(restricted, ONLY_A).responses.create(model="gpt-a", input="fail over?")
    assert len(b.received) == before_b  # gpt-a's fallback gpt-b is served by prov-b only
    # The same failure with a key that may use both providers does fall back (the control).
    a.failures.append((500, {}))
    raw = sdk(restricted, BOTH).responses.with_raw_response.create(model="gpt-a", input="fail over!")
    assert raw.http_response.status_code == 200 and len(b.received) == before_b + 1


def test_a_model_served_only_by_disallowed_providers_is_refused(
    restricted: Gateway, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = upstreams
    before = (len(a.received), len(b.received))
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(restricted, ONLY_B).responses.create(model="mock-model", input="x")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "provider_not_allowed"
    assert "key only-b" in error["message"] and "allowed providers: prov-b" in error["message"]
    # gpt-a is prov-a's, but its fallback gpt-b is prov-b's: the key reaches it through the fallback.
    assert sdk(restricted, ONLY_B).responses.create(model="gpt-a", input="via fallback").status == "completed"
    assert (len(a.received), len(b.received)) == (before[0], before[1] + 1)


def test_team_model_patterns_are_narrowed_not_widened_by_keys(restricted: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(restricted, NARROW_TEAM).responses.create(model="mock-model", input="x")
    assert isinstance(refused.value.body, dict) and "team vendors" in refused.value.body["message"]
    assert sdk(restricted, NARROW_TEAM).responses.create(model="gpt-b", input="ok").status == "completed"


def test_models_lists_only_what_the_key_can_reach(restricted: Gateway) -> None:
    listed = {model.id: model.owned_by for model in sdk(restricted, ONLY_B).models.list()}
    assert listed == {"gpt-split": "prov-b", "gpt-a": "prov-b", "gpt-b": "prov-b"}
    assert {model.id for model in sdk(restricted, NARROW_TEAM).models.list()} == {"gpt-split", "gpt-a", "gpt-b"}
    assert list(sdk(restricted, NONE_LEFT).models.list()) == []


def test_check_flags_a_key_whose_every_route_is_disallowed(
    restricted: Gateway, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codexgate.cli", "check", str(restricted.policy)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "keys[3].providers: key none-left can reach no model" in lines[0]
    assert f"{restricted.policy}:" in lines[0] and "allowed: local" in lines[0]
