"""Chat Completions clients in front of the Responses translators: `providers.chat_ingress`.

Requests are checked against the openai SDK's `ResponseCreateParams*` TypedDicts key by key (a
pydantic TypeAdapter over a TypedDict accepts unknown keys silently); answers and every stream
chunk against `ChatCompletion` / `ChatCompletionChunk` strictly (no unknown keys). Streams are the
mock provider's (`mock.responses_events`) or hand-built ones that pass the SDK's strict event
validation; chunks are reassembled with the SDK's own `ChatCompletionStreamState` and, end to end,
parsed by a real `openai.OpenAI` client over an in-process transport.
"""

from __future__ import annotations

import collections.abc
import copy
import importlib
import importlib.util
import json
import random
import types
import typing
from typing import Any

import openai
import pytest
import typing_extensions
from fakes import anthropic_upstream
from fakes.sdk_validation import assert_no_extras, valid_response, valid_stream_event
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from pydantic import TypeAdapter

from codexgate.policies.schema import MockProvider
from codexgate.providers import anthropic, bedrock, gemini, mock
from codexgate.providers import chat_ingress as ci
from codexgate.providers.base import ResponseContext, TranslateOptions
from codexgate.providers.family import StreamBridge
from codexgate.sse import SSEParser, encode_event

# The openai SDK's own HTTP client library (newer releases moved from httpx to httpx2).
HTTP: Any = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")
MODEL = "claude-via-chat"
SETTINGS = MockProvider(kind="mock", output_tokens=7, cached_tokens=3, reasoning_tokens=2)
EXEC_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "exec_command",
        "description": "Run a shell command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    },
}
READ_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        "strict": True,
    },
}

# ---------------------------------------------------------------------------------------------
# Strict request validation: walk the SDK's TypedDicts key by key.

_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}
_SEQUENCES = {list, tuple, collections.abc.Iterable, collections.abc.Sequence}
_MAPPINGS = {dict, collections.abc.Mapping}


