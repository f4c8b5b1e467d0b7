"""Bedrock through a real gateway: official-SDK clients (Responses, streamed and whole; Chat
Completions) against fake Bedrock runtimes that check every SigV4 signature and every Converse
body against botocore's service model."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from fakes import bedrock_upstream as bedrock_fake
from fakes.gateway import ALICE_KEY, Gateway

from codexgate.policies.keys import hash_key

MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture(scope="module")
def runtimes() -> Iterator[dict[str, bedrock_fake.FakeBedrock]]:
    started = {name: bedrock_fake.FakeBedrock().start() for name in ("down", "up")}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, runtimes: dict[str, bedrock_fake.FakeBedrock]
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("bedrock")
    policy = root / "policy.yaml"
    pair = "access_key_id: {value: env:CG_AWS_AK}, secret_access_key: {value: env:CG_AWS_SK}"
    region = bedrock_fake.REGION
    policy.write_text(
        f"""\
gateway: {{resilience: {{cooldown_seconds: 30}}}}
providers:
  br-down: {{kind: bedrock, region: {region}, base_url: "{runtimes["down"].url}", {pair}}}
  br: {{kind: bedrock, region: {region}, base_url: "{runtimes["up"].url}", {pair}}}
  br-keyed: {{kind: bedrock, region: {region}, base_url: "{runtimes["up"].url}", keys: [{{value: env:CG_BR_KEY}}]}}
models:
  claude-br: {{routes: [{{provider: br, model: "{MODEL}"}}]}}
  claude-ha: {{routes: [{{provider: br-down, model: "{MODEL}"}}], fallbacks: [claude-br]}}
  claude-keyed: {{routes: [{{provider: br-keyed, model: "{MODEL}"}}]}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    env = {
        "CG_AWS_AK": bedrock_fake.ACCESS_KEY,
        "CG_AWS_SK": bedrock_fake.SECRET_KEY,
        "CG_BR_KEY": bedrock_fake.API_KEY,
    }
    started = Gateway(policy, root / "data", extra_env=env).start()
    yield started
    started.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)


def test_whole_and_streamed_answers(gateway: Gateway, runtimes: dict[str, bedrock_fake.FakeBedrock]) -> None:
    up = runtimes["up"]
    blocks = [bedrock_fake.Text("  "), bedrock_fake.Text("Hello from Bedrock.")]
    up.script(
        bedrock_fake.Reply(body=bedrock_fake.converse_body(blocks, token_usage=bedrock_fake.usage(11, 5))),
        bedrock_fake.Reply(events=bedrock_fake.stream_events(blocks, token_usage=bedrock_fake.usage(11, 5))),
    )
    before = len(up.received)
    whole = sdk(gateway).responses.create(model="claude-br", input="hi", temperature=0.5)
    # The blank block is no message item; the echo is the request's; usage is Bedrock's.
    assert [item.type for item in whole.output] == ["message"] and whole.output_text == "Hello from Bedrock."
    assert whole.temperature == 0.5 and whole.usage is not None and whole.usage.input_tokens == 11
    events = list(sdk(gateway).responses.create(model="claude-br", input="hi", temperature=0.5, stream=True))
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.model_dump(exclude={"id", "created_at", "output"}) == whole.model_dump(
        exclude={"id", "created_at", "output"}
    )
    assert [item.model_dump(exclude={"id"}) for item in final.response.output] == [
        item.model_dump(exclude={"id"}) for item in whole.output
    ]
    sent = up.received[before:]
    assert [(request.stream, request.model_id) for request in sent] == [(False, MODEL), (True, MODEL)]
    assert up.invalid == [] and ALICE_KEY not in str(sent)


def test_failover_signs_each_attempt_for_its_own_runtime(
    gateway: Gateway, runtimes: dict[str, bedrock_fake.FakeBedrock]
) -> None:
    down, up = runtimes["down"], runtimes["up"]
    down.script(bedrock_fake.Reply(status=503, message="Bedrock is unavailable"))
    up.script(bedrock_fake.Reply(body=bedrock_fake.converse_body([bedrock_fake.Text("from the fallback")])))
    before_down, before_up = len(down.received), len(up.received)
    answer = sdk(gateway).responses.create(model="claude-ha", input="hi")
    assert answer.output_text == "from the fallback"
    first, second = down.received[before_down], up.received[before_up]
    # Both signatures were accepted (the 503 came after the fake's signature check), and each
    # was made for its own host: one signature per attempt over exactly what that attempt sent.
    assert first.headers["authorization"] != second.headers["authorization"]
    assert first.body == second.body and down.invalid == [] and up.invalid == []


def test_bedrock_api_key_and_a_chat_completions_client(
    gateway: Gateway, runtimes: dict[str, bedrock_fake.FakeBedrock]
) -> None:
    up = runtimes["up"]
    up.script(bedrock_fake.Reply(body=bedrock_fake.converse_body([bedrock_fake.Text("keyed answer")])))
    before = len(up.received)
    completion = sdk(gateway).chat.completions.create(
        model="claude-keyed", messages=[{"role": "user", "content": "hi"}], stop=["END"]
    )
    assert completion.choices[0].message.content == "keyed answer"
    received = up.received[before]
    assert received.headers["authorization"] == f"Bearer {bedrock_fake.API_KEY}" and not received.stream
    assert "x-amz-date" not in received.headers and up.invalid == []


def test_an_aborted_bedrock_stream_ends_in_response_failed(
    gateway: Gateway, runtimes: dict[str, bedrock_fake.FakeBedrock]
) -> None:
    """The runtime drops the connection mid-answer: the client gets `response.failed` (Codex
    retries it), not a cut connection or an answer that looks complete."""
    up = runtimes["up"]
    events = bedrock_fake.stream_events([bedrock_fake.Text("Half of an answer that never ends")])
    up.script(bedrock_fake.Reply(events=events, cut_after=4))
    streamed = list(sdk(gateway).responses.create(model="claude-br", input="hi", stream=True))
    assert [event.type for event in streamed if event.type.startswith("response.output_text.delta")]
    assert streamed[-1].type == "response.failed"
    assert streamed[-1].response.error is not None and streamed[-1].response.error.code == "server_error"
