"""ConverseStream events → Responses API stream events; a whole Converse answer is translated by
the same translator (`translate_response`), fed the events `decode.converse_events` restates it as."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import ResponseContext, Usage, response_object
from codexgate.providers.bedrock.decode import converse_events
from codexgate.providers.bedrock.errors import STREAM_ERRORS, stream_error
from codexgate.providers.bedrock.items import (
    call_item,
    custom_input,
    message_item,
    outcome_of,
    output_item_id,
    reasoning_item,
    usage_dict,
    usage_from_bedrock,
)
from codexgate.providers.bedrock.tools import ToolNames, resolve_tool
from codexgate.providers.jsonstring import InputStringStream

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Block:
    kind: str  # text / tool / reasoning
    output_index: int
    item_id: str
    text: list[str] = dataclasses.field(default_factory=list)
    wire: str = ""
    call_id: str = ""
    custom: bool = False
    custom_input: InputStringStream | None = None
    emitted: list[str] = dataclasses.field(default_factory=list)  # custom input shown so far
    signature: str | None = None
    redacted: list[bytes] = dataclasses.field(default_factory=list)
    summary_open: bool = False


class StreamTranslator:
    """ConverseStream events (as `EventStreamDecoder` yields them) → Responses stream events."""

    def __init__(
        self, ctx: ResponseContext, *, tools: ToolNames | None = None, upstream_model: str | None = None
    ) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self._tools = tools
        self._envelope_model = upstream_model or ctx.model
        self._sequence = 0
        self._started = False
        self._blocks: dict[int, _Block] = {}
        self._items: dict[int, dict[str, Any]] = {}  # finished items by output_index
        self._next_index = 0
        self._stop_reason: str | None = None
        self._cache_write = 0
        self._have_metadata = False

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, out: list[dict[str, Any]], event_type: str, **fields: Any) -> None:
        out.append({"type": event_type, "sequence_number": self._sequence, **fields})
        self._sequence += 1

    def _output(self) -> list[dict[str, Any]]:
        return [self._items[index] for index in sorted(self._items)]

    def _start(self, out: list[dict[str, Any]]) -> None:
        if self._started:
            return
        self._started = True
        response = response_object(self.ctx, "in_progress", [], None)
        self._emit(out, "response.created", response=response)
        self._emit(out, "response.in_progress", response=response)

    def _usage_payload(self) -> dict[str, Any] | None:
        return usage_dict(self.usage, self._cache_write) if self.usage is not None else None

    def _fail(self, out: list[dict[str, Any]], code: str, message: str) -> None:
        self.outcome = "failed"
        response = response_object(
            self.ctx, "failed", self._output(), self._usage_payload(), error={"code": code, "message": message}
        )
        self._emit(out, "response.failed", response=response)

    # -- public ---------------------------------------------------------------------------

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.outcome is not None or not isinstance(event, dict) or not event:
            return out
        self._start(out)
        name, body = next(iter(event.items()))
        body = body if isinstance(body, dict) else {}
        if name == "contentBlockStart":
            start = body.get("start") or {}
            if isinstance(start.get("toolUse"), dict):
                self._open_tool(out, body.get("contentBlockIndex"), start["toolUse"])
        elif name == "contentBlockDelta":
            self._delta(out, body.get("contentBlockIndex"), body.get("delta") or {})
        elif name == "contentBlockStop":
            self._close(out, body.get("contentBlockIndex"))
        elif name == "messageStop":
            for index in list(self._blocks):
                self._close(out, index)
            self._stop_reason = str(body.get("stopReason"))
            self._maybe_finish(out)
        elif name == "metadata":
            self.usage, self._cache_write = usage_from_bedrock(body.get("usage"))
            self._have_metadata = True
            self._maybe_finish(out)
        elif name in STREAM_ERRORS or name.endswith("Exception"):
            self._fail(out, *stream_error(name, body))
        # messageStart and events this gateway has no use for (citations, images) pass silently.
        return out

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.outcome is not None:
            return out
        self._start(out)
        if self._stop_reason is not None:
            message = "The Bedrock stream ended before its metadata event; the usage of this turn is unknown."
        else:
            message = "The Bedrock stream ended early, before the model finished its answer."
        self._fail(out, "server_error", message)
        return out

    # -- events ---------------------------------------------------------------------------

    def _new_block(self, kind: str, index: int, prefix: str) -> _Block:
        output_index = self._next_index
        self._next_index += 1
        block = _Block(kind, output_index, output_item_id(self.ctx, prefix, output_index))
        self._blocks[index] = block
        return block

    def _open_tool(self, out: list[dict[str, Any]], index: Any, start: Mapping[str, Any]) -> None:
        if not isinstance(index, int) or index in self._blocks:
            return
        wire, call_id = str(start.get("name")), str(start.get("toolUseId"))
        _, _, custom = resolve_tool(wire, self._tools)
        block = self._new_block("tool", index, "ctc" if custom else "fc")
        block.wire, block.call_id, block.custom = wire, call_id, custom
        block.custom_input = InputStringStream() if custom else None
        item = call_item(self.ctx, block.output_index, wire, call_id, self._tools, "", False)
        self._emit(out, "response.output_item.added", output_index=block.output_index, item=item)

    def _delta(self, out: list[dict[str, Any]], index: Any, delta: Mapping[str, Any]) -> None:
        if not isinstance(index, int):
            return
        block = self._blocks.get(index)
        if isinstance(delta.get("text"), str):
            piece = delta["text"]
            if block is None:
                # Held until it has non-whitespace text: a whitespace-only message item would be
                # replayed by Codex and refused by Bedrock ("text content blocks must contain
                # non-whitespace text"). A held block that stays blank is dropped.
                block = _Block("held", -1, "")
                self._blocks[index] = block
            if block.kind == "held" and piece:
                block.text.append(piece)
                held = "".join(block.text)
                if not held.strip():
                    return
                block = self._new_block("text", index, "msg")
                block.text.append(held)
                item = message_item(self.ctx, block.output_index, "", "in_progress")
                self._emit(out, "response.output_item.added", output_index=block.output_index, item=item)
                self._emit(
                    out,
                    "response.content_part.added",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                )
                piece = held
            elif block.kind == "text" and piece:
                block.text.append(piece)
            if block.kind == "text" and piece:
                self._emit(
                    out,
                    "response.output_text.delta",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
        elif isinstance(delta.get("toolUse"), dict):
            piece = delta["toolUse"].get("input")
            if block is None or block.kind != "tool" or not isinstance(piece, str) or not piece:
                return
            block.text.append(piece)
            if block.custom_input is not None:
                shown = block.custom_input.feed(piece)
                if shown:
                    block.emitted.append(shown)
                    self._emit(
                        out,
                        "response.custom_tool_call_input.delta",
                        output_index=block.output_index,
                        item_id=block.item_id,
                        delta=shown,
                    )
            else:
                self._emit(
                    out,
                    "response.function_call_arguments.delta",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    delta=piece,
                )
        elif isinstance(delta.get("reasoningContent"), dict):
            self._reasoning_delta(out, index, block, delta["reasoningContent"])

    def _reasoning_delta(
        self, out: list[dict[str, Any]], index: int, block: _Block | None, delta: Mapping[str, Any]
    ) -> None:
        if block is None:
            block = self._new_block("reasoning", index, "rs")
            item = {"type": "reasoning", "id": block.item_id, "summary": []}
            self._emit(out, "response.output_item.added", output_index=block.output_index, item=item)
        if block.kind != "reasoning":
            return
        text = delta.get("text")
        if isinstance(text, str) and text:
            if not block.summary_open:
                block.summary_open = True
                self._emit(
                    out,
                    "response.reasoning_summary_part.added",
                    output_index=block.output_index,
                    item_id=block.item_id,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            block.text.append(text)
            self._emit(
                out,
                "response.reasoning_summary_text.delta",
                output_index=block.output_index,
                item_id=block.item_id,
                summary_index=0,
                delta=text,
            )
        if isinstance(delta.get("signature"), str):
            block.signature = (block.signature or "") + delta["signature"]
        if isinstance(delta.get("redactedContent"), str):
            try:
                block.redacted.append(base64.b64decode(delta["redactedContent"], validate=True))
            except (binascii.Error, ValueError):
                logger.warning("Bedrock sent redactedContent that is not base64; dropped")

    def _close(self, out: list[dict[str, Any]], index: Any) -> None:
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is None or block.kind == "held":
            return
        text = "".join(block.text)
        position = {"output_index": block.output_index, "item_id": block.item_id}
        if block.kind == "text":
            self._emit(out, "response.output_text.done", **position, content_index=0, text=text, logprobs=[])
            part = {"type": "output_text", "text": text, "annotations": []}
            self._emit(out, "response.content_part.done", **position, content_index=0, part=part)
            item = message_item(self.ctx, block.output_index, text, "completed")
        elif block.kind == "tool":
            if block.custom:
                value = custom_input(text)
                shown = "".join(block.emitted)
                if value.startswith(shown) and len(value) > len(shown):
                    # Whatever the incremental decoder held back (or could not read) comes now.
                    self._emit(out, "response.custom_tool_call_input.delta", **position, delta=value[len(shown) :])
                self._emit(out, "response.custom_tool_call_input.done", **position, input=value)
                item = call_item(self.ctx, block.output_index, block.wire, block.call_id, self._tools, value, True)
            else:
                arguments = text or "{}"
                if not text:  # a call without arguments still streams its (empty object) arguments
                    self._emit(out, "response.function_call_arguments.delta", **position, delta=arguments)
                self._emit(out, "response.function_call_arguments.done", **position, arguments=arguments)
                item = call_item(self.ctx, block.output_index, block.wire, block.call_id, self._tools, arguments, True)
        else:
            if block.summary_open:
                self._emit(out, "response.reasoning_summary_text.done", **position, summary_index=0, text=text)
                part = {"type": "summary_text", "text": text}
                self._emit(out, "response.reasoning_summary_part.done", **position, summary_index=0, part=part)
            redacted = base64.b64encode(b"".join(block.redacted)).decode() if block.redacted else None
            item = reasoning_item(self.ctx, block.output_index, self._envelope_model, text, block.signature, redacted)
        self._items[block.output_index] = item
        self._emit(out, "response.output_item.done", output_index=block.output_index, item=item)

    def _maybe_finish(self, out: list[dict[str, Any]]) -> None:
        # Bedrock sends messageStop (the stop reason) and then metadata (usage): the turn is over
        # only when both have arrived.
        if self._stop_reason is None or not self._have_metadata:
            return
        status, error = outcome_of(self._stop_reason)
        if status == "failed" and error is not None:
            self._fail(out, error["code"], error["message"])
            return
        self.outcome = status
        incomplete = "max_output_tokens" if status == "incomplete" else None
        response = response_object(self.ctx, status, self._output(), self._usage_payload(), incomplete=incomplete)
        self._emit(out, f"response.{status}", response=response)


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    *,
    tools: ToolNames | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A whole Converse answer → a Responses API `response` object: the final response of the
    stream translator fed the equivalent ConverseStream events."""
    translator = StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    events = [out for event in converse_events(provider_body) for out in translator.feed(event)]
    events += translator.finish()
    response: dict[str, Any] = events[-1]["response"]
    return response