def _walk(value: Any, tp: Any, path: str) -> list[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return []
    if origin is typing.Annotated or origin in _REQUIRED or origin in _NOT_REQUIRED:
        return _walk(value, args[0], path)
    if origin is typing.Union or origin is types.UnionType:
        attempts = [_walk(value, member, path) for member in args]
        return [] if any(not a for a in attempts) else min(attempts, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not in {args}"]
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in _walk(item, args[0], f"{path}[{i}]")]
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        return [p for k, v in value.items() for p in _walk(v, args[1], f"{path}.{k}")]
    if typing_extensions.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({tp.__name__})"]
        hints = typing.get_type_hints(tp, include_extras=True)
        problems = [
            f"{path}: {tp.__name__} misses {key!r}"
            for key, hint in hints.items()
            if key not in value
            and (
                typing.get_origin(hint) in _REQUIRED
                or (key in tp.__required_keys__ and typing.get_origin(hint) not in _NOT_REQUIRED)
            )
        ]
        for key, item in value.items():
            problems += _walk(item, hints[key], f"{path}.{key}") if key in hints else [f"{path}: unknown key {key!r}"]
        return problems
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if tp in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and (tp is float or isinstance(value, int))
        return [] if ok else [f"{path}: expected {tp.__name__}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string"]
    return [] if isinstance(tp, type) and isinstance(value, tp) else [f"{path}: cannot check {tp!r}"]


def valid_request(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request body, strictly (SDK TypedDicts, no unknown keys); returned for chaining."""
    tp = ResponseCreateParamsStreaming if body.get("stream") is True else ResponseCreateParamsNonStreaming
    assert _walk(body, tp, "$") == []
    TypeAdapter(tp).validate_python(body)
    return body


def valid_chunk(data: dict[str, Any]) -> ChatCompletionChunk:
    parsed = ChatCompletionChunk.model_validate(data)
    assert_no_extras(parsed)
    return parsed


def valid_completion(data: dict[str, Any]) -> ChatCompletion:
    parsed = ChatCompletion.model_validate(data)
    assert_no_extras(parsed)
    return parsed


# ---------------------------------------------------------------------------------------------
# Responses streams built by hand (each event strictly SDK-valid).


def response_object(
    status: str,
    output: list[dict[str, Any]],
    *,
    usage: dict[str, Any] | None = None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "resp_hand1",
        "object": "response",
        "created_at": 1_800_000_000,
        "status": status,
        "model": "upstream-model",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "metadata": {},
        "temperature": None,
        "top_p": None,
    }


USAGE = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
    "output_tokens": 40,
    "output_tokens_details": {"reasoning_tokens": 12},
    "total_tokens": 160,
}


def text_item(item_id: str, text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def custom_item(item_id: str, call_id: str, name: str, payload: str) -> dict[str, Any]:
    return {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": payload}


def reasoning_item(item_id: str, summary: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": summary}]}


def pieces(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def hand_stream(
    items: list[dict[str, Any]],
    status: str = "completed",
    *,
    usage: dict[str, Any] | None = USAGE,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
    deltas: bool = True,
    cut: int | None = None,
    validate: bool = True,
) -> list[dict[str, Any]]:
    """The events OpenAI would send for `items`. deltas=False: only the done events carry text /
    arguments (a translator that does not stream); cut: stop after that many output items."""
    started = response_object("in_progress", [])
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for index, item in enumerate(items[:cut] if cut is not None else items):
        common = {"output_index": index, "item_id": item["id"]}
        kind = item["type"]
        if kind == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": dict(item, content=[], status="in_progress"),
                }
            )
            events.append({"type": "response.content_part.added", **common, "content_index": 0, "part": part})
            if deltas:
                events += [
                    {"type": "response.output_text.delta", **common, "content_index": 0, "delta": piece, "logprobs": []}
                    for piece in pieces(text)
                ]
            events.append(
                {"type": "response.output_text.done", **common, "content_index": 0, "text": text, "logprobs": []}
            )
            events.append(
                {"type": "response.content_part.done", **common, "content_index": 0, "part": dict(part, text=text)}
            )
        elif kind == "function_call":
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": dict(item, arguments="", status="in_progress"),
                }
            )
            if deltas:
                events += [
                    {"type": "response.function_call_arguments.delta", **common, "delta": piece}
                    for piece in pieces(item["arguments"], 7)
                ]
            events.append({"type": "response.function_call_arguments.done", **common, "arguments": item["arguments"]})
        elif kind == "custom_tool_call":
            events.append({"type": "response.output_item.added", "output_index": index, "item": dict(item, input="")})
            if deltas:
                events += [
                    {"type": "response.custom_tool_call_input.delta", **common, "delta": piece}
                    for piece in pieces(item["input"], 9)
                ]
            events.append({"type": "response.custom_tool_call_input.done", **common, "input": item["input"]})
        elif kind == "reasoning":
            events.append({"type": "response.output_item.added", "output_index": index, "item": dict(item, summary=[])})
            summary = item["summary"][0]["text"]
            events.append(
                {"type": "response.reasoning_summary_text.delta", **common, "summary_index": 0, "delta": summary}
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    if cut is None:
        final = response_object(status, items, usage=usage, incomplete=incomplete, error=error)
        events.append({"type": f"response.{status}", "response": final})
    for number, event in enumerate(events):
        event["sequence_number"] = number
        if validate:
            valid_stream_event(event)
    return events


# ---------------------------------------------------------------------------------------------
# Running the encoder and reassembling with the SDK.


def encode(
    events: list[dict[str, Any]], include_usage: bool = True
) -> tuple[list[dict[str, Any]], ci.ChatChunkEncoder]:
    encoder = ci.ChatChunkEncoder(MODEL, include_usage)
    out: list[dict[str, Any]] = []
    for event in events:
        out += encoder.feed(copy.deepcopy(event))
    out += encoder.finish()
    return out, encoder


def reassemble(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """The SDK's own accumulation (its snapshot: `get_final_completion` refuses finish_reason length)."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(valid_chunk(chunk))
    return state.current_completion_snapshot


def summary(completion: ChatCompletion) -> dict[str, Any]:
    """What a Chat client reads, for comparing a reassembled stream with a whole answer."""
    (choice,) = completion.choices
    calls = [(c.id, c.type, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]  # type: ignore[union-attr]
    return {
        "id": completion.id,
        "created": completion.created,
        "model": completion.model,
        "content": choice.message.content,
        "refusal": choice.message.refusal,
        "tool_calls": calls,
        "finish_reason": choice.finish_reason,
        "usage": completion.usage.model_dump() if completion.usage else None,
    }


def check_stream(
    events: list[dict[str, Any]], include_usage: bool = True
) -> tuple[ChatCompletion, list[dict[str, Any]]]:
    """Every chunk strict, the first carries the role, then equal to responses_to_chat(final)."""
    chunks, encoder = encode(events, include_usage)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all("error" not in chunk for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is not None
        assert all(chunk["usage"] is None for chunk in chunks[:-1])
    else:
        assert all("usage" not in chunk for chunk in chunks)
    streamed = reassemble(chunks)
    final = events[-1]["response"]
    valid_response(final)
    whole = valid_completion(ci.responses_to_chat(final, model=MODEL))
    expected = summary(whole)
    if not include_usage:
        expected["usage"] = None
    assert summary(streamed) == expected
    assert encoder.outcome == final["status"]
    return whole, chunks


# ---------------------------------------------------------------------------------------------
# Streams


def mock_events(chat: dict[str, Any]) -> list[dict[str, Any]]:
    body = valid_request(ci.chat_to_responses(chat))
    events = mock.responses_events(body, "upstream-model", 42, SETTINGS)
    for event in events:
        valid_stream_event(event)
    return events


def test_mock_text_stream_reassembles_to_the_whole_answer() -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello, please"}], "stream": True}
    whole, _ = check_stream(mock_events(chat))
    message = whole.choices[0].message
    assert message.content == "mock-model reply: Say hello, please"
    assert message.tool_calls is None and whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.prompt_tokens == 42 and whole.usage.completion_tokens == 7
    assert whole.usage.prompt_tokens_details and whole.usage.prompt_tokens_details.cached_tokens == 3
    assert whole.usage.completion_tokens_details and whole.usage.completion_tokens_details.reasoning_tokens == 2


@pytest.mark.parametrize("include_usage", [True, False])
def test_mock_function_call_stream(include_usage: bool) -> None:
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "please run `ls -la` for me"}],
        "tools": [EXEC_TOOL],
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    assert ci.wants_usage(chat) is include_usage
    whole, chunks = check_stream(mock_events(chat), include_usage)
    (call,) = whole.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "exec_command"
    assert json.loads(call.function.arguments) == {"cmd": "ls -la"}
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content is None
    first = next(c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert first["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": call.id, "type": "function", "function": {"name": "exec_command", "arguments": ""}}
    ]


def parallel_items() -> list[dict[str, Any]]:
    return [
        reasoning_item("rs_1", "Thinking about which files to read."),
        text_item("msg_1", "Let me look at both files."),
        call_item("fc_1", "call_a", "read_file", json.dumps({"path": "src/main.py"})),
        call_item("fc_2", "call_b", "read_file", json.dumps({"path": "README.md", "note": 'ünïcødé "q"'})),
        custom_item("ctc_1", "call_c", "apply_patch", "*** Begin Patch\n*** End Patch\n"),
    ]


def test_parallel_calls_with_text_and_reasoning() -> None:
    whole, chunks = check_stream(hand_stream(parallel_items()))
    message = whole.choices[0].message
    assert message.content == "Let me look at both files."
    calls = message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [  # type: ignore[union-attr]
        ("call_a", "read_file"),
        ("call_b", "read_file"),
        ("call_c", "apply_patch"),
    ]
    assert json.loads(calls[2].function.arguments) == {"input": "*** Begin Patch\n*** End Patch\n"}  # type: ignore[union-attr]
    assert whole.choices[0].finish_reason == "tool_calls"
    # each call's id and name travel once, on its first chunk, with its own index
    heads = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or [] if "id" in tc
    ]
    assert [(h["index"], h["id"]) for h in heads] == [(0, "call_a"), (1, "call_b"), (2, "call_c")]
    # reasoning is not in the Chat answer
    assert "Thinking" not in json.dumps(chunks) and "Thinking" not in json.dumps(
        ci.responses_to_chat(hand_stream(parallel_items())[-1]["response"], model=MODEL)
    )


def test_streams_without_deltas_catch_up_from_done_events() -> None:
    streamed_whole, _ = check_stream(hand_stream(parallel_items()))
    quiet_whole, quiet = check_stream(hand_stream(parallel_items(), deltas=False))
    assert summary(quiet_whole) == summary(streamed_whole)
    assert len(quiet) < 12  # one chunk per text / argument string, not per fragment


def test_text_of_several_messages_is_separated_alike() -> None:
    items = [
        text_item("msg_1", "First part."),
        call_item("fc_1", "call_1", "exec_command", "{}"),
        text_item("msg_2", "Second."),
    ]
    whole, _ = check_stream(hand_stream(items))
    assert whole.choices[0].message.content == "First part.\n\nSecond."


def test_incomplete_stream_finishes_with_length() -> None:
    events = hand_stream(
        [text_item("msg_1", "A long answer that was cut")], "incomplete", incomplete="max_output_tokens"
    )
    whole, chunks = check_stream(events)
    assert whole.choices[0].finish_reason == "length"
    assert whole.choices[0].message.content == "A long answer that was cut"
    filtered = hand_stream([text_item("msg_1", "Partial")], "incomplete", incomplete="content_filter")
    assert check_stream(filtered)[0].choices[0].finish_reason == "content_filter"


def test_empty_answer_is_an_empty_string_both_ways() -> None:
    whole, _ = check_stream(hand_stream([reasoning_item("rs_1", "nothing to say")]))
    assert whole.choices[0].message.content == "" and whole.choices[0].finish_reason == "stop"


def failed_events(code: str = "rate_limit_exceeded") -> list[dict[str, Any]]:
    # Codex (and the gateway's translators) use codes the SDK's enum lacks (context_length_exceeded,
    # insufficient_quota): those streams are checked by the SDK apart from that one field.
    return hand_stream(
        [text_item("msg_1", "Partial text before the failure")],
        "failed",
        usage=None,
        error={"code": code, "message": "Upstream said no"},
        validate=code not in ("context_length_exceeded", "insufficient_quota"),
    )


def test_failed_stream_ends_with_an_error_object() -> None:
    chunks, encoder = encode(failed_events())
    *good, last = chunks
    for chunk in good:
        valid_chunk(chunk)
    assert all(c["choices"][0]["finish_reason"] is None for c in good)
    assert last == {
        "error": {
            "message": "Upstream said no",
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert encoder.outcome == "failed" and encoder.failure is not None and encoder.failure.status == 429
    assert encoder.feed({"type": "response.output_text.delta", "delta": "late"}) == [] and encoder.finish() == []


def test_stream_ending_without_terminal_event_fails() -> None:
    chunks, encoder = encode(hand_stream(parallel_items(), cut=3))
    assert chunks[-1]["error"]["code"] == "server_error" and encoder.outcome == "failed"
    for chunk in chunks[:-1]:
        valid_chunk(chunk)
    # an `error` stream event fails the same way
    chunks, _ = encode(
        [{"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 0}]
    )
    assert chunks == [{"error": {"message": "boom", "type": "server_error", "param": None, "code": "server_error"}}]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("context_length_exceeded", 400, "invalid_request_error"),
        ("invalid_image", 400, "invalid_request_error"),
        ("insufficient_quota", 429, "insufficient_quota"),
        ("rate_limit_exceeded", 429, "rate_limit_exceeded"),
        ("server_error", 502, "server_error"),
    ],
)
def test_responses_to_chat_failed_raises(code: str, status: int, kind: str) -> None:
    final = failed_events(code)[-1]["response"]
    with pytest.raises(ci.UpstreamFailed) as caught:
        ci.responses_to_chat(final, model=MODEL)
    assert caught.value.status == status
    assert caught.value.body() == {"error": {"message": "Upstream said no", "type": kind, "param": None, "code": code}}


def test_whole_answer_usage_refusal_and_citations() -> None:
    message = text_item("msg_1", "See the docs.")
    message["content"][0]["annotations"] = [
        {"type": "url_citation", "start_index": 8, "end_index": 12, "title": "Docs", "url": "https://example.com"}
    ]
    refusal = {
        "type": "message",
        "id": "msg_2",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "refusal", "refusal": "I can't help with that part."}],
    }
    final = response_object("completed", [text_item("msg_0", "Hi."), message, refusal], usage=USAGE)
    valid_response(final)
    whole = valid_completion(ci.responses_to_chat(final, model=MODEL))
    assert whole.id == "chatcmpl-hand1" and whole.created == 1_800_000_000 and whole.model == MODEL
    chat_message = whole.choices[0].message
    assert chat_message.content == "Hi.\n\nSee the docs." and chat_message.refusal == "I can't help with that part."
    (note,) = chat_message.annotations or []
    assert chat_message.content[note.url_citation.start_index : note.url_citation.end_index] == "docs"
    assert whole.usage is not None and whole.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 120,
        "completion_tokens": 40,
        "total_tokens": 160,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    # the refusal streams as delta.refusal and reassembles the same (annotations have no delta field)
    events = hand_stream([text_item("msg_0", "Hi."), text_item("msg_1", "See the docs.")])
    refusal_events = [
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": dict(refusal, content=[], status="in_progress"),
        },
        {
            "type": "response.refusal.delta",
            "output_index": 2,
            "item_id": "msg_2",
            "content_index": 0,
            "delta": "I can't ",
        },
        {
            "type": "response.refusal.done",
            "output_index": 2,
            "item_id": "msg_2",
            "content_index": 0,
            "refusal": "I can't help with that part.",
        },
        {"type": "response.output_item.done", "output_index": 2, "item": refusal},
    ]
    events[-1:-1] = refusal_events
    events[-1] = {"type": "response.completed", "response": final}
    for number, event in enumerate(events):
        event["sequence_number"] = number
        valid_stream_event(event)
    streamed = reassemble(encode(events)[0])
    assert summary(streamed) == summary(whole)


