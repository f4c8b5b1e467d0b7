"""`previous_response_id` / `background` on models with several routes: only OpenAI-style
deployments keep responses, so the request goes to those (no failed attempt on a translated
deployment first), and a model with none answers the same clean 400 a single route gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes.gateway import ALICE_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

STATEFUL = [("previous_response_id", "resp_earlier"), ("background", True)]


@pytest.fixture(scope="module")
def claude() -> Iterator[anthropic_fake.FakeAnthropic]:
    fake = anthropic_fake.FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gpt() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def mixed_gateway(
    tmp_path_factory: pytest.TempPathFactory, claude: anthropic_fake.FakeAnthropic, gpt: FakeOpenAI
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("stateful")
    policy = root / "policy.yaml"
    anthropic_keys = "[{value: env:CG_ANTHROPIC_KEY}]"
    price = "price: {input_per_mtok: 1, output_per_mtok: 8}"
    policy.write_text(
        f"""\
providers:
  claude: {{kind: anthropic, base_url: "{claude.url}", keys: {anthropic_keys}}}
  claude-eu: {{kind: anthropic, base_url: "{claude.url}", keys: {anthropic_keys}}}
  openai: {{kind: openai, base_url: "{gpt.url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
models:
  claude-then-gpt: {{routes: [{{provider: claude, model: claude-sonnet-4-5}}], fallbacks: [gpt-backup], {price}}}
  gpt-backup: {{routes: [{{provider: openai}}], {price}}}
  claude-pair:
    routes: [{{provider: claude, model: claude-sonnet-4-5}}, {{provider: claude-eu, model: claude-sonnet-4-5}}]
    {price}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    gateway = Gateway(policy, root / "data", extra_env={"CG_ANTHROPIC_KEY": anthropic_fake.API_KEY}).start()
    yield gateway
    gateway.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)


@pytest.mark.parametrize(("field", "value"), STATEFUL)
def test_stateful_request_skips_translated_deployments(
    mixed_gateway: Gateway, claude: anthropic_fake.FakeAnthropic, gpt: FakeOpenAI, field: str, value: object
) -> None:
    claude.reset()
    before = len(gpt.received)
    session = f"stateful-{field}"
    stateful: dict[str, Any] = {field: value, "extra_headers": {"session-id": session}}
    raw = sdk(mixed_gateway).responses.with_raw_response.create(model="claude-then-gpt", input="go on", **stateful)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-codexgate-provider"] == "openai"
    assert len(gpt.received) == before + 1 and json.loads(gpt.received[-1].body)[field] == value
    assert not claude.received
    (record,) = mixed_gateway.wait_accounting(lambda r: r.get("session_id") == session)
    assert record["provider"] == "openai"
    assert [a["outcome"] for a in record.get("attempts") or [{"outcome": "ok"}]] == ["ok"]  # no failed Claude attempt


@pytest.mark.parametrize(("field", "value"), STATEFUL)
def test_stateful_request_on_translated_routes_only_is_a_400(
    mixed_gateway: Gateway, claude: anthropic_fake.FakeAnthropic, field: str, value: object
) -> None:
    claude.reset()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(mixed_gateway).responses.create(model="claude-pair", input="go on", **{field: value})
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == field and error["type"] == "invalid_request_error"
    assert not claude.received  # nothing went upstream, on either route
