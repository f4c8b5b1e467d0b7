"""One contract for every translating provider family (Anthropic, Gemini, Bedrock, Chat hosts).

Each family of the registry is driven the way the gateway drives it — `ProviderFamily.prepare`
for the request, `ProviderFamily.stream` (decoder + translator + SSE encoder) for the answer — with upstream answers in
the provider's own wire format made by the SDK-validated fakes in tests/fakes. Every request the
translators build is checked by that family's fake validator (what the real API refuses), and
every Responses event or answer they produce is validated strictly against openai.types.responses.

Adding a family: one `Family` entry in FAMILIES (its settings, model, request check, wire encoders);
every translating family of the registry must have one (`test_every_translating_family_is_covered`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes import bedrock_upstream as bedrock_fake
from fakes import chat_upstream as chat_fake
from fakes import gemini_upstream as gemini_fake
from fakes.sdk_validation import valid_response, valid_stream_event

from codexgate.policies.schema import (
    AnthropicProvider,
    AzureProvider,
    BedrockProvider,
    ChatProvider,
    GeminiProvider,
    SecretRef,
)
from codexgate.providers import anthropic, gemini, registry
from codexgate.providers.base import ResponseContext, TranslateOptions, UnsupportedRequest, seal_reasoning
from codexgate.providers.chat_ingress import chat_to_translator_body
from codexgate.providers.family import Prepared, ProviderFamily, new_context
from codexgate.sse import SSEParser

KEY = [SecretRef(value="env:UNUSED")]
PROVIDER = "conformance"

EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    "strict": False,
}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files", "format": {"type": "text"}}


# --------------------------------------------------------------------------------------------
# A scripted upstream answer, and each family's wire encoding of it


@dataclasses.dataclass(frozen=True)
class Text:
    text: str


@dataclasses.dataclass(frozen=True)
class Call:
    call_id: str
    name: str
    arguments: dict[str, Any]


Block = Text | Call


@dataclasses.dataclass(frozen=True)
class Answer:
    blocks: tuple[Block, ...]
    stop: str = "end"  # end | max_tokens | tool_use


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    provider: ProviderFamily[Any]  # the registry's family, built for conformance settings
    model: str
    request_errors: Callable[[dict[str, Any], str], list[str]]
    stream: Callable[[Answer, str], bytes]  # (answer, model) → upstream stream bytes
    stream_error: Callable[[Answer, str], bytes]  # the answer's first block, then an error event


def _anthropic_message(answer: Answer, model: str) -> tuple[anthropic_fake.Reply, dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for block in answer.blocks:
        if isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
        else:
            content.append({"type": "tool_use", "id": block.call_id, "name": block.name, "input": block.arguments})
    stop = {"end": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use"}[answer.stop]
    reply = anthropic_fake.Reply(content=content, stop_reason=stop)
    return reply, anthropic_fake.build_message(reply, model)


def anthropic_stream(answer: Answer, model: str) -> bytes:
    reply, message = _anthropic_message(answer, model)
    return anthropic_fake.encode_sse(anthropic_fake.message_events(message, reply))


def anthropic_error(answer: Answer, model: str) -> bytes:
    reply, message = _anthropic_message(answer, model)
    events = anthropic_fake.message_events(message, reply)
    head = [e for e in events if e["type"] in ("message_start", "ping")]
    first = [e for e in events if e.get("index") == 0]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return anthropic_fake.encode_sse([*head, *first, error])


def _gemini_chunks(answer: Answer, model: str) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    for block in answer.blocks:
        if isinstance(block, Text):
            chunks.append(gemini_fake.chunk([gemini_fake.text_part(block.text)]))
        else:
            signature = gemini_fake.sign(model, "fc", block.name)
            chunks.append(gemini_fake.chunk([gemini_fake.call_part(block.name, block.arguments, signature)]))
    finish = "MAX_TOKENS" if answer.stop == "max_tokens" else "STOP"
    chunks.append(gemini_fake.chunk([], finish, gemini_fake.usage_metadata(40, 12)))
    for piece in chunks:
        gemini_fake.validate_response(piece)
    return chunks


def _gemini_sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"data: {json.dumps(event)}\r\n\r\n".encode() for event in events)


def gemini_stream(answer: Answer, model: str) -> bytes:
    return _gemini_sse(_gemini_chunks(answer, model))


def gemini_error(answer: Answer, model: str) -> bytes:
    error = {"error": {"code": 503, "status": "UNAVAILABLE", "message": "The model is overloaded."}}
    return _gemini_sse([_gemini_chunks(answer, model)[0], error])


def _bedrock_events(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[Any] = [
        bedrock_fake.Text(block.text)
        if isinstance(block, Text)
        else bedrock_fake.ToolUse(block.call_id, block.name, block.arguments)
        for block in answer.blocks
    ]
    stop = {"end": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use"}[answer.stop]
    return bedrock_fake.stream_events(blocks, stop)


def bedrock_stream(answer: Answer, model: str) -> bytes:
    return bedrock_fake.encode_stream(_bedrock_events(answer))


def bedrock_error(answer: Answer, model: str) -> bytes:
    events = _bedrock_events(answer)
    first = [e for e in events if "messageStart" in e or _block_index(e) == 0]
    return bedrock_fake.encode_stream([*first, {"throttlingException": {"message": "Too many requests"}}])


def _block_index(event: dict[str, Any]) -> int | None:
    payload = next(iter(event.values()))
    return payload.get("contentBlockIndex") if isinstance(payload, dict) else None


def _chat_chunks(answer: Answer) -> list[dict[str, Any]]:
    chunks = [chat_fake.chunk({"role": "assistant", "content": ""})]
    calls = 0
    for block in answer.blocks:
        if isinstance(block, Text):
            chunks += [chat_fake.chunk({"content": block.text[i : i + 5]}) for i in range(0, len(block.text), 5)]
        else:
            chunks += chat_fake.tool_call_chunks(block.call_id, block.name, json.dumps(block.arguments), index=calls)
            calls += 1
    finish = {"end": "stop", "max_tokens": "length", "tool_use": "tool_calls"}[answer.stop]
    chunks += [chat_fake.chunk({}, finish), chat_fake.chunk(empty_choices=True, usage=chat_fake.usage(40, 12))]
    return chunks


def chat_stream(answer: Answer, model: str) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in _chat_chunks(answer)) + b"data: [DONE]\n\n"


def chat_error(answer: Answer, model: str) -> bytes:
    head = _chat_chunks(answer)[:2]
    error = {"error": {"message": "upstream overloaded", "type": "server_error", "code": None}}
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in [*head, error])


def _anthropic_errors(body: dict[str, Any], model: str) -> list[str]:
    return anthropic_fake.request_errors(body)


def _gemini_errors(body: dict[str, Any], model: str) -> list[str]:
    try:
        gemini_fake.validate_request(body, model)
    except (gemini_fake.InvalidRequest, ValueError) as exc:
        return [str(exc)]
    return []


def _bedrock_errors(body: dict[str, Any], model: str) -> list[str]:
    return bedrock_fake.request_errors(body, model, stream=True)


def _chat_errors(body: dict[str, Any], model: str) -> list[str]:
    problems: list[str] = chat_fake.request_problems(body)
    messages = body.get("messages") or []
    # What hosts refuse beyond the SDK types: blank user/assistant text, unanswered tool calls.
    for index, message in enumerate(messages):
        content = message.get("content")
        blank = isinstance(content, str) and not content.strip() and not message.get("tool_calls")
        if message.get("role") in ("user", "assistant") and blank:
            problems.append(f"messages[{index}]: blank {message['role']} message")
        if message.get("tool_calls"):
            answered = {m.get("tool_call_id") for m in messages[index + 1 :] if m.get("role") == "tool"}
            missing = {call["id"] for call in message["tool_calls"]} - answered
            if missing:
                problems.append(f"messages[{index}]: tool calls {sorted(missing)} have no tool message")
    return problems


FAMILIES = {
    "anthropic": Family(
        "anthropic",
        registry.family_for(AnthropicProvider(kind="anthropic", keys=KEY)),
        "claude-sonnet-4-5",
        _anthropic_errors,
        anthropic_stream,
        anthropic_error,
    ),
    "gemini": Family(
        "gemini",
        registry.family_for(GeminiProvider(kind="gemini", keys=KEY)),
        "gemini-2.5-flash",
        _gemini_errors,
        gemini_stream,
        gemini_error,
    ),
    "bedrock": Family(
        "bedrock",
        registry.family_for(BedrockProvider(kind="bedrock", region="us-east-1")),
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        _bedrock_errors,
        bedrock_stream,
        bedrock_error,
    ),
    "azure": Family(
        "azure",
        registry.family_for(AzureProvider(kind="azure", endpoint="https://res.openai.azure.com", api="chat", keys=KEY)),
        "gpt-4o-mini",
        _chat_errors,
        chat_stream,
        chat_error,
    ),
    "chat": Family(
        "chat",
        registry.family_for(ChatProvider(kind="chat", preset="groq", keys=KEY)),
        "llama-3.3-70b",
        _chat_errors,
        chat_stream,
        chat_error,
    ),
}


# Every family that translates (not pass-through, not answered in the gateway) is held to this contract.
TRANSLATING = sorted(
    kind for kind, family in registry.FAMILIES.items() if not family.passthrough and not family.answers_locally
)


def test_every_translating_family_is_covered() -> None:
    assert set(TRANSLATING) == set(FAMILIES)


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> Family:
    return FAMILIES[request.param]


# --------------------------------------------------------------------------------------------
# Driving a family as the gateway does


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call(call_id: str, cmd: str = "ls") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "exec_command", "arguments": json.dumps({"cmd": cmd})}


def output(call_id: str, text: str = "done") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def body_with(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "codex-model",
        "stream": True,
        "instructions": "You are Codex.",
        "input": list(items),
        "tools": [EXEC, APPLY_PATCH],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
    }
    body.update(extra)
    return body


def prepare(family: Family, body: dict[str, Any]) -> tuple[Prepared, dict[str, Any]]:
    """The upstream request for `body`; it must pass the family's fake checks."""
    prepared = family.provider.prepare(body, family.model, PROVIDER)
    request = json.loads(prepared.body)
    errors = family.request_errors(request, family.model)
    assert errors == [], errors
    return prepared, request


