"""Chat Completions hosts and Azure OpenAI: translators checked against the openai SDK's types.

Requests are validated key by key against `CompletionCreateParamsStreaming/NonStreaming` (by the
fake host, `fakes.chat_upstream`), answers against `Response` / `ResponseStreamEvent` (strictly,
`fakes.sdk_validation`); the host's answers the translators read are themselves SDK-valid chunks.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import random
import typing
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fakes.chat_upstream import (
    REASONING_REPLAY_KEYS,
    FakeChatHost,
    Reply,
    answer_problems,
    chunk,
    completion,
    request_problems,
    text_chunks,
    tool_call_chunks,
    usage,
)
from fakes.sdk_validation import valid_response, valid_stream_event
from openai.types.responses import ResponseError
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter

from codexgate.policies.schema import AzureProvider, ChatProvider, SecretRef
from codexgate.providers import chat as cc
from codexgate.providers.base import TranslateOptions, open_reasoning, seal_reasoning
from codexgate.providers.registry import family_for
from codexgate.providers.responses import ResponseContext
from codexgate.providers.responses.jsonstring import InputStringStream
from codexgate.providers.responses.tools import CodexTool, ToolNameMap
from codexgate.secrets import SecretResolver

FIXTURE = "tests/fixtures/codex_request_tool_round_trip.json"
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# Codex understands these in `response.failed`; the SDK's `ResponseError.code` Literal lacks the
# first two (OpenAI does send them), so those are checked by name and the rest of the event by SDK.
CODEX_FAILURE_CODES = {"context_length_exceeded", "insufficient_quota", "rate_limit_exceeded", "server_error"}
SDK_ERROR_CODES = set(typing.get_args(ResponseError.model_fields["code"].annotation))
RNG_SEED = 20260101


def ctx(provider: str = "deepseek-prod", model: str = "codex-model") -> ResponseContext:
    return ResponseContext(response_id="resp_gateway_1", model=model, provider_name=provider, created_at=1_800_000_000)


def options(provider: str = "deepseek-prod") -> TranslateOptions:
    return TranslateOptions(provider_name=provider)


def fixture_body() -> dict[str, Any]:
    with open(FIXTURE) as handle:
        return typing.cast(dict[str, Any], json.load(handle))


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Runs a command.",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files. This is a FREEFORM tool.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" LF'},
}


def codex_body(*items: dict[str, Any], tools: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "codex-model",
        "stream": True,
        "instructions": "You are Codex.",
        "input": list(items),
        "tools": [EXEC, APPLY_PATCH] if tools is None else tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
    }
    body.update(extra)
    return body


def assert_valid_request(chat: dict[str, Any], extensions: frozenset[tuple[str, str]] = frozenset()) -> None:
    problems = request_problems(chat, extensions)
    assert not problems, problems


# ------------------------------------------------------------------ Responses-side validation


def check_event(event: dict[str, Any]) -> None:
    if event["type"] == "response.failed":
        code = event["response"]["error"]["code"]
        assert code in CODEX_FAILURE_CODES, code
        if code not in SDK_ERROR_CODES:
            event = copy.deepcopy(event)
            event["response"]["error"]["code"] = "server_error"
    valid_stream_event(event)


def check_response(body: dict[str, Any]) -> Any:
    if body["status"] == "failed" and body["error"]["code"] not in SDK_ERROR_CODES:
        assert body["error"]["code"] in CODEX_FAILURE_CODES
        body = dict(body, error=dict(body["error"], code="server_error"))
    return valid_response(body)


def check_stream(events: list[dict[str, Any]], context: ResponseContext) -> dict[str, Any]:
    """Every event SDK-valid; sequence numbers 0..n; one terminal event, last; each item's events
    agree on output_index and item_id; deltas add up to the `.done` texts. Returns the terminal."""
    for event in events:
        check_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    terminal = terminals[0]
    assert terminal["response"]["id"] == context.response_id
    added: dict[int, str] = {}
    done: dict[int, dict[str, Any]] = {}
    deltas: dict[int, str] = {}
    for event in events[2:-1]:
        index = event["output_index"]
        if event["type"] == "response.output_item.added":
            assert index not in added
            added[index] = event["item"]["id"]
        elif event["type"] == "response.output_item.done":
            assert added.get(index) == event["item"]["id"] and index not in done
            done[index] = event["item"]
        else:
            assert added.get(index) == event["item_id"] and index not in done, event
            if event["type"].endswith(".delta"):
                deltas[index] = deltas.get(index, "") + event["delta"]
            if event["type"] in ("response.output_text.done", "response.reasoning_summary_text.done"):
                assert deltas.get(index, "") == event["text"]
            if event["type"] == "response.function_call_arguments.done":
                assert deltas.get(index, "") == event["arguments"]
            if event["type"] == "response.custom_tool_call_input.done":
                assert deltas.get(index, "") == event["input"]
    assert sorted(added) == list(range(len(added)))
    if terminal["type"] != "response.failed":
        assert sorted(done) == sorted(added)
        assert terminal["response"]["output"] == [done[i] for i in sorted(done)]
    return terminal


def sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def pieces(raw: bytes, rng: random.Random, largest: int = 40) -> Iterator[bytes]:
    at = 0
    while at < len(raw):
        size = rng.randint(1, largest)
        yield raw[at : at + size]
        at += size


def run_stream(
    raw_parts: Any, context: ResponseContext, tools: ToolNameMap | None = None, upstream_model: str | None = None
) -> tuple[list[dict[str, Any]], cc.StreamTranslator]:
    decoder = cc.ChatStreamDecoder()
    translator = cc.StreamTranslator(context, tools=tools, upstream_model=upstream_model)
    events: list[dict[str, Any]] = []
    for part in raw_parts:
        for event in decoder.feed(part):
            events += translator.feed(event)
    events += translator.finish()
    return events, translator


# ------------------------------------------------------------------ build_request


@pytest.mark.parametrize("preset", sorted(cc.PRESETS))
def test_real_codex_request_translates_for_every_preset(preset: str) -> None:
    body = fixture_body()
    opts = options()
    chat = cc.build_request(body, "upstream-model", opts, preset=preset)
    assert_valid_request(chat)
    host = cc.PRESETS[preset]
    text = json.dumps(chat)
    assert "internal_chat_message_metadata_passthrough" not in text
    assert "client_metadata" not in chat and "prompt_cache_key" not in chat and "store" not in chat
    messages = chat["messages"]
    assert messages[0]["role"] == ("developer" if host.developer_role else "system")
    assert messages[0]["content"].startswith("You are Codex, a coding agent")
    assert "<skills_instructions>" in messages[0]["content"]  # both developer messages joined
    assert [m["role"] for m in messages[1:]] == (
        ["user", "assistant", "user"] if not host.tools else ["user", "user", "assistant", "tool"]
    )
    assert chat["model"] == "upstream-model" and chat["stream"] is True
    assert ("stream_options" in chat) == host.stream_options
    assert ("parallel_tool_calls" in chat) == (host.parallel_tool_calls and host.tools)
    assert ("max_tokens" in chat or "max_completion_tokens" in chat) == host.needs_max_tokens
    if host.reasoning_effort_values:
        assert chat["reasoning_effort"] in host.reasoning_effort_values
    else:
        assert "reasoning_effort" not in chat
    if host.tools:
        assert opts.dropped_tools == ["tool_search", "web_search"]
        names = [tool["function"]["name"] for tool in chat["tools"]]
        assert "apply_patch" in names and "exec_command" in names and "tool_search" not in names
        patch = next(t["function"] for t in chat["tools"] if t["function"]["name"] == "apply_patch")
        assert list(patch["parameters"]["properties"]) == ["input"]
        assert patch["parameters"]["required"] == ["input"]
        assert "begin_patch" in patch["parameters"]["properties"]["input"]["description"]  # the grammar
        call = messages[3]["tool_calls"][0]
        assert messages[4]["tool_call_id"] == call["id"]
        assert json.loads(call["function"]["arguments"]) == {"cmd": "ls"}
    else:
        assert "tools" not in chat and "tool_choice" not in chat
        assert "exec_command" in opts.dropped_tools and "web_search" in opts.dropped_tools
        assert "[I called the tool exec_command" in messages[2]["content"]
        assert "Process exited with code 0" in messages[3]["content"]


def test_instructions_and_developer_messages_become_one_system_message() -> None:
    body = codex_body(
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
        user("hi"),
        {"type": "message", "role": "system", "content": "Late rule."},
        tools=[],
    )
    chat = cc.build_request(body, "m", options(), preset="groq")
    assert_valid_request(chat)
    assert chat["messages"] == [
        {"role": "system", "content": "You are Codex.\n\nBe brief.\n\nLate rule."},
        {"role": "user", "content": "hi"},
    ]
    azure = cc.build_request(body, "m", options(), preset="azure")
    assert azure["messages"][0]["role"] == "developer"
    assert "tools" not in chat and "tool_choice" not in chat and "parallel_tool_calls" not in chat


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "original"},
        {"type": "input_image", "file_id": "file_123", "detail": "low"},
    ]
    chat = cc.build_request(codex_body({"type": "message", "role": "user", "content": content}), "m", options())
    assert_valid_request(chat)
    parts = chat["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this?"}
    assert parts[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
    }
    assert parts[2] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}}
    assert parts[3]["type"] == "text" and "omitted" in parts[3]["text"]


def test_custom_tool_history_and_tool_output_images() -> None:
    patch = '*** Begin Patch\n*** Add File: a.txt\n+hi "there"\n*** End Patch\n'
    body = codex_body(
        user("patch it, then look"),
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": patch},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"},
        {"type": "function_call", "call_id": "call_v", "name": "view_image", "arguments": '{"path":"a.png"}'},
        {
            "type": "function_call_output",
            "call_id": "call_v",
            "output": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}],
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is a cat."}]},
        user("thanks"),
    )
    chat = cc.build_request(body, "m", options(), preset="vllm")
    assert_valid_request(chat)
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "user", "assistant", "user"]
    call = chat["messages"][2]["tool_calls"][0]
    assert call["function"]["name"] == "apply_patch"
    assert json.loads(call["function"]["arguments"]) == {"input": patch}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "call_p", "content": "Done!"}
    images = chat["messages"][6]["content"]
    assert images[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert chat["messages"][7] == {"role": "assistant", "content": "It is a cat."}


def test_assistant_text_and_calls_of_one_turn_share_a_message() -> None:
    body = codex_body(
        user("do two things"),
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": '{"cmd":"a"}'},
        {"type": "function_call", "call_id": "c2", "name": "exec_command", "arguments": '{"cmd":"b"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"type": "function_call_output", "call_id": "c2", "output": "B"},
    )
    chat = cc.build_request(body, "m", options(), preset="groq")
    assert_valid_request(chat)
    assistant = chat["messages"][2]
    assert assistant["content"] == "On it."
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert [m.get("tool_call_id") for m in chat["messages"][3:]] == ["c1", "c2"]


def test_interrupted_and_orphaned_tool_calls_are_repaired() -> None:
    body = codex_body(
        user("go"),
        {"type": "function_call", "call_id": "lost", "name": "exec_command", "arguments": "{}"},
        user("never mind"),
        {"type": "function_call_output", "call_id": "ghost", "output": "stray"},
    )
    chat = cc.build_request(body, "m", options(), preset="groq")
    assert_valid_request(chat)
    roles = [(m["role"], m.get("tool_call_id")) for m in chat["messages"]]
    assert roles == [
        ("system", None),
        ("user", None),
        ("assistant", None),
        ("tool", "lost"),
        ("user", None),
        ("user", None),
    ]
    assert "stray" in chat["messages"][5]["content"]


def test_mistral_tool_call_ids_are_nine_alphanumerics_and_still_pair() -> None:
    body = codex_body(
        user("go"),
        {"type": "function_call", "call_id": "call_f0e92128a1be4e52", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_f0e92128a1be4e52", "output": "ok"},
        {"type": "function_call", "call_id": "Ab3dE6gH9", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "Ab3dE6gH9", "output": "ok"},
    )
    chat = cc.build_request(body, "mistral-large-latest", options(), preset="mistral")
    assert_valid_request(chat)
    first, second = chat["messages"][2]["tool_calls"][0]["id"], chat["messages"][4]["tool_calls"][0]["id"]
    assert len(first) == 9 and first.isalnum() and chat["messages"][3]["tool_call_id"] == first
    assert second == "Ab3dE6gH9"  # ids Mistral itself made pass unchanged
    assert "stream_options" not in chat


@pytest.mark.parametrize(
    ("preset", "effort", "expected"),
    [
        ("groq", "minimal", "low"),
        ("groq", "xhigh", "high"),
        ("groq", "none", None),
        ("groq", "medium", "medium"),
        ("deepseek", "medium", "high"),
        ("deepseek", "xhigh", "max"),
        ("deepseek", "minimal", "low"),
        ("openrouter", "none", "none"),
        ("azure", "xhigh", "high"),
        ("mistral", "high", None),
        ("ollama", "high", None),
    ],
)
def test_reasoning_effort_maps_to_the_nearest_accepted_value(preset: str, effort: str, expected: str | None) -> None:
    chat = cc.build_request(codex_body(user("hi"), reasoning={"effort": effort}), "m", options(), preset=preset)
    assert_valid_request(chat)
    assert chat.get("reasoning_effort") == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "exec_command"}, {"type": "function", "function": {"name": "exec_command"}}),
        ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, "required"),
        ({"type": "web_search"}, "auto"),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    chat = cc.build_request(
        codex_body(user("hi"), tool_choice=choice, parallel_tool_calls=False), "m", options(), preset="groq"
    )
    assert_valid_request(chat)
    assert chat["tool_choice"] == expected
    assert chat["parallel_tool_calls"] is False


def test_namespaced_additional_tools_are_flattened_and_collisions_renamed() -> None:
    other_exec = dict(EXEC, description="The MCP one.")
    body = codex_body(
        {
            "type": "additional_tools",
            "tools": [{"type": "namespace", "name": "mcp.files", "tools": [other_exec, {"type": "web_search"}]}],
        },
        user("hi"),
        {"type": "function_call", "call_id": "c", "name": "exec_command", "namespace": "mcp.files", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
        tools=[EXEC],
    )
    opts = options()
    chat = cc.build_request(body, "m", opts, preset="groq")
    assert_valid_request(chat)
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names == ["exec_command", "mcp_files__exec_command"]
    assert opts.dropped_tools == ["web_search"]
    assert chat["messages"][2]["tool_calls"][0]["function"]["name"] == "mcp_files__exec_command"
    tools = cc.tool_map(body)
    assert tools.resolve("mcp_files__exec_command") == CodexTool("function", "exec_command", "mcp.files")
    answer = completion(
        {
            "content": None,
            "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "mcp_files__exec_command", "arguments": "{}"}}
            ],
        },
        "tool_calls",
    )
    item = cc.translate_response(answer, ctx(), tools=tools)["output"][0]
    assert (item["name"], item["namespace"], item["call_id"]) == ("exec_command", "mcp.files", "call_9")
    check_response(cc.translate_response(answer, ctx(), tools=tools))


def test_structured_output() -> None:
    fmt = {"type": "json_schema", "name": "answer", "strict": True, "schema": {"type": "object", "properties": {}}}
    body = codex_body(user("json please"), text={"format": fmt})
    chat = cc.build_request(body, "m", options(), preset="groq")
    assert_valid_request(chat)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "strict": True, "schema": {"type": "object", "properties": {}}},
    }
    deepseek = cc.build_request(body, "m", options(), preset="deepseek")
    assert_valid_request(deepseek)
    assert deepseek["response_format"] == {"type": "json_object"}
    assert "JSON schema" in deepseek["messages"][0]["content"]
    plain = cc.build_request(codex_body(user("x"), text={"format": {"type": "text"}}), "m", options(), preset="groq")
    assert "response_format" not in plain


def test_max_tokens_default_only_where_needed() -> None:
    fireworks = cc.build_request(
        codex_body(user("x")), "m", TranslateOptions("fw", default_max_tokens=4321), preset="fireworks"
    )
    assert fireworks["max_tokens"] == 4321
    groq = cc.build_request(codex_body(user("x")), "m", options(), preset="groq")
    assert "max_tokens" not in groq and "max_completion_tokens" not in groq
    azure = cc.build_request(codex_body(user("x"), max_output_tokens=99), "m", options(), preset="azure")
    assert azure["max_completion_tokens"] == 99
    not_streamed = cc.build_request(codex_body(user("x"), stream=False), "m", options(), preset="groq")
    assert not_streamed["stream"] is False and "stream_options" not in not_streamed
    assert_valid_request(not_streamed)


def test_perplexity_turns_alternate() -> None:
    body = codex_body(
        user("one"), user("two"), {"type": "message", "role": "assistant", "content": "ok"}, user("three")
    )
    chat = cc.build_request(body, "sonar", options(), preset="perplexity")
    assert_valid_request(chat)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "user"]
    assert chat["messages"][1]["content"] == "one\n\ntwo"


# ------------------------------------------------------------------ reasoning envelopes


def reasoning_item(blob: str, text: str = "thought") -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": text}],
        "encrypted_content": blob,
    }


def tool_turn(blob: str) -> dict[str, Any]:
    return codex_body(
        user("list files"),
        reasoning_item(blob),
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
    )


def test_deepseek_reasoning_replayed_only_to_the_same_provider_and_model() -> None:
    mine = seal_reasoning("deepseek-prod", "deepseek-v4", {"reasoning_content": "I should run ls."})
    chat = cc.build_request(tool_turn(mine), "deepseek-v4", options("deepseek-prod"), preset="deepseek")
    assert_valid_request(chat, REASONING_REPLAY_KEYS)
    assert chat["messages"][2]["reasoning_content"] == "I should run ls."
    assert request_problems(chat)  # without the extension allowed the fake would refuse it

    for blob in (
        seal_reasoning("other-provider", "deepseek-v4", {"reasoning_content": "secret"}),
        seal_reasoning("deepseek-prod", "codex-model", {"reasoning_content": "secret"}),  # not the upstream
        "gAAAAABopenai-encrypted-blob",
        None,
    ):
        chat = cc.build_request(tool_turn(blob), "deepseek-v4", options("deepseek-prod"), preset="deepseek")  # type: ignore[arg-type]
        assert_valid_request(chat)  # strictly: no extension keys at all
        assert "secret" not in json.dumps(chat) and "gAAAA" not in json.dumps(chat)


def test_reasoning_not_replayed_to_hosts_that_do_not_take_it() -> None:
    mine = seal_reasoning("groq-prod", "m", {"reasoning_content": "hidden"})
    chat = cc.build_request(tool_turn(mine), "m", options("groq-prod"), preset="groq")
    assert_valid_request(chat)
    assert "hidden" not in json.dumps(chat)


def test_openrouter_reasoning_details_replayed() -> None:
    details = [{"type": "reasoning.text", "text": "plan", "signature": "sig", "index": 0}]
    mine = seal_reasoning("or", "anthropic/claude", {"reasoning_content": "plan", "reasoning_details": details})
    chat = cc.build_request(tool_turn(mine), "anthropic/claude", options("or"), preset="openrouter")
    assert_valid_request(chat, REASONING_REPLAY_KEYS)
    assert chat["messages"][2]["reasoning_details"] == details


# ------------------------------------------------------------------ translate_response


def test_translate_text_response_with_usage() -> None:
    answer = completion({"content": "Hello!"}, usage_=usage(100, 20, cached=60, reasoning=5))
    assert not answer_problems(answer, streamed=False)
    response = cc.translate_response(answer, ctx())
    check_response(response)
    assert response["status"] == "completed" and response["id"] == "resp_gateway_1"
    assert response["output"][0]["content"][0]["text"] == "Hello!"
    assert response["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 0},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 120,
    }


def test_translate_reasoning_and_calls() -> None:
    answer = completion(
        {
            "content": None,
            "reasoning_content": "Need to patch.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": json.dumps({"input": "*** Begin Patch\n"})},
                },
                {"id": "call_b", "type": "function", "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}},
            ],
        },
        "tool_calls",
    )
    answer["usage"]["prompt_cache_hit_tokens"] = 8  # DeepSeek's own counter
    answer["usage"]["prompt_tokens_details"] = None
    assert not answer_problems(answer, streamed=False)
    response = cc.translate_response(answer, ctx(), tools=cc.tool_map(codex_body()))
    check_response(response)
    reasoning, patch, call = response["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Need to patch."}]
    assert open_reasoning(reasoning["encrypted_content"], "deepseek-prod", "codex-model") == {
        "reasoning_content": "Need to patch."
    }
    scoped = cc.translate_response(answer, ctx(), upstream_model="deepseek-v4")["output"][0]["encrypted_content"]
    assert open_reasoning(scoped, "deepseek-prod", "deepseek-v4") is not None
    assert open_reasoning(scoped, "deepseek-prod", "codex-model") is None
    assert patch == {
        "type": "custom_tool_call",
        "id": patch["id"],
        "call_id": "call_a",
        "name": "apply_patch",
        "input": "*** Begin Patch\n",
    }
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "exec_command", '{"cmd":"ls"}')
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 8


def test_translate_think_tags_length_and_filter() -> None:
    answer = completion({"content": "<think>hmm</think>\n\nThe answer is 4"}, "length")
    response = cc.translate_response(answer, ctx())
    check_response(response)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["summary"][0]["text"] == "hmm"
    assert response["output"][1]["content"][0]["text"] == "The answer is 4"
    filtered = cc.translate_response(completion({"content": "partial"}, "content_filter"), ctx())
    check_response(filtered)
    assert filtered["status"] == "completed"


def test_translate_error_body_in_a_200_answer() -> None:
    response = cc.translate_response({"error": {"message": "Rate limit exceeded", "code": 429}}, ctx())
    check_response(response)
    assert response["status"] == "failed" and response["error"]["code"] == "rate_limit_exceeded"


def test_mistral_thinking_chunks() -> None:
    # Magistral's content is a list of chunks (not an SDK shape: read, not validated as SDK).
    answer = completion({"content": "x"})
    answer["choices"][0]["message"]["content"] = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "ponder"}]},
        {"type": "text", "text": "Result"},
    ]
    response = cc.translate_response(answer, ctx())
    check_response(response)
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]


PATCH_TEXT = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _stream_tail(finish: str, usage_: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [chunk({}, finish), chunk(empty_choices=True, usage=usage_ or usage(10, 5))]


# (whole chat.completion, the chunks a host streams for the same answer)
WHOLE_AND_STREAMED: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "text": (
        completion({"content": "Hello there"}, usage_=usage(10, 5, cached=4)),
        text_chunks("Hello there", final_usage=usage(10, 5, cached=4)),
    ),
    "reasoning, patch and call": (
        completion(
            {
                "content": "Patching now.",
                "reasoning_content": "Let me think.",
                "tool_calls": [
                    _call("call_p", "apply_patch", json.dumps({"input": PATCH_TEXT})),
                    _call("call_x", "exec_command", '{"cmd": "ls"}'),
                ],
            },
            "tool_calls",
        ),
        [chunk({"role": "assistant", "reasoning_content": "Let me "}), chunk({"reasoning_content": "think."})]
        + [chunk({"content": "Patching "}), chunk({"content": "now."})]
        + tool_call_chunks("call_p", "apply_patch", json.dumps({"input": PATCH_TEXT}), pieces=5)
        + tool_call_chunks("call_x", "exec_command", '{"cmd": "ls"}', index=1)
        + _stream_tail("tool_calls"),
    ),
    "think tags cut by the length limit": (
        completion({"content": "<think>hmm</think>\n\nThe answer is 4"}, "length"),
        [chunk({"content": "<thi"}), chunk({"content": "nk>hmm</think>\n\nThe answer"}), chunk({"content": " is 4"})]
        + _stream_tail("length"),
    ),
    "content filter": (
        completion({"content": "partial"}, "content_filter"),
        [chunk({"content": "part"}), chunk({"content": "ial"})] + _stream_tail("content_filter"),
    ),
    "refusal": (
        completion({"content": None, "refusal": "I can't help with that."}),
        [chunk({"refusal": "I can't "}), chunk({"refusal": "help with that."})] + _stream_tail("stop"),
    ),
    "blank text before a call": (
        completion({"content": "\n\n", "tool_calls": [_call("call_x", "exec_command", '{"cmd": "ls"}')]}, "tool_calls"),
        [chunk({"content": "\n"}), chunk({"content": "\n"})]
        + tool_call_chunks("call_x", "exec_command", '{"cmd": "ls"}')
        + _stream_tail("tool_calls"),
    ),
    # The host gave up after writing part of an answer: nothing half-written is kept.
    "finish_reason error after a partial answer": (
        completion({"content": "Partial", "tool_calls": [_call("call_x", "exec_command", '{"cmd"')]}, "error"),
        [chunk({"content": "Partial"}), *tool_call_chunks("call_x", "exec_command", '{"cmd"')]
        + [chunk({}, "error", usage=usage(10, 5))],
    ),
}


def comparable(response: dict[str, Any]) -> dict[str, Any]:
    """`response` with generated item ids reduced to their prefix and order, and sealed reasoning
    opened (envelopes are sealed afresh each time)."""
    seen: list[str] = []

    def item(entry: dict[str, Any]) -> dict[str, Any]:
        entry = dict(entry)
        seen.append(entry["id"])
        entry["id"] = f"{entry['id'].split('_')[0]}#{len(seen)}"
        if "encrypted_content" in entry:
            entry["encrypted_content"] = open_reasoning(entry["encrypted_content"], "deepseek-prod", "codex-model")
        return entry

    return dict(response, output=[item(entry) for entry in response["output"]])


@pytest.mark.parametrize("case", sorted(WHOLE_AND_STREAMED))
def test_whole_answer_is_the_final_response_of_its_stream(case: str) -> None:
    """The non-streamed answer is derived from the stream translator: a whole completion and the
    stream of the same answer end in the same `response` object, item for item."""
    whole_answer, streamed = WHOLE_AND_STREAMED[case]
    tools = cc.tool_map(codex_body())
    events, translator = run_stream([sse(streamed)], ctx(), tools)
    terminal = check_stream(events, ctx())
    whole = cc.translate_response(whole_answer, ctx(), tools=tools)
    check_response(whole)
    assert comparable(whole) == comparable(terminal["response"])
    assert whole["status"] == translator.outcome


# ------------------------------------------------------------------ streams


def deepseek_stream() -> list[dict[str, Any]]:
    patch = '*** Begin Patch\n*** Add File: "q".txt\n+\u00e9\U0001f600 tab\t\\ end\n*** End Patch\n'
    chunks = [chunk({"role": "assistant", "content": None, "reasoning_content": ""})]
    chunks += [chunk({"reasoning_content": piece}) for piece in ("Let me ", "think.")]
    chunks += [chunk({"content": "Patching "}), chunk({"content": "now."})]
    chunks += tool_call_chunks("call_p1", "apply_patch", json.dumps({"input": patch}), pieces=9)
    chunks += tool_call_chunks("call_x1", "exec_command", '{"cmd": "ls -la"}', pieces=3, index=1)
    chunks.append(chunk({}, "tool_calls"))
    chunks.append(chunk(empty_choices=True, usage=usage(500, 80, cached=300, reasoning=30)))
    return chunks


def test_stream_split_at_arbitrary_byte_boundaries() -> None:
    chunks = deepseek_stream()
    for index, data in enumerate(chunks):
        assert not answer_problems(data, streamed=True), index
    raw = sse(chunks)
    tools = cc.tool_map(codex_body())
    reference, _ = run_stream([raw], ctx(), tools)
    expected = check_stream(reference, ctx())["response"]["output"]
    rng = random.Random(RNG_SEED)
    splits = [list(pieces(raw, rng, largest)) for largest in (1, 2, 3, 7, 64) for _ in range(2)]
    splits.append([raw[:n] for n in (len(raw) // 2,)] + [raw[len(raw) // 2 :]])
    for parts in splits:
        events, translator = run_stream(parts, ctx(), tools)
        terminal = check_stream(events, ctx())
        assert terminal["type"] == "response.completed"

        def strip_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in item.items() if k not in ("id", "encrypted_content")} for item in items]

        assert strip_ids(terminal["response"]["output"]) == strip_ids(expected)
        assert translator.usage is not None and translator.usage.cached_tokens == 300
        assert translator.outcome == "completed"
    kinds = [item["type"] for item in expected]
    assert kinds == ["reasoning", "message", "custom_tool_call", "function_call"]
    assert expected[0]["summary"][0]["text"] == "Let me think."
    assert expected[1]["content"][0]["text"] == "Patching now."
    assert (
        expected[2]["input"] == '*** Begin Patch\n*** Add File: "q".txt\n+\u00e9\U0001f600 tab\t\\ end\n*** End Patch\n'
    )
    assert expected[3]["arguments"] == '{"cmd": "ls -la"}'
    assert terminal["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 30
    events_types = [e["type"] for e in reference]
    assert events_types.count("response.custom_tool_call_input.delta") > 3  # streamed as it came
    assert "response.reasoning_summary_part.added" in events_types


def test_stream_is_incremental() -> None:
    decoder = cc.ChatStreamDecoder()
    translator = cc.StreamTranslator(ctx())
    first = sse(text_chunks("Hello there world")[:2], done=False)
    events: list[dict[str, Any]] = []
    for event in decoder.feed(first):
        events += translator.feed(event)
    assert [e["type"] for e in events][-1] == "response.output_text.delta"
    assert events[-1]["delta"] == "Hello"
    assert translator.outcome is None


def test_parallel_calls_interleaved_and_calls_without_ids() -> None:
    a = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": ""}}
    b = {"index": 1, "type": "function", "function": {"name": "exec_command", "arguments": '{"cmd'}}
    chunks = [
        chunk({"tool_calls": [a]}),
        chunk({"tool_calls": [b]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"cmd": "a"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '": "b"}'}}]}),
        chunk({}, "tool_calls"),
    ]
    events, _ = run_stream([sse(chunks)], ctx())
    terminal = check_stream(events, ctx())
    output = terminal["response"]["output"]
    assert [json.loads(item["arguments"])["cmd"] for item in output] == ["a", "b"]
    assert output[0]["call_id"] == "call_a" and output[1]["call_id"].startswith("call_")


def test_think_tags_split_across_chunks() -> None:
    text = "<think>step one, step two</think>\n\nFinal answer."
    for cut in range(1, len(text)):
        chunks = [chunk({"content": text[:cut]}), chunk({"content": text[cut:]}), chunk({}, "stop")]
        events, _ = run_stream([sse(chunks)], ctx())
        output = check_stream(events, ctx())["response"]["output"]
        assert output[0]["summary"][0]["text"] == "step one, step two", cut
        assert output[1]["content"][0]["text"] == "Final answer.", cut


def test_stream_length_incomplete_and_groq_usage() -> None:
    chunks = [chunk({"content": "Long"}), chunk({"content": " text"}, "length")]
    groq_usage = chunk(empty_choices=True)
    groq_usage["x_groq"] = {"usage": usage(9, 2)}  # Groq's older stream usage (not an SDK field)
    events, translator = run_stream([sse([*chunks, groq_usage])], ctx())
    terminal = check_stream(events, ctx())
    assert terminal["type"] == "response.incomplete"
    assert terminal["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert terminal["response"]["output"][0]["status"] == "incomplete"
    assert translator.outcome == "incomplete" and translator.usage is not None and translator.usage.input_tokens == 9


def test_stream_content_filter_completes() -> None:
    events, translator = run_stream([sse([chunk({"content": "Some"}), chunk({}, "content_filter")])], ctx())
    assert check_stream(events, ctx())["type"] == "response.completed"
    assert translator.content_filtered


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error"},
            "context_length_exceeded",
        ),
        ({"message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}, "rate_limit_exceeded"),
        ({"message": "Insufficient credits", "code": 402}, "insufficient_quota"),
        ({"message": "Upstream exploded", "code": 502}, "server_error"),
    ],
)
def test_stream_error_event_mid_stream(error: dict[str, Any], code: str) -> None:
    raw = sse([chunk({"content": "Start"})], done=False) + f"data: {json.dumps({'error': error})}\n\n".encode()
    events, translator = run_stream([raw], ctx())
    terminal = check_stream(events, ctx())
    assert terminal["type"] == "response.failed" and terminal["response"]["error"]["code"] == code
    assert translator.outcome == "failed"
    assert translator.finish() == []


def test_openrouter_finish_reason_error() -> None:
    broken = chunk({"content": ""}, "error")
    broken["error"] = {"code": 502, "message": "Provider disconnected"}
    events, _ = run_stream([sse([chunk({"content": "Hi"}), broken])], ctx())
    terminal = check_stream(events, ctx())
    assert terminal["type"] == "response.failed" and "disconnected" in terminal["response"]["error"]["message"]


def test_stream_cut_before_the_end_fails() -> None:
    raw = sse(text_chunks("Hello there")[:3], done=False)
    events, translator = run_stream([raw[:-5]], ctx())
    terminal = check_stream(events, ctx())
    assert terminal["type"] == "response.failed"
    assert terminal["response"]["error"]["code"] == "server_error"
    assert "ended early" in terminal["response"]["error"]["message"]
    assert translator.outcome == "failed"


def test_stream_without_done_after_finish_reason_completes() -> None:
    events, translator = run_stream([sse(text_chunks("Hi there"), done=False)], ctx())
    assert check_stream(events, ctx())["type"] == "response.completed"
    assert translator.usage is not None and translator.usage.output_tokens == 7


def test_custom_input_decoder_at_every_split() -> None:
    value = 'line "one"\n\\ \u00e9 \U0001f600 \t/end'
    arguments = json.dumps({"input": value})
    escaped_slash = arguments.replace("/", "\\/")
    for source in (arguments, escaped_slash, json.dumps({"input": value}, ensure_ascii=False)):
        for cut in range(len(source) + 1):
            stream = InputStringStream()
            shown = stream.feed(source[:cut]) + stream.feed(source[cut:])
            assert shown == value, (source, cut)
    off = InputStringStream()
    assert off.feed('{"path": "x", "input": "y"}') == ""  # another shape: shown only at the end


def test_raw_patch_instead_of_json_arguments() -> None:
    chunks = [*tool_call_chunks("call_r", "apply_patch", "*** Begin Patch\n*** End Patch\n"), chunk({}, "tool_calls")]
    events, _ = run_stream([sse(chunks)], ctx())
    output = check_stream(events, ctx())["response"]["output"]
    assert output[0]["type"] == "custom_tool_call" and output[0]["input"] == "*** Begin Patch\n*** End Patch\n"


# ------------------------------------------------------------------ errors


def test_translate_error_mapping() -> None:
    def mapped(status: int, body: Any) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return cc.translate_error(status, raw)

    status, body = mapped(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}})
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    status, body = mapped(429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}})
    assert (status, body["error"]["code"]) == (429, "insufficient_quota")
    status, body = mapped(402, {"error": {"message": "Insufficient credits", "code": 402}})
    assert (status, body["error"]["code"]) == (429, "insufficient_quota")
    status, body = mapped(400, {"error": {"message": "This model's maximum context length is 131072 tokens."}})
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")
    status, body = mapped(413, b"request entity too large")
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")
    status, body = mapped(401, {"error": {"message": "Incorrect API key provided: gsk_abcdef123456789"}})
    assert status == 502 and "gsk_" not in json.dumps(body) and "credentials" in body["error"]["message"]
    status, body = mapped(503, {"error": {"message": "Service overloaded"}})
    assert (status, body["error"]["code"]) == (503, "server_error")
    status, body = mapped(529, b"")
    assert status == 503
    status, body = mapped(500, b"<html>oops</html>")
    assert (status, body["error"]["type"]) == (502, "server_error")
    detail = {"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "x"]}]}}
    status, body = mapped(422, detail)
    assert (status, body["error"]["code"]) == (400, "invalid_request_error") and "extra_forbidden" in body["error"][
        "message"
    ]
    status, body = mapped(400, {"error": {"message": "bad header Bearer sk-live-1234567890abcdef"}})
    assert "sk-live" not in json.dumps(body)
    for _status, body in [mapped(s, {"error": {"message": "x"}}) for s in (400, 404, 429, 500, 503)]:
        assert set(body["error"]) == {"message", "type", "code", "param"}


# ------------------------------------------------------------------ through a fake host


@pytest.fixture(scope="module")
def host() -> Iterator[FakeChatHost]:
    fake = FakeChatHost().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def clean_host(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "host" in request.fixturenames:
        fake: FakeChatHost = request.getfixturevalue("host")
        fake.replies.clear()
        fake.request_extensions = frozenset()


def post(url: str, body: dict[str, Any], headers: dict[str, str], rng: random.Random) -> tuple[int, list[bytes]]:
    """POST with the standard library; the answer read in random-sized pieces (cut connections
    end the list early, as the gateway would see them)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    connection.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json", **headers})
    response = connection.getresponse()
    received: list[bytes] = []
    try:
        while True:
            piece = response.read(rng.randint(1, 50))
            if not piece:
                break
            received.append(piece)
    except (http.client.IncompleteRead, ConnectionError) as exc:
        if isinstance(exc, http.client.IncompleteRead) and exc.partial:
            received.append(exc.partial)
    finally:
        connection.close()
    return response.status, received


