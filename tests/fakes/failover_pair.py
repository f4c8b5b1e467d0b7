"""The failover tests' policy: two OpenAI-kind providers (`first`, `second`, each a fake upstream),
model `gpt-first` on the first failing over to `gpt-second` on the second, key alice of team
platform; each test adds the budgets and rate limits it is about."""

from __future__ import annotations

from codexgate.policies.keys import hash_key
from fakes.gateway import ALICE_KEY

UPSTREAM_KEYS = '[{value: "env:CG_TEST_UPSTREAM_KEY"}]'


def _joined(*parts: str) -> str:
    return ", ".join(part for part in parts if part)


def failover_policy(
    first_url: str,
    second_url: str,
    *,
    first_limits: str = "",
    second_limits: str = "",
    key_limits: str = "",
    output_allowance: int = 1000,
    first_price: tuple[float, float] = (1.0, 8.0),
    second_price: tuple[float, float] = (2.0, 16.0),
) -> str:
    """The policy's YAML; `*_limits` are flow-mapping members (`budgets: [...]`, `rate_limits: [...]`)
    of the first provider, the second provider and the key; prices in $ per million input / output tokens."""
    key = f'name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"'
    return f"""\
gateway: {{resilience: {{cooldown_seconds: 0}}}}
providers:
  first: {{{_joined(f'kind: openai, base_url: "{first_url}", keys: {UPSTREAM_KEYS}', first_limits)}}}
  second: {{{_joined(f'kind: openai, base_url: "{second_url}", keys: {UPSTREAM_KEYS}', second_limits)}}}
models:
  gpt-first:
    routes: [{{provider: first}}]
    fallbacks: [gpt-second]
    output_allowance: {output_allowance}
    price: {{input_per_mtok: {first_price[0]}, output_per_mtok: {first_price[1]}}}
  gpt-second:
    routes: [{{provider: second}}]
    output_allowance: {output_allowance}
    price: {{input_per_mtok: {second_price[0]}, output_per_mtok: {second_price[1]}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{{_joined(key, key_limits)}}}
"""
