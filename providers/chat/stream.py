"""Chat completion chunk streams → Responses stream events: the SSE decoder and the translator."""

from __future__ import annotations

import dataclasses
import json
import logging
import types
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import (
    ResponseContext,
    Usage,
)
from codexgate.providers.chat.answer import (
    _arguments,
    _call_item,
    _chunk_usage,
    _content_pieces,
    _dict,
    _merge_details,
    _new_id,
    _reasoning_item,
    _reasoning_text,
    _response_object,
    _ThinkSplitter,
)
from codexgate.providers.chat.errors import answer_failure
from codexgate.providers.chat.tools import ToolMap
from codexgate.providers.jsonstring import InputStringStream
from codexgate.sse import SSEParser

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- streams

DONE: Mapping[str, bool] = types.MappingProxyType({"done": True})


class ChatStreamDecoder:
    """SSE bytes → chunk dicts; `data: [DONE]` becomes `DONE`; an `event: error` (or any JSON
    without choices but with `error`) comes out as `{"error": ...}`."""

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for name, data in self._parser.feed(chunk):
            text = data.strip()
            if not text:
                continue
            if text == "[DONE]":
                events.append(dict(DONE))
                continue
            try:
                event = json.loads(text)
            except ValueError:
                log.warning("undecodable chat stream event skipped: %.200s", text)
                continue
            if not isinstance(event, dict):
                continue
            if name == "error" and "error" not in event:
                event = {"error": event}
            events.append(event)
        return events


@dataclasses.dataclass
class _OpenCall:
    output_index: int | None = None
    item_id: str = ""
    call_id: str = ""
    chat_name: str = ""
    arguments: str = ""
    custom: bool = False
    input_stream: InputStringStream | None = None
    done: bool = False


