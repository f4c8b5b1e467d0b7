"""Bedrock Converse / ConverseStream translators, checked against botocore's service model (the
fake upstream validates requests), botocore's event-stream decoder and parser, and the openai
SDK's Responses types (every produced event, strictly)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import botocore.parsers
import pytest
import yarl
from botocore.eventstream import EventStream, EventStreamBuffer
from fakes.bedrock_upstream import (
    ACCESS_KEY,
    API_KEY,
    REGION,
    SECRET_KEY,
    STREAM_EVENTS,
    FakeBedrock,
    Reasoning,
    Redacted,
    Reply,
    Text,
    ToolUse,
    converse_body,
    encode_stream,
    request_errors,
    shape_errors,
    stream_events,
    usage,
)
from fakes.sdk_validation import valid_response, valid_stream_event
from openai.types.responses import ResponseError
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import TypeAdapter

from codexgate.policies.schema import BedrockProvider, SecretRef
from codexgate.providers import bedrock, registry
from codexgate.providers.base import TranslateOptions, open_reasoning, seal_reasoning
from codexgate.providers.bedrock.family import BedrockFamily
from codexgate.providers.responses import ResponseContext
from codexgate.secrets import SecretResolver, SecretUnavailable
from codexgate.sse import SSEParser

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "codex_request_tool_round_trip.json"
CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
NOVA2 = "us.amazon.nova-2-lite-v1:0"
LLAMA = "meta.llama3-3-70b-instruct-v1:0"
PROVIDER = "bedrock-test"
PATCH = '*** Begin Patch\n*** Add File: a "quoted" \\ file.txt\n+héllo 😀 \t tab\n*** End Patch\n'
_CODEX_PARAMS = TypeAdapter(ResponseCreateParamsBase)
_SDK_ERROR_CODES = set(ResponseError.model_fields["code"].annotation.__args__)  # type: ignore[union-attr]


def fixture_body() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def context(model: str = "codex-claude") -> ResponseContext:
    return ResponseContext(response_id="resp_abc123", model=model, provider_name=PROVIDER, created_at=1_790_000_000)


def build(body: dict[str, Any], model: str = CLAUDE) -> tuple[dict[str, Any], TranslateOptions]:
    """build_request, and the result must pass the fake Bedrock's checks for both operations."""
    options = TranslateOptions(provider_name=PROVIDER)
    request = bedrock.build_request(body, model, options)
    for stream in (True, False):
        assert request_errors(request, model, stream) == []
    return request, options


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def codex_body(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "codex-claude",
        "instructions": "You are Codex.",
        "input": list(items),
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "description": "Run a command",
                "strict": False,
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
            },
            {"type": "custom", "name": "apply_patch", "description": "Edit files", "format": {"type": "text"}},
            {"type": "web_search"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
    }
    body.update(extra)
    _CODEX_PARAMS.validate_python(body)  # the hand-made body is a valid Responses request
    return body


def strict_event(event: dict[str, Any]) -> None:
    """valid_stream_event, except that a failure code Codex understands but the SDK's enum lacks
    (context_length_exceeded, insufficient_quota) is checked separately."""
    code = ((event.get("response") or {}).get("error") or {}).get("code")
    if event.get("type") == "response.failed" and code not in _SDK_ERROR_CODES:
        assert code in ("context_length_exceeded", "insufficient_quota")
        event = copy.deepcopy(event)
        event["response"]["error"]["code"] = "server_error"
    valid_stream_event(event)


def translate_stream(
    raw: bytes,
    chunks: list[int] | None = None,
    ctx: ResponseContext | None = None,
    tools: bedrock.ToolNames | None = None,
    finish: bool = True,
) -> tuple[list[dict[str, Any]], bedrock.StreamTranslator]:
    """Bytes (split at the given cut points) → decoder → translator; every event validated."""
    decoder = bedrock.EventStreamDecoder()
    translator = bedrock.StreamTranslator(ctx or context(), tools=tools, upstream_model=CLAUDE)
    cuts = [0, *(chunks or []), len(raw)]
    out: list[dict[str, Any]] = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        for event in decoder.feed(raw[start:end]):
            out.extend(translator.feed(event))
    if finish:
        out.extend(translator.finish())
    for event in out:
        strict_event(event)
    check_stream(out)
    return out, translator


