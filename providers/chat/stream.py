"""Chat completion chunk streams → Responses stream events: the SSE decoder and the translator.

The translator reads chunks and drives the toolkit's `ResponseEmitter` (sequence numbers, item
events, the one terminal event, the final `response`); what it knows is the Chat side: deltas of
`content` (with `<think>` tags and Mistral's parts), `reasoning_content`/`reasoning`/
`reasoning_details`, `refusal`, `tool_calls` by index with argument fragments, `finish_reason`,
usage in whichever chunk carries it, and error chunks. A whole completion is read as the chunks
its stream would have been (`whole.py`), so both end in the same `response`.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import seal_reasoning
from codexgate.providers.chat.answer import (
    ThinkSplitter,
    arguments_text,
    as_dict,
    chunk_usage,
    content_pieces,
    merge_details,
    reasoning_text,
)
from codexgate.providers.chat.errors import answer_failure
from codexgate.providers.responses.emitter import (
    CustomToolCallItem,
    EmittingTranslator,
    FunctionCallItem,
    MessageItem,
    ReasoningItem,
)
from codexgate.providers.responses.jsonstring import InputStringStream, custom_input
from codexgate.providers.responses.objects import ResponseContext
from codexgate.providers.responses.tools import ToolNameMap
from codexgate.sse import SSEParser, decode_json
from codexgate.usage import Usage

__all__ = ["DONE", "ChatStreamDecoder", "StreamTranslator"]

log = logging.getLogger(__name__)

JSON = dict[str, Any]

DONE: Mapping[str, bool] = types.MappingProxyType({"done": True})


class ChatStreamDecoder:
    """SSE bytes → chunk dicts; `data: [DONE]` becomes `DONE`; an `event: error` (or any JSON
    without choices but with `error`) comes out as `{"error": ...}`."""

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for name, data in self._parser.feed_raw(chunk):
            try:
                event = decode_json(data)
            except ValueError:
                # `data: [DONE]`, an empty line, or JSON in whitespace JSON does not allow
                text = data.decode("utf-8", "replace").strip()
                if text == "[DONE]":
                    events.append(dict(DONE))
                    continue
                try:
                    event = decode_json(text) if text else None
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
    """One tool call of the answer (chat `tool_calls[index]`), announced once its name is known."""

    call_id: str = ""
    chat_name: str = ""
    pending: str = ""  # argument fragments that came before the name
    item: FunctionCallItem | CustomToolCallItem | None = None
    arguments: list[str] = dataclasses.field(default_factory=list)
    input_stream: InputStringStream | None = None  # custom tools: the `input` string as it decodes


class StreamTranslator(EmittingTranslator):
    """Chat completion chunks (from `ChatStreamDecoder`) → Responses stream events, as they come."""

    def __init__(
        self, ctx: ResponseContext, *, tools: ToolNameMap | None = None, upstream_model: str | None = None
    ) -> None:
        super().__init__(ctx)
        # Envelopes are scoped to the model the host ran, as `build_request` opens them.
        self.envelope_model = upstream_model or ctx.model
        self.tools = tools if tools is not None else ToolNameMap()
        self._usage: Usage | None = None  # the latest counts a chunk carried
        self.content_filtered = False  # the host's content filter ended the answer
        self._splitter = ThinkSplitter()
        self._message: MessageItem | None = None
        self._reasoning: ReasoningItem | None = None
        self._details: list[JSON] = []  # OpenRouter's reasoning_details of the open reasoning item
        self._calls: dict[int, _OpenCall] = {}
        self._finish: str | None = None
        self._done_seen = False

    @property
    def usage(self) -> Usage | None:
        """The counts of the latest chunk that carried usage: hosts send them before the end (with
        `finish_reason`, or in a chunk of their own before `[DONE]`), and a stream cut after them
        is still accounted by them."""
        return self._usage

    # ---- feeding

    def feed(self, event: Mapping[str, Any]) -> list[JSON]:
        emit = self.emit
        if emit.outcome is not None:
            return []  # the answer is over; a host's trailing chunks change nothing
        emit.start()
        if event.get("done") is True:
            self._done_seen = True
            self._terminal()
            return emit.take()
        usage = chunk_usage(event)
        if usage is not None:
            self._usage = usage
        choices = event.get("choices")
        if event.get("error") is not None and not choices:
            self._fail(answer_failure(500, event))
            return emit.take()
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Codex asks for one answer
            self._delta(as_dict(choice.get("delta")))
            finish = choice.get("finish_reason")
            if finish:
                self._finish = str(finish)
                if self._finish == "error":
                    error = event.get("error") or choice.get("error") or "the provider stopped with an error"
                    self._fail(answer_failure(500, error))
                    break
                self._close_all()
        return emit.take()

    def _delta(self, delta: JSON) -> None:
        reasoning = reasoning_text(delta)
        details = delta.get("reasoning_details")
        if reasoning or (isinstance(details, list) and details):
            self._reasoning_delta(reasoning, details)
        content = delta.get("content")
        if content:
            for kind, piece in content_pieces(content):
                parts = self._splitter.feed(piece) if kind == "text" else [(kind, piece)]
                for part_kind, part in parts:
                    if part_kind == "reasoning":
                        self._reasoning_delta(part, None)
                    else:
                        self._text_delta(part)
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self._text_delta(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._call_delta(call)

    def _reasoning_delta(self, text: str, details: Any) -> None:
        self._close_message()
        if self._reasoning is None:
            self._reasoning = self.emit.reasoning()
            self._details = []
        merge_details(self._details, details)
        self._reasoning.delta(text)

    def _close_reasoning(self) -> None:
        item, self._reasoning = self._reasoning, None
        if item is None:
            return
        payload: dict[str, object] = {"reasoning_content": item.text}
        if self._details:
            payload["reasoning_details"] = self._details
        item.done(seal_reasoning(self.ctx.provider_name, self.envelope_model, payload))

    def _text_delta(self, text: str) -> None:
        self._close_reasoning()
        if self._message is None:
            # Announced only once it holds real text: a whitespace-only message (e.g. "\n\n"
            # before a tool call) would be replayed by Codex next turn and refused upstream.
            self._message = self.emit.message()
        self._message.delta(text)

    def _close_message(self, status: str = "completed") -> None:
        item, self._message = self._message, None
        if item is not None:
            item.done(status)

    def _call_delta(self, call: JSON) -> None:
        self._close_reasoning()
        self._close_message()
        index = call["index"] if isinstance(call.get("index"), int) else len(self._calls)
        state = self._calls.setdefault(index, _OpenCall())
        function = as_dict(call.get("function"))
        if isinstance(call.get("id"), str) and call["id"] and not state.call_id:
            state.call_id = call["id"]
        if isinstance(function.get("name"), str) and function["name"] and not state.chat_name:
            state.chat_name = function["name"]
        fragment = arguments_text(function.get("arguments"))
        if state.item is None:
            if not state.chat_name:
                state.pending += fragment  # nothing to announce before the name is known
                return
            tool = self.tools.resolve(state.chat_name)
            call_id = state.call_id or self.emit.new_id("call")
            state.item = self.emit.tool_call(tool.kind, call_id, tool.name, tool.namespace)
            if isinstance(state.item, CustomToolCallItem):
                state.input_stream = InputStringStream()
            fragment, state.pending = state.pending + fragment, ""
        if fragment:
            state.arguments.append(fragment)
            if state.input_stream is not None:
                state.item.delta(state.input_stream.feed(fragment))
            else:
                state.item.delta(fragment)

    def _close_call(self, state: _OpenCall) -> None:
        item = state.item
        if item is None or item.finished:
            return
        arguments = "".join(state.arguments)
        if isinstance(item, CustomToolCallItem):
            assert state.input_stream is not None
            final, shown = custom_input(arguments), state.input_stream.emitted
            if final.startswith(shown):
                item.delta(final[len(shown) :])  # what the streaming decoder could not show (raw text)
            item.done(final)
        else:
            item.done(arguments)

    def _close_all(self) -> None:
        status = "incomplete" if self._finish == "length" else "completed"
        for kind, piece in self._splitter.flush():
            if kind == "reasoning":
                self._reasoning_delta(piece, None)
            else:
                self._text_delta(piece)
        self._close_reasoning()
        self._close_message(status)
        for index in sorted(self._calls):
            self._close_call(self._calls[index])

    # ---- endings

    def _terminal(self) -> None:
        self._close_all()
        if self._finish == "length":
            self.emit.complete(self._usage, incomplete="max_output_tokens")
            return
        if self._finish == "content_filter":
            self.content_filtered = True
            log.warning(
                "provider %s: answer %s stopped by its content filter", self.ctx.provider_name, self.ctx.response_id
            )
        self.emit.complete(self._usage)

    def _fail(self, error: JSON) -> None:
        self.emit.fail(str(error["code"]), str(error["message"]), self._usage)

    def finish(self) -> list[JSON]:
        """The upstream stream ended: the terminal event, unless one was sent already."""
        emit = self.emit
        if emit.outcome is not None:
            return []
        emit.start()
        if self._finish is not None or self._done_seen:
            self._terminal()
        else:
            emit.fail("server_error", f"The provider's stream ended early ({self.ctx.provider_name}).", self._usage)
        return emit.take()