class StreamTranslator:
    """Chat completion chunks (from `ChatStreamDecoder`) → Responses stream events, as they come."""

    def __init__(
        self, ctx: ResponseContext, *, tools: ToolMap | None = None, upstream_model: str | None = None
    ) -> None:
        self.ctx = ctx
        # Envelopes are scoped to the model the host ran, as `build_request` opens them.
        self.envelope_model = upstream_model or ctx.model
        self.tools = tools or ToolMap({})
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self.response: dict[str, Any] | None = None  # the terminal event's `response` object
        self.content_filtered = False  # the host's content filter ended the answer
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any] | None] = []  # finished items, by output_index
        self._splitter = _ThinkSplitter()
        self._message: dict[str, Any] | None = None  # open message: index, id, text
        self._held = ""  # whitespace before a message opens: announced only with real text
        self._reasoning: dict[str, Any] | None = None  # open reasoning: index, id, text, details
        self._calls: dict[int, _OpenCall] = {}
        self._finish: str | None = None
        self._done_seen = False

    # ---- plumbing

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return event

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        response = _response_object(self.ctx, "in_progress", [], None)
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _next_index(self) -> int:
        self._output.append(None)
        return len(self._output) - 1

    # ---- feeding

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self.outcome is not None:
            return []  # the answer is over; a host's trailing chunks change nothing
        out = self._start()
        if event.get("done") is True:
            self._done_seen = True
            return out + self._terminal()
        usage = _chunk_usage(event)
        if usage is not None:
            self.usage = usage
        choices = event.get("choices")
        if event.get("error") is not None and not choices:
            return out + self._fail(answer_failure(500, event))
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Codex asks for one answer
            delta = _dict(choice.get("delta"))
            out += self._delta(delta)
            finish = choice.get("finish_reason")
            if finish:
                self._finish = str(finish)
                if self._finish == "error":
                    error = event.get("error") or choice.get("error") or "the provider stopped with an error"
                    return out + self._fail(answer_failure(500, error))
                out += self._close_all()
        return out

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        reasoning = _reasoning_text(delta)
        details = delta.get("reasoning_details")
        if reasoning or (isinstance(details, list) and details):
            out += self._reasoning_delta(reasoning, details)
        content = delta.get("content")
        if content:
            for kind, piece in _content_pieces(content):
                parts = self._splitter.feed(piece) if kind == "text" else [(kind, piece)]
                for part_kind, part in parts:
                    out += self._reasoning_delta(part, None) if part_kind == "reasoning" else self._text_delta(part)
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            out += self._text_delta(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out += self._call_delta(call)
        return out

    def _reasoning_delta(self, text: str, details: Any) -> list[dict[str, Any]]:
        out = self._close_message()
        if self._reasoning is None:
            index = self._next_index()
            self._reasoning = {"index": index, "id": _new_id("rs"), "text": "", "details": [], "part": False}
            item = {"id": self._reasoning["id"], "type": "reasoning", "summary": []}
            out.append(self._event("response.output_item.added", output_index=index, item=item))
        state = self._reasoning
        _merge_details(state["details"], details)
        if text:
            if not state["part"]:
                state["part"] = True
                out.append(
                    self._event(
                        "response.reasoning_summary_part.added",
                        item_id=state["id"],
                        output_index=state["index"],
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            state["text"] += text
            out.append(
                self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=state["id"],
                    output_index=state["index"],
                    summary_index=0,
                    delta=text,
                )
            )
        return out

    def _close_reasoning(self) -> list[dict[str, Any]]:
        state, self._reasoning = self._reasoning, None
        if state is None:
            return []
        out: list[dict[str, Any]] = []
        if state["part"]:
            part = {"type": "summary_text", "text": state["text"]}
            common = {"item_id": state["id"], "output_index": state["index"], "summary_index": 0}
            out.append(self._event("response.reasoning_summary_text.done", **common, text=state["text"]))
            out.append(self._event("response.reasoning_summary_part.done", **common, part=part))
        item = _reasoning_item(self.ctx, state["id"], state["text"], state["details"], self.envelope_model)
        self._output[state["index"]] = item
        out.append(self._event("response.output_item.done", output_index=state["index"], item=item))
        return out

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        out = self._close_reasoning()
        if self._message is None:
            # A whitespace-only message (e.g. "\n\n" before a tool call) would be replayed by
            # Codex next turn and refused upstream: open the item only once there is text.
            self._held += text
            if not self._held.strip():
                return out
            text, self._held = self._held, ""
            index = self._next_index()
            self._message = {"index": index, "id": _new_id("msg"), "text": ""}
            item = {
                "type": "message",
                "id": self._message["id"],
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message["id"],
                    output_index=index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                )
            )
        self._message["text"] += text
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message["id"],
                output_index=self._message["index"],
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _close_message(self, status: str = "completed") -> list[dict[str, Any]]:
        state, self._message, self._held = self._message, None, ""
        if state is None:
            return []
        part = {"type": "output_text", "text": state["text"], "annotations": []}
        common = {"item_id": state["id"], "output_index": state["index"], "content_index": 0}
        item = {"type": "message", "id": state["id"], "role": "assistant", "status": status, "content": [part]}
        self._output[state["index"]] = item
        return [
            self._event("response.output_text.done", **common, text=state["text"], logprobs=[]),
            self._event("response.content_part.done", **common, part=part),
            self._event("response.output_item.done", output_index=state["index"], item=item),
        ]

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_reasoning() + self._close_message()
        index = call.get("index", 0) if isinstance(call.get("index"), int) else len(self._calls)
        state = self._calls.setdefault(index, _OpenCall())
        function = _dict(call.get("function"))
        if isinstance(call.get("id"), str) and call["id"] and not state.call_id:
            state.call_id = call["id"]
        if isinstance(function.get("name"), str) and function["name"] and not state.chat_name:
            state.chat_name = function["name"]
        fragment = _arguments(function.get("arguments"))
        if state.output_index is None:
            if not state.chat_name:
                state.arguments += fragment  # nothing to announce before the name is known
                return out
            entry = self.tools.entry(state.chat_name)
            state.custom = entry.kind == "custom"
            state.call_id = state.call_id or _new_id("call")
            state.output_index = self._next_index()
            state.item_id = _new_id("ctc" if state.custom else "fc")
            added = _call_item(self.tools, state.chat_name, state.call_id, "", state.item_id, "in_progress")
            if state.custom:
                added["input"] = ""
                state.input_stream = InputStringStream()
            out.append(self._event("response.output_item.added", output_index=state.output_index, item=added))
            fragment, state.arguments = state.arguments + fragment, ""
        if fragment:
            state.arguments += fragment
            out += self._argument_delta(state, fragment)
        return out

    def _argument_delta(self, state: _OpenCall, fragment: str) -> list[dict[str, Any]]:
        common = {"item_id": state.item_id, "output_index": state.output_index}
        if not state.custom:
            return [self._event("response.function_call_arguments.delta", **common, delta=fragment)]
        assert state.input_stream is not None
        piece = state.input_stream.feed(fragment)
        return [self._event("response.custom_tool_call_input.delta", **common, delta=piece)] if piece else []

    def _close_call(self, state: _OpenCall, status: str) -> list[dict[str, Any]]:
        if state.done or state.output_index is None:
            return []
        state.done = True
        common = {"item_id": state.item_id, "output_index": state.output_index}
        item = _call_item(self.tools, state.chat_name, state.call_id, state.arguments, state.item_id, status)
        self._output[state.output_index] = item
        out: list[dict[str, Any]] = []
        if state.custom:
            assert state.input_stream is not None
            final = str(item["input"])
            shown = state.input_stream.emitted
            if final.startswith(shown) and len(final) > len(shown):
                out.append(self._event("response.custom_tool_call_input.delta", **common, delta=final[len(shown) :]))
            out.append(self._event("response.custom_tool_call_input.done", **common, input=final))
        else:
            out.append(self._event("response.function_call_arguments.done", **common, arguments=state.arguments))
        out.append(self._event("response.output_item.done", output_index=state.output_index, item=item))
        return out

    def _close_all(self) -> list[dict[str, Any]]:
        status = "incomplete" if self._finish == "length" else "completed"
        out: list[dict[str, Any]] = []
        for kind, piece in self._splitter.flush():
            out += self._reasoning_delta(piece, None) if kind == "reasoning" else self._text_delta(piece)
        out += self._close_reasoning() + self._close_message(status)
        for index in sorted(self._calls):
            out += self._close_call(self._calls[index], status)
        return out

    # ---- endings

    def _final_output(self) -> list[dict[str, Any]]:
        return [item for item in self._output if item is not None]

    def _terminal(self) -> list[dict[str, Any]]:
        out = self._close_all()
        if self._finish == "length":
            self.outcome = "incomplete"
            self.response = _response_object(
                self.ctx, "incomplete", self._final_output(), self.usage, incomplete="max_output_tokens"
            )
            return out + [self._event("response.incomplete", response=self.response)]
        if self._finish == "content_filter":
            self.content_filtered = True
            log.warning(
                "provider %s: answer %s stopped by its content filter", self.ctx.provider_name, self.ctx.response_id
            )
        self.outcome = "completed"
        self.response = _response_object(self.ctx, "completed", self._final_output(), self.usage)
        return out + [self._event("response.completed", response=self.response)]

    def _fail(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        self.outcome = "failed"
        self.response = _response_object(self.ctx, "failed", self._final_output(), self.usage, error=error)
        return [self._event("response.failed", response=self.response)]

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended: the terminal event, unless one was sent already."""
        if self.outcome is not None:
            return []
        out = self._start()
        if self._finish is not None or self._done_seen:
            return out + self._terminal()
        return out + self._fail(
            {"code": "server_error", "message": f"The provider's stream ended early ({self.ctx.provider_name})."}
        )