def check_stream(events: list[dict[str, Any]]) -> None:
    """The invariants Codex relies on, independent of any one script."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    terminal = [e for e in events if e["type"] in ("response.completed", "response.incomplete", "response.failed")]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    assert terminal[0]["response"]["id"] == "resp_abc123"
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    streamed: dict[str, list[str]] = {}
    for event in events[2:-1]:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] not in added
            added[event["output_index"]] = event["item"]
        elif kind == "response.output_item.done":
            assert added[event["output_index"]]["id"] == event["item"]["id"]
            done[event["output_index"]] = event["item"]
        else:
            index = event["output_index"]
            assert index in added and index not in done, kind
            assert event["item_id"] == added[index]["id"]
            if kind.endswith(".delta"):
                streamed.setdefault(f"{event['item_id']}:{kind}", []).append(event["delta"])
            if kind == "response.output_text.done":
                assert "".join(streamed.pop(f"{event['item_id']}:response.output_text.delta", [])) == event["text"]
            if kind == "response.function_call_arguments.done":
                key = f"{event['item_id']}:response.function_call_arguments.delta"
                assert "".join(streamed.pop(key, [])) == event["arguments"]
            if kind == "response.custom_tool_call_input.done":
                key = f"{event['item_id']}:response.custom_tool_call_input.delta"
                assert "".join(streamed.pop(key, [])) == event["input"]
            if kind == "response.reasoning_summary_text.done":
                key = f"{event['item_id']}:response.reasoning_summary_text.delta"
                assert "".join(streamed.pop(key, [])) == event["text"]
    assert sorted(added) == list(range(len(added)))
    assert terminal[0]["response"]["output"] == [done[index] for index in sorted(done)]


def all_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return events[-1]["response"]["output"]


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def test_real_codex_request_becomes_a_valid_converse_request() -> None:
    body = fixture_body()
    request, options = build(body)
    assert options.dropped_tools == ["tool_search", "web_search"]
    # instructions and developer messages make the system prompt, in order
    developer = [item for item in body["input"] if item.get("role") == "developer"]
    system_texts = [block["text"] for block in request["system"] if "text" in block]
    assert system_texts == [part["text"] for item in developer for part in item["content"]]
    assert len(system_texts) > len(developer)  # the fixture's developer messages have several parts
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    use = request["messages"][1]["content"][0]["toolUse"]
    assert use == {"toolUseId": "call_f0e92128a1be4e52ace2e2893d33f425", "name": "exec_command", "input": {"cmd": "ls"}}
    result = request["messages"][2]["content"][0]["toolResult"]
    assert result["toolUseId"] == use["toolUseId"]
    assert result["content"] == [{"text": body["input"][-1]["output"]}]
    specs = {
        tool["toolSpec"]["name"]: tool["toolSpec"] for tool in request["toolConfig"]["tools"] if "toolSpec" in tool
    }
    assert set(specs) == {t["name"] for t in body["tools"] if t["type"] in ("function", "custom")}
    patch = specs["apply_patch"]
    assert patch["inputSchema"]["json"]["properties"] == {
        "input": {"type": "string", "description": patch["inputSchema"]["json"]["properties"]["input"]["description"]}
    }
    assert patch["inputSchema"]["json"]["required"] == ["input"]
    assert "begin_patch" in patch["description"]  # the grammar travels in the description
    assert specs["exec_command"]["inputSchema"]["json"] == body["tools"][0]["parameters"]
    dumped = json.dumps(request)
    for private in ("internal_chat_message_metadata_passthrough", body["client_metadata"]["x-codex-installation-id"]):
        assert private not in dumped
    assert body["prompt_cache_key"] not in dumped
    # mid tool loop whose assistant turn carries no replayable reasoning: thinking stays off
    assert "additionalModelRequestFields" not in request
    assert request["inferenceConfig"] == {"maxTokens": 8192}
    # Claude 4 caches the replayed prefix
    assert request["system"][-1] == {"cachePoint": {"type": "default"}}
    assert request["toolConfig"]["tools"][-1] == {"cachePoint": {"type": "default"}}
    assert request["messages"][-1]["content"][-1] == {"cachePoint": {"type": "default"}}


def test_real_codex_request_for_a_model_without_caching_or_thinking() -> None:
    request, _ = build(fixture_body(), LLAMA)
    assert "cachePoint" not in json.dumps(request)
    assert "additionalModelRequestFields" not in request


def test_first_turn_gets_thinking_from_reasoning_effort() -> None:
    body = fixture_body()
    body["input"] = [item for item in body["input"] if item.get("type") == "message"]
    request, _ = build(body)
    assert request["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 8000}}
    assert request["inferenceConfig"]["maxTokens"] == 16000


@pytest.mark.parametrize(
    ("model", "effort", "extra", "fields", "max_tokens"),
    [
        (CLAUDE, "minimal", {}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}, 9024),
        (CLAUDE, "low", {}, {"thinking": {"type": "enabled", "budget_tokens": 4000}}, 12000),
        (CLAUDE, "high", {}, {"thinking": {"type": "enabled", "budget_tokens": 16000}}, 24000),
        (CLAUDE, "xhigh", {}, {"thinking": {"type": "enabled", "budget_tokens": 24000}}, 32000),
        (CLAUDE, "none", {}, None, 8192),
        (CLAUDE, "high", {"max_output_tokens": 5000}, {"thinking": {"type": "enabled", "budget_tokens": 3976}}, 5000),
        (CLAUDE, "high", {"max_output_tokens": 1500}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}, 1500),
        (CLAUDE, "high", {"max_output_tokens": 1024}, None, 1024),  # no budget fits below the cap
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "high", {}, None, 8192),  # no thinking before 3.7
        (NOVA2, "low", {}, {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"}}, 8192),
        (NOVA2, "xhigh", {}, {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "high"}}, None),
        (LLAMA, "high", {}, None, 8192),
    ],
)
def test_reasoning_effort_maps_to_the_models_reasoning_setting(
    model: str, effort: str, extra: dict[str, Any], fields: dict[str, Any] | None, max_tokens: int | None
) -> None:
    request, _ = build(codex_body(user("hi"), reasoning={"effort": effort}, **extra), model)
    assert request.get("additionalModelRequestFields") == fields
    assert (request.get("inferenceConfig") or {}).get("maxTokens") == max_tokens


def test_sampling_parameters_pass_only_without_thinking() -> None:
    request, _ = build(codex_body(user("hi"), temperature=0.2, top_p=0.9, reasoning={"effort": "none"}))
    assert request["inferenceConfig"] == {"maxTokens": 8192, "temperature": 0.2, "topP": 0.9}
    request, _ = build(codex_body(user("hi"), temperature=0.2, top_p=0.9))
    assert set(request["inferenceConfig"]) == {"maxTokens"}


def test_history_with_images_custom_calls_and_reasoning_replay() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    mine = seal_reasoning(PROVIDER, CLAUDE, {"block": {"reasoningText": {"text": "think", "signature": "sig-1"}}})
    other_model = seal_reasoning(
        PROVIDER,
        "us.anthropic.claude-opus-4-20250514-v1:0",
        {"block": {"reasoningText": {"text": "x", "signature": "s"}}},
    )
    other_provider = seal_reasoning(
        "anthropic-direct", CLAUDE, {"block": {"reasoningText": {"text": "x", "signature": "s"}}}
    )
    body = codex_body(
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": other_model},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": other_provider},
        {"type": "reasoning", "id": "rs_3", "summary": [], "encrypted_content": "gAAAAABopenai-blob"},
        {
            "type": "reasoning",
            "id": "rs_4",
            "summary": [{"type": "summary_text", "text": "t"}],
            "encrypted_content": mine,
        },
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "I will patch.", "annotations": []}],
        },
        {"type": "custom_tool_call", "call_id": "call_patch", "name": "apply_patch", "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": "call_patch", "output": "Done!"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox changed."}]},
        user("thanks"),
    )
    request, options = build(body)
    assert options.dropped_tools == ["web_search"]
    assert [block["text"] for block in request["system"] if "text" in block] == ["You are Codex.", "Sandbox changed."]
    first, assistant, last = request["messages"]
    assert first["content"][1] == {"image": {"format": "png", "source": {"bytes": png}}}
    assert "https://example.com/cat.jpg" in first["content"][2]["text"]
    # only the envelope made for this provider and this model comes back, first in its turn
    assert assistant["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "think", "signature": "sig-1"}}},
        {"text": "I will patch."},
        {"toolUse": {"toolUseId": "call_patch", "name": "apply_patch", "input": {"input": PATCH}}},
    ]
    assert last["content"][0] == {"toolResult": {"toolUseId": "call_patch", "content": [{"text": "Done!"}]}}
    assert last["content"][1] == {"text": "thanks"}
    # the tool loop's assistant turn starts with its own signed reasoning: thinking may stay on
    assert "thinking" in request["additionalModelRequestFields"]


def test_thinking_is_switched_off_mid_loop_when_the_reasoning_was_not_replayable() -> None:
    foreign = seal_reasoning("anthropic-direct", CLAUDE, {"block": {"reasoningText": {"text": "x", "signature": "s"}}})
    body = codex_body(
        user("run ls"),
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": foreign},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
    )
    request, _ = build(body)
    assert "reasoningContent" not in json.dumps(request)
    assert "additionalModelRequestFields" not in request


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", None),
        ("required", {"any": {}}),
        ({"type": "function", "name": "exec_command"}, {"tool": {"name": "exec_command"}}),
        ({"type": "custom", "name": "apply_patch"}, {"tool": {"name": "apply_patch"}}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any] | None) -> None:
    request, _ = build(codex_body(user("hi"), tool_choice=choice))
    assert request["toolConfig"].get("toolChoice") == expected
    if expected is not None:  # Claude refuses thinking together with a forced tool
        assert "additionalModelRequestFields" not in request


def test_tool_choice_none_sends_no_tools_and_keeps_history_as_text() -> None:
    body = fixture_body()
    body["tool_choice"] = "none"
    request, _ = build(body)
    assert "toolConfig" not in request
    dumped = json.dumps(request["messages"])
    assert "toolUse" not in dumped and "toolResult" not in dumped
    assert "exec_command" in dumped and "Process exited with code 0" in dumped


def test_allowed_tools_restricts_the_offer() -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "exec_command"}]}
    request, _ = build(codex_body(user("hi"), tool_choice=choice))
    names = [tool["toolSpec"]["name"] for tool in request["toolConfig"]["tools"] if "toolSpec" in tool]
    assert names == ["exec_command"]
    assert request["toolConfig"]["toolChoice"] == {"any": {}}


def test_namespaced_and_oddly_named_tools_round_trip() -> None:
    additional = {
        "type": "additional_tools",
        "tools": [
            {
                "type": "namespace",
                "name": "mcp__docs__",
                "description": "Docs server",
                "tools": [
                    {"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}},
                    {"type": "custom", "name": "render"},
                ],
            },
            {"type": "function", "name": "container.exec", "parameters": {"type": "object", "properties": {}}},
            {"type": "image_generation"},
        ],
    }
    body = codex_body(
        user("find it"),
        {"type": "function_call", "call_id": "call_9", "name": "search", "namespace": "mcp__docs__", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_9", "output": [{"type": "input_text", "text": "found"}]},
    )
    body["input"].insert(0, additional)
    request, options = build(body)
    assert options.dropped_tools == ["web_search", "image_generation"]
    names = [tool["toolSpec"]["name"] for tool in request["toolConfig"]["tools"] if "toolSpec" in tool]
    odd = next(name for name in names if name.startswith("container_exec"))
    assert names == ["exec_command", "apply_patch", "mcp__docs__search", "mcp__docs__render", odd]
    assert request["messages"][1]["content"][0]["toolUse"]["name"] == "mcp__docs__search"
    assert request["messages"][2]["content"][0]["toolResult"]["content"] == [{"text": "found"}]

    tools = bedrock.tool_names(body)
    answer = converse_body(
        [
            ToolUse("tooluse_1", "mcp__docs__search", {"q": "x"}),
            ToolUse("tooluse_2", "mcp__docs__render", {"input": "raw"}),
            ToolUse("tooluse_3", odd, {}),
        ],
        "tool_use",
    )
    items = valid_response(bedrock.translate_response(answer, context(), tools=tools)).model_dump()["output"]
    assert (items[0]["type"], items[0]["name"], items[0]["namespace"]) == ("function_call", "search", "mcp__docs__")
    assert (items[1]["type"], items[1]["name"], items[1]["input"]) == ("custom_tool_call", "render", "raw")
    assert (items[2]["name"], items[2]["arguments"]) == ("container.exec", "{}")


def test_unanswered_calls_and_orphan_results_are_repaired() -> None:
    body = codex_body(
        user("go"),
        {"type": "function_call", "call_id": "call_lost", "name": "exec_command", "arguments": "not json"},
        user("never mind"),
        {"type": "function_call_output", "call_id": "call_unknown", "output": "stray"},
    )
    request, _ = build(body)
    assert request["messages"][1]["content"][0]["toolUse"]["input"] == {"arguments": "not json"}
    answer = request["messages"][2]["content"]
    assert answer[0]["toolResult"]["toolUseId"] == "call_lost"
    assert any("stray" in block.get("text", "") for block in answer)


def test_foreign_call_ids_are_rewritten_consistently() -> None:
    body = codex_body(
        user("go"),
        {"type": "function_call", "call_id": "call/with spaces!", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call/with spaces!", "output": "ok"},
    )
    request, _ = build(body)
    use_id = request["messages"][1]["content"][0]["toolUse"]["toolUseId"]
    assert use_id == request["messages"][2]["content"][0]["toolResult"]["toolUseId"] != "call/with spaces!"


def test_json_schema_output_becomes_structured_output() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    text = {"format": {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}}
    request, _ = build(codex_body(user("hi"), text=text))
    assert request["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "reply"}},
        }
    }


def test_the_fake_bedrock_validator_catches_mistakes() -> None:
    """The request checks above can fail: each of these mistakes is refused."""
    good, _ = build(codex_body(user("hi")))
    mistakes = {
        "unknown key": dict(good, temperature=0.5),
        "wrong type": dict(good, inferenceConfig={"maxTokens": "8192"}),
        "broken union": dict(good, messages=[{"role": "user", "content": [{"text": "a", "image": {}}]}]),
        "model in body": dict(good, modelId=CLAUDE),
        "blank text": dict(good, messages=[{"role": "user", "content": [{"text": " "}]}]),
        "unpaired toolUse": dict(
            good,
            messages=[
                {"role": "user", "content": [{"text": "a"}]},
                {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t1", "name": "exec_command", "input": {}}}],
                },
            ],
        ),
        "bad tool name": dict(good, toolConfig={"tools": [{"toolSpec": {"name": "a.b", "inputSchema": {"json": {}}}}]}),
    }
    for label, body in mistakes.items():
        assert request_errors(body, CLAUDE, stream=True), label


# --------------------------------------------------------------------------------------------
# Non-streamed answers
# --------------------------------------------------------------------------------------------


def test_converse_answer_becomes_a_response() -> None:
    answer = converse_body(
        [
            Reasoning("Let me think.", "sig-abc"),
            Text("Patching now."),
            ToolUse("tooluse_a", "exec_command", {"cmd": "ls -la"}),
            ToolUse("tooluse_b", "apply_patch", {"input": PATCH}),
        ],
        "tool_use",
        usage(input_tokens=100, output_tokens=50, cache_read=1000, cache_write=200),
    )
    response = bedrock.translate_response(answer, context(), upstream_model=CLAUDE)
    parsed = valid_response(response)
    assert parsed.id == "resp_abc123" and parsed.status == "completed" and parsed.model == "codex-claude"
    reasoning, message, call, patch = response["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert open_reasoning(reasoning["encrypted_content"], PROVIDER, CLAUDE) == {
        "block": {"reasoningText": {"text": "Let me think.", "signature": "sig-abc"}}
    }
    assert message["content"][0]["text"] == "Patching now."
    assert (call["type"], call["call_id"], json.loads(call["arguments"])) == (
        "function_call",
        "tooluse_a",
        {"cmd": "ls -la"},
    )
    assert (patch["type"], patch["call_id"], patch["input"]) == ("custom_tool_call", "tooluse_b", PATCH)
    assert response["usage"] == {
        "input_tokens": 1300,
        "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 200},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1350,
    }


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        ("end_turn", "completed", None),
        ("tool_use", "completed", None),
        ("stop_sequence", "completed", None),
        ("guardrail_intervened", "completed", None),
        ("content_filtered", "completed", None),
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
        ("malformed_tool_use", "failed", None),
    ],
)
def test_stop_reasons(stop: str, status: str, reason: str | None) -> None:
    response = valid_response(bedrock.translate_response(converse_body([Text("x")], stop), context()))
    assert response.status == status
    assert (response.incomplete_details.reason if response.incomplete_details else None) == reason
    assert (response.error.code if response.error else None) == ("server_error" if status == "failed" else None)


def test_redacted_reasoning_round_trips_through_codex() -> None:
    answer = converse_body([Redacted(b"\x00opaque\xff"), Text("ok")])
    response = valid_response(bedrock.translate_response(answer, context(), upstream_model=CLAUDE)).model_dump(
        exclude_none=True
    )
    reasoning = response["output"][0]
    assert reasoning["summary"] == []
    body = codex_body(user("hi"), reasoning, response["output"][1] | {"type": "message"}, user("again"))
    request, _ = build(body)
    assert request["messages"][1]["content"][0] == {
        "reasoningContent": {"redactedContent": base64.b64encode(b"\x00opaque\xff").decode()}
    }


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


def full_script() -> list[dict[str, Any]]:
    return stream_events(
        [
            Reasoning("First I look at the files, then I patch.", "sig-xyz"),
            Text("Here is the plan: run ls, then patch.\n"),
            ToolUse("tooluse_ls", "exec_command", {"cmd": "ls -la"}),
            ToolUse("tooluse_patch", "apply_patch", {"input": PATCH}),
        ],
        "tool_use",
        usage(input_tokens=10, output_tokens=70, cache_read=2000, cache_write=5),
    )


def test_botocore_decodes_the_fakes_event_stream() -> None:
    """Proof that the fake's encoder speaks real AWS event-stream: botocore's buffer reads the
    frames and botocore's ConverseStream parser turns them into the scripted events."""
    events = full_script() + [{"throttlingException": {"message": "slow down"}}]
    raw = encode_stream(events)
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    messages = list(buffer)
    assert len(messages) == len(events)
    for message, event in zip(messages, events, strict=True):
        name = next(iter(event))
        kind = ":exception-type" if name.endswith("Exception") else ":event-type"
        assert message.headers[kind] == name
        payload = json.loads(message.payload)
        assert {k: v for k, v in payload.items() if k != "p"} == event[name]

    class Raw:
        def stream(self) -> Iterator[bytes]:
            yield encode_stream(full_script())

    parsed = list(EventStream(Raw(), STREAM_EVENTS, botocore.parsers.EventStreamJSONParser(), "ConverseStream"))
    assert parsed == full_script()


