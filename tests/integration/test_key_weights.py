"""`keys[].weight` for a translated provider: each request picks one of the provider's keys by
weight (as for OpenAI pass-through), checked on what a real gateway sends to a fake Chat host."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import openai
import pytest
from fakes import chat_upstream as chat_fake
from fakes.gateway import ALICE_KEY, Gateway

from codexgate.policies.keys import hash_key

KEYS = {"CG_KEY_HEAVY": "sk-chat-heavy", "CG_KEY_LIGHT": "sk-chat-light", "CG_KEY_IDLE": "sk-chat-idle"}
REQUESTS = 200


@pytest.fixture(scope="module")
def host() -> Iterator[chat_fake.FakeChatHost]:
    fake = chat_fake.FakeChatHost()
    fake.expect_headers = {}  # any key: the test reads which one came
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, host: chat_fake.FakeChatHost) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("key-weights")
    policy = root / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  host:
    kind: chat
    base_url: "{host.url}"
    keys:
      - {{value: env:CG_KEY_HEAVY, weight: 3}}
      - {{value: env:CG_KEY_LIGHT, weight: 1}}
      - {{value: env:CG_KEY_IDLE, weight: 0}}
models:
  llama: {{routes: [{{provider: host}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    started = Gateway(policy, root / "data", extra_env=KEYS).start()
    yield started
    started.stop()


def test_translated_provider_keys_share_traffic_by_weight(gateway: Gateway, host: chat_fake.FakeChatHost) -> None:
    host.script(*[chat_fake.Reply(body=chat_fake.completion({"content": "ok"})) for _ in range(REQUESTS)])
    before = len(host.received)
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
    for _ in range(REQUESTS):
        assert client.responses.create(model="llama", input="which key?").output_text == "ok"
    used = Counter(received.headers.get("authorization") for received in host.received[before:])
    assert sum(used.values()) == REQUESTS
    # 3:1 -> 150 expected; the standard deviation is about 6, so 120..180 is a wide-enough band.
    assert 120 <= used[f"Bearer {KEYS['CG_KEY_HEAVY']}"] <= 180, used
    assert used[f"Bearer {KEYS['CG_KEY_LIGHT']}"] == REQUESTS - used[f"Bearer {KEYS['CG_KEY_HEAVY']}"], used
    assert used[f"Bearer {KEYS['CG_KEY_IDLE']}"] == 0  # weight 0: only a last resort when the others fail
    assert ALICE_KEY not in str(host.received[before:])