# ---------------------------------------------------------------------------------------------
# Requests


def conversation() -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {
                "role": "user",
                "name": "alice",
                "content": [
                    {"type": "text", "text": "What is in this picture and in main.py?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check both.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path":"main.py"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "print('hi')"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "main.py\n"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_3",
                        "type": "function",
                        "function": {"name": "exec_command", "arguments": '{"cmd":"pwd"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_3", "content": "/work"},
            {"role": "assistant", "content": [{"type": "text", "text": "A logo; main.py prints hi."}]},
            {"role": "developer", "content": [{"type": "text", "text": "Answer briefly."}]},
            {"role": "user", "content": "Thanks! Now run `pwd`."},
        ],
        "tools": [EXEC_TOOL, READ_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "exec_command"}},
        "parallel_tool_calls": False,
        "max_completion_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object"},
                "strict": True,
                "description": "The answer",
            },
        },
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["\n\n"],
        "seed": 7,
        "n": 1,
        "user": "alice@example.com",
        "metadata": {"team": "a"},
    }


def test_conversation_round_trip_is_sdk_valid_and_in_order() -> None:
    chat = conversation()
    dropped: list[str] = []
    body = valid_request(ci.chat_to_responses(chat, dropped=dropped))
    assert sorted(dropped) == ["seed", "stop"]
    assert ci.wants_usage(chat)
    expected = [
        ("message", "system", "You are a careful assistant."),
        ("message", "user", "What is in this picture and in main.py?"),
        ("message", "assistant", "Let me check both."),
        ("function_call", "call_1", '{"path":"main.py"}'),
        ("function_call", "call_2", '{"cmd":"ls"}'),
        ("function_call_output", "call_1", "print('hi')"),
        ("function_call_output", "call_2", "main.py\n"),
        ("function_call", "call_3", '{"cmd":"pwd"}'),
        ("function_call_output", "call_3", "/work"),
        ("message", "assistant", "A logo; main.py prints hi."),
        ("message", "developer", "Answer briefly."),
        ("message", "user", "Thanks! Now run `pwd`."),
    ]
    seen = []
    for item in body["input"]:
        if item["type"] == "message":
            content = item["content"]
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
            seen.append(("message", item["role"], text))
        elif item["type"] == "function_call":
            seen.append(("function_call", item["call_id"], item["arguments"]))
        else:
            seen.append((item["type"], item["call_id"], item["output"]))
    assert seen == expected
    assert body["input"][1]["content"][1] == {
        "type": "input_image",
        "image_url": "data:image/png;base64,iVBORw0KGgo=",
        "detail": "low",
    }
    assert body["input"][2]["content"] == "Let me check both."  # assistant text: a plain string
    assert body["input"][3]["name"] == "read_file"
    assert body["tools"] == [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a shell command",
            "parameters": EXEC_TOOL["function"]["parameters"],
            "strict": False,
        },
        {"type": "function", "name": "read_file", "parameters": READ_TOOL["function"]["parameters"], "strict": True},
    ]
    assert body["tool_choice"] == {"type": "function", "name": "exec_command"}
    assert body["text"] == {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "schema": {"type": "object"},
            "strict": True,
            "description": "The answer",
        }
    }
    assert {
        key: body[key]
        for key in ("parallel_tool_calls", "max_output_tokens", "temperature", "top_p", "stream", "store")
    } == {
        "parallel_tool_calls": False,
        "max_output_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "store": False,
    }
    assert body["reasoning"] == {"effort": "low"}
    assert "user" not in body and "metadata" not in body and "stream_options" not in body


