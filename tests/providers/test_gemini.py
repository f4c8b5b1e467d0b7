"""The Gemini family's translators, checked against the google-genai and openai SDK types and a
fake Gemini API that validates what it receives the way the real one does."""

from __future__ import annotations

import copy
import http.client
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fakes.gemini_upstream import (
    API_KEY,
    FakeGemini,
    InvalidRequest,
    Reply,
    call_part,
    check_schema,
    chunk,
    sign,
    text_part,
    usage_metadata,
    validate_request,
    validate_response,
)
from fakes.sdk_validation import valid_response, valid_stream_event
from google.genai import types

from codexgate.providers import gemini
from codexgate.providers.base import TranslateOptions, open_reasoning, seal_reasoning
from codexgate.providers.responses import ResponseContext
from codexgate.usage import Usage

FIXTURE = Path(__file__).parent.parent / "fixtures" / "codex_request_tool_round_trip.json"
PROVIDER = "gemini-prod"
MODEL = "gemini-3-pro-preview"
CTX = ResponseContext(response_id="resp_gm_test_1", model=MODEL, provider_name=PROVIDER, created_at=1_790_000_000)
# Codes Codex acts on that the openai SDK's ResponseError literal does not list (OpenAI sends them).
CODEX_ONLY_CODES = {"context_length_exceeded", "insufficient_quota"}


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


def fixture_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(FIXTURE.read_text())
    return body


def options() -> TranslateOptions:
    return TranslateOptions(provider_name=PROVIDER)


def build(body: dict[str, Any], model: str = MODEL, opts: TranslateOptions | None = None) -> dict[str, Any]:
    request = gemini.build_request(body, model, opts or options())
    validate_request(request, model)  # SDK types + wire names + the real API's extra rules
    return request


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def function_tool(name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": f"{name} tool",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": properties or {"cmd": {"type": "string"}},
            "required": list(properties or {"cmd": 0}),
            "additionalProperties": False,
        },
    }


APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" LF hunk+ "*** End Patch"'},
}


def codex_body(*items: dict[str, Any], tools: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "stream": True,
        "instructions": "You are Codex.",
        "input": list(items),
        "tools": tools if tools is not None else [function_tool("exec_command"), APPLY_PATCH],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    body.update(extra)
    return body


def strict_event(event: dict[str, Any]) -> Any:
    """valid_stream_event, with Codex's extra error codes swapped for one the SDK lists."""
    error = (event.get("response") or {}).get("error")
    if error and error.get("code") in CODEX_ONLY_CODES:
        event = copy.deepcopy(event)
        event["response"]["error"]["code"] = "server_error"
    return valid_stream_event(event)


def check_stream(events: list[dict[str, Any]], ctx: ResponseContext = CTX) -> dict[str, Any]:
    """Every event strictly valid, numbered from 0, items opened and closed consistently; the
    terminal event's output is exactly the items that were done. Returns the final response."""
    assert events, "no events"
    for event in events:
        strict_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminal = events[-1]
    assert terminal["type"] in ("response.completed", "response.incomplete", "response.failed")
    assert sum(e["type"] in ("response.completed", "response.incomplete", "response.failed") for e in events) == 1
    open_items: dict[int, dict[str, Any]] = {}
    deltas: dict[str, str] = {}
    done: list[dict[str, Any]] = []
    for event in events[2:-1]:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] == len(done), "items are added in order"
            assert not open_items, "one item at a time"
            open_items[event["output_index"]] = event["item"]
            continue
        index = event["output_index"]
        item = open_items[index]
        if kind == "response.output_item.done":
            assert event["item"]["id"] == item["id"]
            assert event["item"]["type"] == item["type"]
            del open_items[index]
            done.append(event["item"])
            continue
        assert event["item_id"] == item["id"], kind
        if kind.endswith(".delta"):
            deltas[kind] = deltas.get(kind, "") + event["delta"]
        elif kind == "response.output_text.done":
            assert event["text"] == deltas.pop("response.output_text.delta", "")
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == deltas.pop("response.function_call_arguments.delta", "")
        elif kind == "response.custom_tool_call_input.done":
            assert event["input"] == deltas.pop("response.custom_tool_call_input.delta", "")
        elif kind == "response.reasoning_summary_text.done":
            assert event["text"] == deltas.pop("response.reasoning_summary_text.delta", "")
    response = terminal["response"]
    assert response["id"] == ctx.response_id
    assert response["model"] == ctx.model
    if terminal["type"] != "response.failed":
        assert not open_items, "items left open at the end"
    assert response["output"] == done
    for item in done:
        if item["type"] == "reasoning":
            assert item["encrypted_content"].startswith("cg1.")
    return dict(response)


def post(fake: FakeGemini, request: dict[str, Any], model: str, stream: bool, key: str = API_KEY) -> tuple[int, bytes]:
    url, headers = gemini.request_target(fake.url, model, stream)
    headers = headers | gemini.auth_headers(key)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request(
            "POST", f"{parts.path}?{parts.query}" if parts.query else parts.path, json.dumps(request), headers
        )
        response = connection.getresponse()
        try:
            data = response.read()
        except http.client.IncompleteRead as cut:
            data = cut.partial  # the fake dropped the connection mid-stream
        return response.status, data
    finally:
        connection.close()


