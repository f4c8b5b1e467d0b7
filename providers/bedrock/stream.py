"""ConverseStream events → Responses API stream events, emitted through the shared toolkit
(`providers/responses`). A whole Converse answer is translated by the same translator
(`translate_response`), fed the events `decode.converse_events` restates it as."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import seal_reasoning
from codexgate.providers.bedrock.decode import converse_events
from codexgate.providers.bedrock.errors import STREAM_ERRORS, stream_error
from codexgate.providers.bedrock.tools import ToolNames
from codexgate.providers.responses import (
    CustomToolCallItem,
    EmittingTranslator,
    FunctionCallItem,
    InputStringStream,
    MessageItem,
    ReasoningItem,
    ResponseContext,
    custom_input,
)
from codexgate.usage import Usage

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

_STOP_COMPLETED = {"end_turn", "tool_use", "stop_sequence", "guardrail_intervened", "content_filtered"}
_STOP_INCOMPLETE = {"max_tokens", "model_context_window_exceeded"}
_STOP_FAILED = {
    "malformed_model_output": "the model produced malformed output",
    "malformed_tool_use": "the model produced a malformed tool call",
}


def usage_from_bedrock(usage: Any) -> tuple[Usage, int]:
    """(normalised usage, cache-write tokens). Bedrock's inputTokens excludes cache reads and
    writes; the gateway counts input including both."""
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    cached, written = count("cacheReadInputTokens"), count("cacheWriteInputTokens")
    normalised = Usage(
        input_tokens=count("inputTokens") + cached + written,
        cached_tokens=cached,
        output_tokens=count("outputTokens"),
        reasoning_tokens=0,  # Bedrock does not report reasoning tokens apart from output tokens
    )
    return normalised, written


@dataclasses.dataclass
class _Block:
    """One open content block of the answer (by Bedrock's contentBlockIndex) and its item."""

    item: MessageItem | FunctionCallItem | CustomToolCallItem | ReasoningItem
    raw: list[str] = dataclasses.field(default_factory=list)  # a custom tool's JSON, as it came
    decoder: InputStringStream | None = None  # a custom tool's `input`, decoded as it streams
    signature: str | None = None
    redacted: list[bytes] = dataclasses.field(default_factory=list)


class StreamTranslator(EmittingTranslator):
    """ConverseStream events (as `EventStreamDecoder` yields them) → Responses stream events."""

    def __init__(
        self, ctx: ResponseContext, *, tools: ToolNames | None = None, upstream_model: str | None = None
    ) -> None:
        super().__init__(ctx)
        self._tools = tools if tools is not None else ToolNames()
        self._envelope_model = upstream_model or ctx.model
        self._blocks: dict[int, _Block] = {}
        self._stop_reason: str | None = None
        self._usage: Usage | None = None  # from the metadata event
        self._cache_write = 0

    # -- public ---------------------------------------------------------------------------

    def feed(self, event: dict[str, Any]) -> list[JSON]:
        if self.outcome is not None or not isinstance(event, dict) or not event:
            return []
        self.emit.start()
        name, body = next(iter(event.items()))
        body = body if isinstance(body, dict) else {}
        if name == "contentBlockStart":
            start = body.get("start") or {}
            if isinstance(start.get("toolUse"), dict):
                self._open_tool(body.get("contentBlockIndex"), start["toolUse"])
        elif name == "contentBlockDelta":
            self._delta(body.get("contentBlockIndex"), body.get("delta") or {})
        elif name == "contentBlockStop":
            self._close(body.get("contentBlockIndex"))
        elif name == "messageStop":
            for index in list(self._blocks):
                self._close(index)
            self._stop_reason = str(body.get("stopReason"))
            self._maybe_finish()
        elif name == "metadata":
            self._usage, self._cache_write = usage_from_bedrock(body.get("usage"))
            self._maybe_finish()
        elif name in STREAM_ERRORS or name.endswith("Exception"):
            self._fail(*stream_error(name, body))
        # messageStart and events this gateway has no use for (citations, images) pass silently.
        return self.emit.take()

    def finish(self) -> list[JSON]:
        """At the end of the upstream body: `response.failed` unless the turn was over (a cut
        stream must never look complete: Codex would keep half an answer)."""
        if self.outcome is None:
            if self._stop_reason is not None:
                message = "The Bedrock stream ended before its metadata event; the usage of this turn is unknown."
            else:
                message = "The Bedrock stream ended early, before the model finished its answer."
            self._fail("server_error", message)
        return self.emit.take()

    # -- events ---------------------------------------------------------------------------

    def _fail(self, code: str, message: str) -> None:
        self.emit.fail(code, message, self._usage, cache_write_tokens=self._cache_write)

    def _open_tool(self, index: Any, start: Mapping[str, Any]) -> None:
        if not isinstance(index, int) or index in self._blocks:
            return
        tool = self._tools.resolve(str(start.get("name")))
        item = self.emit.tool_call(tool.kind, str(start.get("toolUseId")), tool.name, tool.namespace)
        decoder = InputStringStream() if isinstance(item, CustomToolCallItem) else None
        self._blocks[index] = _Block(item, decoder=decoder)

    def _delta(self, index: Any, delta: Mapping[str, Any]) -> None:
        if not isinstance(index, int):
            return
        block = self._blocks.get(index)
        if isinstance(delta.get("text"), str):
            if block is None:
                # The message item holds whitespace back: announced with its first real text,
                # never at all when the block stays blank (Codex would replay it, Bedrock refuse it).
                block = self._blocks[index] = _Block(self.emit.message())
            if isinstance(block.item, MessageItem):
                block.item.delta(delta["text"])
        elif isinstance(delta.get("toolUse"), dict):
            piece = delta["toolUse"].get("input")
            if block is None or not isinstance(piece, str) or not piece:
                return
            if isinstance(block.item, CustomToolCallItem) and block.decoder is not None:
                block.raw.append(piece)
                block.item.delta(block.decoder.feed(piece))
            elif isinstance(block.item, FunctionCallItem):
                block.item.delta(piece)
        elif isinstance(delta.get("reasoningContent"), dict):
            if block is None:
                block = self._blocks[index] = _Block(self.emit.reasoning())
            if isinstance(block.item, ReasoningItem):
                self._reasoning_delta(block, delta["reasoningContent"])

    def _reasoning_delta(self, block: _Block, delta: Mapping[str, Any]) -> None:
        assert isinstance(block.item, ReasoningItem)
        if isinstance(delta.get("text"), str):
            block.item.delta(delta["text"])
        if isinstance(delta.get("signature"), str):
            block.signature = (block.signature or "") + delta["signature"]
        if isinstance(delta.get("redactedContent"), str):
            try:
                block.redacted.append(base64.b64decode(delta["redactedContent"], validate=True))
            except (binascii.Error, ValueError):
                logger.warning("Bedrock sent redactedContent that is not base64; dropped")

    def _close(self, index: Any) -> None:
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is None:
            return
        item = block.item
        if isinstance(item, CustomToolCallItem) and block.decoder is not None:
            value = custom_input("".join(block.raw))
            shown = block.decoder.emitted
            if value.startswith(shown) and len(value) > len(shown):
                # Whatever the incremental decoder held back (or could not read) comes now.
                item.delta(value[len(shown) :])
            item.done(value)
        elif isinstance(item, ReasoningItem):
            # The block goes back to Bedrock as it came (signed text, or the redacted blob), sealed
            # for this provider and model: only they can check it.
            record: JSON
            if block.redacted:
                record = {"redactedContent": base64.b64encode(b"".join(block.redacted)).decode()}
            else:
                signed = {"signature": block.signature} if block.signature is not None else {}
                record = {"reasoningText": {"text": item.text, **signed}}
            item.done(seal_reasoning(self.ctx.provider_name, self._envelope_model, {"block": record}))
        else:
            item.done()

    def _maybe_finish(self) -> None:
        """Bedrock sends messageStop (the stop reason) and then metadata (usage): the turn is
        over only when both have arrived. Guardrail interventions and content filtering end a
        normal, completed turn: Bedrock has already put its replacement text into the answer."""
        if self._stop_reason is None or self._usage is None:
            return
        stop = self._stop_reason
        if stop in _STOP_FAILED:
            self._fail("server_error", f"Bedrock: {_STOP_FAILED[stop]}; try again.")
            return
        if stop not in _STOP_COMPLETED | _STOP_INCOMPLETE:
            logger.warning("unknown Bedrock stopReason %r treated as completed", stop)
        incomplete = "max_output_tokens" if stop in _STOP_INCOMPLETE else None
        self.emit.complete(self._usage, incomplete=incomplete, cache_write_tokens=self._cache_write)


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    *,
    tools: ToolNames | None = None,
    upstream_model: str | None = None,
) -> JSON:
    """A whole Converse answer → a Responses API `response` object: the final response of the
    stream translator fed the equivalent ConverseStream events."""
    translator = StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    for event in converse_events(provider_body):
        translator.feed(event)
    translator.finish()
    assert translator.response is not None  # finish() always ends the answer
    return translator.response
