"""Anthropic answers through a real gateway: a stream whose connection drops, a whole answer."""

from __future__ import annotations

import openai
import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes.gateway import ALICE_KEY, Gateway
from openai.types.responses import FunctionToolParam, ResponseStreamEvent

TOOL: FunctionToolParam = {
    "type": "function",
    "name": "exec_command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    "strict": False,
}
CONTENT = [
    {"type": "text", "text": "Let me look at the files first."},
    {"type": "tool_use", "name": "exec_command", "input": {"cmd": "ls -la"}},
]


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=20)


def test_connection_aborted_mid_stream_ends_in_response_failed(
    claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic
) -> None:
    """The upstream connection drops after the first text delta: Codex must get response.failed
    (it retries such a turn), not a cut connection or a completed half answer."""
    claude.reset()
    claude.replies.append(anthropic_fake.Reply(content=CONTENT, stop_reason="tool_use", cut_after=4))
    # The answer ends cleanly after its failure event: no connection error for the SDK to raise.
    with client(claude_gateway).responses.create(
        model="claude-sonnet-4-5",
        input="list the files",
        tools=[TOOL],
        stream=True,
        extra_headers={"session-id": "anthropic-aborted"},
    ) as stream:
        events: list[ResponseStreamEvent] = list(stream)
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed" and kinds.count("response.failed") == 1
    assert not {"response.completed", "response.incomplete"} & set(kinds)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.error is not None and failed.error.code == "server_error"
    assert failed.id == events[0].response.id  # type: ignore[union-attr]
    assert not [item for item in failed.output if item.type == "function_call"]  # never half a call
    # Anthropic reports output tokens only at the end: the request is charged its estimate.
    assert claude_gateway.wait_accounting(lambda r: r["session_id"] == "anthropic-aborted")
    (record,) = [r for r in claude_gateway.accounting() if r["session_id"] == "anthropic-aborted"]
    assert record["charge"] == "estimate" and record["cost_usd"] > 0


def test_whole_answer_is_translated(claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic) -> None:
    """A non-streamed request gets the whole answer (derived from the stream translator): a
    whitespace-only text block is left out, the call keeps its id and arguments."""
    claude.reset()
    content = [{"type": "text", "text": "\n\n"}, CONTENT[1]]
    claude.replies.append(anthropic_fake.Reply(content=content, stop_reason="tool_use"))
    response = client(claude_gateway).responses.create(
        model="claude-sonnet-4-5",
        input="list the files",
        tools=[TOOL],
    )
    assert claude.received[-1].json().get("stream") is None and not claude.invalid
    assert response.status == "completed" and [item.type for item in response.output] == ["function_call"]
    call = response.output[0]
    assert call.type == "function_call" and call.name == "exec_command" and call.arguments == '{"cmd": "ls -la"}'
    assert call.call_id.startswith("toolu_")
    assert response.usage is not None and response.usage.input_tokens > 0


def test_connection_aborted_mid_stream_ends_a_chat_stream_with_an_error(
    claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic
) -> None:
    """The same break under a Chat Completions client: an in-band error object after the text that
    came, which the SDK raises as an API error (not a dropped connection)."""
    claude.reset()
    claude.replies.append(anthropic_fake.Reply(content=CONTENT, stop_reason="tool_use", cut_after=4))
    texts: list[str] = []
    with pytest.raises(openai.APIError) as broken:
        for chunk in client(claude_gateway).chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "list the files"}], stream=True
        ):
            texts += [choice.delta.content or "" for choice in chunk.choices]
    assert not isinstance(broken.value, openai.APIConnectionError)
    assert "".join(texts) and "ended before the answer was complete" in str(broken.value)
