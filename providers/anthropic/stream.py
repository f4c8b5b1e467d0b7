"""A streamed Anthropic answer: SSE decoder and the event-by-event Responses translator."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.anthropic.answer import (
    _call_item,
    _custom_input,
    _incomplete_reason,
    _message_item,
    _reasoning_item,
    _refusal_text,
    _response_object,
    _UsageCounter,
)
from codexgate.providers.anthropic.errors import _stream_error
from codexgate.providers.anthropic.tools import RequestInfo, ToolRef
from codexgate.providers.anthropic.values import JSON, _dict, _new_id, _str
from codexgate.providers.base import ResponseContext
from codexgate.providers.jsonstring import InputStringStream
from codexgate.sse import SSEParser
from codexgate.usage import Usage

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Answers: streamed


class StreamDecoder:
    """Anthropic's SSE bytes (any chunking) → decoded event dicts."""

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[JSON]:
        events: list[JSON] = []
        for name, data in self._parser.feed(chunk):
            if not data.strip():
                continue
            try:
                event = json.loads(data)
            except ValueError:
                # A garbled event cannot be skipped silently (it may be text): fail the answer.
                logger.warning("undecodable Anthropic stream event %r", data[:200])
                event = {"type": "error", "error": {"type": "api_error", "message": "undecodable stream event"}}
            if isinstance(event, dict):
                event.setdefault("type", name)
                events.append(event)
        return events


@dataclasses.dataclass
class _OpenBlock:
    kind: str  # text | thinking | redacted | call
    output_index: int
    item_id: str
    text: list[str] = dataclasses.field(default_factory=list)
    signature: str = ""
    data: str = ""
    summary_open: bool = False
    call_id: str = ""
    name: str = ""
    custom: bool = False
    custom_stream: InputStringStream | None = None
    streamed: list[str] = dataclasses.field(default_factory=list)
    opened: bool = True  # a text block is announced only once it holds non-whitespace text


