"""The Anthropic translators, checked against the SDK types on both sides and a validating fake API."""

from __future__ import annotations

import copy
import http.client
import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic_upstream import (
    API_KEY,
    FakeAnthropic,
    Reply,
    build_message,
    encode_sse,
    message_events,
    request_errors,
    sign_thinking,
)
from fakes.sdk_validation import valid_response, valid_stream_event

from codexgate.providers import anthropic
from codexgate.providers.base import TranslateOptions, open_reasoning, seal_reasoning
from codexgate.providers.responses import InputStringStream, ResponseContext, custom_input, without_lone_surrogates
from codexgate.usage import Usage

FIXTURE = Path(__file__).parent.parent / "fixtures" / "codex_request_tool_round_trip.json"
PROVIDER = "anthropic-test"
MODEL = "claude-sonnet-4-5"  # budget-style thinking
ADAPTIVE_MODEL = "claude-sonnet-4-6"

EXEC_TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Runs a command.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}},
        "required": ["cmd"],
        "additionalProperties": False,
    },
}
PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files. This is a FREEFORM tool.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" LF'},
}
PATCH = '*** Begin Patch\n*** Add File: a "quoted" \\path\\é.txt\n+caf\u00e9 \U0001f600 tab\there\n*** End Patch\n'

# The openai SDK's ResponseError.code literal lacks two codes Codex acts on (it stops instead of
# retrying); events carrying them are validated strictly with a stand-in code.
CODEX_ONLY_FAILURE_CODES = {"context_length_exceeded", "insufficient_quota"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(fake: FakeAnthropic) -> FakeAnthropic:
    fake.reset()
    return fake


def ctx() -> ResponseContext:
    return ResponseContext(
        response_id="resp_test0001", model="gpt-5.5", provider_name=PROVIDER, created_at=1_800_000_000
    )


def build(body: dict[str, Any], model: str = MODEL, **options: Any) -> tuple[dict[str, Any], TranslateOptions]:
    translate_options = TranslateOptions(provider_name=PROVIDER, **options)
    request = anthropic.build_request(body, model, translate_options)
    assert request_errors(request) == []
    return request, translate_options


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def body_with(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "stream": True, "input": list(items), "tools": [EXEC_TOOL, PATCH_TOOL], **extra}


def envelope(blocks: list[dict[str, Any]], provider: str = PROVIDER, model: str = MODEL) -> str:
    return seal_reasoning(provider, model, {"blocks": blocks})


def strictly_valid_event(event: dict[str, Any]) -> None:
    if event["type"] == "response.failed" and event["response"]["error"]["code"] in CODEX_ONLY_FAILURE_CODES:
        stand_in = copy.deepcopy(event)
        stand_in["response"]["error"]["code"] = "server_error"
        valid_stream_event(stand_in)
    else:
        valid_stream_event(event)


# --------------------------------------------------------------------------------------------
# Requests


def test_real_codex_request_translates_to_a_valid_anthropic_request() -> None:
    body = json.loads(FIXTURE.read_text())
    request, options = build(body)

    text = json.dumps(request)
    for leaked in ("internal_chat_message_metadata_passthrough", "client_metadata", "prompt_cache_key", "gpt-5.5"):
        assert leaked not in text
    assert set(request) <= {"model", "messages", "system", "tools", "tool_choice", "max_tokens", "stream", "thinking"}
    assert request["model"] == MODEL and request["stream"] is True
    assert request["system"][0]["text"].startswith("You are Codex")
    assert len(request["system"]) == 2  # the two developer messages
    assert options.dropped_tools == ["tool_search", "web_search"]
    tools = {tool["name"]: tool for tool in request["tools"]}
    assert set(tools) == {
        "exec_command",
        "write_stdin",
        "request_user_input",
        "apply_patch",
        "view_image",
        "get_goal",
        "create_goal",
        "update_goal",
    }
    assert tools["apply_patch"]["input_schema"]["properties"] == {
        "input": {"type": "string", "description": "The raw tool input."}
    }
    assert "begin_patch" in tools["apply_patch"]["description"]  # the lark grammar travels along
    assert tools["exec_command"]["input_schema"] == body["tools"][0]["parameters"]

    roles = [message["role"] for message in request["messages"]]
    assert roles == ["user", "assistant", "user"]
    first_user = request["messages"][0]["content"]
    assert first_user[0]["text"].startswith("<environment_context>") and first_user[1]["text"].startswith("please run")
    call = body["input"][4]
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": call["call_id"], "name": "exec_command", "input": {"cmd": "ls"}}
    ]
    result = request["messages"][2]["content"][0]
    assert result["tool_use_id"] == call["call_id"] and result["content"] == body["input"][5]["output"]
    # Mid tool loop without a replayable thinking block: manual thinking must stay off.
    assert "thinking" not in request
    assert request["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert result["cache_control"] == {"type": "ephemeral"}


def test_real_codex_request_on_an_adaptive_model_thinks() -> None:
    body = json.loads(FIXTURE.read_text())
    request, _ = build(body, ADAPTIVE_MODEL)
    assert request["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert request["output_config"] == {"effort": "medium"}
    assert request["max_tokens"] == 8192 + 8192


def test_instructions_developer_messages_and_merging() -> None:
    body = body_with(
        {"type": "message", "role": "developer", "content": "dev rules"},
        user("one"),
        {"role": "user", "content": "two"},  # an EasyInputMessage without type
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "late system note"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "", "annotations": []}]},
        user("three"),
        instructions="base instructions",
    )
    request, _ = build(body)
    assert [block["text"] for block in request["system"]] == ["base instructions", "dev rules", "late system note"]
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "three", "cache_control": {"type": "ephemeral"}}]},
    ]