def round_trip(
    host: FakeChatHost, body: dict[str, Any], preset: str, provider: str, reply: Reply
) -> tuple[dict[str, Any], list[dict[str, Any]] | dict[str, Any], int]:
    host.script(reply)
    opts = options(provider)
    chat = cc.build_request(body, "upstream-model", opts, preset=preset)
    url, fixed = cc.request_target(host.url, "upstream-model", chat["stream"])
    status, parts = post(url, chat, {**fixed, **cc.auth_headers("sk-test")}, random.Random(RNG_SEED))
    assert not host.invalid, host.invalid
    context = ctx(provider)
    if status != 200:
        return chat, cc.translate_error(status, b"".join(parts))[1], status
    if not chat["stream"]:
        answer = json.loads(b"".join(parts))
        return (
            chat,
            cc.translate_response(answer, context, tools=cc.tool_map(body), upstream_model="upstream-model"),
            status,
        )
    events, _ = run_stream(parts, context, cc.tool_map(body), upstream_model="upstream-model")
    return chat, events, status


def test_fake_host_groq_stream(host: FakeChatHost) -> None:
    _, events, status = round_trip(
        host, fixture_body(), "groq", "groq-prod", Reply(chunks=text_chunks("All done: 3 files."))
    )
    assert status == 200 and isinstance(events, list)
    terminal = check_stream(events, ctx("groq-prod"))
    assert terminal["response"]["output"][0]["content"][0]["text"] == "All done: 3 files."
    received = host.received[-1]
    assert received.path == "/v1/chat/completions" and received.headers["authorization"] == "Bearer sk-test"
    assert received.body["stream_options"] == {"include_usage": True}


