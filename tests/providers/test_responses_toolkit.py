"""The shared Responses toolkit (providers/responses): every event and `response` object it makes is
validated strictly against openai.types.responses (tests/fakes/sdk_validation.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fakes.sdk_validation import valid_response, valid_stream_event

from codexgate.providers.responses import (
    CodexTool,
    ResponseContext,
    ResponseEmitter,
    ToolNameMap,
    WireNames,
    request_echo,
    response_object,
    usage_block,
)
from codexgate.usage import Usage

CTX = ResponseContext(response_id="resp_toolkit", model="claude-x", provider_name="p", created_at=1_700_000_000)
USAGE = Usage(input_tokens=120, cached_tokens=20, output_tokens=30, reasoning_tokens=7)


def checked(events: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """Each event SDK-valid, numbered consecutively from `start`."""
    for offset, event in enumerate(events):
        valid_stream_event(event)
        assert event["sequence_number"] == start + offset
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_a_whole_answer_of_every_item_kind_is_sdk_valid_and_the_final_response_holds_the_items() -> None:
    emit = ResponseEmitter(CTX)
    thinking = emit.reasoning()
    thinking.delta("Let me ")
    thinking.delta("think.")
    thinking.done(encrypted_content="cg1.sealed")
    blank = emit.message()
    blank.delta("\n\n")
    assert blank.done() is None  # whitespace only: never announced, no item
    text = emit.message()
    text.delta("  ")
    text.delta("Hello")
    text.delta(" world")
    call = emit.function_call("call_1", "exec_command", namespace="mcp__shell__")
    call.delta('{"cmd":')
    call.delta('"ls"}')
    emit.function_call("call_2", "list_files")
    patch = emit.custom_tool_call("call_3", "apply_patch")
    for piece in ['{"inp', 'ut": "*** Begin', "\\nline \\u00e9", ' end"}']:
        patch.json_delta(piece)
    emit.complete(USAGE, cache_write_tokens=5)  # closes what is still open, in output order
    events = checked(emit.take())

    assert types(events)[:2] == ["response.created", "response.in_progress"]
    assert types(events)[-1] == "response.completed"
    final = valid_response(events[-1]["response"])
    assert final.status == "completed" and emit.outcome == "completed" and emit.usage == USAGE
    assert emit.response == events[-1]["response"]
    items = events[-1]["response"]["output"]
    assert [item["type"] for item in items] == [
        "reasoning", "message", "function_call", "function_call", "custom_tool_call"
    ]  # fmt: skip
    assert items[0]["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert items[0]["encrypted_content"] == "cg1.sealed"
    assert items[1]["content"][0]["text"] == "  Hello world"  # held whitespace comes with the text
    assert items[2]["arguments"] == '{"cmd":"ls"}' and items[2]["namespace"] == "mcp__shell__"
    assert items[3]["arguments"] == "{}"
    assert items[4]["input"] == "*** Begin\nline é end"
    # The streamed pieces add up to the finished values.
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    assert streamed == items[4]["input"]
    empty_deltas = [e["delta"] for e in events if e.get("item_id") == items[3]["id"] and "delta" in e]
    assert empty_deltas == ["{}"]
    # Every announced item is finished once, at the index it was announced with.
    added = {e["output_index"]: e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
    done = {e["output_index"]: e["item"]["id"] for e in events if e["type"] == "response.output_item.done"}
    assert added == done == {index: item["id"] for index, item in enumerate(items)}
    usage = events[-1]["response"]["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 20, "cache_write_tokens": 5}
    assert usage["total_tokens"] == 150


def test_exactly_one_terminal_event_and_nothing_after_it() -> None:
    emit = ResponseEmitter(CTX)
    emit.message().delta("partial")
    emit.complete(None, incomplete="max_output_tokens")
    emit.fail("server_error", "late")
    emit.complete(USAGE)
    emit.ensure_terminal("cut")
    emit.message().delta("after the end")
    events = checked(emit.take())
    terminal = [e for e in events if e["type"].startswith("response.") and e["type"].split(".")[1] in
                ("completed", "incomplete", "failed")]  # fmt: skip
    assert types(terminal) == ["response.incomplete"]
    response = valid_response(terminal[0]["response"])
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "completed"  # the open message was closed with what it had


def test_a_stream_cut_before_its_end_fails_and_leaves_unfinished_items_out() -> None:
    emit = ResponseEmitter(CTX)
    done = emit.message()
    done.delta("kept")
    done.done()
    emit.function_call("call_9", "exec_command").delta('{"cmd": "l')
    first = checked(emit.take())
    emit.ensure_terminal("The stream ended before the answer was complete.")
    last = checked(emit.take(), start=len(first))
    assert types(last) == ["response.failed"]
    failed = valid_response(last[0]["response"])
    assert failed.error is not None and failed.error.code == "server_error"
    assert [item.type for item in failed.output] == ["message"]
    assert emit.outcome == "failed" and emit.usage is None


def test_a_stream_with_no_event_at_all_still_opens_and_fails() -> None:
    emit = ResponseEmitter(CTX)
    emit.ensure_terminal("nothing came", code="server_error")
    assert types(checked(emit.take())) == ["response.created", "response.in_progress", "response.failed"]


CUSTOM_INPUTS = [
    '*** Begin Patch\n*** Add File: a.txt\n+"quoted" \\ back\tslash\n*** End Patch',
    "emoji \U0001f600 and \u00e9 and \u2028",
    "lone \ud83d half",  # a model cut off mid-emoji: U+FFFD, streamed and whole alike
]


@pytest.mark.parametrize("text", CUSTOM_INPUTS)
def test_custom_tool_input_is_the_same_for_every_split_of_its_json(text: str) -> None:
    wire = json.dumps({"input": text})  # ASCII escapes: \uXXXX pairs and lone halves
    expected = text.replace("\ud83d", "\ufffd")
    for cut in range(len(wire) + 1):
        for second in (cut, min(len(wire), cut + 3)):
            emit = ResponseEmitter(CTX)
            call = emit.custom_tool_call("call", "apply_patch")
            for piece in (wire[:cut], wire[cut:second], wire[second:]):
                call.json_delta(piece)
            item = call.done()
            events = checked(emit.take())
            streamed = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
            assert item["input"] == expected
            assert streamed == expected, (cut, second)


def test_custom_tool_input_in_another_shape_falls_back_to_its_only_string_or_the_raw_text() -> None:
    for raw, expected in [('{"patch": "x"}', "x"), ('"bare"', "bare"), ('{"input": "trunc', '{"input": "trunc')]:
        emit = ResponseEmitter(CTX)
        call = emit.custom_tool_call("c", "apply_patch")
        call.json_delta(raw)
        assert call.done()["input"] == expected


def test_item_ids_are_the_same_for_the_same_response_and_differ_across_responses() -> None:
    def ids(ctx: ResponseContext) -> list[str]:
        emit = ResponseEmitter(ctx)
        message = emit.message()
        message.delta("x")
        message.done()
        emit.function_call("c", "f").done()
        return [item["id"] for item in emit.output]

    other = ResponseContext("resp_other", "m", "p", 0)
    assert ids(CTX) == ids(CTX)
    assert not set(ids(CTX)) & set(ids(other))
    assert all(re.fullmatch(r"(msg|fc)_[0-9a-f]{32}", item_id) for item_id in ids(CTX))


def test_response_object_echoes_the_request_and_defaults_what_it_lacked() -> None:
    body = {"tool_choice": "required", "parallel_tool_calls": False, "temperature": 0.2, "metadata": {"a": "b"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}},
                       "strict": False}]}  # fmt: skip
    ctx = ResponseContext("resp_e", "m", "p", 1, echo=request_echo(body))
    echoed = valid_response(response_object(ctx, "completed", [], usage_block(USAGE)))
    assert echoed.tool_choice == "required" and echoed.parallel_tool_calls is False
    assert echoed.temperature == 0.2 and echoed.metadata == {"a": "b"} and echoed.tools[0].name == "f"  # type: ignore[union-attr]
    plain = valid_response(response_object(CTX, "completed", [], None))
    assert plain.tool_choice == "auto" and plain.tools == [] and plain.parallel_tool_calls is True


# -- tool names ---------------------------------------------------------------------------------

REQUEST = {
    "tools": [
        {"type": "function", "name": "search", "parameters": {"type": "object"}},
        {"type": "custom", "name": "apply_patch", "format": {"type": "text"}},
        {"type": "web_search"},
        {"type": "namespace", "name": "mcp__docs__", "description": "Docs",
         "tools": [{"type": "function", "name": "search"}, {"type": "function", "name": "fetch page!"}]},
    ],
    "input": [
        {"type": "additional_tools", "tools": [{"type": "function", "name": "search"}]},  # offered twice
    ],
}  # fmt: skip

ANTHROPIC_LIKE = WireNames(qualify="clash")
GEMINI_LIKE = WireNames(invalid=re.compile(r"[^A-Za-z0-9_.:\-]"), leading=re.compile(r"[A-Za-z_]"))
BEDROCK_LIKE = WireNames(qualify="always", joiner="flat", distinct="digest")


@pytest.mark.parametrize("rules", [ANTHROPIC_LIKE, GEMINI_LIKE, BEDROCK_LIKE, WireNames()])
def test_every_offered_tool_gets_one_distinct_valid_name_that_resolves_back(rules: WireNames) -> None:
    names, offered, dropped = ToolNameMap.from_request(REQUEST, rules)
    assert dropped == ["web_search"]
    wires = [tool.wire for tool in offered]
    assert len(wires) == len(set(wires)) == 4  # the twice-offered tool is defined once
    for tool in offered:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}", tool.wire), tool.wire
        codex = names.resolve(tool.wire)
        assert (codex.namespace, codex.name, codex.kind) == (tool.namespace, tool.definition["name"], tool.kind)
        assert names.wire_name(codex.name, codex.namespace) == tool.wire
    assert names.resolve("apply_patch").kind == "custom"


def test_namespaced_names_follow_each_providers_rule() -> None:
    def wires(rules: WireNames) -> list[str]:
        return [tool.wire for tool in ToolNameMap.from_request(REQUEST, rules)[1]]

    # A namespaced tool keeps its bare name unless another tool has it ("clash") or took it ("taken").
    expected = ["search", "apply_patch", "mcp__docs____search", "fetch_page_"]
    assert wires(ANTHROPIC_LIKE) == wires(WireNames()) == expected
    alone = {"tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "only"}]}]}
    assert [t.wire for t in ToolNameMap.from_request(alone, ANTHROPIC_LIKE)[1]] == ["only"]
    bedrock = wires(BEDROCK_LIKE)
    assert bedrock[:3] == ["search", "apply_patch", "mcp__docs__search"]
    assert re.fullmatch(r"mcp__docs__fetch_page__[0-9a-f]{8}", bedrock[3])


def test_names_that_sanitize_alike_are_numbered_and_long_names_cut() -> None:
    names = ToolNameMap()
    assert names.add({"type": "function", "name": "a.b"}) == "a_b"
    assert names.add({"type": "function", "name": "a b"}) == "a_b_2"
    assert names.add({"type": "function", "name": "a b"}) is None  # the same tool again
    long = "x" * 80
    assert names.add({"type": "function", "name": long}) == "x" * 64
    assert names.add({"type": "function", "name": long + "y"}) == "x" * 62 + "_2"
    gemini = ToolNameMap(GEMINI_LIKE)
    assert gemini.add({"type": "function", "name": "9lives"}) == "_9lives"


def test_history_calls_under_another_grouping_match_an_unambiguous_bare_name() -> None:
    names, _, _ = ToolNameMap.from_request(REQUEST, WireNames())
    assert names.wire_name("fetch page!", None) == "fetch_page_"  # recorded without its namespace
    assert names.wire_name("unknown tool") == "unknown_tool"
    assert names.resolve("never_offered") == CodexTool("function", "never_offered")