def test_tool_results_come_first_and_unpaired_calls_are_repaired() -> None:
    body = body_with(
        user("go"),
        {"type": "function_call", "call_id": "call_a", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
        {"type": "function_call", "call_id": "call.b", "name": "exec_command", "arguments": "not json"},
        user("meanwhile, a user note"),
        {"type": "function_call_output", "call_id": "call_a", "output": "a.txt"},
        {"type": "function_call_output", "call_id": "call_zzz", "output": "from nowhere"},
    )
    request, _ = build(body)
    assistant, answer = request["messages"][1], request["messages"][2]
    assert [block["id"] for block in assistant["content"]] == ["call_a", "call_b"]
    assert assistant["content"][1]["input"] == {"_unparsed_arguments": "not json"}
    kinds = [block["type"] for block in answer["content"]]
    assert kinds == ["tool_result", "tool_result", "text", "text"]
    assert answer["content"][0]["tool_use_id"] == "call_a"
    assert answer["content"][1]["tool_use_id"] == "call_b"  # no output recorded: a stand-in result
    assert "from nowhere" in answer["content"][3]["text"]


def test_images_in_messages_and_tool_outputs() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    body = body_with(
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "high"},
                {"type": "input_image", "image_url": "data:image/bmp;base64,Qk0=", "detail": "auto"},
                {"type": "input_image", "file_id": "file_123", "detail": "auto"},
            ],
        },
        {"type": "function_call", "call_id": "call_img", "name": "exec_command", "arguments": '{"cmd":"x"}'},
        {
            "type": "function_call_output",
            "call_id": "call_img",
            "output": [
                {"type": "input_text", "text": "here it is"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{png}"},
            ],
        },
    )
    request, _ = build(body)
    content = request["messages"][0]["content"]
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    assert content[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    assert content[3]["type"] == "text" and "image/bmp" in content[3]["text"]
    assert content[4]["type"] == "text" and "file id" in content[4]["text"]
    result = request["messages"][2]["content"][0]
    assert [block["type"] for block in result["content"]] == ["text", "image"]


def test_custom_tool_calls_replay_as_tool_use_with_one_string() -> None:
    body = body_with(
        user("patch it"),
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": PATCH, "id": "ctc_1"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"},
    )
    request, _ = build(body)
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_p", "name": "apply_patch", "input": {"input": PATCH}}
    ]
    assert request["messages"][2]["content"][0]["content"] == "Done!"


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", True, {"type": "auto"}),
        ("none", True, {"type": "none"}),
        ("required", True, {"type": "any"}),
        ({"type": "function", "name": "exec_command"}, True, {"type": "tool", "name": "exec_command"}),
        (
            {"type": "custom", "name": "apply_patch"},
            False,
            {"type": "tool", "name": "apply_patch", "disable_parallel_tool_use": True},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"type": "function", "name": "not_offered"}, True, {"type": "auto"}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool, expected: dict[str, Any]) -> None:
    request, _ = build(body_with(user("hi"), tool_choice=choice, parallel_tool_calls=parallel))
    assert request["tool_choice"] == expected


@pytest.mark.parametrize(
    ("model", "effort", "budget", "max_tokens"),
    [
        (MODEL, "minimal", 1024, 8192 + 1024),
        (MODEL, "low", 2048, 8192 + 2048),
        (MODEL, "medium", 8192, 16384),
        (MODEL, "high", 24576, 32000),
        (MODEL, "xhigh", 28672, 32000),
        ("claude-opus-4-1", "high", 24576, 32000),  # never above the model's ceiling
        ("claude-3-7-sonnet-20250219", "low", 2048, 8192 + 2048),
        (MODEL, "none", None, 8192),
    ],
)
def test_budget_thinking(model: str, effort: str, budget: int | None, max_tokens: int) -> None:
    request, _ = build(body_with(user("think"), reasoning={"effort": effort}), model)
    assert request.get("thinking") == ({"type": "enabled", "budget_tokens": budget} if budget else None)
    assert request["max_tokens"] == max_tokens
    assert "output_config" not in request


@pytest.mark.parametrize(
    ("model", "effort", "expected_effort", "thinks"),
    [
        (ADAPTIVE_MODEL, "minimal", "low", True),
        (ADAPTIVE_MODEL, "high", "high", True),
        (ADAPTIVE_MODEL, "xhigh", "high", True),  # 4.6 has no xhigh
        ("claude-opus-4-7", "xhigh", "xhigh", True),
        ("claude-opus-4-7", "none", "low", False),
    ],
)
def test_adaptive_thinking(model: str, effort: str, expected_effort: str, thinks: bool) -> None:
    request, _ = build(body_with(user("think"), reasoning={"effort": effort}), model)
    assert request["output_config"] == {"effort": expected_effort}
    assert ("thinking" in request) is thinks