def test_fake_host_deepseek_tool_loop_replays_reasoning(host: FakeChatHost) -> None:
    # Turn 1: DeepSeek thinks, then calls a tool.
    first = codex_body(user("list the files"))
    _, events, _ = round_trip(host, first, "deepseek", "deepseek-prod", Reply(chunks=deepseek_stream()))
    assert isinstance(events, list)
    output = check_stream(events, ctx("deepseek-prod"))["response"]["output"]
    # Turn 2: Codex replays the output items with the tool results; DeepSeek wants its reasoning back.
    replay = [dict(item) for item in output]
    results = [
        {"type": "custom_tool_call_output", "call_id": output[2]["call_id"], "output": "Done!"},
        {"type": "function_call_output", "call_id": output[3]["call_id"], "output": "a.txt"},
    ]
    second = codex_body(user("list the files"), *replay, *results)
    host.request_extensions = REASONING_REPLAY_KEYS
    chat, events, _ = round_trip(host, second, "deepseek", "deepseek-prod", Reply(chunks=text_chunks("Two files.")))
    assistant = chat["messages"][2]
    assert assistant["reasoning_content"] == "Let me think." and assistant["content"] == "Patching now."
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_p1", "call_x1"]
    assert isinstance(events, list) and check_stream(events, ctx("deepseek-prod"))["type"] == "response.completed"
    # The same history routed to another provider carries no reasoning at all (strict: no extensions).
    host.request_extensions = frozenset()
    chat, _, _ = round_trip(host, second, "deepseek", "deepseek-backup", Reply(chunks=text_chunks("ok")))
    assert "reasoning_content" not in chat["messages"][2]