def translate_stream(raw: bytes, splits: list[int] | None = None, **kwargs: Any) -> tuple[list[dict[str, Any]], Any]:
    """Feed raw SSE bytes cut at `splits` through decoder and translator."""
    decoder = gemini.StreamDecoder()
    translator = gemini.StreamTranslator(kwargs.pop("ctx", CTX), **kwargs)
    events: list[dict[str, Any]] = []
    bounds = [0, *sorted(splits or []), len(raw)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        for event in decoder.feed(raw[start:end]):
            events += translator.feed(event)
    for event in decoder.close():
        events += translator.feed(event)
    events += translator.finish()
    return events, translator


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks)


def replay(body: dict[str, Any], response: dict[str, Any], *outputs: dict[str, Any]) -> dict[str, Any]:
    """The next request Codex sends: the same input plus the response's items, then outputs."""
    following = copy.deepcopy(body)
    following["input"] = following["input"] + copy.deepcopy(response["output"]) + list(outputs)
    return following


# --- the real Codex request ----------------------------------------------------------------------


def test_codex_fixture_translates_to_a_valid_request() -> None:
    opts = options()
    request = build(fixture_body(), opts=opts)
    wire = json.dumps(request)
    assert opts.dropped_tools == ["tool_search", "web_search"]
    for secret in ("internal_chat_message_metadata_passthrough", "x-codex-installation-id", "prompt_cache_key"):
        assert secret not in wire
    system = request["systemInstruction"]["parts"]
    assert system[0]["text"].startswith("You are Codex")
    assert "<skills_instructions>" in system[1]["text"]
    contents = request["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"][-1] == {"text": "please run `ls` and tell me"}
    call = contents[1]["parts"][0]
    assert call["functionCall"] == {"name": "exec_command", "args": {"cmd": "ls"}}
    # No Gemini envelope in this history (it came from OpenAI): the documented dummy signature.
    assert call["thoughtSignature"] == gemini.DUMMY_THOUGHT_SIGNATURE
    response = contents[2]["parts"][0]["functionResponse"]
    assert response["name"] == "exec_command" and "Process exited with code 0" in response["response"]["output"]
    declarations = {d["name"]: d for d in request["tools"][0]["functionDeclarations"]}
    assert set(declarations) == {
        "exec_command",
        "write_stdin",
        "request_user_input",
        "apply_patch",
        "view_image",
        "get_goal",
        "create_goal",
        "update_goal",
    }
    patch = declarations["apply_patch"]
    assert patch["parameters"] == {
        "type": "OBJECT",
        "properties": {"input": {"type": "STRING", "description": "The raw input text for this tool."}},
        "required": ["input"],
    }
    assert "begin_patch" in patch["description"]  # the grammar travels in the description
    assert declarations["get_goal"]["parameters"] == {"type": "OBJECT"}
    assert "additionalProperties" not in wire and '"strict"' not in wire
    assert request["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": True}}
    assert "toolConfig" not in request  # auto is Gemini's default


def test_codex_fixture_accepted_by_fake_and_answer_translated(fake: FakeGemini) -> None:
    request = build(fixture_body())
    fake.script(
        Reply(
            [
                chunk([text_part("**Listing files**\n\nThe directory is empty.", thought=True)]),
                chunk([text_part("The directory ")]),
                chunk([text_part("is empty.", signature=sign(MODEL, "text", "is empty."))]),
                chunk([], "STOP", usage_metadata(1200, 7, thoughts=30, cached=1000)),
            ]
        )
    )
    status, raw = post(fake, request, MODEL, stream=True)
    assert status == 200, raw
    assert fake.invalid == []
    received = fake.received[-1]
    assert received.headers["x-goog-api-key"] == API_KEY
    assert "authorization" not in received.headers
    assert received.query == {"alt": "sse"}
    events, translator = translate_stream(raw)
    response = check_stream(events)
    valid_response(response)
    assert translator.outcome == "completed"
    assert translator.usage == Usage(input_tokens=1200, cached_tokens=1000, output_tokens=37, reasoning_tokens=30)
    assert response["usage"] == {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 0},
        "output_tokens": 37,
        "output_tokens_details": {"reasoning_tokens": 30},
        "total_tokens": 1237,
    }
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["reasoning", "message", "reasoning"]
    assert response["output"][0]["summary"][0]["text"].startswith("**Listing files**")
    assert response["output"][1]["content"][0]["text"] == "The directory is empty."


# --- tools and schemas ---------------------------------------------------------------------------