def test_conversation_feeds_every_family_translator() -> None:
    body = ci.chat_to_responses(conversation())
    claude = anthropic.build_request(body, "claude-sonnet-4-5", TranslateOptions(provider_name="anthropic-test"))
    uses = [
        b["id"] for m in claude["messages"] for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    assert uses == ["call_1", "call_2", "call_3"]
    assert "careful assistant" in json.dumps(claude["system"]) and "Answer briefly" in json.dumps(claude["system"])
    gem = gemini.build_request(body, "gemini-2.5-pro", TranslateOptions(provider_name="gemini-test"))
    calls = [p["functionCall"]["name"] for c in gem["contents"] for p in c["parts"] if "functionCall" in p]
    assert calls == ["read_file", "exec_command", "exec_command"]
    converse = bedrock.build_request(
        body, "us.anthropic.claude-sonnet-4-20250514-v1:0", TranslateOptions(provider_name="bedrock-test")
    )
    results = [b["toolResult"]["toolUseId"] for m in converse["messages"] for b in m["content"] if "toolResult" in b]
    assert len(results) == 3


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"tool_choice": "required", "response_format": {"type": "json_object"}},
            {"tool_choice": "required", "text": {"format": {"type": "json_object"}}},
        ),
        (
            {"tool_choice": "none", "max_tokens": 64, "response_format": {"type": "text"}},
            {"tool_choice": "none", "max_output_tokens": 64, "text": {"format": {"type": "text"}}},
        ),
        (
            {
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {
                        "mode": "auto",
                        "tools": [{"type": "function", "function": {"name": "exec_command"}}],
                    },
                }
            },
            {
                "tool_choice": {
                    "type": "allowed_tools",
                    "mode": "auto",
                    "tools": [{"type": "function", "name": "exec_command"}],
                }
            },
        ),
        (
            {"verbosity": "low", "store": True, "stream": False, "temperature": None},
            {"text": {"verbosity": "low"}, "store": True, "stream": False},
        ),
        (
            {
                "service_tier": "flex",
                "prompt_cache_key": "k1",
                "safety_identifier": "u1",
                "prompt_cache_retention": "24h",
            },
            {
                "service_tier": "flex",
                "prompt_cache_key": "k1",
                "safety_identifier": "u1",
                "prompt_cache_retention": "24h",
            },
        ),
    ],
)
def test_request_options(patch: dict[str, Any], expected: dict[str, Any]) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [EXEC_TOOL], **patch}
    body = valid_request(ci.chat_to_responses(chat))
    assert {key: body.get(key) for key in expected} == expected
    assert "temperature" not in body


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]}, "tools[0]"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0]"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {
                "messages": [
                    {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        ({"tool_choice": {"type": "custom", "custom": {"name": "x"}}}, "tool_choice"),
    ],
)
def test_unsupported_requests_are_refused_clearly(patch: dict[str, Any], param: str) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(ci.ChatRequestError) as caught:
        ci.chat_to_responses(chat)
    assert issubclass(ci.ChatRequestError, ValueError)
    error = caught.value.body()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    if "n" in patch:
        assert "n=2" in error["message"] and "not supported" in error["message"]