def test_fake_host_mistral_not_streamed(host: FakeChatHost) -> None:
    answer = completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "Ab3dE6gH9",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd":"pwd"}'},
                }
            ],
        },
        "tool_calls",
    )
    _, response, status = round_trip(
        host, codex_body(user("where am I"), stream=False), "mistral", "mistral", Reply(body=answer)
    )
    assert status == 200 and isinstance(response, dict)
    check_response(response)
    assert response["output"][0]["call_id"] == "Ab3dE6gH9"
    assert "stream_options" not in host.received[-1].body


def test_fake_host_error_answer(host: FakeChatHost) -> None:
    error = {"error": {"message": "Rate limit reached for model", "type": "tokens", "code": "rate_limit_exceeded"}}
    _, body, status = round_trip(host, codex_body(user("hi")), "groq", "groq", Reply(status=429, body=error))
    assert status == 429 and isinstance(body, dict)
    assert body["error"]["code"] == "rate_limit_exceeded" and "Rate limit reached" in body["error"]["message"]


def test_fake_host_error_event_mid_stream(host: FakeChatHost) -> None:
    error_blob = b'data: {"error": {"message": "Internal server error", "code": 500}}\n\n'
    reply = Reply(chunks=text_chunks("partial answer")[:3], raw_after=[error_blob], done=False)
    _, events, _ = round_trip(host, codex_body(user("hi")), "vllm", "vllm", reply)
    assert isinstance(events, list)
    terminal = check_stream(events, ctx("vllm"))
    assert terminal["type"] == "response.failed" and terminal["response"]["error"]["code"] == "server_error"


