"""A Chat Completions client (the openai SDK) using Claude through the gateway."""

from __future__ import annotations

import openai
import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes.gateway import ALICE_KEY, Gateway


def test_chat_completions_client_reaches_claude(claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic) -> None:
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=claude_gateway.base_url, max_retries=0, timeout=20)
    claude.replies.append(anthropic_fake.Reply(content=[{"type": "text", "text": "Bonjour from Claude."}]))
    completion = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    assert completion.choices[0].message.content == "Bonjour from Claude."
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    claude.replies.append(
        anthropic_fake.Reply(
            content=[{"type": "tool_use", "name": "get_weather", "input": {"city": "Paris"}}], stop_reason="tool_use"
        )
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    chunks = list(
        client.chat.completions.create(
            model="claude-sonnet-4-5",
            messages=[{"role": "user", "content": "weather?"}],
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    )
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls and calls[0][0].function.name == "get_weather"
    arguments = "".join(call[0].function.arguments or "" for call in calls)
    assert arguments.replace(" ", "") == '{"city":"Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None
    assert not claude.invalid, claude.invalid


def test_chat_stop_reaches_claude_and_unmappable_parameters_are_named(
    claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic
) -> None:
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=claude_gateway.base_url, max_retries=0, timeout=20)
    claude.reset()
    claude.replies.append(
        anthropic_fake.Reply(content=[{"type": "text", "text": "1 2 3"}], stop_reason="stop_sequence")
    )
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "count"}],
        stop=["4"],
        seed=7,
        presence_penalty=0.5,
    )
    assert raw.parse().choices[0].message.content == "1 2 3"
    sent = claude.received[-1].json()
    assert sent["stop_sequences"] == ["4"] and "seed" not in sent
    assert sorted(raw.headers["x-codexgate-dropped-params"].split(",")) == ["presence_penalty", "seed"]
    assert not claude.invalid, claude.invalid


@pytest.mark.parametrize(("field", "value"), [("previous_response_id", "resp_earlier"), ("background", True)])
def test_stateful_responses_requests_are_refused_with_400(
    claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic, field: str, value: object
) -> None:
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=claude_gateway.base_url, max_retries=0, timeout=20)
    claude.reset()
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="claude-sonnet-4-5", input="go on", **{field: value})  # type: ignore[call-overload]
    assert refused.value.status_code == 400
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == field and error["type"] == "invalid_request_error"
    assert not claude.received  # nothing went upstream