def test_files_and_unknown_keys() -> None:
    chat = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
        "logit_bias": {"50256": -100},
        "x_vendor_flag": True,
    }
    dropped: list[str] = []
    body = valid_request(ci.chat_to_responses(chat, dropped=dropped))
    assert body["input"][0]["content"] == [
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
    ]
    assert dropped == ["logit_bias", "x_vendor_flag"]


# ---------------------------------------------------------------------------------------------
# End to end through a real openai client (in-process transport): the SDK sends the Chat request,
# the mock provider answers in Responses events, the relay turns the SSE bytes into Chat SSE.


def sdk_client(events_for: Any, rng: random.Random) -> openai.OpenAI:
    def handle(request: Any) -> Any:
        chat = json.loads(request.content)
        body = valid_request(ci.chat_to_responses(chat))
        events = events_for(body)
        if not chat.get("stream"):
            return HTTP.Response(200, json=ci.responses_to_chat(events[-1]["response"], model=chat["model"]))
        relay = ci.ChatSSERelay(chat["model"], ci.wants_usage(chat))
        upstream = b"".join(encode_event(event) for event in events)
        out = b""
        while upstream:  # Responses SSE split at arbitrary byte boundaries
            size = rng.randint(1, 64)
            out, upstream = out + relay.feed(upstream[:size]), upstream[size:]
        out += relay.finish()
        assert out.endswith(b"data: [DONE]\n\n")
        return HTTP.Response(200, headers={"content-type": "text/event-stream"}, content=out)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        http_client=HTTP.Client(transport=HTTP.MockTransport(handle)),
    )