def test_fake_host_cut_connection(host: FakeChatHost) -> None:
    reply = Reply(chunks=text_chunks("this answer never finishes"), cut_after=3)
    _, events, _ = round_trip(host, codex_body(user("hi")), "together", "together", reply)
    assert isinstance(events, list)
    terminal = check_stream(events, ctx("together"))
    assert terminal["type"] == "response.failed" and "ended early" in terminal["response"]["error"]["message"]


def test_fake_host_refuses_bad_requests(host: FakeChatHost) -> None:
    """The fake's validation is real: unknown keys and wrong credentials are refused."""
    rng = random.Random(RNG_SEED)
    status, parts = post(
        host.url + "/chat/completions", {"model": "m", "messages": [], "verbosty": 1}, cc.auth_headers("sk-test"), rng
    )
    assert status == 400 and b"verbosty" in b"".join(parts)
    status, _ = post(host.url + "/chat/completions", {"model": "m", "messages": []}, cc.auth_headers("sk-wrong"), rng)
    assert status == 401
    assert len(host.invalid) == 2
    host.invalid.clear()
    with pytest.raises(AssertionError):
        host.script(Reply(chunks=[dict(chunk({"content": "x"}), surprise=True)]))


# ------------------------------------------------------------------ Azure OpenAI


def test_azure_targets() -> None:
    url, headers = cc.azure_target("https://res.openai.azure.com/", "gpt 5", "2024-10-21", "chat")
    assert url == "https://res.openai.azure.com/openai/deployments/gpt%205/chat/completions?api-version=2024-10-21"
    assert headers == {}
    assert cc.azure_target("https://res.openai.azure.com", "d", None, "responses")[0] == (
        "https://res.openai.azure.com/openai/v1/responses"
    )
    assert cc.azure_target("https://res.openai.azure.com", "d", "preview", "responses")[0].endswith(
        "?api-version=preview"
    )
    assert cc.azure_auth_headers("k") == {"api-key": "k"}
    with pytest.raises(ValueError):
        cc.azure_target("https://res.openai.azure.com", "d", None, "chat")