def test_decoder_yields_the_events_bedrock_sent() -> None:
    events = full_script() + [{"modelStreamErrorException": {"message": "boom", "originalStatusCode": 500}}]
    raw = encode_stream(events)
    decoder = bedrock.EventStreamDecoder()
    decoded = [event for start in range(0, len(raw), 5) for event in decoder.feed(raw[start : start + 5])]
    assert decoded == events  # the "p" padding is gone, blobs stay base64 text


def botocore_events(raw: bytes, size: int) -> list[dict[str, Any]]:
    """What the decoder gave when botocore's EventStreamBuffer read the frames (before it read
    them itself): the reference the decoder's own frame reading must agree with."""
    from botocore.eventstream import ParserError

    buffer, events = EventStreamBuffer(), []
    for start in range(0, len(raw), size):
        buffer.add_data(raw[start : start + size])
        try:
            for message in buffer:
                kind, payload = message.headers.get(":message-type"), json.loads(message.payload or b"{}")
                if kind == "event":
                    payload.pop("p", None)
                    events.append({message.headers[":event-type"]: payload})
                elif kind == "exception":
                    events.append({message.headers[":exception-type"]: payload})
        except ParserError as exc:
            message = f"corrupt event-stream frame from Bedrock ({type(exc).__name__})"
            return [*events, {"internalServerException": {"message": message}}]
    return events