SDK_TOOLS: Any = [EXEC_TOOL]


def test_openai_sdk_end_to_end() -> None:
    client = sdk_client(lambda body: mock.responses_events(body, "upstream-model", 42, SETTINGS), random.Random(7))
    messages: list[Any] = [{"role": "user", "content": "run `echo hi` now"}]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=SDK_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in stream:
        assert_no_extras(chunk)
        state.handle_chunk(chunk)
    streamed = state.get_final_completion()
    whole = client.chat.completions.create(model=MODEL, messages=messages, tools=SDK_TOOLS)
    assert_no_extras(whole)
    (call,) = whole.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"cmd": "echo hi"}  # type: ignore[union-attr]
    assert streamed.usage is not None and streamed.usage.total_tokens == 49
    streamed_summary, whole_summary = summary(streamed), summary(whole)
    for key in ("id", "created", "tool_calls"):  # mock mints fresh ids per answer
        streamed_summary.pop(key), whole_summary.pop(key)
    assert streamed_summary == whole_summary
    # second turn: the tool result goes back, the mock answers in text
    messages += [
        whole.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "hi\n"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, tools=SDK_TOOLS)
    assert reply.choices[0].message.content == "The command finished. Its output was: hi"


def test_openai_sdk_surfaces_a_failed_stream_as_an_error() -> None:
    client = sdk_client(lambda body: failed_events("server_error"), random.Random(3))
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert caught.value.message == "Upstream said no" and caught.value.code == "server_error"
    assert received and received[0].choices[0].delta.role == "assistant"


