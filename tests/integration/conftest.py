"""Fixtures shared by integration modules: a fake Anthropic and a gateway routing Claude to it; the
failover tests' two fake OpenAI upstreams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes.gateway import ALICE_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key


@pytest.fixture(scope="module")
def claude() -> Iterator[anthropic_fake.FakeAnthropic]:
    fake = anthropic_fake.FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def claude_gateway(tmp_path_factory: pytest.TempPathFactory, claude: anthropic_fake.FakeAnthropic) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("claude")
    policy = root / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  claude: {{kind: anthropic, base_url: "{claude.url}", keys: [{{value: env:CG_ANTHROPIC_KEY}}]}}
models:
  claude-sonnet-4-5: {{routes: [{{provider: claude}}]}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    gateway = Gateway(policy, root / "data", extra_env={"CG_ANTHROPIC_KEY": anthropic_fake.API_KEY}).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def upstreams() -> Iterator[dict[str, FakeOpenAI]]:
    """The failover tests' two fake OpenAI upstreams, `first` and `second` (fakes/failover_pair.py)."""
    fakes = {name: FakeOpenAI().start() for name in ("first", "second")}
    yield fakes
    for fake in fakes.values():
        fake.stop()