def test_schema_sanitizer_keeps_only_what_gemini_accepts() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x", "gone"]}},
        "properties": {
            "where": {"$ref": "#/$defs/Point"},
            "maybe": {"anyOf": [{"type": "string", "format": "uri"}, {"type": "null"}]},
            "either": {"type": ["string", "integer"]},
            "nullable_list": {"type": ["array", "null"]},
            "mode": {"const": "fast"},
            "level": {"type": "integer", "enum": [1, 2, 3], "description": "How hard"},
            "when": {"type": "string", "format": "date-time"},
            "free": {"type": "object", "properties": {}, "patternProperties": {".*": {"type": "string"}}},
            "bounded": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "multipleOf": 2},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 1},
            "untyped": {"description": "anything"},
        },
        "required": ["where", "missing"],
    }
    converted = gemini.gemini_schema(schema)
    check_schema(converted, "schema")
    types.Schema.model_validate(converted)

    def keys(node: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            found |= set(node)
            for key, value in node.items():
                if key == "properties":
                    for sub in value.values():
                        found |= keys(sub)
                elif key in ("items",):
                    found |= keys(value)
                elif key == "anyOf":
                    for sub in value:
                        found |= keys(sub)
        return found

    assert keys(converted) <= gemini.SCHEMA_KEYS_KEPT
    assert not keys(converted) & gemini.SCHEMA_KEYS_STRIPPED
    props = converted["properties"]
    assert props["where"] == {"type": "OBJECT", "properties": {"x": {"type": "NUMBER"}}, "required": ["x"]}
    assert props["maybe"] == {"type": "STRING", "nullable": True}  # "uri" is no Gemini format
    assert [branch["type"] for branch in props["either"]["anyOf"]] == ["STRING", "INTEGER"]
    assert props["nullable_list"] == {"type": "ARRAY", "nullable": True, "items": gemini._any_value()}
    assert props["mode"] == {"type": "STRING", "enum": ["fast"]}
    assert props["level"] == {"type": "INTEGER", "description": "How hard (Allowed values: 1, 2, 3)"}
    assert props["when"] == {"type": "STRING", "format": "date-time"}
    assert props["free"] == {"type": "OBJECT"}
    assert props["bounded"] == {"type": "NUMBER", "maximum": 10}
    assert props["tags"] == {"type": "ARRAY", "minItems": 1, "items": {"type": "STRING"}}
    assert props["untyped"] == {**gemini._any_value(), "description": "anything"}  # any JSON value
    assert converted["required"] == ["where"]


def test_recursive_ref_terminates() -> None:
    schema = {
        "type": "object",
        "properties": {"node": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
    }
    converted = gemini.gemini_schema(schema)
    check_schema(converted, "schema")


def test_unservable_tools_dropped_and_reported() -> None:
    opts = options()
    tools = [
        function_tool("exec_command"),
        {"type": "web_search"},
        {"type": "local_shell"},
        {"type": "image_generation"},
        {"type": "tool_search", "execution": "client"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "mcp", "server_label": "x", "server_url": "https://example.com"},
    ]
    request = build(codex_body(user("hi"), tools=tools), opts=opts)
    assert opts.dropped_tools == ["web_search", "local_shell", "image_generation", "tool_search", "file_search", "mcp"]
    assert [d["name"] for d in request["tools"][0]["functionDeclarations"]] == ["exec_command"]


def test_no_servable_tools_means_no_tools_and_no_tool_config() -> None:
    request = build(codex_body(user("hi"), tools=[{"type": "web_search"}], tool_choice="required"))
    assert "tools" not in request and "toolConfig" not in request


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", None),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        (
            {"type": "function", "name": "exec_command"},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["exec_command"]}},
        ),
        (
            {"type": "custom", "name": "apply_patch"},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["apply_patch"]}},
        ),
        (
            {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "exec_command"}]},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["exec_command"]}},
        ),
        ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "exec_command"}]}, None),
        ({"type": "function", "name": "not_declared"}, {"functionCallingConfig": {"mode": "ANY"}}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any] | None) -> None:
    request = build(codex_body(user("hi"), tool_choice=choice))
    assert request.get("toolConfig") == expected


def test_additional_tools_namespaces_flattened_and_calls_come_back_namespaced() -> None:
    body = codex_body(
        {
            "type": "additional_tools",
            "tools": [
                {
                    "type": "namespace",
                    "name": "shell",
                    "description": "Shell",
                    "tools": [function_tool("exec_command")],
                },
                {"type": "namespace", "name": "mcp__docs", "description": "Docs", "tools": [function_tool("search")]},
            ],
        },
        user("run `ls`"),
        tools=[function_tool("exec_command")],
    )
    request = build(body)
    names = [d["name"] for d in request["tools"][0]["functionDeclarations"]]
    assert names == ["exec_command", "shell__exec_command", "search"]
    tools = gemini.tool_map(body)
    events, _ = translate_stream(
        sse(chunk([call_part("shell__exec_command", {"cmd": "ls"}), call_part("search", {"cmd": "x"})], "STOP")),
        tools=tools,
    )
    response = check_stream(events)
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    assert [(c["name"], c.get("namespace")) for c in calls] == [("exec_command", "shell"), ("search", "mcp__docs")]
    # ... and replayed under the Gemini names again
    following = build(
        replay(
            body, response, *[{"type": "function_call_output", "call_id": c["call_id"], "output": "ok"} for c in calls]
        )
    )
    model_turn = following["contents"][1]["parts"]
    assert [p["functionCall"]["name"] for p in model_turn] == ["shell__exec_command", "search"]


def test_unsafe_function_names_are_sanitized_and_mapped_back() -> None:
    body = codex_body(user("hi"), tools=[function_tool("mcp__my server__do/it"), function_tool("9lives")])
    request = build(body)
    names = [d["name"] for d in request["tools"][0]["functionDeclarations"]]
    assert names == ["mcp__my_server__do_it", "_9lives"]
    events, _ = translate_stream(sse(chunk([call_part("_9lives", {"cmd": "x"})], "STOP")), tools=gemini.tool_map(body))
    assert check_stream(events)["output"][0]["name"] == "9lives"


# --- history ------------------------------------------------------------------------------------