def header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def frame(headers: bytes, payload: bytes, total_delta: int = 0) -> bytes:
    import struct
    import zlib

    prelude = struct.pack("!II", 12 + len(headers) + len(payload) + 4 + total_delta, len(headers))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + headers + payload
    return message + struct.pack("!I", zlib.crc32(message))


TYPED_HEADERS = (  # every header value type of the encoding, as botocore reads them
    header(":message-type", 7, b"\x00\x05event")
    + header(":event-type", 7, b"\x00\x10contentBlockStop")
    + header("yes", 0, b"") + header("no", 1, b"") + header("byte", 2, b"\xff") + header("short", 3, b"\x01\x02")
    + header("int", 4, b"\x00\x00\x01\x00") + header("long", 5, b"\x00" * 7 + b"\x05")
    + header("bytes", 6, b"\x00\x02\xfe\xfd") + header("time", 8, b"\x00" * 6 + b"\x03\xe8")
    + header("uuid", 9, bytes(range(16)))
)  # fmt: skip


@pytest.mark.parametrize(
    "stream",
    [
        encode_stream(full_script() + [{"throttlingException": {"message": "slow down"}}]),
        frame(TYPED_HEADERS, b'{"contentBlockIndex":0}') + encode_stream(full_script()[-2:]),
        frame(header(":message-type", 7, b"\x00\x05event") * 2, b"{}"),  # a header twice
        frame(b"", b"x" * 10, total_delta=24 * 1024 * 1024),  # a payload over botocore's limit
        bytes(range(12)) + encode_stream(full_script()),  # a bad prelude CRC
    ],
    ids=["script", "typed-headers", "duplicate-header", "payload-limit", "prelude-crc"],
)
def test_decoder_reads_frames_as_botocore_does(stream: bytes) -> None:
    for size in (1, 7, 64, len(stream)):
        decoder = bedrock.EventStreamDecoder()
        decoded = [
            event for start in range(0, len(stream), size) for event in decoder.feed(stream[start : start + size])
        ]
        assert decoded == botocore_events(stream, size), size