def test_through_the_anthropic_translator_and_stream_bridge() -> None:
    """The lead's path: Chat request → Responses → Anthropic and back, whole and streamed (bytes)."""
    chat = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Read two files."}],
        "tools": [READ_TOOL],
        "reasoning_effort": "medium",
        "max_completion_tokens": 4096,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body = valid_request(ci.chat_to_responses(chat))
    upstream = "claude-sonnet-4-5"
    request = anthropic.build_request(body, upstream, TranslateOptions(provider_name="anthropic-test"))
    assert anthropic_upstream.request_errors(request) == []
    reply = anthropic_upstream.Reply(
        content=[
            {"type": "thinking", "thinking": "Two reads, in parallel."},
            {"type": "text", "text": "Reading both."},
            {"type": "tool_use", "name": "read_file", "input": {"path": "a.py"}},
            {"type": "tool_use", "name": "read_file", "input": {"path": "b.py"}},
        ],
        stop_reason="tool_use",
        thinking_tokens=9,
    )
    message = anthropic_upstream.build_message(reply, upstream)
    info = anthropic.request_info(body, upstream)
    context = ResponseContext(
        response_id="resp_anth1", model=MODEL, provider_name="anthropic-test", created_at=1_800_000_000
    )
    whole = valid_completion(ci.responses_to_chat(anthropic.translate_response(message, context, info), model=MODEL))
    tool_uses = [block["id"] for block in message["content"] if block["type"] == "tool_use"]
    assert [c.id for c in whole.choices[0].message.tool_calls or []] == tool_uses
    assert whole.choices[0].message.content == "Reading both." and whole.choices[0].finish_reason == "tool_calls"
    assert "Two reads" not in whole.model_dump_json()

    bridge = StreamBridge(anthropic.StreamDecoder(), anthropic.StreamTranslator(context, info))
    relay = ci.ChatSSERelay(MODEL, ci.wants_usage(chat))
    raw = anthropic_upstream.encode_sse(anthropic_upstream.message_events(message, reply))
    out = b"".join(relay.feed(bridge.feed(raw[i : i + 37])) for i in range(0, len(raw), 37))
    out += relay.feed(bridge.finish()) + relay.finish()
    assert out.endswith(b"data: [DONE]\n\n") and relay.encoder.outcome == "completed"
    chunks = [json.loads(data) for _, data in SSEParser().feed(out) if data != "[DONE]"]
    assert summary(reassemble(chunks)) == summary(whole)