def test_azure_chat_deployment_through_the_fake(host: FakeChatHost) -> None:
    azure = FakeChatHost(expect_headers={"api-key": "azure-key"}).start()
    try:
        azure.script(Reply(chunks=text_chunks("From Azure.")))
        chat = cc.build_request(fixture_body(), "my-deployment", options("azure-east"), preset="azure")
        url, fixed = cc.azure_target(azure.root, "my-deployment", "2024-10-21", "chat")
        status, parts = post(url, chat, {**fixed, **cc.azure_auth_headers("azure-key")}, random.Random(RNG_SEED))
        assert status == 200 and not azure.invalid, azure.invalid
        received = azure.received[-1]
        assert received.path == "/openai/deployments/my-deployment/chat/completions"
        assert received.query == {"api-version": "2024-10-21"} and "authorization" not in received.headers
        assert received.body["messages"][0]["role"] == "developer"
        events, _ = run_stream(parts, ctx("azure-east"))
        assert check_stream(events, ctx("azure-east"))["response"]["output"][0]["content"][0]["text"] == "From Azure."
    finally:
        azure.stop()


def test_azure_responses_pass_through_body() -> None:
    body = fixture_body()
    body["input"].insert(4, reasoning_item(seal_reasoning("deepseek-prod", "gpt-5.5", {"reasoning_content": "x"})))
    body["input"].insert(4, reasoning_item("gAAAAB-openai-blob"))
    out = cc.azure_responses_body(body, "my-gpt")
    assert out["model"] == "my-gpt"
    assert "internal_chat_message_metadata_passthrough" not in json.dumps(out)
    blobs = [item.get("encrypted_content") for item in out["input"] if item.get("type") == "reasoning"]
    assert blobs == ["gAAAAB-openai-blob"]
    assert out["tools"] == body["tools"] and out["reasoning"] == body["reasoning"]
    TypeAdapter(ResponseCreateParamsStreaming).validate_python(out)
    assert body["model"] == "gpt-5.5"  # the caller's body is not changed