def test_a_frame_shorter_than_its_headers_is_corrupt() -> None:
    """botocore's buffer raised struct.error on it (out of the decoder, failing the chunk): now the
    corrupt frame it is, failing the answer like any other."""
    stream = encode_stream(full_script()[:1]) + frame(header(":message-type", 7, b"\x00\x05event"), b"{}", -40)
    decoded = bedrock.EventStreamDecoder().feed(stream)
    assert decoded == [
        full_script()[0],
        {"internalServerException": {"message": "corrupt event-stream frame from Bedrock (ParserError)"}},
    ]


def test_decoder_agrees_with_botocore_on_every_corrupted_byte() -> None:
    stream = encode_stream(full_script()[:3])
    for at in range(len(stream)):
        corrupt = bytearray(stream)
        corrupt[at] ^= 0x41
        for size in (5, len(stream)):
            decoder = bedrock.EventStreamDecoder()
            pieces = range(0, len(corrupt), size)
            decoded = [event for start in pieces for event in decoder.feed(bytes(corrupt[start : start + size]))]
            assert decoded == botocore_events(bytes(corrupt), size), (at, size)


def test_sign_request_headers() -> None:
    endpoint = BedrockProvider(kind="bedrock", region="eu-west-1").endpoint
    url, _ = bedrock.request_target(endpoint, CLAUDE, stream=True)
    assert url == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream"
    )
    headers = bedrock.sign_request(url, b"{}", "eu-west-1", ACCESS_KEY, SECRET_KEY, None)
    assert set(headers) == {"content-type", "x-amz-date", "authorization"}
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, " in headers["authorization"]
    assert SECRET_KEY not in json.dumps(headers)


def test_full_stream_translates_at_every_chunking() -> None:
    raw = encode_stream(full_script())
    reference, translator = translate_stream(raw)
    rng = random.Random(7)
    splittings = [list(range(1, len(raw)))]  # every byte on its own
    splittings += [sorted(rng.sample(range(1, len(raw)), k)) for k in (3, 17, 150)]
    for cuts in splittings:
        events, _ = translate_stream(raw, cuts)
        assert events == reference

    final = reference[-1]
    assert final["type"] == "response.completed"
    reasoning, message, call, patch = final["response"]["output"]
    assert reasoning["summary"][0]["text"] == "First I look at the files, then I patch."
    assert open_reasoning(reasoning["encrypted_content"], PROVIDER, CLAUDE) == {
        "block": {"reasoningText": {"text": "First I look at the files, then I patch.", "signature": "sig-xyz"}}
    }
    assert message["content"][0]["text"] == "Here is the plan: run ls, then patch.\n"
    assert (call["name"], json.loads(call["arguments"]), call["call_id"]) == (
        "exec_command",
        {"cmd": "ls -la"},
        "tooluse_ls",
    )
    assert (patch["type"], patch["input"]) == ("custom_tool_call", PATCH)
    kinds = [event["type"] for event in reference]
    assert kinds.count("response.custom_tool_call_input.delta") > 3  # shown while it is written
    assert "response.reasoning_summary_text.delta" in kinds and "response.output_text.delta" in kinds
    assert translator.outcome == "completed"
    assert translator.usage == bedrock.Usage(
        input_tokens=2015, cached_tokens=2000, output_tokens=70, reasoning_tokens=0
    )
    assert final["response"]["usage"]["input_tokens_details"] == {"cached_tokens": 2000, "cache_write_tokens": 5}


def test_custom_input_decoding_survives_any_split_of_escapes() -> None:
    raw_json = json.dumps({"input": PATCH})  # ensure_ascii: the emoji travels as a surrogate pair
    assert "\\ud83d\\ude00" in raw_json
    for cut in range(1, len(raw_json)):
        for second in (cut + 1, cut + 5):
            pieces = [raw_json[:cut], raw_json[cut:second], raw_json[second:]]
            events: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
            start = {"toolUse": {"toolUseId": "t1", "name": "apply_patch"}}
            events.append({"contentBlockStart": {"contentBlockIndex": 0, "start": start}})
            events += [
                {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"toolUse": {"input": p}}}} for p in pieces if p
            ]
            events += [
                {"contentBlockStop": {"contentBlockIndex": 0}},
                {"messageStop": {"stopReason": "tool_use"}},
                {"metadata": {"usage": usage(), "metrics": {"latencyMs": 1}}},
            ]
            translator = bedrock.StreamTranslator(context())
            out = [o for event in events for o in translator.feed(event)]
            deltas = [o["delta"] for o in out if o["type"] == "response.custom_tool_call_input.delta"]
            assert "".join(deltas) == PATCH
            if 12 <= cut < len(raw_json) - 3:  # the value is shown in pieces as it arrives
                assert len(deltas) >= 2