def test_explicit_max_output_tokens_shrinks_or_drops_the_budget() -> None:
    request, _ = build(body_with(user("x"), reasoning={"effort": "high"}, max_output_tokens=5000))
    assert request["max_tokens"] == 5000 and request["thinking"]["budget_tokens"] == 5000 - 1024
    # The smallest budget (1,024) still fits under a 1,500 cap: thinking stays on.
    request, _ = build(body_with(user("x"), reasoning={"effort": "high"}, max_output_tokens=1500))
    assert request["max_tokens"] == 1500 and request["thinking"]["budget_tokens"] == 1024
    # A cap of 1,024 or less leaves no room for it (the budget must stay below max_tokens).
    request, _ = build(body_with(user("x"), reasoning={"effort": "high"}, max_output_tokens=1024))
    assert request["max_tokens"] == 1024 and "thinking" not in request


def test_forced_tool_choice_turns_manual_thinking_off() -> None:
    request, _ = build(body_with(user("x"), reasoning={"effort": "high"}, tool_choice="required"))
    assert "thinking" not in request and request["tool_choice"] == {"type": "any"}


def test_default_max_tokens_option() -> None:
    request, _ = build(body_with(user("x")), default_max_tokens=1234)
    assert request["max_tokens"] == 1234


def test_json_schema_output() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    request, _ = build(
        body_with(user("x"), text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}})
    )
    assert request["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_dropped_tools_are_reported() -> None:
    tools = [
        EXEC_TOOL,
        {"type": "web_search"},
        {"type": "local_shell"},
        {"type": "image_generation"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "tool_search", "execution": "client", "description": "find tools", "parameters": {"type": "object"}},
    ]
    request, options = build({"model": "gpt-5.5", "input": [user("x")], "tools": tools})
    assert [tool["name"] for tool in request["tools"]] == ["exec_command"]
    assert options.dropped_tools == ["web_search", "local_shell", "image_generation", "file_search", "tool_search"]
    request, options = build({"model": "gpt-5.5", "input": [user("x")], "tools": [{"type": "web_search"}]})
    assert "tools" not in request and "tool_choice" not in request


def test_additional_tools_namespaces_and_name_mapping() -> None:
    namespaces = {
        "type": "additional_tools",
        "role": "developer",
        "tools": [
            {
                "type": "namespace",
                "name": "mcp_one",
                "description": "First server",
                "tools": [
                    {"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}},
                    {"type": "custom", "name": "exec", "description": "Run code", "format": {"type": "text"}},
                ],
            },
            {
                "type": "namespace",
                "name": "mcp_two",
                "tools": [{"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}}],
            },
            {"type": "function", "name": "container.exec", "parameters": {"type": "object", "properties": {}}},
        ],
    }
    body = {
        "model": "gpt-5.5",
        "input": [
            namespaces,
            user("x"),
            {"type": "function_call", "call_id": "c1", "name": "search", "namespace": "mcp_two", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "found"},
        ],
    }
    request, _ = build(body)
    names = [tool["name"] for tool in request["tools"]]
    assert names == ["mcp_one__search", "exec", "mcp_two__search", "container_exec"]
    assert "First server" in request["tools"][0]["description"]
    assert request["messages"][1]["content"][0]["name"] == "mcp_two__search"

    info = anthropic.request_info(body, MODEL)
    message = build_message(
        Reply(
            content=[
                {"type": "tool_use", "name": "mcp_two__search", "input": {"q": 1}},
                {"type": "tool_use", "name": "exec", "input": {"input": "print(1)"}},
                {"type": "tool_use", "name": "container_exec", "input": {}},
            ],
            stop_reason="tool_use",
        ),
        MODEL,
    )
    output = valid_response(anthropic.translate_response(message, ctx(), info)).model_dump(exclude_none=True)["output"]
    assert (output[0]["type"], output[0]["name"], output[0]["namespace"]) == ("function_call", "search", "mcp_two")
    assert (output[1]["type"], output[1]["name"], output[1]["namespace"]) == ("custom_tool_call", "exec", "mcp_one")
    assert output[1]["input"] == "print(1)"
    assert output[2]["name"] == "container.exec" and output[2]["arguments"] == "{}"


def test_reasoning_replay_only_to_the_same_provider_and_model() -> None:
    thinking = {
        "type": "thinking",
        "thinking": "I should list files.",
        "signature": sign_thinking("I should list files."),
    }
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy-fake-redacted-abc"}

    def turn(blob: str) -> dict[str, Any]:
        return body_with(
            user("list files"),
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": blob},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            reasoning={"effort": "medium"},
        )

    request, _ = build(turn(envelope([thinking, redacted])))
    assert request["messages"][1]["content"][:2] == [thinking, redacted]
    assert request["messages"][1]["content"][2]["type"] == "tool_use"
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 8192}

    for foreign in (
        envelope([thinking], model="claude-opus-4-1"),
        envelope([thinking], provider="other-anthropic"),
        "gAAAAABoOpenAIEncryptedReasoning==",
        None,
    ):
        request, _ = build(turn(foreign))  # type: ignore[arg-type]
        assert [block["type"] for block in request["messages"][1]["content"]] == ["tool_use"]
        assert "thinking" not in request  # the loop now lacks its thinking block


def test_thinking_block_placement_in_merged_assistant_turns() -> None:
    first = {"type": "thinking", "thinking": "one", "signature": sign_thinking("one")}
    second = {"type": "thinking", "thinking": "two", "signature": sign_thinking("two")}
    call = {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
    text = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "hi", "annotations": []}],
    }

    def reasoning(block: dict[str, Any]) -> dict[str, Any]:
        return {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": envelope([block])}

    # Interleaved thinking inside one answer goes back exactly as Claude produced it.
    request, _ = build(body_with(user("x"), reasoning(first), text, reasoning(second), call, output))
    assert [b["type"] for b in request["messages"][1]["content"]] == ["thinking", "text", "thinking", "tool_use"]
    # Text from another model followed by our reasoning: the API would refuse thinking there.
    request, _ = build(body_with(user("x"), text, reasoning(first), call, output))
    assert [b["type"] for b in request["messages"][1]["content"]] == ["text", "tool_use"]


def test_trailing_assistant_thinking_is_stripped_when_thinking_is_off() -> None:
    thinking = {"type": "thinking", "thinking": "hm", "signature": sign_thinking("hm")}
    body = body_with(
        user("x"),
        {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": envelope([thinking])},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "partial", "annotations": []}],
        },
    )
    request, _ = build(body)
    assert request["messages"][-1]["content"] == [
        {"type": "text", "text": "partial", "cache_control": {"type": "ephemeral"}}
    ]


def test_request_target_and_auth() -> None:
    url, headers = anthropic.request_target("https://api.anthropic.com/", MODEL, True)
    assert url == "https://api.anthropic.com/v1/messages"
    assert headers["anthropic-version"] == "2023-06-01" and headers["accept"] == "text/event-stream"
    assert headers["anthropic-beta"] == anthropic.INTERLEAVED_THINKING_BETA
    url, headers = anthropic.request_target("https://proxy.example/v1", ADAPTIVE_MODEL, False)
    assert url == "https://proxy.example/v1/messages" and "anthropic-beta" not in headers
    assert anthropic.auth_headers("sk-ant-x") == {"x-api-key": "sk-ant-x"}


def test_the_fake_refuses_what_the_api_refuses() -> None:
    """The checks the translator's output passes are able to fail."""
    base, _ = build(body_with(user("x")))
    cases = [
        dict(base, messages=[dict(base["messages"][0], id="msg_1")]),  # unknown key
        dict(base, tools=[dict(base["tools"][0], strict="yes")]),  # wrong type
        dict(base, thinking={"type": "enabled", "budget_tokens": 9000}, max_tokens=9000),
        dict(base, messages=[{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]),
        dict(base, messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
        dict(base, tools=[dict(base["tools"][0], name="container.exec")]),
        dict(
            base,
            thinking={"type": "enabled", "budget_tokens": 2048},
            messages=[
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "exec_command", "input": {}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
        ),
        dict(
            base,
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "forged", "signature": "AAAA"}]},
                {"role": "user", "content": "y"},
            ],
        ),
    ]
    for case in cases:
        assert request_errors(case), case


# --------------------------------------------------------------------------------------------
# Answers


def _items(response: dict[str, Any]) -> list[dict[str, Any]]:
    return valid_response(response).model_dump(exclude_none=True)["output"]  # type: ignore[no-any-return]


def test_text_answer_and_usage() -> None:
    message = build_message(Reply(input_tokens=100, cache_read_input_tokens=50, cache_creation_input_tokens=10), MODEL)
    response = anthropic.translate_response(message, ctx())
    valid_response(response)
    assert response["id"] == "resp_test0001" and response["status"] == "completed" and response["model"] == "gpt-5.5"
    assert response["output"][0]["content"][0]["text"] == "Hello from the fake Anthropic."
    assert response["usage"] == {
        "input_tokens": 160,
        "input_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 10},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 200,
    }


def test_thinking_and_tool_use_answer() -> None:
    body = body_with(user("x"))
    info = anthropic.request_info(body, MODEL)
    message = build_message(
        Reply(
            content=[
                {"type": "thinking", "thinking": "Let me look."},
                {"type": "redacted_thinking"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "name": "exec_command", "input": {"cmd": "ls -la"}},
                {"type": "tool_use", "name": "apply_patch", "input": {"input": PATCH}},
            ],
            stop_reason="tool_use",
            thinking_tokens=12,
        ),
        MODEL,
    )
    response = anthropic.translate_response(message, ctx(), info)
    items = _items(response)
    assert [item["type"] for item in items] == [
        "reasoning",
        "reasoning",
        "message",
        "function_call",
        "custom_tool_call",
    ]
    assert items[0]["summary"] == [{"type": "summary_text", "text": "Let me look."}]
    assert open_reasoning(items[0]["encrypted_content"], PROVIDER, MODEL) == {"blocks": [message["content"][0]]}
    assert open_reasoning(items[1]["encrypted_content"], PROVIDER, MODEL) == {"blocks": [message["content"][1]]}
    assert open_reasoning(items[0]["encrypted_content"], PROVIDER, "claude-opus-4-1") is None
    assert items[3]["call_id"] == message["content"][3]["id"] and json.loads(items[3]["arguments"]) == {"cmd": "ls -la"}
    assert items[4]["input"] == PATCH and items[4]["name"] == "apply_patch"
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 12}