# ------------------------------------------------------------------ presets


def test_presets_table() -> None:
    required = {"groq", "mistral", "deepseek", "xai", "openrouter", "together", "fireworks", "cerebras"}
    required |= {"perplexity", "ollama", "vllm", "lmstudio"}
    assert required <= set(cc.PRESETS)
    for name in required:
        host = cc.PRESETS[name]
        assert host.name == name
        assert host.base_url.startswith("https://") or host.base_url.startswith("http://localhost:"), name
        for value in host.reasoning_effort_values:
            assert value in ("none", "minimal", "low", "medium", "high", "xhigh", "max")
        assert isinstance(host.needs_max_tokens, bool) and isinstance(host.developer_role, bool)
        assert isinstance(host.parallel_tool_calls, bool) and isinstance(host.stream_options, bool)
    assert cc.request_target("https://api.groq.com/openai/v1/", "m", True) == (
        "https://api.groq.com/openai/v1/chat/completions",
        {},
    )
    assert cc.auth_headers("") == {} and cc.auth_headers("k") == {"authorization": "Bearer k"}
    with pytest.raises(TypeError):
        cc.PRESETS["new"] = cc.PRESETS["groq"]  # type: ignore[index]


def test_openrouter_stream_reasoning_details_sealed_and_replayed() -> None:
    chunks = [
        chunk(
            {
                "role": "assistant",
                "content": "",
                "reasoning": "Plan",
                "reasoning_details": [{"type": "reasoning.text", "text": "Plan", "index": 0}],
            }
        ),
        chunk({"reasoning": " more", "reasoning_details": [{"type": "reasoning.text", "text": " more", "index": 0}]}),
        chunk({"reasoning_details": [{"type": "reasoning.text", "signature": "sig==", "index": 0}]}),
        chunk({"reasoning_details": [{"type": "reasoning.encrypted", "data": "opaque", "index": 1}]}),
        *tool_call_chunks("call_or1", "exec_command", '{"cmd": "ls"}'),
        chunk({}, "tool_calls", usage=usage(40, 12, reasoning=6)),
    ]
    for data in chunks:
        assert not answer_problems(data, streamed=True)
    raw = b": OPENROUTER PROCESSING\r\n\r\n" + sse(chunks).replace(b"\n\n", b"\r\n\r\n")
    context = ctx("or", "codex-model")
    events, translator = run_stream(pieces(raw, random.Random(RNG_SEED), 9), context, upstream_model="anthropic/claude")
    output = check_stream(events, context)["response"]["output"]
    assert output[0]["summary"][0]["text"] == "Plan more"
    payload = open_reasoning(output[0]["encrypted_content"], "or", "anthropic/claude")
    assert payload is not None and payload["reasoning_details"] == [
        {"type": "reasoning.text", "text": "Plan more", "index": 0, "signature": "sig=="},
        {"type": "reasoning.encrypted", "data": "opaque", "index": 1},
    ]
    assert translator.usage is not None and translator.usage.reasoning_tokens == 6
    body = codex_body(user("go"), *output, {"type": "function_call_output", "call_id": "call_or1", "output": "a"})
    chat = cc.build_request(body, "anthropic/claude", options("or"), preset="openrouter")
    assert_valid_request(chat, REASONING_REPLAY_KEYS)
    assert chat["messages"][2]["reasoning_details"] == payload["reasoning_details"]