def test_tool_call_without_arguments_streams_an_empty_object() -> None:
    raw = encode_stream(stream_events([ToolUse("tooluse_goal", "get_goal", {})], "tool_use"))
    events, _ = translate_stream(raw)
    assert all_items(events)[0]["arguments"] == "{}"


def test_stream_max_tokens_is_incomplete() -> None:
    events, translator = translate_stream(encode_stream(stream_events([Text("cut sh")], "max_tokens")))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert translator.outcome == "incomplete" and translator.usage is not None


@pytest.mark.parametrize(
    ("exception", "message", "code"),
    [
        ("throttlingException", "Too many requests, please wait before trying again.", "rate_limit_exceeded"),
        ("validationException", "Input is too long for requested model.", "context_length_exceeded"),
        ("validationException", "messages: text content blocks must be non-empty", "invalid_prompt"),
        ("modelStreamErrorException", "Model stream error", "server_error"),
        ("serviceUnavailableException", "Bedrock is unable to process your request.", "server_error"),
        ("internalServerException", "internal", "server_error"),
    ],
)
def test_error_event_mid_stream_fails_the_response(exception: str, message: str, code: str) -> None:
    script = stream_events([Text("Half an answer that goes on")])
    script = script[:4] + [{exception: {"message": message}}] + script[4:]  # later events are ignored
    events, translator = translate_stream(encode_stream(script))
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"]["code"] == code
    assert message in failed["response"]["error"]["message"]
    assert translator.outcome == "failed"
    assert translator.finish() == []
    assert not any(event["type"] == "response.output_item.done" for event in events)


def test_stream_cut_before_the_end_fails_instead_of_completing() -> None:
    script = full_script()
    for keep in (0, 1, 5, len(script) - 2):
        raw = encode_stream(script[:keep])
        raw += encode_stream(script[keep : keep + 1])[:9]  # and half a frame
        events, translator = translate_stream(raw)
        assert events[-1]["type"] == "response.failed"
        assert events[-1]["response"]["error"]["code"] == "server_error"
        assert "ended" in events[-1]["response"]["error"]["message"]
        assert translator.outcome == "failed"


def test_corrupt_frame_fails_the_response() -> None:
    raw = bytearray(encode_stream(full_script()))
    raw[40] ^= 0xFF  # inside the first frame: its CRC no longer matches
    events, _ = translate_stream(bytes(raw))
    assert events[-1]["type"] == "response.failed"
    assert "corrupt" in events[-1]["response"]["error"]["message"]


def test_reasoning_from_a_stream_is_replayed_next_turn() -> None:
    events, _ = translate_stream(encode_stream(full_script()), tools=bedrock.tool_names(codex_body()))
    items = all_items(events)
    outputs = [
        {"type": "function_call_output", "call_id": "tooluse_ls", "output": "a.txt"},
        {"type": "custom_tool_call_output", "call_id": "tooluse_patch", "output": "Done!"},
    ]
    next_turn = codex_body(user("do it"), *items, *outputs)
    request, _ = build(next_turn)
    assistant = request["messages"][1]["content"]
    assert assistant[0] == {
        "reasoningContent": {
            "reasoningText": {"text": "First I look at the files, then I patch.", "signature": "sig-xyz"}
        }
    }
    assert assistant[3]["toolUse"] == {"toolUseId": "tooluse_patch", "name": "apply_patch", "input": {"input": PATCH}}
    assert "thinking" in request["additionalModelRequestFields"]
    # the same history sent to another provider's deployment carries no reasoning
    options = TranslateOptions(provider_name="bedrock-eu")
    other = bedrock.build_request(next_turn, CLAUDE, options)
    assert "reasoningContent" not in json.dumps(other)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "code"),
    [
        (429, {"message": "Too many requests, please wait before trying again."}, 429, "rate_limit_exceeded"),
        (400, {"message": "Input is too long for requested model."}, 400, "context_length_exceeded"),
        (400, {"message": "prompt is too long: 215000 tokens > 200000 maximum"}, 400, "context_length_exceeded"),
        (400, {"message": "Malformed input request: extraneous key [foo]"}, 400, "invalid_request_error"),
        (403, {"message": "The security token included in the request is invalid."}, 502, "upstream_auth_failed"),
        (
            403,
            {"message": f"User: arn:aws:iam::123:user/x key {ACCESS_KEY} is not authorized"},
            502,
            "upstream_auth_failed",
        ),
        (
            404,
            {"message": "Could not resolve the foundation model from the model identifier."},
            502,
            "upstream_model_not_found",
        ),
        (408, {"message": "Model has timed out in processing the request."}, 504, "server_error"),
        (424, {"message": "The model returned an error."}, 502, "server_error"),
        (500, {"message": "Internal server error"}, 502, "server_error"),
        (503, {"message": "Bedrock is unable to process your request."}, 503, "server_error"),
    ],
)
def test_translate_error(status: int, body: dict[str, Any], expected_status: int, code: str) -> None:
    got_status, got = bedrock.translate_error(status, json.dumps(body).encode())
    assert got_status == expected_status
    assert set(got) == {"error"} and set(got["error"]) == {"message", "type", "code", "param"}
    assert got["error"]["code"] == code
    if code == "upstream_auth_failed":
        assert "credentials" in got["error"]["message"] and ACCESS_KEY not in json.dumps(got)
    else:
        assert body["message"] in got["error"]["message"]


def test_translate_error_with_a_body_that_is_not_json() -> None:
    status, body = bedrock.translate_error(502, b"<html>Bad Gateway</html>")
    assert status == 502 and body["error"]["code"] == "server_error" and "Bad Gateway" in body["error"]["message"]


# --------------------------------------------------------------------------------------------
# Over HTTP, against the fake Bedrock
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBedrock]:
    server = FakeBedrock().start()
    yield server
    server.stop()


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, list[bytes], bool]:
    """(status, body chunks as they arrived, whether the connection broke)."""

    async def go() -> tuple[int, list[bytes], bool]:
        # encoded=True: send the path exactly as signed (%3A in the model id stays %3A)
        target = yarl.URL(url, encoded=True)
        async with aiohttp.ClientSession() as session, session.post(target, data=body, headers=headers) as response:
            chunks: list[bytes] = []
            try:
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
            except aiohttp.ClientPayloadError:
                return response.status, chunks, True
            return response.status, chunks, False

    return asyncio.run(go())