def test_instructions_and_developer_messages_become_the_system_instruction() -> None:
    body = codex_body(
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
        user("hi"),
        {"type": "message", "role": "system", "content": "Later system note."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
        user("again"),
    )
    request = build(body)
    assert request["systemInstruction"] == {
        "parts": [{"text": "You are Codex."}, {"text": "Be brief."}, {"text": "Later system note."}]
    }
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "Hello."}]},
        {"role": "user", "parts": [{"text": "again"}]},
    ]


def test_plain_string_input() -> None:
    request = build({"model": MODEL, "input": "hello"})
    assert request == {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def test_images_and_files() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    body = codex_body(
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/cat.webp", "detail": "high"},
                {"type": "input_image", "file_id": "file-abc", "detail": "auto"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0xLjQK", "filename": "a.pdf"},
                {"type": "input_file", "file_url": "https://example.com/spec.pdf"},
            ],
        }
    )
    parts = build(body)["contents"][0]["parts"]
    assert parts[0] == {"text": "look"}
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": png}}
    assert parts[2] == {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp"}}
    assert "omitted" in parts[3]["text"]
    assert parts[4] == {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQK"}}
    assert parts[5] == {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/spec.pdf"}}


def test_tool_output_with_image_keeps_the_pairing() -> None:
    body = codex_body(
        user("show me"),
        {"type": "function_call", "call_id": "call_1", "name": "view_image", "arguments": '{"path": "a.png"}'},
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [
                {"type": "input_text", "text": "image attached"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        },
        tools=[function_tool("view_image", {"path": {"type": "string"}})],
    )
    contents = build(body)["contents"]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "view_image", "response": {"output": "image attached"}}},
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
    ]


def test_parallel_calls_answered_in_order_and_orphan_outputs_kept_as_text() -> None:
    body = codex_body(
        user("two things"),
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": '{"cmd": "a"}'},
        {"type": "function_call", "call_id": "c2", "name": "exec_command", "arguments": "not json"},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"type": "function_call_output", "call_id": "c2", "output": "B"},
        {"type": "function_call_output", "call_id": "c-lost", "output": "C"},
    )
    contents = build(body)["contents"]
    assert [p["functionCall"]["args"] for p in contents[1]["parts"]] == [{"cmd": "a"}, {"arguments": "not json"}]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "exec_command", "response": {"output": "A"}}},
        {"functionResponse": {"name": "exec_command", "response": {"output": "B"}}},
        {"text": "Output of tool call c-lost:\nC"},
    ]


def test_custom_tool_call_replayed_as_function_call_with_input() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
    body = codex_body(
        user("add a file"),
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": patch},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Success. Updated: A a.txt"},
    )
    contents = build(body)["contents"]
    assert contents[1]["parts"][0]["functionCall"] == {"name": "apply_patch", "args": {"input": patch}}
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "apply_patch", "response": {"output": "Success. Updated: A a.txt"}}}
    ]


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-pro-preview", "xhigh", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-flash-preview", "none", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
        ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128, "includeThoughts": True}),
        ("gemini-2.5-pro", "xhigh", {"thinkingBudget": 32768, "includeThoughts": True}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash", "low", {"thinkingBudget": 2048, "includeThoughts": True}),
        ("gemini-2.5-flash", "xhigh", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512, "includeThoughts": True}),
        ("gemini-flash-latest", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-2.0-flash", "high", None),
    ],
)
def test_reasoning_effort_to_thinking(model: str, effort: str, expected: dict[str, Any] | None) -> None:
    body = codex_body(user("think"), reasoning={"effort": effort})
    request = build(body, model=model)
    assert (request.get("generationConfig") or {}).get("thinkingConfig") == expected


def test_summary_none_turns_thought_summaries_off() -> None:
    request = build(codex_body(user("x"), reasoning={"effort": "high", "summary": "none"}))
    assert request["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH"}


def test_structured_output_and_limits() -> None:
    text = {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "items": {"type": "array", "items": {"type": "string"}}},
                "required": ["ok", "items"],
                "additionalProperties": False,
            },
        },
        "verbosity": "low",
    }
    request = build(codex_body(user("json please"), text=text, max_output_tokens=500, temperature=0.2, top_p=0.9))
    generation = request["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert generation["responseSchema"] == {
        "type": "OBJECT",
        "properties": {"ok": {"type": "BOOLEAN"}, "items": {"type": "ARRAY", "items": {"type": "STRING"}}},
        "required": ["ok", "items"],
    }
    assert generation["maxOutputTokens"] == 500
    assert generation["temperature"] == 0.2 and generation["topP"] == 0.9
    # json_object: JSON mode without a schema
    request = build(codex_body(user("json"), text={"format": {"type": "json_object"}}))
    assert request["generationConfig"]["responseMimeType"] == "application/json"
    assert "responseSchema" not in request["generationConfig"]
    # Gemini 2.5 cannot combine JSON mode with function calling: the tools win
    request = build(codex_body(user("json"), text=text), model="gemini-2.5-flash")
    assert "responseMimeType" not in request["generationConfig"]


def test_no_max_tokens_invented() -> None:
    # Gemini needs no max_tokens; a default would cut long thinking short.
    request = build(codex_body(user("x")))
    assert "maxOutputTokens" not in request.get("generationConfig", {})