class StreamTranslator:
    """Anthropic stream events in, Responses stream events out, one event at a time."""

    def __init__(self, ctx: ResponseContext, info: RequestInfo | None = None) -> None:
        self.ctx = ctx
        self.info = info
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self._sequence = 0
        self._started = False
        self._blocks: dict[int, _OpenBlock] = {}
        self._done: dict[int, JSON] = {}
        self._next_output = 0
        self._counter = _UsageCounter()
        self._stop_reason: str | None = None
        self._stop_details: Any = None

    # -- plumbing

    def _emit(self, out: list[JSON], event: JSON) -> None:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        out.append(event)

    def _start(self, out: list[JSON]) -> None:
        if self._started:
            return
        self._started = True
        shell = _response_object(self.ctx, self.info, "in_progress", [], None)
        self._emit(out, {"type": "response.created", "response": shell})
        self._emit(out, {"type": "response.in_progress", "response": dict(shell)})

    def _output(self) -> list[JSON]:
        return [self._done[index] for index in sorted(self._done)]

    def _finish_item(self, out: list[JSON], output_index: int, item: JSON) -> None:
        self._done[output_index] = item
        self._emit(out, {"type": "response.output_item.done", "output_index": output_index, "item": item})

    def _open_item(self, kind: str, prefix: str) -> _OpenBlock:
        block = _OpenBlock(kind, self._next_output, _new_id(prefix))
        self._next_output += 1
        return block

    # -- events

    def feed(self, event: Mapping[str, Any]) -> list[JSON]:
        out: list[JSON] = []
        if self.outcome is not None:
            return out  # the answer is over; late events change nothing
        kind = event.get("type")
        if kind == "message_start":
            self._start(out)
            self._counter.update(_dict(event.get("message")).get("usage"))
        elif kind == "content_block_start":
            self._start(out)
            self._block_start(out, event)
        elif kind == "content_block_delta":
            self._block_delta(out, event)
        elif kind == "content_block_stop":
            self._block_stop(out, event)
        elif kind == "message_delta":
            delta = _dict(event.get("delta"))
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
                self._stop_details = delta.get("stop_details")
            self._counter.update(event.get("usage"))
        elif kind == "message_stop":
            self._start(out)
            self._complete(out)
        elif kind == "error":
            self._start(out)
            code, text = _stream_error(event.get("error"))
            self._fail(out, code, text)
        return out

    def finish(self) -> list[JSON]:
        out: list[JSON] = []
        if self.outcome is None:
            self._start(out)
            self._fail(out, "server_error", "The Anthropic stream ended before the answer was complete.")
        return out

    # -- content blocks

    def _block_start(self, out: list[JSON], event: Mapping[str, Any]) -> None:
        index = event.get("index")
        content = _dict(event.get("content_block"))
        kind = content.get("type")
        if not isinstance(index, int):
            return
        if kind == "text":
            block = _OpenBlock("text", -1, _new_id("msg"), opened=False)
            self._blocks[index] = block
            if isinstance(content.get("text"), str) and content["text"]:
                self._text_delta(out, block, content["text"])
        elif kind in ("thinking", "redacted_thinking"):
            block = self._open_item("thinking" if kind == "thinking" else "redacted", "rs")
            if kind == "redacted_thinking":
                block.data = _str(content.get("data"))
            else:
                block.signature = _str(content.get("signature"))
            self._emit(
                out,
                {
                    "type": "response.output_item.added",
                    "output_index": block.output_index,
                    "item": {"type": "reasoning", "id": block.item_id, "summary": []},
                },
            )
            self._blocks[index] = block
            if kind == "thinking" and isinstance(content.get("thinking"), str) and content["thinking"]:
                self._thinking_delta(out, block, content["thinking"])
        elif kind == "tool_use":
            name = str(content.get("name") or "")
            ref = (self.info.tools.get(name) if self.info else None) or ToolRef("function", name)
            custom = ref.kind == "custom"
            block = self._open_item("call", "ctc" if custom else "fc")
            block.call_id, block.name, block.custom = str(content.get("id") or _new_id("toolu")), name, custom
            block.custom_stream = InputStringStream() if custom else None
            item = _call_item(block.item_id, block.call_id, name, "", self.info)
            if not custom:
                item["status"] = "in_progress"
            self._emit(out, {"type": "response.output_item.added", "output_index": block.output_index, "item": item})
            self._blocks[index] = block
        # Server tool blocks (web search results and the like) are never requested: ignored.

    def _open_text(self, out: list[JSON], block: _OpenBlock) -> None:
        block.opened, block.output_index = True, self._next_output
        self._next_output += 1
        self._emit(
            out,
            {
                "type": "response.output_item.added",
                "output_index": block.output_index,
                "item": _message_item(block.item_id, "", "in_progress"),
            },
        )
        self._emit(
            out,
            {
                "type": "response.content_part.added",
                "output_index": block.output_index,
                "item_id": block.item_id,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        )

    def _text_delta(self, out: list[JSON], block: _OpenBlock, text: str) -> None:
        block.text.append(text)
        if not block.opened:
            # Claude may send "\n\n" as a block of its own before a tool call; as a message item
            # Codex would replay it, and Anthropic refuses whitespace-only text blocks.
            held = "".join(block.text)
            if not held.strip():
                return
            self._open_text(out, block)
            text = held
        self._emit(
            out,
            {
                "type": "response.output_text.delta",
                "output_index": block.output_index,
                "item_id": block.item_id,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _thinking_delta(self, out: list[JSON], block: _OpenBlock, text: str) -> None:
        if not block.summary_open:
            block.summary_open = True
            self._emit(
                out,
                {
                    "type": "response.reasoning_summary_part.added",
                    "output_index": block.output_index,
                    "item_id": block.item_id,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        block.text.append(text)
        self._emit(
            out,
            {
                "type": "response.reasoning_summary_text.delta",
                "output_index": block.output_index,
                "item_id": block.item_id,
                "summary_index": 0,
                "delta": text,
            },
        )

    def _call_delta(self, out: list[JSON], block: _OpenBlock, partial: str) -> None:
        block.text.append(partial)
        if block.custom_stream is not None:
            piece = block.custom_stream.feed(partial)
            if piece:
                block.streamed.append(piece)
                self._emit(
                    out,
                    {
                        "type": "response.custom_tool_call_input.delta",
                        "output_index": block.output_index,
                        "item_id": block.item_id,
                        "delta": piece,
                    },
                )
        elif partial:
            self._emit(
                out,
                {
                    "type": "response.function_call_arguments.delta",
                    "output_index": block.output_index,
                    "item_id": block.item_id,
                    "delta": partial,
                },
            )

    def _block_delta(self, out: list[JSON], event: Mapping[str, Any]) -> None:
        block = self._blocks.get(event.get("index"))  # type: ignore[arg-type]
        delta = _dict(event.get("delta"))
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text" and isinstance(delta.get("text"), str):
            if delta["text"]:
                self._text_delta(out, block, delta["text"])
        elif kind == "thinking_delta" and block.kind == "thinking" and isinstance(delta.get("thinking"), str):
            if delta["thinking"]:
                self._thinking_delta(out, block, delta["thinking"])
        elif kind == "signature_delta" and block.kind == "thinking" and isinstance(delta.get("signature"), str):
            block.signature += delta["signature"]
        elif kind == "input_json_delta" and block.kind == "call" and isinstance(delta.get("partial_json"), str):
            self._call_delta(out, block, delta["partial_json"])

    def _block_stop(self, out: list[JSON], event: Mapping[str, Any]) -> None:
        index = event.get("index")
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is not None:
            self._close(out, block)

    def _close(self, out: list[JSON], block: _OpenBlock) -> None:
        if block.kind == "text":
            self._close_text(out, block)
        elif block.kind in ("thinking", "redacted"):
            self._close_reasoning(out, block)
        else:
            self._close_call(out, block)

    def _close_text(self, out: list[JSON], block: _OpenBlock) -> None:
        if not block.opened:
            return  # only whitespace came: no message item
        text = "".join(block.text)
        common = {"output_index": block.output_index, "item_id": block.item_id, "content_index": 0}
        self._emit(out, {"type": "response.output_text.done", **common, "text": text, "logprobs": []})
        self._emit(
            out,
            {
                "type": "response.content_part.done",
                **common,
                "part": {"type": "output_text", "text": text, "annotations": []},
            },
        )
        self._finish_item(out, block.output_index, _message_item(block.item_id, text))

    def _close_reasoning(self, out: list[JSON], block: _OpenBlock) -> None:
        text = "".join(block.text)
        if block.summary_open:
            common = {"output_index": block.output_index, "item_id": block.item_id, "summary_index": 0}
            self._emit(out, {"type": "response.reasoning_summary_text.done", **common, "text": text})
            self._emit(
                out,
                {
                    "type": "response.reasoning_summary_part.done",
                    **common,
                    "part": {"type": "summary_text", "text": text},
                },
            )
        record: JSON | None
        if block.kind == "redacted":
            record = {"type": "redacted_thinking", "data": block.data} if block.data else None
        else:
            # Without its signature a thinking block cannot be replayed: keep only the summary.
            record = {"type": "thinking", "thinking": text, "signature": block.signature} if block.signature else None
        self._finish_item(out, block.output_index, _reasoning_item(block.item_id, text, record, self.ctx, self.info))

    def _close_call(self, out: list[JSON], block: _OpenBlock) -> None:
        arguments = "".join(block.text)
        common = {"output_index": block.output_index, "item_id": block.item_id}
        if block.custom:
            payload = _custom_input(arguments)
            self._emit(out, {"type": "response.custom_tool_call_input.done", **common, "input": payload})
        else:
            if not arguments.strip():
                # A call without arguments streams none; Codex still wants a JSON object.
                arguments = "{}"
                self._emit(out, {"type": "response.function_call_arguments.delta", **common, "delta": arguments})
            payload = arguments
            self._emit(out, {"type": "response.function_call_arguments.done", **common, "arguments": payload})
        self._finish_item(
            out, block.output_index, _call_item(block.item_id, block.call_id, block.name, payload, self.info)
        )

    # -- endings

    def _complete(self, out: list[JSON]) -> None:
        for index in sorted(self._blocks):
            self._close(out, self._blocks.pop(index))  # a block never stopped: close it with what it has
        if self._stop_reason == "refusal":
            partial = any(item["type"] == "message" for item in self._done.values())
            block = _OpenBlock("text", -1, _new_id("msg"), opened=False)
            self._text_delta(out, block, _refusal_text(self._stop_details, partial))
            self._close_text(out, block)
        incomplete = _incomplete_reason(self._stop_reason)
        self.outcome = "incomplete" if incomplete else "completed"
        self.usage = self._counter.normalised()
        response = _response_object(
            self.ctx,
            self.info,
            self.outcome,
            self._output(),
            self._counter.responses(),
            incomplete=incomplete,
        )
        self._emit(out, {"type": f"response.{self.outcome}", "response": response})

    def _fail(self, out: list[JSON], code: str, message: str) -> None:
        self.outcome = "failed"
        # Input already processed is billed even when the answer breaks off.
        self.usage = self._counter.normalised() if self._counter.seen else None
        response = _response_object(
            self.ctx,
            self.info,
            "failed",
            self._output(),
            self._counter.responses() if self._counter.seen else None,
            error={"code": code, "message": message},
        )
        self._emit(out, {"type": "response.failed", "response": response})