def signed(
    fake: FakeBedrock, body: dict[str, Any], stream: bool, **credentials: str
) -> tuple[str, dict[str, str], bytes]:
    raw = json.dumps(body, separators=(",", ":")).encode()
    url, headers = bedrock.request_target(fake.url, CLAUDE, stream)
    keys = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "session_token": None} | credentials
    headers |= bedrock.sign_request(url, raw, REGION, keys["access_key"], keys["secret_key"], keys["session_token"])
    return url, headers, raw


def test_signed_stream_over_http(fake: FakeBedrock) -> None:
    codex = fixture_body()
    options = TranslateOptions(provider_name=PROVIDER)
    request = bedrock.build_request(codex, CLAUDE, options)
    fake.script(Reply(events=full_script()))
    url, headers, raw = signed(fake, request, stream=True)
    status, chunks, broken = post(url, headers, raw)
    assert status == 200 and not broken, fake.invalid
    received = fake.received[-1]
    assert received.model_id == CLAUDE and "%3A" in received.raw_path and received.stream
    assert received.body == raw and fake.invalid == []
    # The network may coalesce the fake's writes into one read; feed the decoder pieces that cut
    # every frame in the middle, as a slow link would, whatever arrived.
    body = b"".join(chunks)
    pieces = [body[start : start + 7] for start in range(0, len(body), 7)]
    decoder = bedrock.EventStreamDecoder()
    translator = bedrock.StreamTranslator(context(), tools=bedrock.tool_names(codex), upstream_model=CLAUDE)
    out = [o for piece in pieces for event in decoder.feed(piece) for o in translator.feed(event)]
    out += translator.finish()
    for event in out:
        strict_event(event)
    check_stream(out)
    assert out[-1]["type"] == "response.completed"