def test_request_target_and_auth() -> None:
    url, headers = gemini.request_target(
        "https://generativelanguage.googleapis.com/", "models/gemini-3-pro-preview", True
    )
    assert (
        url
        == "https://generativelanguage.googleapis.com/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"
    )
    assert headers == {"content-type": "application/json"}
    url, _ = gemini.request_target("https://proxy.example/v1beta", "gemini-2.5-flash", False)
    assert url == "https://proxy.example/v1beta/models/gemini-2.5-flash:generateContent"
    url, _ = gemini.request_target("https://generativelanguage.googleapis.com", "tunedModels/my-model-1", False)
    assert url == "https://generativelanguage.googleapis.com/v1beta/tunedModels/my-model-1:generateContent"
    assert gemini.auth_headers("k") == {"x-goog-api-key": "k"}


# --- reasoning envelopes and thought signatures ---------------------------------------------------


def _call_turn_body() -> dict[str, Any]:
    return codex_body(user("run `ls`"))


def _signed_call_reply() -> list[dict[str, Any]]:
    return [
        chunk([text_part("**Plan**\n\nI will list the files.", thought=True)]),
        chunk([call_part("exec_command", {"cmd": "ls"}, signature=sign(MODEL, "fc", "exec_command"))]),
        chunk([], "STOP", usage_metadata(50, 10, thoughts=20)),
    ]


def test_signatures_replayed_on_their_parts_across_turns(fake: FakeGemini) -> None:
    """Three turns through the fake Gemini 3: a signed call, signed text split over parts, then
    a follow-up. The fake rejects any signature that is missing, foreign, or on the wrong part."""
    body = _call_turn_body()
    fake.script(Reply(_signed_call_reply()))
    status, raw = post(fake, build(body), MODEL, stream=True)
    assert status == 200
    first = check_stream(translate_stream(raw, upstream_model=MODEL)[0])
    call = next(item for item in first["output"] if item["type"] == "function_call")
    assert json.loads(call["arguments"]) == {"cmd": "ls"}

    second_body = replay(body, first, {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt"})
    second_request = build(second_body)
    call_part_sent = second_request["contents"][1]["parts"][0]
    assert call_part_sent["thoughtSignature"] == sign(MODEL, "fc", "exec_command")
    fake.script(
        Reply(
            [
                chunk([text_part("Here are ")]),
                chunk([text_part("the files.", signature=sign(MODEL, "text", "the files."))]),
                chunk([text_part("", signature=sign(MODEL, "text", ""))], "STOP", usage_metadata(80, 5)),
            ]
        )
    )
    status, raw = post(fake, second_request, MODEL, stream=True)
    assert status == 200, raw
    assert fake.invalid == []
    second = check_stream(
        translate_stream(raw, ctx=ResponseContext("resp_gm_test_2", MODEL, PROVIDER, 1))[0],
        ResponseContext("resp_gm_test_2", MODEL, PROVIDER, 1),
    )

    third_request = build(replay(second_body, second, user("thanks")))
    model_turn = third_request["contents"][3]
    assert model_turn == {
        "role": "model",
        "parts": [
            {"text": "Here are "},
            {"text": "the files.", "thoughtSignature": sign(MODEL, "text", "the files.")},
            {"text": "", "thoughtSignature": sign(MODEL, "text", "")},
        ],
    }
    status, raw = post(fake, third_request, MODEL, stream=True)
    assert status == 200, raw
    assert fake.invalid == []


def test_message_ids_stripped_on_replay_still_place_text_signatures() -> None:
    events, _ = translate_stream(
        sse(
            chunk([text_part("Hello ")]),
            chunk([text_part("world", signature=sign(MODEL, "text", "world"))], "STOP"),
        )
    )
    response = check_stream(events)
    for item in response["output"]:
        item.pop("id", None)
    request = build(replay(codex_body(user("hi")), response, user("more")))
    assert request["contents"][1]["parts"] == [
        {"text": "Hello "},
        {"text": "world", "thoughtSignature": sign(MODEL, "text", "world")},
    ]


@pytest.mark.parametrize(
    ("provider", "model"),
    [("gemini-other", MODEL), (PROVIDER, "gemini-3-flash-preview")],
)
def test_envelopes_replay_only_to_same_provider_and_model(provider: str, model: str) -> None:
    events, _ = translate_stream(sse(*_signed_call_reply()), upstream_model=MODEL)
    response = check_stream(events)
    call = next(item for item in response["output"] if item["type"] == "function_call")
    body = replay(
        _call_turn_body(), response, {"type": "function_call_output", "call_id": call["call_id"], "output": "x"}
    )
    same = build(body)
    assert same["contents"][1]["parts"][0]["thoughtSignature"] == sign(MODEL, "fc", "exec_command")
    other = gemini.build_request(body, model, TranslateOptions(provider_name=provider))
    validate_request(other, model)
    signature = other["contents"][1]["parts"][0]["thoughtSignature"]
    assert signature == gemini.DUMMY_THOUGHT_SIGNATURE  # the foreign envelope was dropped


def test_openai_blobs_and_summaries_never_forwarded() -> None:
    body = codex_body(
        user("hi"),
        {
            "type": "reasoning",
            "id": "rs_openai",
            "summary": [{"type": "summary_text", "text": "secret OpenAI summary"}],
            "encrypted_content": "gAAAAABopenai-blob",
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
        user("bye"),
    )
    wire = json.dumps(build(body))
    assert "gAAAAB" not in wire and "secret OpenAI summary" not in wire
    assert '"thoughtSignature"' not in wire


def test_fake_rejects_a_gemini_3_call_without_signature() -> None:
    """The fake's check is real: without the dummy a Gemini 3 history with a call fails."""
    request = build(fixture_body())
    del request["contents"][1]["parts"][0]["thoughtSignature"]
    with pytest.raises(InvalidRequest, match="missing a thought_signature"):
        validate_request(request, MODEL)
    older = build(fixture_body(), model="gemini-2.5-pro")
    assert "thoughtSignature" not in older["contents"][1]["parts"][0]  # Gemini 2.5 gets no stand-in
    validate_request(older, "gemini-2.5-pro")  # and does not insist


def test_fake_rejects_signature_on_the_wrong_part_or_model() -> None:
    request = build(fixture_body())
    request["contents"][1]["parts"][0]["thoughtSignature"] = sign(MODEL, "fc", "write_stdin")
    with pytest.raises(InvalidRequest, match="issued for call"):
        validate_request(request, MODEL)
    request["contents"][1]["parts"][0]["thoughtSignature"] = sign("gemini-3-flash-preview", "fc", "exec_command")
    with pytest.raises(InvalidRequest, match="not valid for model"):
        validate_request(request, MODEL)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["contents"][0]["parts"].append({"inline_data": {"mimeType": "x", "data": "AA=="}}),
            "Unknown name",
        ),
        (
            lambda r: r["tools"][0]["functionDeclarations"][0]["parameters"].update(additionalProperties=False),
            "Unknown name|additionalProperties",
        ),
        (lambda r: r["tools"][0]["functionDeclarations"][0]["parameters"].update(type="object"), "OBJECT"),
        (lambda r: r.update(client_metadata={}), "Unknown name"),
        (lambda r: r["generationConfig"]["thinkingConfig"].update(thinkingBudget=100), "both"),
        (
            lambda r: r["tools"][0]["functionDeclarations"][5].update(parameters={"type": "OBJECT", "properties": {}}),
            "non-empty",
        ),
    ],
)
def test_fake_validator_rejects_what_gemini_rejects(mutate: Any, message: str) -> None:
    request = build(fixture_body())
    mutate(request)
    with pytest.raises(InvalidRequest, match=message):
        validate_request(request, MODEL)