def context() -> ResponseContext:
    return ResponseContext(response_id="resp_conformance", model="codex-model", provider_name=PROVIDER, created_at=1)


def decode_sse(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(payload) for _, payload in SSEParser().feed(data)]


def run(family: Family, prepared: Prepared, pieces: list[bytes]) -> tuple[list[dict[str, Any]], Any]:
    """Feed upstream bytes in these pieces; the Responses events (each validated) and the bridge."""
    bridge = family.provider.stream(prepared, context())
    out = b"".join(bridge.feed(piece) for piece in pieces) + bridge.finish()
    events = decode_sse(out)
    for number, event in enumerate(events):
        valid_stream_event(event)
        assert event["sequence_number"] == number
        if "response" in event:
            valid_response(event["response"])
    return events, bridge


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = events[-1]["response"]
    return response


def kinds(response: dict[str, Any]) -> list[str]:
    """Output item types, without reasoning items (Gemini keeps its signatures in one)."""
    return [item["type"] for item in response["output"] if item["type"] != "reasoning"]


def without_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with generated item ids replaced by their order of first appearance."""
    names: dict[str, str] = {}

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if key in ("id", "item_id") and isinstance(value, str) and not value.startswith("resp_"):
            return names.setdefault(value, f"id{len(names)}")
        if key == "encrypted_content":
            return "sealed"
        return value

    return [scrub(event) for event in events]


TOOL_ANSWER = Answer(
    (Text('Let me look: ünïcödé 😀 and "quotes".\n'), Call("call_a1", "exec_command", {"cmd": "ls -la"})),
    stop="tool_use",
)


# --------------------------------------------------------------------------------------------
# Streams: any split, cut, mid-stream error, stop reasons


def test_any_chunk_split_gives_the_same_events(family: Family) -> None:
    prepared, _ = prepare(family, body_with(user("list the files")))
    data = family.stream(TOOL_ANSWER, family.model)
    whole, bridge = run(family, prepared, [data])
    assert bridge.outcome == "completed"
    assert kinds(final(whole)) == ["message", "function_call"]
    for size in (1, 7):
        events, _ = run(family, prepared, split(data, size))
        assert without_ids(events) == without_ids(whole), f"{size}-byte pieces"


def test_cut_stream_fails_the_response(family: Family) -> None:
    prepared, _ = prepare(family, body_with(user("list the files")))
    data = family.stream(TOOL_ANSWER, family.model)
    events, bridge = run(family, prepared, [data[: len(data) // 2]])
    assert events[-1]["type"] == "response.failed" and bridge.outcome == "failed"
    assert final(events)["error"]["code"] == "server_error"


def test_mid_stream_error_fails_the_response(family: Family) -> None:
    prepared, _ = prepare(family, body_with(user("list the files")))
    events, bridge = run(family, prepared, [family.stream_error(TOOL_ANSWER, family.model)])
    assert events[-1]["type"] == "response.failed" and bridge.outcome == "failed"
    assert final(events)["error"]["message"]
    assert sum(event["type"].startswith("response.") and event["type"] in TERMINAL for event in events) == 1


TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


@pytest.mark.parametrize(
    ("stop", "terminal", "reason"),
    [("end", "response.completed", None), ("max_tokens", "response.incomplete", "max_output_tokens")],
)
def test_stop_reasons(family: Family, stop: str, terminal: str, reason: str | None) -> None:
    prepared, _ = prepare(family, body_with(user("hi")))
    events, bridge = run(family, prepared, [family.stream(Answer((Text("Hello there"),), stop), family.model)])
    assert events[-1]["type"] == terminal and bridge.outcome == terminal.removeprefix("response.")
    details = final(events)["incomplete_details"]
    assert (details or {}).get("reason") == reason


# --------------------------------------------------------------------------------------------
# Whitespace-only and empty text: never a message item, never sent upstream


@pytest.mark.parametrize("blank", ["\n\n", " ", ""])
def test_blank_text_before_a_call_is_no_message_and_the_next_turn_is_accepted(family: Family, blank: str) -> None:
    """Claude sends "\\n\\n" before a tool call; replayed, it killed the session (400 upstream)."""
    first = body_with(user("list the files"))
    prepared, _ = prepare(family, first)
    answer = Answer((Text(blank), Call("call_w1", "exec_command", {"cmd": "ls"})), stop="tool_use")
    events, _ = run(family, prepared, [family.stream(answer, family.model)])
    produced = final(events)["output"]
    assert kinds(final(events)) == ["function_call"]
    assert not [event for event in events if event["type"].startswith(("response.output_text", "response.content"))]
    # Codex replays what it got, plus the tool output: the provider must accept that request.
    prepare(family, body_with(user("list the files"), *produced, output("call_w1", "a.txt")))


def test_blank_user_and_assistant_text_in_the_history_is_not_sent(family: Family) -> None:
    body = body_with(
        user("start"),
        assistant("\n\n"),
        call("call_b1"),
        output("call_b1"),
        {"type": "message", "role": "user", "content": "   "},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "\t\n"}]},
        assistant("Done.  "),
        user("and now?"),
    )
    prepare(family, body)


def test_final_assistant_message_with_trailing_whitespace_is_accepted(family: Family) -> None:
    prepare(family, body_with(user("start"), assistant("The answer is \n\n")))


# --------------------------------------------------------------------------------------------
# History repairs: missing tool outputs, role order


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([user("go"), call("call_m1"), user("never mind, do this")], id="call-then-user"),
        pytest.param([user("go"), call("call_m1"), call("call_m2"), output("call_m2")], id="one-of-two-answered"),
        pytest.param([user("go"), call("call_m1")], id="call-last"),
        pytest.param([user("go"), output("call_gone"), user("next")], id="output-without-call"),
        pytest.param([user("go"), call("call_m1"), user("wait"), output("call_m1")], id="output-after-a-user-turn"),
        pytest.param(
            [user("go"), call("call_m1"), call("call_m2"), output("call_m2"), output("call_m1")], id="reordered"
        ),
    ],
)
def test_missing_or_orphan_tool_outputs_are_repaired(family: Family, items: list[dict[str, Any]]) -> None:
    prepare(family, body_with(*items))


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([assistant("Hello, how can I help?"), user("list files")], id="starts-with-assistant"),
        pytest.param([user("hi"), assistant("Hello")], id="ends-with-assistant"),
        pytest.param([assistant("only the model spoke")], id="assistant-only"),
        pytest.param([user("a"), user("b"), assistant("c"), assistant("d"), user("e")], id="repeated-roles"),
    ],
)
def test_role_order_is_repaired(family: Family, items: list[dict[str, Any]]) -> None:
    prepare(family, body_with(*items))


# --------------------------------------------------------------------------------------------
# What the answer echoes, what the request cannot carry


def test_echoed_fields_are_the_requests(family: Family) -> None:
    body = body_with(
        user("hi"), tools=[EXEC], tool_choice="required", parallel_tool_calls=False, temperature=0.25, top_p=0.5
    )
    prepared, _ = prepare(family, body)
    events, _ = run(family, prepared, [family.stream(TOOL_ANSWER, family.model)])
    for event in events:
        if "response" in event:
            response = event["response"]
            assert response["tools"] == [EXEC]
            assert response["tool_choice"] == "required" and response["parallel_tool_calls"] is False
            assert response["temperature"] == 0.25 and response["top_p"] == 0.5


def test_echo_defaults_when_the_request_says_nothing(family: Family) -> None:
    body = {"model": "codex-model", "stream": True, "input": "hi"}
    prepared, _ = prepare(family, body)
    events, _ = run(family, prepared, [family.stream(Answer((Text("Hello"),)), family.model)])
    response = final(events)
    assert (response["tools"], response["tool_choice"], response["parallel_tool_calls"]) == ([], "auto", True)


@pytest.mark.parametrize(("field", "value"), [("previous_response_id", "resp_earlier"), ("background", True)])
def test_stateful_requests_are_refused_with_400(family: Family, field: str, value: Any) -> None:
    with pytest.raises(UnsupportedRequest) as refused:
        family.provider.prepare(body_with(user("hi"), **{field: value}), family.model, PROVIDER)
    body = refused.value.body()
    assert body["error"]["param"] == field and body["error"]["type"] == "invalid_request_error"
    assert field.split("_")[0] in body["error"]["message"]
    assert isinstance(refused.value, ValueError)  # what the Route addon answers 400 to
    # background: false and a null previous_response_id are what Codex sends: served.
    prepare(family, body_with(user("hi"), background=False, previous_response_id=None))


STOP_FIELD: dict[str, Callable[[dict[str, Any]], Any]] = {
    "anthropic": lambda request: request.get("stop_sequences"),
    "gemini": lambda request: request.get("generationConfig", {}).get("stopSequences"),
    "bedrock": lambda request: request.get("inferenceConfig", {}).get("stopSequences"),
    "chat": lambda request: request.get("stop"),
    "azure": lambda request: request.get("stop"),
}
# What each family sends of the Chat sampling parameters below (the rest is reported dropped).
SENT = {
    "anthropic": {"stop"},
    "gemini": {"stop", "seed"},
    "bedrock": {"stop"},
    "chat": {"stop", "seed", "presence_penalty"},
    "azure": {"stop", "seed", "presence_penalty"},
}


def test_chat_stop_is_mapped_and_unmappable_parameters_are_reported(family: Family) -> None:
    chat = {
        "model": "codex-model",
        "messages": [{"role": "user", "content": "count to ten"}],
        "stop": ["7", "\n\n"],
        "seed": 42,
        "presence_penalty": 0.5,
        "logprobs": True,
        "logit_bias": {"50256": -100},
        "stream": True,
    }
    prepared, request = prepare(family, chat_to_translator_body(chat))
    assert STOP_FIELD[family.name](request) == ["7", "\n\n"]
    expected = {"seed", "presence_penalty", "logprobs"} - SENT[family.name] | {"logit_bias"}
    assert set(prepared.dropped_params) == expected
    single, _ = prepare(family, chat_to_translator_body(dict(chat, stop="END", seed=None, presence_penalty=None)))
    assert set(single.dropped_params) == {"logprobs", "logit_bias"}


# --------------------------------------------------------------------------------------------
# Custom tool input decoded alike everywhere (lone surrogates included)


@pytest.mark.parametrize("text", ['*** Begin Patch\n+ok "q" \\ /\n', "cut mid-emoji \ud83d!", "low \udc00 alone"])
def test_custom_tool_input_streams_the_same_at_any_split(family: Family, text: str) -> None:
    if family.name == "gemini" and text != text.encode("utf-8", "replace").decode():
        pytest.skip("Gemini's API sends valid UTF-8 only (protobuf strings): its fake refuses a lone surrogate")
    prepared, _ = prepare(family, body_with(user("patch it")))
    answer = Answer((Call("call_p1", "apply_patch", {"input": text}),), stop="tool_use")
    data = family.stream(answer, family.model)
    expected = text.replace("\ud83d", "\ufffd").replace("\udc00", "\ufffd")
    for size in (1, 3, len(data)):
        events, _ = run(family, prepared, split(data, size))
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
        done = [e["input"] for e in events if e["type"] == "response.custom_tool_call_input.done"]
        item = next(item for item in final(events)["output"] if item["type"] != "reasoning")
        assert item["type"] == "custom_tool_call" and item["input"] == expected
        assert done == [expected] and deltas == expected, (size, deltas)


# --------------------------------------------------------------------------------------------
# Family-specific fidelity: thinking under an output cap, Gemini schemas, Anthropic refusals


@pytest.mark.parametrize(
    ("model", "cap", "budget"),
    [
        ("gemini-2.5-flash", 16, 0),  # no room to think
        ("gemini-2.5-flash", 4000, 2000),  # half the cap
        ("gemini-2.5-flash", None, 24576),  # no cap: the effort's budget
        ("gemini-2.5-pro", 100, 128),  # Pro cannot stop thinking: its minimum
        ("gemini-2.5-flash-lite", 800, 0),  # 400 is under Flash-Lite's 512 minimum: off
    ],
)
def test_gemini_thinking_budget_respects_the_output_cap(model: str, cap: int | None, budget: int) -> None:
    body = body_with(user("hi"), reasoning={"effort": "high"})
    if cap is not None:
        body["max_output_tokens"] = cap
    request = gemini.build_request(body, model, TranslateOptions(provider_name=PROVIDER))
    gemini_fake.validate_request(request, model)
    thinking = request["generationConfig"]["thinkingConfig"]
    assert thinking["thinkingBudget"] == budget
    assert thinking.get("includeThoughts", False) is (budget > 0)


def test_gemini_level_models_think_least_under_a_small_cap() -> None:
    body = body_with(user("hi"), reasoning={"effort": "high"}, max_output_tokens=256)
    request = gemini.build_request(body, "gemini-3-flash-preview", TranslateOptions(provider_name=PROVIDER))
    assert request["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "MINIMAL"


def test_anthropic_keeps_the_smallest_thinking_budget_when_it_fits() -> None:
    body = body_with(user("hi"), reasoning={"effort": "high"}, max_output_tokens=1500)
    request = anthropic.build_request(body, "claude-sonnet-4-5", TranslateOptions(provider_name=PROVIDER))
    assert anthropic_fake.request_errors(request) == []
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_gemini_schema_keeps_the_argument_types() -> None:
    schema = {
        "type": "object",
        "$defs": {"Range": {"type": "object", "properties": {"start": {"type": "integer"}}, "required": ["start"]}},
        "properties": {
            "range": {
                "allOf": [
                    {"$ref": "#/$defs/Range"},
                    {"properties": {"end": {"type": "integer"}}, "required": ["end"]},
                ]
            },
            "anything": {},
            "values": {"type": "array"},
            "not_a_string": {"not": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "choice": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    converted = gemini.gemini_schema(schema)
    gemini_fake.check_schema(converted, "parameters")
    gemini_fake.types.Schema.model_validate(converted)
    props = converted["properties"]
    assert props["range"] == {
        "type": "OBJECT",
        "properties": {"start": {"type": "INTEGER"}, "end": {"type": "INTEGER"}},
        "required": ["start", "end"],
    }
    any_types = {branch["type"] for branch in props["anything"]["anyOf"]}
    assert any_types == {"STRING", "NUMBER", "BOOLEAN", "OBJECT", "ARRAY"} and props["anything"]["nullable"]
    assert props["values"]["type"] == "ARRAY" and "anyOf" in props["values"]["items"]
    assert "anyOf" in props["not_a_string"]  # `not` dropped: any value rather than "a string"
    assert props["env"]["type"] == "OBJECT" and '{"type": "string"}' in props["env"]["description"]
    assert [branch["type"] for branch in props["choice"]["anyOf"]] == ["STRING", "INTEGER"]


def _refusal(partial: str) -> tuple[anthropic_fake.Reply, dict[str, Any]]:
    content = [{"type": "text", "text": partial}] if partial else []
    reply = anthropic_fake.Reply(
        content=content, stop_reason="refusal", stop_details={"type": "refusal", "category": None, "explanation": None}
    )
    return reply, anthropic_fake.build_message(reply, "claude-sonnet-4-5")


def test_anthropic_refusal_after_partial_text_is_marked() -> None:
    reply, message = _refusal("Sure, here is how to")
    ctx = new_context("codex-model", PROVIDER)
    whole = anthropic.translate_response(message, ctx)
    valid_response(whole)
    adapter = FAMILIES["anthropic"].provider
    prepared, _ = prepare(FAMILIES["anthropic"], body_with(user("x")))
    events, bridge = run(
        FAMILIES["anthropic"], prepared, [anthropic_fake.encode_sse(anthropic_fake.message_events(message, reply))]
    )
    assert adapter is not None and bridge.outcome == "completed"
    for response in (whole, final(events)):
        texts = [item["content"][0]["text"] for item in response["output"] if item["type"] == "message"]
        # Completed (Codex would retry an incomplete answer into the same refusal), but marked.
        assert response["status"] == "completed"
        assert texts[0] == "Sure, here is how to" and "declined" in texts[-1] and len(texts) == 2


def test_other_providers_reasoning_is_never_replayed(family: Family) -> None:
    """A session that switched providers carries reasoning envelopes made for someone else (and
    OpenAI's opaque blobs): they are left out, and the request stays valid."""
    foreign = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": seal_reasoning("elsewhere", "m", {})},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAAABopenai-blob"},
        {
            "type": "reasoning",
            "id": "rs_3",
            "summary": [],
            "encrypted_content": seal_reasoning(PROVIDER, "another-model", {"blocks": []}),
        },
    ]
    _, request = prepare(family, body_with(user("go"), *foreign, call("call_r1"), output("call_r1"), user("next")))
    sent = json.dumps(request)
    assert "cg1." not in sent and "gAAAAAB" not in sent


def test_azure_responses_pass_through_reports_chat_parameters_and_keeps_state() -> None:
    """Azure's v1 Responses API is a pass-through: it stores responses itself (so
    previous_response_id is its business), and the Chat-only parameters never reach it."""
    adapter = registry.family_for(AzureProvider(kind="azure", endpoint="https://res.openai.azure.com", keys=KEY))
    chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stop": "END", "seed": 1}
    prepared = adapter.prepare(chat_to_translator_body(chat), "my-gpt", PROVIDER)
    sent = json.loads(prepared.body)
    assert not {"stop", "seed", "codexgate_unmapped_params"} & set(sent)
    assert sorted(prepared.dropped_params) == ["seed", "stop"]
    stateful = adapter.prepare(body_with(user("go on"), previous_response_id="resp_1"), "my-gpt", PROVIDER)
    assert json.loads(stateful.body)["previous_response_id"] == "resp_1"