def test_max_tokens_is_incomplete_and_refusal_says_so() -> None:
    response = anthropic.translate_response(build_message(Reply(stop_reason="max_tokens"), MODEL), ctx())
    valid_response(response)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    refusal = build_message(
        Reply(
            content=[],
            stop_reason="refusal",
            stop_details={"type": "refusal", "category": "cyber", "explanation": "No."},
        ),
        MODEL,
    )
    response = anthropic.translate_response(refusal, ctx())
    assert response["status"] == "completed" and _items(response)[0]["content"][0]["text"].endswith("No.")


def test_whole_answer_of_an_error_document_server_blocks_and_non_answers() -> None:
    failed = anthropic.translate_response(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, ctx()
    )
    valid_response(failed)
    assert (failed["status"], failed["output"], failed["usage"]) == ("failed", [], None)
    assert failed["error"]["code"] == "server_error" and "overloaded" in failed["error"]["message"]
    # Blocks Codex cannot use (server tools were never requested) and malformed ones are left out.
    message = build_message(Reply(content=[{"type": "text", "text": "Found it."}]), MODEL)
    server_call = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"q": "x"}}
    message["content"] = [server_call, "not a block", {"type": "text", "text": None}, *message["content"]]
    response = anthropic.translate_response(message, ctx())
    assert [item["type"] for item in response["output"]] == ["message"]
    assert response["usage"]["input_tokens"] == 29
    # Something that is no Messages answer at all is not turned into an empty "completed" one.
    with pytest.raises(ValueError, match="not an Anthropic Message"):
        anthropic.translate_response({"completion": "hi"}, ctx())