# --- answers --------------------------------------------------------------------------------------


def test_function_call_and_custom_tool_call_answers() -> None:
    patch = "*** Begin Patch\n*** Add File: b.txt\n+é ✓\n*** End Patch\n"
    body = codex_body(user("two tools"))
    events, translator = translate_stream(
        sse(
            chunk(
                [
                    call_part("exec_command", {"cmd": "ls -la"}, signature=sign(MODEL, "fc", "exec_command")),
                    call_part("apply_patch", {"input": patch}),
                ],
                "STOP",
                usage_metadata(10, 4),
            )
        ),
        tools=gemini.tool_map(body),
    )
    response = check_stream(events)
    valid_response(response)
    function_call, custom_call, signatures = response["output"]
    assert function_call["type"] == "function_call" and function_call["name"] == "exec_command"
    assert json.loads(function_call["arguments"]) == {"cmd": "ls -la"}
    assert custom_call["type"] == "custom_tool_call" and custom_call["input"] == patch
    assert function_call["call_id"] != custom_call["call_id"]
    assert signatures["type"] == "reasoning" and signatures["summary"] == []
    payload = open_reasoning(signatures["encrypted_content"], PROVIDER, MODEL)
    assert payload == {
        "anchors": [{"k": "call", "call_id": function_call["call_id"], "sig": sign(MODEL, "fc", "exec_command")}]
    }
    assert "response.custom_tool_call_input.delta" in [e["type"] for e in events]
    assert translator.outcome == "completed"


def test_default_tool_map_knows_apply_patch_is_custom() -> None:
    events, _ = translate_stream(sse(chunk([call_part("apply_patch", {"input": "*** Begin Patch\n"})], "STOP")))
    assert check_stream(events)["output"][0]["type"] == "custom_tool_call"


def test_gemini_call_ids_kept_and_replayed() -> None:
    events, _ = translate_stream(sse(chunk([call_part("exec_command", {"cmd": "pwd"}, call_id="gm-call-7")], "STOP")))
    response = check_stream(events)
    assert response["output"][0]["call_id"] == "gm-call-7"
    request = build(
        replay(
            codex_body(user("pwd")), response, {"type": "function_call_output", "call_id": "gm-call-7", "output": "/"}
        )
    )
    assert request["contents"][1]["parts"][0]["functionCall"]["id"] == "gm-call-7"
    assert request["contents"][2]["parts"][0]["functionResponse"]["id"] == "gm-call-7"


def test_call_ids_are_minted_stable_and_unique() -> None:
    raw = sse(chunk([call_part("exec_command", {"cmd": "a"}), call_part("exec_command", {"cmd": "b"})], "STOP"))
    first = check_stream(translate_stream(raw)[0])
    again = check_stream(translate_stream(raw)[0])
    other_ctx = ResponseContext("resp_other", MODEL, PROVIDER, 1)
    other = check_stream(translate_stream(raw, ctx=other_ctx)[0], other_ctx)
    ids = [item["call_id"] for item in first["output"]]
    assert len(set(ids)) == 2
    assert ids == [item["call_id"] for item in again["output"]]
    assert not set(ids) & {item["call_id"] for item in other["output"]}


