"""providers/mock.py: every body and event validates against the official openai SDK types, with no
unknown keys, and the mock drives a Codex tool round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes.sdk_validation import assert_no_extras
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from codexgate.policies.schema import MockProvider
from codexgate.providers import mock
from codexgate.sse import encode_chat_stream, encode_responses_stream
from codexgate.usage import StreamUsageReader, Usage

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)

EXEC_COMMAND = {
    "type": "function",
    "name": "exec_command",
    "description": "Runs a command in a PTY.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
        "required": ["cmd"],
        "additionalProperties": False,
    },
}
SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"}},
        "required": ["command"],
        "additionalProperties": False,
    },
}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "patch", "format": {"type": "text"}}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def codex_body(*items: dict[str, Any], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "model": "mock-model",
        "instructions": "You are Codex.",
        "input": [user("<environment_context>cwd=/repo</environment_context>"), *items],
        "tools": tools if tools is not None else [EXEC_COMMAND, APPLY_PATCH],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1",
    }


CALL_OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "hi\n"}
RESPONSES_BODIES = {
    "plain-string": {"model": "mock-model", "input": "hello there"},
    "empty-input": {"model": "mock-model"},
    "text": codex_body(user("what is in this repo?")),
    "exec_command": codex_body(user("please run `echo hi` now")),
    "shell-array": codex_body(user("run `echo hi`"), tools=[SHELL]),
    "call-output": codex_body(
        user("run `echo hi`"),
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd":"echo hi"}'},
        CALL_OUTPUT,
    ),
    "custom-call-output": codex_body(
        user("patch it"),
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "Done!"}]},
    ),
    "additional-tools": codex_body(
        {
            "type": "additional_tools",
            "tools": [{"type": "namespace", "name": "shell", "tools": [EXEC_COMMAND]}],
        },
        user("run `ls -la`"),
        tools=[],
    ),
    "tool-choice-object": dict(codex_body(user("run `pwd`")), tool_choice={"type": "function", "name": "exec_command"}),
}
SETTINGS = [
    MockProvider(kind="mock"),
    MockProvider(kind="mock", output_tokens=50, cached_tokens=1_000_000, reasoning_tokens=10, input_tokens=20),
]


def validate(adapter_or_model: Any, data: dict[str, Any]) -> Any:
    data = json.loads(json.dumps(data))  # exactly what goes over the wire
    if isinstance(adapter_or_model, TypeAdapter):
        parsed = adapter_or_model.validate_python(data)
    else:
        parsed = adapter_or_model.model_validate(data)
    assert_no_extras(parsed)
    # nothing coerced or dropped either: the model dumps back to the very same JSON
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped == data
    return parsed


def test_extras_helper_catches_unknown_keys():
    body = mock.responses_body(RESPONSES_BODIES["text"], "mock-model", 10, SETTINGS[0])
    body["output"][0]["content"][0]["colour"] = "blue"
    with pytest.raises(AssertionError, match="colour"):
        validate(Response, body)


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "tokens"])
@pytest.mark.parametrize("case", sorted(RESPONSES_BODIES))
def test_responses_body_validates(case, settings):
    request = RESPONSES_BODIES[case]
    body = mock.responses_body(request, "mock-model", 123, settings)
    response = validate(Response, body)
    assert response.status == "completed"
    assert response.model == "mock-model"
    assert len(response.output) == 1
    assert response.usage.output_tokens == settings.output_tokens
    expected_input = 123
    assert response.usage.input_tokens == expected_input
    assert response.usage.input_tokens_details.cached_tokens == min(settings.cached_tokens, expected_input)
    assert response.usage.total_tokens == expected_input + settings.output_tokens


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "tokens"])
@pytest.mark.parametrize("case", sorted(RESPONSES_BODIES))
def test_responses_events_validate_and_are_coherent(case, settings):
    request = RESPONSES_BODIES[case]
    events = mock.responses_events(request, "mock-model", 77, settings)
    parsed = [validate(STREAM_EVENT, event) for event in events]
    types = [event.type for event in parsed]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.completed") == 1
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
    final = parsed[-1].response
    assert final.status == "completed"
    done_items = [event.item for event in parsed if event.type == "response.output_item.done"]
    assert [item.model_dump() for item in done_items] == [item.model_dump() for item in final.output]
    item = final.output[0]
    if item.type == "message":
        deltas = "".join(event.delta for event in parsed if event.type == "response.output_text.delta")
        assert deltas == item.content[0].text
    else:
        deltas = "".join(event.delta for event in parsed if event.type == "response.function_call_arguments.delta")
        assert deltas == item.arguments
    # and the gateway's own stream reader accounts it
    reader = StreamUsageReader("responses")
    reader.feed(encode_responses_stream(events))
    assert reader.outcome == "completed"
    assert reader.response_id == final.id
    assert reader.usage == Usage(
        input_tokens=77,
        cached_tokens=min(settings.cached_tokens, 77),
        output_tokens=settings.output_tokens,
        reasoning_tokens=min(settings.reasoning_tokens, settings.output_tokens),
    )


def only_output(request: dict[str, Any]) -> Any:
    return validate(Response, mock.responses_body(request, "mock-model", 1, SETTINGS[0])).output[0]


def test_usage_has_every_required_field():
    body = mock.responses_body(RESPONSES_BODIES["text"], "mock-model", 10, SETTINGS[0])
    Response.model_validate(body)


def test_response_object_has_no_undeclared_keys():
    body = mock.responses_body(RESPONSES_BODIES["text"], "mock-model", 10, SETTINGS[0])
    assert_no_extras(Response.model_validate(body))


def test_function_call_arguments_done_has_no_undeclared_keys():
    events = mock.responses_events(RESPONSES_BODIES["exec_command"], "mock-model", 10, SETTINGS[0])
    (done,) = [event for event in events if event["type"] == "response.function_call_arguments.done"]
    assert_no_extras(STREAM_EVENT.validate_python(done))


def test_exec_command_call():
    item = only_output(RESPONSES_BODIES["exec_command"])
    assert item.type == "function_call"
    assert item.name == "exec_command"
    assert json.loads(item.arguments) == {"cmd": "echo hi"}
    assert item.call_id


def test_shell_array_call():
    item = only_output(RESPONSES_BODIES["shell-array"])
    assert item.type == "function_call"
    assert item.name == "shell"
    assert json.loads(item.arguments) == {"command": ["bash", "-lc", "echo hi"]}


def test_additional_tools_namespace_call():
    item = only_output(RESPONSES_BODIES["additional-tools"])
    assert item.type == "function_call"
    assert json.loads(item.arguments) == {"cmd": "ls -la"}


def test_run_without_shell_tool_answers_text():
    item = only_output(codex_body(user("run `echo hi`"), tools=[APPLY_PATCH]))
    assert item.type == "message"


def test_call_output_answered_with_text_containing_it():
    item = only_output(RESPONSES_BODIES["call-output"])
    assert item.type == "message"
    assert item.role == "assistant"
    assert "hi" in item.content[0].text
    assert "output" in item.content[0].text.lower()

    item = only_output(RESPONSES_BODIES["custom-call-output"])
    assert item.type == "message"
    assert "Done!" in item.content[0].text


CHAT_BODIES = {
    "text": {"model": "m", "messages": [{"role": "user", "content": "hello"}]},
    "parts": {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    "call": {
        "model": "m",
        "messages": [{"role": "user", "content": "run `echo hi`"}],
        "tools": [
            {"type": "function", "function": {k: EXEC_COMMAND[k] for k in ("name", "description", "parameters")}}
        ],
    },
    "tool-result": {
        "model": "m",
        "messages": [
            {"role": "user", "content": "run `echo hi`"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "hi"},
        ],
    },
    "empty": {"model": "m"},
}


@pytest.mark.parametrize("case", sorted(CHAT_BODIES))
def test_chat_body_validates(case):
    body = mock.chat_body(CHAT_BODIES[case], "m", 9, SETTINGS[1])
    completion = validate(ChatCompletion, body)
    assert completion.usage.prompt_tokens == 9
    assert completion.usage.completion_tokens == SETTINGS[1].output_tokens
    message = completion.choices[0].message
    if case == "call":
        assert completion.choices[0].finish_reason == "tool_calls"
        assert json.loads(message.tool_calls[0].function.arguments) == {"cmd": "echo hi"}
    else:
        assert completion.choices[0].finish_reason == "stop"
        assert message.content
    if case == "tool-result":
        assert "hi" in message.content


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("case", sorted(CHAT_BODIES))
def test_chat_chunks_validate(case, include_usage):
    request = dict(CHAT_BODIES[case], stream=True)
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    chunks = mock.chat_chunks(request, "m", 9, SETTINGS[0])
    parsed = [validate(ChatCompletionChunk, chunk) for chunk in chunks]
    assert len({chunk.id for chunk in parsed}) == 1
    finishes = [c.choices[0].finish_reason for c in parsed if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    full = mock.chat_body(request, "m", 9, SETTINGS[0])["choices"][0]["message"]
    if full.get("content"):
        assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == full["content"]
    reader = StreamUsageReader("chat")
    reader.feed(encode_chat_stream(chunks))
    assert reader.outcome == "done"
    if include_usage:
        assert parsed[-1].choices == []
        assert reader.usage == Usage(input_tokens=9, output_tokens=SETTINGS[0].output_tokens)
    else:
        assert all(chunk.usage is None for chunk in parsed)
        assert reader.usage is None


def test_estimated_input_tokens():
    assert mock.estimated_input_tokens(b"x" * 400, SETTINGS[0]) == 100
    assert mock.estimated_input_tokens(b"", SETTINGS[0]) == 1
    assert mock.estimated_input_tokens(b"x" * 400, SETTINGS[1]) == 20
