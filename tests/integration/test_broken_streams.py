"""A provider connection that drops mid-stream, for every translating family, through a real
gateway: the client gets the translator's own `response.failed` (numbered after what it emitted,
same response id) and then a cleanly ended answer, never a bare cut connection or a half answer
passed off as complete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes import bedrock_upstream as bedrock_fake
from fakes import chat_upstream as chat_fake
from fakes import gemini_upstream as gemini_fake
from fakes.gateway import ALICE_KEY, Gateway
from openai.types.responses import ResponseStreamEvent

from codexgate.policies.keys import hash_key

CHAT_KEY = "chat-host-key-broken-streams"
TEXT = "Here is a fairly long answer that breaks off somewhere in the middle of it."


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    started = {
        "anthropic": anthropic_fake.FakeAnthropic().start(),
        "gemini": gemini_fake.FakeGemini().start(),
        "bedrock": bedrock_fake.FakeBedrock().start(),
        "chat": chat_fake.FakeChatHost(expect_headers={"authorization": f"Bearer {CHAT_KEY}"}).start(),
    }
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, Any]) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("broken-streams")
    policy = root / "policy.yaml"
    price = "price: {input_per_mtok: 1, output_per_mtok: 2}"
    policy.write_text(
        f"""\
providers:
  claude: {{kind: anthropic, base_url: "{fakes["anthropic"].url}", keys: [{{value: env:CG_ANTHROPIC_KEY}}]}}
  gem: {{kind: gemini, base_url: "{fakes["gemini"].url}", keys: [{{value: env:CG_GEMINI_KEY}}]}}
  br:
    kind: bedrock
    region: {bedrock_fake.REGION}
    base_url: "{fakes["bedrock"].url}"
    access_key_id: {{value: env:CG_AWS_AK}}
    secret_access_key: {{value: env:CG_AWS_SK}}
  host: {{kind: chat, preset: generic, base_url: "{fakes["chat"].url}", keys: [{{value: env:CG_CHAT_KEY}}]}}
models:
  claude-sonnet-4-5: {{routes: [{{provider: claude}}]}}
  gemini-2.5-flash: {{routes: [{{provider: gem}}]}}
  bedrock-claude: {{routes: [{{provider: br, model: "anthropic.claude-sonnet-4-5-20250929-v1:0"}}]}}
  chat-model: {{routes: [{{provider: host, model: upstream-model}}], {price}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    env = {
        "CG_ANTHROPIC_KEY": anthropic_fake.API_KEY,
        "CG_GEMINI_KEY": gemini_fake.API_KEY,
        "CG_AWS_AK": bedrock_fake.ACCESS_KEY,
        "CG_AWS_SK": bedrock_fake.SECRET_KEY,
        "CG_CHAT_KEY": CHAT_KEY,
    }
    started = Gateway(policy, root / "data", extra_env=env).start()
    yield started
    started.stop()


def _anthropic(fake: Any) -> None:
    fake.replies.append(anthropic_fake.Reply(content=[{"type": "text", "text": TEXT}], cut_after=4))


def _gemini(fake: Any) -> None:
    words = TEXT.split(" ")
    chunks = [gemini_fake.chunk([gemini_fake.text_part(word + " ")]) for word in words]
    chunks.append(gemini_fake.chunk([], "STOP", gemini_fake.usage_metadata(40, 12)))
    fake.script(gemini_fake.Reply(chunks=chunks, cut_after=3))


def _bedrock(fake: Any) -> None:
    fake.script(bedrock_fake.Reply(events=bedrock_fake.stream_events([bedrock_fake.Text(TEXT)]), cut_after=3))


def _chat(fake: Any) -> None:
    fake.script(chat_fake.Reply(chunks=chat_fake.text_chunks(TEXT, pieces=6), cut_after=3))


FAMILIES: dict[str, tuple[str, Callable[[Any], None]]] = {
    "anthropic": ("claude-sonnet-4-5", _anthropic),
    "gemini": ("gemini-2.5-flash", _gemini),
    "bedrock": ("bedrock-claude", _bedrock),
    "chat": ("chat-model", _chat),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_connection_dropped_mid_stream_ends_in_the_translators_response_failed(
    gateway: Gateway, fakes: dict[str, Any], family: str
) -> None:
    model, script = FAMILIES[family]
    script(fakes[family])
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=20)
    # The answer ends cleanly after its failure event (no cut connection for the SDK to raise on).
    with client.responses.create(model=model, input="tell me something long", stream=True) as stream:
        events: list[ResponseStreamEvent] = list(stream)
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds, kinds
    assert kinds[-1] == "response.failed" and kinds.count("response.failed") == 1, kinds
    assert not {"response.completed", "response.incomplete"} & set(kinds)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    created, failed = events[0], events[-1]
    assert created.type == "response.created" and failed.type == "response.failed"
    assert failed.response.id == created.response.id and failed.response.model == model
    assert failed.response.error is not None and failed.response.error.code == "server_error"