def test_decoder_named_error_events_and_done() -> None:
    decoder = cc.ChatStreamDecoder()
    raw = b'event: error\ndata: {"message": "boom"}\n\ndata: [DONE]\n\ndata: not json\n\n'
    events = [event for byte in range(len(raw)) for event in decoder.feed(raw[byte : byte + 1])]
    assert events == [{"error": {"message": "boom"}}, {"done": True}]


# ------------------------------------------------------------------ the families (registry)


def test_every_priced_preset_names_a_genai_prices_provider() -> None:
    """The price id of a hosted preset is one genai-prices lists; self-hosted ones have none (the
    policy sets a price)."""
    from genai_prices import data

    known = {provider.id for provider in data.providers}
    for name, host in cc.PRESETS.items():
        if host.base_url.startswith("https://"):
            assert host.price_id in known, name
        else:
            assert host.price_id is None, name
    assert family_for(ChatProvider(kind="chat", preset="xai", keys=[SecretRef(value="env:K")])).price_id() == "x-ai"
    assert family_for(ChatProvider(kind="chat", preset="ollama")).price_id() is None
    azure = AzureProvider(kind="azure", endpoint="https://res.openai.azure.com", keys=[SecretRef(value="env:K")])
    assert family_for(azure).price_id() == "azure"


def test_family_credentials_use_the_chosen_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CG_CHAT_K1", "key-one")
    monkeypatch.setenv("CG_CHAT_K2", "key-two")
    keys = [SecretRef(value="env:CG_CHAT_K1", weight=3), SecretRef(value="env:CG_CHAT_K2", weight=1)]
    secrets = SecretResolver(environ={})
    chat = family_for(ChatProvider(kind="chat", preset="groq", keys=keys))
    prepared = chat.prepare(codex_body(user("hi")), "llama", "groq-prod")
    assert chat.key_weights() == [3, 1]
    assert asyncio.run(chat.credentials(prepared, 1, secrets)) == {"authorization": "Bearer key-two"}
    local = family_for(ChatProvider(kind="chat", preset="ollama"))
    assert asyncio.run(local.credentials(local.prepare(codex_body(user("hi")), "qwen", "local"), 0, secrets)) == {}
    azure = family_for(AzureProvider(kind="azure", endpoint="https://res.openai.azure.com", api="chat", keys=keys))
    prepared = azure.prepare(codex_body(user("hi")), "my-deployment", "azure-east")
    assert asyncio.run(azure.credentials(prepared, 0, secrets)) == {"api-key": "key-one"}
    assert (
        prepared.url
        == "https://res.openai.azure.com/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    )
    assert prepared.translate and set(chat.secret_headers) | set(azure.secret_headers) == {"authorization", "api-key"}


def test_azure_responses_api_is_passed_through_not_translated() -> None:
    azure = family_for(
        AzureProvider(kind="azure", endpoint="https://res.openai.azure.com/", keys=[SecretRef(value="env:K")])
    )
    prepared = azure.prepare(codex_body(user("hi"), previous_response_id="resp_1"), "my-deployment", "azure-east")
    assert not prepared.translate and prepared.url == "https://res.openai.azure.com/openai/v1/responses"
    sent = json.loads(prepared.body or b"{}")
    assert sent["model"] == "my-deployment" and sent["previous_response_id"] == "resp_1"