def test_max_tokens_is_incomplete() -> None:
    events, translator = translate_stream(
        sse(chunk([text_part("Partial ans")]), chunk([text_part("wer")], "MAX_TOKENS", usage_metadata(10, 100)))
    )
    response = check_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "Partial answer"
    assert translator.outcome == "incomplete"


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "MALFORMED_FUNCTION_CALL", "PROHIBITED_CONTENT"])
def test_refusal_stops_complete_with_a_notice(reason: str) -> None:
    events, translator = translate_stream(sse(chunk([text_part("Sure, ")]), chunk([], reason, usage_metadata(10, 2))))
    response = check_stream(events)
    assert events[-1]["type"] == "response.completed"
    texts = [item["content"][0]["text"] for item in response["output"] if item["type"] == "message"]
    assert texts[0] == "Sure, "
    assert reason in texts[-1] and texts[-1].startswith("[Gemini stopped")
    assert translator.outcome == "completed"


def test_blocked_prompt_completes_with_a_notice() -> None:
    raw = sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": usage_metadata(9, 0)})
    validate_response(json.loads(raw[6:-4]))
    events, translator = translate_stream(raw)
    response = check_stream(events)
    assert "PROHIBITED_CONTENT" in response["output"][0]["content"][0]["text"]
    assert translator.usage == Usage(input_tokens=9)


def test_stream_without_final_chunk_fails() -> None:
    events, translator = translate_stream(sse(chunk([text_part("Half an ans")])))
    response = check_stream(events)
    assert events[-1]["type"] == "response.failed"
    assert response["error"]["code"] == "server_error"
    assert "ended" in response["error"]["message"]
    assert translator.outcome == "failed"
    # the half message is not claimed as finished
    assert response["output"] == []


def test_finish_without_any_event_fails_too() -> None:
    translator = gemini.StreamTranslator(CTX)
    events = translator.finish()
    check_stream(events)
    assert events[-1]["type"] == "response.failed"
    assert translator.finish() == []  # once


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}, "server_error"),
        ({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}, "server_error"),
        ({"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}, "rate_limit_exceeded"),
        (
            {
                "code": 400,
                "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                "status": "INVALID_ARGUMENT",
            },
            "context_length_exceeded",
        ),
    ],
)
def test_error_event_mid_stream_fails_the_response(error: dict[str, Any], code: str) -> None:
    raw = sse(chunk([text_part("Starting")])) + sse({"error": error})
    events, translator = translate_stream(raw)
    response = check_stream(events)
    assert response["status"] == "failed" and response["error"]["code"] == code
    assert translator.outcome == "failed"
    # nothing after the terminal event, even if the provider keeps talking
    assert translator.feed(chunk([text_part("more")], "STOP")) == []
    assert translator.finish() == []


def test_garbage_in_the_stream_fails_the_response() -> None:
    events, _ = translate_stream(b"data: {not json\r\n\r\n")
    assert check_stream(events)["status"] == "failed"


def test_stream_split_anywhere_gives_the_same_events() -> None:
    raw = sse(
        chunk([text_part("Thinking about ✓ unicode — 日本語", thought=True)]),
        chunk([text_part("Héllo, ")]),
        chunk([text_part("wörld ✓", signature=sign(MODEL, "text", "wörld ✓"))]),
        chunk([call_part("exec_command", {"cmd": "echo 日本"}, signature=sign(MODEL, "fc", "exec_command"))]),
        chunk([], "STOP", usage_metadata(30, 12, thoughts=5, cached=10)),
    )
    whole, _ = translate_stream(raw)
    check_stream(whole)
    for cut in range(1, len(raw)):
        assert translate_stream(raw, [cut])[0] == whole, cut
    rng = random.Random(7)
    for _ in range(200):
        cuts = rng.sample(range(1, len(raw)), rng.randint(2, 40))
        assert translate_stream(raw, cuts)[0] == whole
    # and unterminated at the very end (no final blank line): close() flushes it
    assert translate_stream(raw[:-4])[0] == whole


def test_events_emitted_as_chunks_arrive() -> None:
    translator = gemini.StreamTranslator(CTX)
    first = translator.feed(chunk([text_part("Hel")]))
    assert [e["type"] for e in first] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert [e["type"] for e in translator.feed(chunk([text_part("lo")]))] == ["response.output_text.delta"]


def test_non_streamed_answer(fake: FakeGemini) -> None:
    body = _call_turn_body()
    fake.script(Reply(_signed_call_reply()))
    status, raw = post(fake, build(body), MODEL, stream=False)
    assert status == 200, raw
    answer = json.loads(raw)
    validate_response(answer)
    response = gemini.translate_response(answer, CTX, tools=gemini.tool_map(body), upstream_model=MODEL)
    valid_response(response)
    assert response["status"] == "completed" and response["id"] == CTX.response_id
    assert [item["type"] for item in response["output"]] == ["reasoning", "function_call", "reasoning"]
    assert (
        response["usage"]["output_tokens"] == 30
        and response["usage"]["output_tokens_details"]["reasoning_tokens"] == 20
    )
    # the non-streamed answer replays exactly like the streamed one
    call = response["output"][1]
    following = build(
        replay(body, response, {"type": "function_call_output", "call_id": call["call_id"], "output": "x"})
    )
    assert following["contents"][1]["parts"][0]["thoughtSignature"] == sign(MODEL, "fc", "exec_command")