# --------------------------------------------------------------------------------------------
# Streams


def _chunks(raw: bytes, sizes: random.Random | int | None) -> Iterator[bytes]:
    if sizes is None:
        yield raw
        return
    position = 0
    while position < len(raw):
        size = sizes if isinstance(sizes, int) else sizes.randint(1, 64)
        yield raw[position : position + size]
        position += size


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every event strictly valid, numbered, consistent per item; returns the terminal response."""
    for number, event in enumerate(events):
        strictly_valid_event(event)
        assert event["sequence_number"] == number
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    terminals = [e for e in events if e["type"] in ("response.completed", "response.incomplete", "response.failed")]
    assert terminals == [events[-1]]
    items: dict[str, int] = {}
    finished: dict[int, dict[str, Any]] = {}
    streamed: dict[str, str] = {}
    for event in events[2:-1]:
        if event["type"] == "response.output_item.added":
            assert event["item"]["id"] not in items and event["output_index"] == len(items)
            items[event["item"]["id"]] = event["output_index"]
        elif event["type"] == "response.output_item.done":
            assert items[event["item"]["id"]] == event["output_index"]
            finished[event["output_index"]] = event["item"]
        else:
            assert items[event["item_id"]] == event["output_index"] and event["output_index"] not in finished
            if event["type"].endswith(".delta"):
                streamed[event["item_id"]] = streamed.get(event["item_id"], "") + event["delta"]
            elif event["type"] == "response.output_text.done":
                assert streamed.get(event["item_id"], "") == event["text"]
            elif event["type"] == "response.function_call_arguments.done":
                assert streamed.get(event["item_id"], "") == event["arguments"]
            elif event["type"] == "response.custom_tool_call_input.done":
                assert streamed.get(event["item_id"], "") == event["input"]
            elif event["type"] == "response.reasoning_summary_text.done":
                assert streamed.get(event["item_id"], "") == event["text"]
    response: dict[str, Any] = events[-1]["response"]
    assert response["id"] == "resp_test0001"
    assert response["output"] == [finished[index] for index in sorted(finished)]
    return response


def run_stream(
    raw: bytes, info: anthropic.RequestInfo | None = None, sizes: random.Random | int | None = None
) -> tuple[list[dict[str, Any]], anthropic.StreamTranslator]:
    decoder, translator = anthropic.StreamDecoder(), anthropic.StreamTranslator(ctx(), info)
    events: list[dict[str, Any]] = []
    for chunk in _chunks(raw, sizes):
        for provider_event in decoder.feed(chunk):
            events += translator.feed(provider_event)
    events += translator.finish()
    assert translator.finish() == []  # one terminal event, ever
    return events, translator


def _without_ids(value: Any) -> Any:
    text = json.dumps(value)
    for prefix in ("msg_", "rs_", "fc_", "ctc_"):
        text = __import__("re").sub(rf'"{prefix}[0-9a-f]{{32}}"', f'"{prefix}ID"', text)
    return json.loads(text)


RICH_REPLY = Reply(
    content=[
        {"type": "thinking", "thinking": "First I think. Then I act — carefully."},
        {"type": "text", "text": "I'll edit the file: “résumé” ✓"},
        {"type": "tool_use", "name": "apply_patch", "input": {"input": PATCH}},
        {"type": "tool_use", "name": "exec_command", "input": {"cmd": 'cat "a b" | wc -l'}},
        {"type": "tool_use", "name": "exec_command", "input": {}},
        {"type": "redacted_thinking"},
    ],
    stop_reason="tool_use",
    thinking_tokens=30,
)


def test_stream_at_every_chunking_matches_the_unchunked_and_the_non_streamed_answer() -> None:
    info = anthropic.request_info(body_with(user("x")), MODEL)
    message = build_message(RICH_REPLY, MODEL)
    raw = encode_sse(message_events(message, RICH_REPLY))
    reference, translator = run_stream(raw, info)
    response = check_stream(reference)
    assert translator.outcome == "completed"
    assert translator.usage == Usage(input_tokens=29, cached_tokens=5, output_tokens=40, reasoning_tokens=30)
    assert _without_ids(response["output"]) == _without_ids(
        anthropic.translate_response(message, ctx(), info)["output"]
    )
    custom_deltas = [e["delta"] for e in reference if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(custom_deltas) > 3 and "".join(custom_deltas) == PATCH  # streamed as it came, escapes decoded
    types_seen = {event["type"] for event in reference}
    assert {
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_part.done",
        "response.content_part.added",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.done",
    } <= types_seen
    no_argument_call = [item for item in response["output"] if item.get("arguments") == "{}"]
    assert len(no_argument_call) == 1

    chunkings: list[random.Random | int] = [1, 2, 3, *(random.Random(seed) for seed in range(12))]
    for sizes in chunkings:
        events, _ = run_stream(raw, info, sizes)
        assert _without_ids(events) == _without_ids(reference)


def test_custom_tool_input_streams_exactly_at_any_split() -> None:
    generator = random.Random(11)
    alphabet = ['"', "\\", "\n", "\t", "/", "a", "Z", " ", "é", "\u2028", "\U0001f600", "\ud83d", "\x01"]
    for _ in range(300):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 30)))
        encoded = json.dumps({"input": text}, ensure_ascii=generator.random() < 0.5)
        if generator.random() < 0.3:
            encoded = encoded.replace('{"input": ', '{ "input" :')
        stream = InputStringStream()
        position, pieces = 0, []
        while position < len(encoded):
            size = generator.randint(1, 6)
            pieces.append(stream.feed(encoded[position : position + size]))
            position += size
        # A lone surrogate ("\ud83d") comes out as U+FFFD, streamed and whole alike.
        assert "".join(pieces) == without_lone_surrogates(text) == custom_input(encoded)


def test_stream_max_tokens_is_incomplete() -> None:
    reply = Reply(content=[{"type": "text", "text": "cut sh"}], stop_reason="max_tokens")
    events, translator = run_stream(encode_sse(message_events(build_message(reply, MODEL), reply)))
    response = check_stream(events)
    assert events[-1]["type"] == "response.incomplete" and translator.outcome == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    ("stop_reason", "status", "incomplete", "marked"),
    [
        ("end_turn", "completed", None, False),
        ("stop_sequence", "completed", None, False),
        ("tool_use", "completed", None, False),
        ("pause_turn", "completed", None, False),
        ("max_tokens", "incomplete", "max_output_tokens", False),
        ("model_context_window_exceeded", "incomplete", "max_output_tokens", False),
        # Completed (Codex would retry an incomplete answer into the same refusal), but marked.
        ("refusal", "completed", None, True),
    ],
)
def test_every_stop_reason_streamed_and_whole(
    stop_reason: str, status: str, incomplete: str | None, marked: bool
) -> None:
    """Each of the SDK's stop reasons (anthropic.types.StopReason), streamed and not: the same status,
    incomplete reason and output; only a refusal adds a closing message."""
    details = {"type": "refusal", "category": None, "explanation": None} if stop_reason == "refusal" else None
    reply = Reply(content=[{"type": "text", "text": "Partial answer"}], stop_reason=stop_reason, stop_details=details)
    message = build_message(reply, MODEL)
    events, translator = run_stream(encode_sse(message_events(message, reply)))
    streamed = check_stream(events)
    whole = anthropic.translate_response(message, ctx())
    valid_response(whole)
    for response in (streamed, whole):
        assert response["status"] == status and translator.outcome == status
        assert response["incomplete_details"] == ({"reason": incomplete} if incomplete else None)
        texts = [item["content"][0]["text"] for item in response["output"]]
        assert texts[0] == "Partial answer" and len(texts) == (2 if marked else 1)
        assert not marked or "declined" in texts[1]
    assert _without_ids(streamed) == _without_ids(whole)


def test_stream_refusal_without_text_gets_a_message() -> None:
    reply = Reply(
        content=[], stop_reason="refusal", stop_details={"type": "refusal", "category": None, "explanation": None}
    )
    events, _ = run_stream(encode_sse(message_events(build_message(reply, MODEL), reply)))
    response = check_stream(events)
    assert events[-1]["type"] == "response.completed"
    assert "declined" in response["output"][0]["content"][0]["text"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, "server_error"),
        ({"type": "rate_limit_error", "message": "slow down"}, "rate_limit_exceeded"),
        (
            {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
            "context_length_exceeded",
        ),
        ({"type": "billing_error", "message": "credit balance too low"}, "insufficient_quota"),
    ],
)
def test_stream_error_event_fails_the_response(error: dict[str, str], code: str) -> None:
    message = build_message(RICH_REPLY, MODEL)
    events = message_events(message, RICH_REPLY)[:9]
    events.append({"type": "error", "error": error})
    out, translator = run_stream(encode_sse(events), anthropic.request_info(body_with(user("x")), MODEL))
    response = check_stream(out)
    assert out[-1]["type"] == "response.failed" and translator.outcome == "failed"
    assert response["error"]["code"] == code
    assert translator.usage is not None and translator.usage.input_tokens == 29  # input was spent


def test_stream_cut_short_fails_instead_of_completing() -> None:
    message = build_message(RICH_REPLY, MODEL)
    events = message_events(message, RICH_REPLY)
    for cut in (0, 1, 5, len(events) - 1):  # the last cut loses only message_stop
        raw = encode_sse(events[:cut])
        out, translator = run_stream(raw + b'event: content_block_delta\ndata: {"type":"content_bl')
        response = check_stream(out)
        assert out[-1]["type"] == "response.failed" and translator.outcome == "failed"
        assert response["error"]["code"] == "server_error" and "ended" in response["error"]["message"]


def test_garbled_stream_event_fails() -> None:
    out, translator = run_stream(b"event: content_block_delta\ndata: {not json}\n\n")
    check_stream(out)
    assert translator.outcome == "failed"


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected_status", "code"),
    [
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            429,
            "rate_limit_exceeded",
        ),
        (529, "overloaded_error", "Overloaded", 503, "server_error"),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 212000 tokens > 200000 maximum",
            400,
            "context_length_exceeded",
        ),
        (400, "invalid_request_error", "messages.0.content: Field required", 400, "invalid_request_error"),
        (402, "billing_error", "Your credit balance is too low", 429, "insufficient_quota"),
        (404, "not_found_error", "model: claude-nope", 404, "model_not_found"),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", 400, "request_too_large"),
        (500, "api_error", "Internal server error", 502, "server_error"),
        (504, "timeout_error", "Request timed out", 504, "server_error"),
    ],
)
def test_translate_error(status: int, error_type: str, message: str, expected_status: int, code: str) -> None:
    raw = json.dumps({"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_1"})
    got_status, body = anthropic.translate_error(status, raw.encode())
    assert got_status == expected_status
    assert set(body["error"]) == {"message", "type", "code", "param"} and body["error"]["code"] == code
    assert message in body["error"]["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_become_502_without_echoing_anything(status: int) -> None:
    raw = json.dumps(
        {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key sk-ant-SECRET"}}
    )
    got_status, body = anthropic.translate_error(status, raw.encode())
    assert got_status == 502 and "credentials" in body["error"]["message"]
    assert "SECRET" not in json.dumps(body)


def test_translate_error_without_a_json_body() -> None:
    assert anthropic.translate_error(502, b"<html>bad gateway</html>")[0] == 502
    assert anthropic.translate_error(503, b"")[1]["error"]["code"] == "server_error"


# --------------------------------------------------------------------------------------------
# Over HTTP, against the validating fake


def post(
    fake: FakeAnthropic, request: dict[str, Any], model: str, key: str = API_KEY
) -> tuple[int, dict[str, str], list[bytes], bool]:
    url, headers = anthropic.request_target(fake.url, model, bool(request.get("stream")))
    headers.update(anthropic.auth_headers(key))
    http_request = urllib.request.Request(url, data=json.dumps(request).encode(), headers=headers, method="POST")
    chunks: list[bytes] = []
    try:
        with urllib.request.urlopen(http_request, timeout=10) as answer:
            try:
                while chunk := answer.read1(173):
                    chunks.append(chunk)
            except (http.client.HTTPException, OSError):
                return answer.status, dict(answer.headers), chunks, True
            return answer.status, dict(answer.headers), chunks, False
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, [error.read()], False


def stream_turn(
    fake: FakeAnthropic, body: dict[str, Any], model: str, reply: Reply
) -> tuple[list[dict[str, Any]], anthropic.StreamTranslator]:
    fake.replies.append(reply)
    request, _ = build(body, model)
    status, _, chunks, _ = post(fake, request, model)
    assert status == 200, chunks
    decoder, translator = (
        anthropic.StreamDecoder(),
        anthropic.StreamTranslator(ctx(), anthropic.request_info(body, model)),
    )
    events: list[dict[str, Any]] = []
    for chunk in chunks:
        for provider_event in decoder.feed(chunk):
            events += translator.feed(provider_event)
    events += translator.finish()
    check_stream(events)
    return events, translator


def done_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["item"] for event in events if event["type"] == "response.output_item.done"]


def test_tool_loop_with_thinking_over_http(upstream: FakeAnthropic) -> None:
    history = [user("Fix the file, then list the directory.")]
    effort = {"effort": "medium"}

    # Turn 1: Claude thinks and calls the custom apply_patch tool.
    events, _ = stream_turn(
        upstream,
        body_with(*history, reasoning=effort),
        MODEL,
        Reply(
            content=[
                {"type": "thinking", "thinking": "A patch first."},
                {"type": "tool_use", "name": "apply_patch", "input": {"input": PATCH}},
            ],
            stop_reason="tool_use",
        ),
    )
    sent = upstream.received[-1]
    assert (
        sent.headers["anthropic-beta"] == anthropic.INTERLEAVED_THINKING_BETA and sent.headers["x-api-key"] == API_KEY
    )
    assert sent.json()["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    items = done_items(events)
    assert [item["type"] for item in items] == ["reasoning", "custom_tool_call"] and items[1]["input"] == PATCH
    history += items + [{"type": "custom_tool_call_output", "call_id": items[1]["call_id"], "output": "Success."}]

    # Turn 2: the thinking block goes back verbatim before its tool_use; Claude calls a function.
    events, _ = stream_turn(
        upstream,
        body_with(*history, reasoning=effort),
        MODEL,
        Reply(content=[{"type": "tool_use", "name": "exec_command", "input": {"cmd": "ls"}}], stop_reason="tool_use"),
    )
    sent_messages = upstream.received[-1].json()["messages"]
    assert sent_messages[1]["content"][0] == {
        "type": "thinking",
        "thinking": "A patch first.",
        "signature": sign_thinking("A patch first."),
    }
    assert upstream.received[-1].json()["thinking"]["type"] == "enabled"
    items = done_items(events)
    history += items + [{"type": "function_call_output", "call_id": items[0]["call_id"], "output": "a.txt"}]

    # Turn 3: still the same assistant turn (it began with thinking), so thinking may stay on.
    events, translator = stream_turn(
        upstream,
        body_with(*history, reasoning=effort),
        MODEL,
        Reply(content=[{"type": "thinking", "thinking": "Done."}, {"type": "text", "text": "Patched and listed."}]),
    )
    assert upstream.received[-1].json()["thinking"]["type"] == "enabled"
    assert translator.outcome == "completed" and upstream.invalid == []

    # The same history routed to another model of this provider: the envelopes are not replayed
    # and manual thinking is left off, which the API accepts.
    stream_turn(upstream, body_with(*history, reasoning=effort), "claude-opus-4-1", Reply())
    rerouted = upstream.received[-1].json()
    assert "thinking" not in rerouted and all(
        block["type"] not in ("thinking", "redacted_thinking") for m in rerouted["messages"] for block in m["content"]
    )
    # ... and the fake would have refused it with thinking on.
    forced = dict(rerouted, thinking={"type": "enabled", "budget_tokens": 2048})
    status, _, chunks, _ = post(upstream, forced, "claude-opus-4-1")
    assert status == 400 and b"must start with a thinking block" in b"".join(chunks)
    assert upstream.invalid


def test_adaptive_model_over_http(upstream: FakeAnthropic) -> None:
    body = json.loads(FIXTURE.read_text())
    events, translator = stream_turn(upstream, body, "claude-opus-4-7", Reply(thinking_tokens=3))
    assert upstream.received[-1].json()["thinking"]["type"] == "adaptive" and upstream.invalid == []
    assert translator.outcome == "completed"
    assert "anthropic-beta" not in upstream.received[-1].headers


def test_not_streamed_over_http(upstream: FakeAnthropic) -> None:
    body = body_with(user("hello"))
    body["stream"] = False
    upstream.replies.append(Reply(content=[{"type": "text", "text": "Hi there."}]))
    request, _ = build(body)
    assert "stream" not in request
    status, headers, chunks, _ = post(upstream, request, MODEL)
    assert status == 200
    response = anthropic.translate_response(json.loads(b"".join(chunks)), ctx(), anthropic.request_info(body, MODEL))
    assert _items(response)[0]["content"][0]["text"] == "Hi there."


def test_http_errors_over_http(upstream: FakeAnthropic) -> None:
    request, _ = build(body_with(user("x")))
    upstream.replies.append(
        Reply(status=429, error={"type": "rate_limit_error", "message": "Rate limited"}, headers={"retry-after": "7"})
    )
    status, headers, chunks, _ = post(upstream, request, MODEL)
    assert (status, headers["retry-after"]) == (429, "7")
    assert anthropic.translate_error(status, b"".join(chunks))[1]["error"]["code"] == "rate_limit_exceeded"

    status, _, chunks, _ = post(upstream, request, MODEL, key="sk-ant-wrong")
    assert status == 401
    assert anthropic.translate_error(status, b"".join(chunks))[0] == 502


def test_mid_stream_error_and_cut_over_http(upstream: FakeAnthropic) -> None:
    body = body_with(user("x"))
    request, _ = build(body)
    info = anthropic.request_info(body, MODEL)
    for reply, cut_expected in (
        (Reply(content=RICH_REPLY.content, error_after=6), False),
        (Reply(content=RICH_REPLY.content, cut_after=6), True),
    ):
        upstream.replies.append(reply)
        status, _, chunks, cut = post(upstream, request, MODEL)
        assert status == 200 and cut is cut_expected
        events, translator = run_stream(b"".join(chunks), info, random.Random(7))
        response = check_stream(events)
        assert translator.outcome == "failed" and response["error"]["code"] == "server_error"


def test_a_lone_surrogate_in_text_passes_the_bridge_as_before() -> None:
    """The bridge reads and writes JSON with orjson, which refuses a lone surrogate (an escape
    Claude can send when it cuts an emoji) both ways: the stdlib reads and writes that event, so
    the text reaches the client as it did before orjson, escaped, instead of failing the answer."""
    from codexgate.policies.schema import AnthropicProvider, SecretRef
    from codexgate.providers.registry import family_for
    from codexgate.sse import SSEParser

    family = family_for(AnthropicProvider(kind="anthropic", keys=[SecretRef(value="env:UNUSED")]))
    prepared = family.prepare({"model": "gpt-5.5", "input": "hi", "stream": True}, MODEL, PROVIDER)
    bridge = family.stream(prepared, ctx())
    text = "cut \ud83d! caf\u00e9"
    upstream = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
                                              "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]  # fmt: skip
    raw = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in upstream)
    out = bridge.feed(raw) + bridge.finish()
    assert b'"delta":"cut \\ud83d! caf\\u00e9"' in out  # the stdlib's form, for this event only
    events = [json.loads(data) for _, data in SSEParser().feed(out)]
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [text]
    assert events[-1]["type"] == "response.completed" and bridge.outcome == "completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
    assert bridge.usage == Usage(input_tokens=9, output_tokens=4)
