"""The Chat Completions families through a real gateway: a generic chat host and an Azure OpenAI
chat deployment (fake hosts validating every request against the openai SDK's types), answered
to the openai SDK as a Responses client, streamed and whole, and as a Chat Completions client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes import chat_upstream as chat_fake
from fakes.gateway import ALICE_KEY, Gateway

from codexgate.policies.keys import hash_key

HOST_KEY = "sk-chat-host-integration"
AZURE_KEY = "azure-integration-key"
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2}"


@pytest.fixture(scope="module")
def host() -> Iterator[chat_fake.FakeChatHost]:
    fake = chat_fake.FakeChatHost(expect_headers={"authorization": f"Bearer {HOST_KEY}"}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def azure() -> Iterator[chat_fake.FakeChatHost]:
    fake = chat_fake.FakeChatHost(expect_headers={"api-key": AZURE_KEY}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, host: chat_fake.FakeChatHost, azure: chat_fake.FakeChatHost
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("chat-hosts")
    policy = root / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  hostish: {{kind: chat, preset: generic, base_url: "{host.url}", keys: [{{value: env:CG_HOST_KEY}}]}}
  azure-east: {{kind: azure, api: chat, endpoint: "{azure.root}", keys: [{{value: env:CG_AZURE_KEY}}]}}
models:
  host-model: {{routes: [{{provider: hostish, model: upstream-model}}], {PRICE}}}
  azure-model: {{routes: [{{provider: azure-east, model: my-deployment}}], {PRICE}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    started = Gateway(policy, root / "data", extra_env={"CG_HOST_KEY": HOST_KEY, "CG_AZURE_KEY": AZURE_KEY}).start()
    yield started
    started.stop()


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=20)


def whole(text: str, finish: str = "stop") -> chat_fake.Reply:
    return chat_fake.Reply(body=chat_fake.completion({"content": text}, finish, usage_=chat_fake.usage(21, 6)))


def secrets_sent(received: chat_fake.Received) -> str:
    return " ".join(f"{name}: {value}" for name, value in received.headers.items())


@pytest.mark.parametrize(("model", "fake_name"), [("host-model", "host"), ("azure-model", "azure")])
def test_responses_client_streamed_and_whole(
    gateway: Gateway, request: pytest.FixtureRequest, model: str, fake_name: str
) -> None:
    fake: chat_fake.FakeChatHost = request.getfixturevalue(fake_name)
    fake.script(chat_fake.Reply(chunks=chat_fake.text_chunks("Streamed from the host.")))
    events = list(client(gateway).responses.create(model=model, input="hi", stream=True))
    completed = [event for event in events if event.type == "response.completed"]
    assert len(completed) == 1 and completed[0].response.output_text == "Streamed from the host."
    assert completed[0].response.usage is not None and completed[0].response.usage.input_tokens == 12

    fake.script(whole("Whole from the host.", "length"))
    answer = client(gateway).responses.create(model=model, input="again", max_output_tokens=6)
    # Derived from the stream translator: the host's length stop is an incomplete answer.
    assert answer.status == "incomplete" and answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"
    assert answer.output_text == "Whole from the host." and answer.usage is not None
    assert answer.usage.output_tokens == 6

    assert not fake.invalid, fake.invalid
    streamed, not_streamed = fake.received[-2:]
    assert streamed.body["stream"] is True and not_streamed.body["stream"] is False
    for received in (streamed, not_streamed):
        assert ALICE_KEY not in secrets_sent(received)  # the virtual key never leaves the gateway
    if fake_name == "azure":
        assert streamed.path == "/openai/deployments/my-deployment/chat/completions"
        assert streamed.query == {"api-version": "2024-10-21"} and "authorization" not in streamed.headers
        assert streamed.body["messages"][0]["role"] == "user" and not_streamed.body["max_completion_tokens"] == 6
    else:
        assert streamed.path == "/v1/chat/completions" and streamed.body["model"] == "upstream-model"
        assert not_streamed.body["max_tokens"] == 6


def test_chat_completions_client_through_a_chat_host(gateway: Gateway, host: chat_fake.FakeChatHost) -> None:
    """A Chat Completions client, answered by a chat host through the Responses translators."""
    host.script(whole("Chat to chat."))
    completion = client(gateway).chat.completions.create(
        model="host-model", messages=[{"role": "user", "content": "hello"}], stop=["END"]
    )
    assert completion.choices[0].message.content == "Chat to chat."
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    sent = host.received[-1].body
    assert sent["stop"] == ["END"] and sent["messages"][-1] == {"role": "user", "content": "hello"}
    assert not host.invalid, host.invalid


def test_host_errors_reach_the_client_in_openai_shape(gateway: Gateway, azure: chat_fake.FakeChatHost) -> None:
    error: dict[str, Any] = {"error": {"message": "Rate limit reached", "type": "requests", "code": "429"}}
    azure.script(chat_fake.Reply(status=429, body=error))
    with pytest.raises(openai.RateLimitError) as raised:
        client(gateway).responses.create(model="azure-model", input="hi")
    body = raised.value.body
    assert isinstance(body, dict) and body.get("code") == "rate_limit_exceeded"
    azure.script(chat_fake.Reply(status=401, body={"error": {"message": f"bad key {AZURE_KEY}", "code": "401"}}))
    with pytest.raises(openai.APIStatusError) as refused:
        client(gateway).responses.create(model="azure-model", input="hi")
    # The host refused the gateway's key: a 502 naming the operator's problem, never the key.
    assert refused.value.status_code == 502 and AZURE_KEY not in str(refused.value.body)