def test_non_streamed_error_body_becomes_failed_response() -> None:
    response = gemini.translate_response({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}, CTX)
    strict_event({"type": "response.failed", "sequence_number": 0, "response": response})
    assert response["status"] == "failed" and response["error"]["code"] == "server_error"


# --- errors ---------------------------------------------------------------------------------------


def google_error(status: int, google_status: str, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


PER_MINUTE = [
    {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            }
        ],
    },
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.5s"},
]
PER_DAY = [
    {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
    }
]


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "code"),
    [
        (
            429,
            google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", PER_MINUTE),
            429,
            "rate_limit_exceeded",
        ),
        (
            429,
            google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", PER_DAY),
            429,
            "insufficient_quota",
        ),
        (
            429,
            google_error(429, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted."),
            429,
            "insufficient_quota",
        ),
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
            ),
            400,
            "context_length_exceeded",
        ),
        (400, google_error(400, "INVALID_ARGUMENT", 'Unknown name "foo"'), 400, "invalid_request_error"),
        (
            403,
            google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
            502,
            "upstream_auth_error",
        ),
        (
            401,
            google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            502,
            "upstream_auth_error",
        ),
        (
            503,
            google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
            503,
            "server_error",
        ),
        (500, google_error(500, "INTERNAL", "An internal error has occurred."), 500, "server_error"),
        (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline expired."), 504, "server_error"),
        (
            404,
            google_error(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"),
            404,
            "model_not_found",
        ),
        (502, b"<html>Bad Gateway</html>", 502, "server_error"),
    ],
)
def test_translate_error(status: int, body: bytes, expected_status: int, code: str) -> None:
    client_status, answer = gemini.translate_error(status, body)
    assert client_status == expected_status
    assert set(answer) == {"error"}
    assert set(answer["error"]) == {"message", "type", "code", "param"}
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]


def test_retry_after_from_retry_info() -> None:
    assert gemini.retry_after_seconds(google_error(429, "RESOURCE_EXHAUSTED", "x", PER_MINUTE)) == 37
    assert gemini.retry_after_seconds(google_error(429, "RESOURCE_EXHAUSTED", "x", PER_DAY)) is None
    assert gemini.retry_after_seconds(b"nonsense") is None


def test_refused_key_is_502_and_never_echoed(fake: FakeGemini) -> None:
    wrong = "AIzaSyWRONGKEY-0123456789abcdefghijklmn"
    status, raw = post(fake, build(codex_body(user("hi"))), MODEL, stream=True, key=wrong)
    assert status == 400  # Google answers a bad key with 400 API_KEY_INVALID
    client_status, answer = gemini.translate_error(status, raw)
    assert client_status == 502
    assert "credentials" in answer["error"]["message"]
    assert wrong not in json.dumps(answer)
    echoed = google_error(400, "INVALID_ARGUMENT", f"API key not valid: {wrong} (https://x?key={wrong})")
    assert wrong not in json.dumps(gemini.translate_error(400, echoed))


def test_fake_scripted_errors_through_http(fake: FakeGemini) -> None:
    request = build(codex_body(user("hi")))
    fake.script(
        Reply(status=429, error=json.loads(google_error(429, "RESOURCE_EXHAUSTED", "quota", PER_MINUTE))["error"])
    )
    status, raw = post(fake, request, MODEL, stream=True)
    assert gemini.translate_error(status, raw)[0] == 429 and gemini.retry_after_seconds(raw) == 37

    fake.script(
        Reply(
            [chunk([text_part("Working")])],
            stream_error={"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"},
        )
    )
    status, raw = post(fake, request, MODEL, stream=True)
    assert status == 200
    events, translator = translate_stream(raw)
    assert check_stream(events)["error"]["code"] == "server_error" and translator.outcome == "failed"

    fake.script(Reply([chunk([text_part("Cut ")]), chunk([text_part("off")]), chunk([], "STOP")], cut_after=1))
    status, raw = post(fake, request, MODEL, stream=True)
    events, translator = translate_stream(raw)
    response = check_stream(events)
    assert response["status"] == "failed" and "ended" in response["error"]["message"]
    assert translator.outcome == "failed"
    assert fake.invalid == []


def test_fake_answers_invalid_requests_like_google(fake: FakeGemini) -> None:
    request = build(codex_body(user("hi")))
    request["tools"][0]["functionDeclarations"][0]["parameters"]["additionalProperties"] = False
    status, raw = post(fake, request, MODEL, stream=False)
    assert status == 400
    assert json.loads(raw)["error"]["status"] == "INVALID_ARGUMENT"
    assert fake.invalid and "additionalProperties" in fake.invalid[0]
    assert gemini.translate_error(status, raw)[1]["error"]["code"] == "invalid_request_error"


def test_seal_reasoning_is_the_only_envelope_format() -> None:
    # envelopes come from base.seal_reasoning, so the OpenAI path can recognise and drop them
    events, _ = translate_stream(sse(*_signed_call_reply()), upstream_model=MODEL)
    blobs = [item["encrypted_content"] for item in check_stream(events)["output"] if item["type"] == "reasoning"]
    assert blobs and all(blob.startswith("cg1.") for blob in blobs)
    assert seal_reasoning(PROVIDER, MODEL, {"anchors": []}) == blobs[0]  # the summary item had no signature