def test_signed_converse_with_session_token(fake: FakeBedrock) -> None:
    fake.script(Reply(body=converse_body([Text("hello there")], token_usage=usage(7, 3))))
    request, _ = build(codex_body(user("hi")))
    url, headers, raw = signed(fake, request, stream=False, session_token="FwoGZXIvYXdzEXAMPLETOKEN")
    assert headers["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLETOKEN"
    status, chunks, _ = post(url, headers, raw)
    assert status == 200, b"".join(chunks)
    answer = json.loads(b"".join(chunks))
    parsed = botocore.parsers.RestJSONParser().parse(
        {"status_code": 200, "headers": {}, "body": b"".join(chunks)},
        bedrock_output_shape(),
    )
    assert parsed["output"]["message"]["content"] == [{"text": "hello there"}]
    response = valid_response(bedrock.translate_response(answer, context()))
    assert response.output_text == "hello there" and response.usage is not None and response.usage.input_tokens == 7


def bedrock_output_shape() -> Any:
    from fakes.bedrock_upstream import CONVERSE_OUTPUT

    return CONVERSE_OUTPUT


def test_api_key_auth_over_http(fake: FakeBedrock) -> None:
    request, _ = build(codex_body(user("hi")))
    raw = json.dumps(request).encode()
    url, headers = bedrock.request_target(fake.url, CLAUDE, stream=False)
    status, _, _ = post(url, headers | bedrock.auth_headers(API_KEY), raw)
    assert status == 200
    status, chunks, _ = post(url, headers | bedrock.auth_headers("wrong-key"), raw)
    assert status == 403
    mapped_status, mapped = bedrock.translate_error(status, b"".join(chunks))
    assert mapped_status == 502 and mapped["error"]["code"] == "upstream_auth_failed"


def test_wrong_secret_or_tampered_body_is_refused(fake: FakeBedrock) -> None:
    request, _ = build(codex_body(user("hi")))
    url, headers, raw = signed(fake, request, stream=False, secret_key="not-the-secret")
    status, _, _ = post(url, headers, raw)
    assert status == 403
    url, headers, raw = signed(fake, request, stream=False)
    status, _, _ = post(url, headers, raw.replace(b'"hi"', b'"ho"'))
    assert status == 403
    # the model id percent-encoding is part of what is signed
    status, _, _ = post(url.replace("%3A", ":"), headers, raw)
    assert status == 403


def test_invalid_body_is_refused_by_the_fake(fake: FakeBedrock) -> None:
    request, _ = build(codex_body(user("hi")))
    before = len(fake.invalid)
    url, headers, raw = signed(fake, dict(request, store=False), stream=False)
    status, chunks, _ = post(url, headers, raw)
    assert status == 400 and "unknown key 'store'" in b"".join(chunks).decode()
    assert len(fake.invalid) > before
    fake.invalid.clear()


def test_http_errors_and_a_cut_connection(fake: FakeBedrock) -> None:
    request, _ = build(codex_body(user("hi")))
    fake.script(Reply(status=429, message="Too many requests, please wait before trying again."))
    url, headers, raw = signed(fake, request, stream=True)
    status, chunks, _ = post(url, headers, raw)
    assert bedrock.translate_error(status, b"".join(chunks))[0] == 429

    fake.script(Reply(events=full_script(), cut_after=6))
    url, headers, raw = signed(fake, request, stream=True)
    status, chunks, broken = post(url, headers, raw)
    assert status == 200 and broken
    decoder = bedrock.EventStreamDecoder()
    translator = bedrock.StreamTranslator(context())
    out = [o for chunk in chunks for event in decoder.feed(chunk) for o in translator.feed(event)]
    out += translator.finish()
    for event in out:
        strict_event(event)
    check_stream(out)
    assert out[-1]["type"] == "response.failed" and translator.outcome == "failed"
    assert fake.invalid == []


def test_scripted_answers_are_checked_against_the_service_model() -> None:
    with pytest.raises(AssertionError):
        stream_events([Text("x")], "finished")  # not a Bedrock stopReason
    assert shape_errors(STREAM_EVENTS.members["metadata"], {"usage": usage()}) != []  # metrics missing


# --------------------------------------------------------------------------------------------
# The family (ProviderFamily contract), as the gateway drives it
# --------------------------------------------------------------------------------------------


def family_over(fake: FakeBedrock, **settings: Any) -> BedrockFamily:
    return BedrockFamily(BedrockProvider(kind="bedrock", region=REGION, base_url=fake.url, **settings))


def attempt(family: BedrockFamily, body: dict[str, Any], secrets: SecretResolver) -> tuple[int, bytes, Any]:
    """One attempt: prepare, credentials over the prepared bytes, POST exactly them."""
    prepared = family.prepare(body, CLAUDE, PROVIDER)
    headers = prepared.headers | asyncio.run(family.credentials(prepared, 0, secrets))
    assert prepared.body is not None
    status, chunks, broken = post(prepared.url, headers, prepared.body)
    assert not broken
    return status, b"".join(chunks), prepared


@pytest.mark.parametrize("stream", [True, False])
def test_family_signs_exactly_what_it_sends_and_answers_alike(
    fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    monkeypatch.setenv("CG_TEST_AK", ACCESS_KEY)
    monkeypatch.setenv("CG_TEST_SK", SECRET_KEY)
    family = family_over(
        fake, access_key_id=SecretRef(value="env:CG_TEST_AK"), secret_access_key=SecretRef(value="env:CG_TEST_SK")
    )
    assert family.key_weights() == [] and family.price_id() == "aws"
    blocks = [
        Reasoning("Thinking.", "sig-1"),
        Text("Let me look."),
        ToolUse("tooluse_f", "apply_patch", {"input": PATCH}),
    ]
    if stream:
        fake.script(Reply(events=stream_events(blocks, "tool_use")))
    else:
        fake.script(Reply(body=converse_body(blocks, "tool_use")))
    body = codex_body(user("patch it"), stream=stream, tool_choice="required", parallel_tool_calls=False)
    status, raw, prepared = attempt(family, body, SecretResolver())
    assert status == 200 and fake.invalid == [], fake.invalid
    assert fake.received[-1].body == prepared.body and fake.received[-1].stream is stream
    ctx = context()
    if stream:
        bridge = family.stream(prepared, ctx)
        events = decode_events(bridge.feed(raw) + bridge.finish())
        response = events[-1]["response"]
    else:
        response = family.whole(prepared, ctx, raw)
        # The whole answer is the stream translator's: the same answer streamed gives the same response.
        bridge = family.stream(prepared, ctx)
        streamed = decode_events(bridge.feed(encode_stream(stream_events(blocks, "tool_use"))) + bridge.finish())
        assert streamed[-1]["response"] == response
    parsed = valid_response(response)
    assert [item.type for item in parsed.output] == ["reasoning", "message", "custom_tool_call"]
    assert response["output"][2]["input"] == PATCH
    assert (response["tool_choice"], response["parallel_tool_calls"], response["tools"]) == (
        "required",
        False,
        body["tools"],
    )


def test_family_uses_the_aws_default_credentials(
    fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    family = family_over(fake)
    prepared = family.prepare(codex_body(user("hi"), stream=False), CLAUDE, PROVIDER)
    with pytest.raises(SecretUnavailable):
        asyncio.run(family.credentials(prepared, 0, SecretResolver()))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    fake.script(Reply(body=converse_body([Text("from the environment")])))
    status, raw, prepared = attempt(family, codex_body(user("hi"), stream=False), SecretResolver())
    assert status == 200 and fake.invalid == [], raw
    assert family.whole(prepared, context(), raw)["output"][0]["content"][0]["text"] == "from the environment"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    status, raw, _ = attempt(family, codex_body(user("hi"), stream=False), SecretResolver())
    assert family.error(status, raw)[1]["error"]["code"] == "upstream_auth_failed"


def test_the_registry_serves_bedrock_from_the_package() -> None:
    family = registry.family_for(BedrockProvider(kind="bedrock", region="us-east-1"))
    assert type(family) is BedrockFamily and type(family).__module__ == "codexgate.providers.bedrock.family"
    assert {"authorization", "x-amz-security-token"} <= set(registry.SECRET_HEADERS)


def decode_events(data: bytes) -> list[dict[str, Any]]:
    events = [json.loads(payload) for _, payload in SSEParser().feed(data)]
    for event in events:
        strict_event(event)
    return events


def test_family_with_bedrock_api_keys_weighs_them_and_sends_the_chosen_one(
    fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CG_TEST_BR_KEY", API_KEY)
    monkeypatch.setenv("CG_TEST_BR_OLD", "revoked-bedrock-key")
    keys = [SecretRef(value="env:CG_TEST_BR_OLD", weight=1), SecretRef(value="env:CG_TEST_BR_KEY", weight=3)]
    family = family_over(fake, keys=keys)
    assert family.key_weights() == [1, 3]
    secrets = SecretResolver()
    prepared = family.prepare(codex_body(user("hi"), stream=False), CLAUDE, PROVIDER)
    assert asyncio.run(family.credentials(prepared, 1, secrets)) == {"authorization": f"Bearer {API_KEY}"}
    fake.script(Reply(body=converse_body([Text("keyed")])))
    headers = prepared.headers | asyncio.run(family.credentials(prepared, 1, secrets))
    assert prepared.body is not None
    status, chunks, _ = post(prepared.url, headers, prepared.body)
    assert status == 200 and family.whole(prepared, context(), b"".join(chunks))["status"] == "completed"
    refused = prepared.headers | asyncio.run(family.credentials(prepared, 0, secrets))
    status, chunks, _ = post(prepared.url, refused, prepared.body)
    assert family.error(status, b"".join(chunks))[1]["error"]["code"] == "upstream_auth_failed"
    with pytest.raises(ValueError, match="not both"):
        BedrockProvider(
            kind="bedrock", region=REGION, keys=keys,
            access_key_id=SecretRef(value="env:A"), secret_access_key=SecretRef(value="env:B"),
        )  # fmt: skip


def test_every_stop_reason_and_stream_exception_of_the_service_model_is_mapped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """botocore's service model lists what Bedrock may send; a stop reason or exception event
    added there must get a deliberate mapping here, not the 'unknown' fallback."""
    from fakes.bedrock_upstream import SERVICE

    from codexgate.providers.bedrock.errors import STREAM_ERRORS

    stop_reasons = SERVICE.shape_for("StopReason").enum
    for stop in stop_reasons:
        caplog.clear()
        events, translator = translate_stream(encode_stream(stream_events([Text("x")], stop)))
        assert translator.outcome in ("completed", "incomplete", "failed")
        assert "unknown Bedrock stopReason" not in caplog.text, stop
    output = SERVICE.operation_model("ConverseStream").output_shape.members["stream"]
    exceptions = {name for name, shape in output.members.items() if shape.metadata.get("exception")}
    assert exceptions and exceptions <= set(STREAM_ERRORS)
