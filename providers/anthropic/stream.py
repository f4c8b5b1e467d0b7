"""A streamed Anthropic answer: the SSE decoder and the event-by-event translator into Responses
events, emitted through the shared toolkit (`providers/responses`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from codexgate.providers.anthropic.errors import stream_error
from codexgate.providers.anthropic.tools import RequestInfo
from codexgate.providers.anthropic.usage import UsageCounter
from codexgate.providers.anthropic.values import JSON, as_dict, as_str
from codexgate.providers.base import seal_reasoning
from codexgate.providers.family import StreamBridge
from codexgate.providers.responses import (
    CustomToolCallItem,
    EmittingTranslator,
    FunctionCallItem,
    MessageItem,
    ReasoningItem,
    ResponseContext,
    ToolNameMap,
)
from codexgate.sse import SSEParser, decode_json, encode_events

logger = logging.getLogger(__name__)

# Claude stops that cut the answer short: `response.incomplete` with this reason. A refusal is not
# one: Codex treats `response.incomplete` like a failed stream and would send the same request
# again for the same refusal, so it stays a finished answer, marked by a closing message instead
# (`_refusal_text`), also after partial text.
_INCOMPLETE_STOPS = frozenset({"max_tokens", "model_context_window_exceeded"})


class StreamDecoder:
    """Anthropic's SSE bytes (any chunking) → decoded event dicts."""

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[JSON]:
        return [event for name, data in self._parser.feed_raw(chunk) if (event := decoded(name, data)) is not None]


_UNREAD: Any = object()


def decoded(name: str, data: bytes, event: Any = _UNREAD) -> JSON | None:
    """One SSE event's data → the event dict (its `type` the SSE name when it has none), None for
    nothing (no data, or JSON that is no object); undecodable data → an error event. `event`:
    what orjson already read of `data` (`TextDeltaBridge`), not read again."""
    if event is _UNREAD:
        try:
            event = orjson.loads(data)  # `decode_json`, its usual case without a call around it
        except ValueError:
            event = _stdlib_decoded(data)
    if event.__class__ is not dict:  # (as isinstance: neither decoder makes a dict's subclass)
        return None
    if "type" not in event:
        event["type"] = name
    return event


def _stdlib_decoded(data: bytes) -> Any:
    """What orjson refused: `decode_json`'s reading (the stdlib's), else an error event or None."""
    try:
        return decode_json(data)
    except ValueError:
        text = data.decode("utf-8", "replace")
        if not text.strip():
            return None  # an empty data line (also one of whitespace only): nothing
        # A garbled event cannot be skipped silently (it may be text): fail the answer.
        logger.warning("undecodable Anthropic stream event %r", text[:200])
        return {"type": "error", "error": {"type": "api_error", "message": "undecodable stream event"}}


type Item = MessageItem | ReasoningItem | FunctionCallItem | CustomToolCallItem


@dataclasses.dataclass
class _Block:
    """One Claude content block in flight and the Responses item it feeds."""

    item: Item
    thinking: bool = False  # a thinking block (its record: text + signature)
    redacted: str | None = None  # a redacted_thinking block's data
    signature: str = ""


class StreamTranslator(EmittingTranslator):
    """Anthropic stream events in, Responses stream events out, one event at a time.

    After the terminal event, `outcome` ("completed" | "incomplete" | "failed"), `usage` and
    `response` (the final `response` object, also a whole answer's: see `whole.py`) are set."""

    cut_message = "The Anthropic stream ended before the answer was complete."

    def __init__(self, ctx: ResponseContext, info: RequestInfo | None = None) -> None:
        if info is not None and not ctx.echo:
            # A context made without the request's echo: what the request info knows of it.
            ctx = dataclasses.replace(
                ctx, echo={"parallel_tool_calls": info.parallel_tool_calls, "tool_choice": info.tool_choice}
            )
        super().__init__(ctx)
        self.info = info
        self._tools = info.tools if info is not None else ToolNameMap()
        # Reasoning is sealed for the model that produced it: only it may see it again.
        self._envelope_model = info.upstream_model if info is not None else ctx.model
        self._blocks: dict[int, _Block] = {}
        self._counter = UsageCounter()
        self._stop_reason: str | None = None
        self._stop_details: Any = None

    def feed(self, event: Mapping[str, Any]) -> list[JSON]:
        if self.emit.outcome is not None:
            return []  # the answer is over; late events change nothing
        kind = event.get("type")
        if kind == "content_block_delta":  # nearly every event: first
            self._block_delta(event)
        elif kind == "message_start":
            self.emit.start()
            self._counter.update(as_dict(event.get("message")).get("usage"))
        elif kind == "content_block_start":
            self.emit.start()
            self._block_start(event)
        elif kind == "content_block_stop":
            index = event.get("index")
            block = self._blocks.pop(index, None) if isinstance(index, int) else None
            if block is not None:
                self._close(block)
        elif kind == "message_delta":
            delta = as_dict(event.get("delta"))
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
                self._stop_details = delta.get("stop_details")
            self._counter.update(event.get("usage"))
        elif kind == "message_stop":
            self._complete()
        elif kind == "error":
            self._fail(*stream_error(event.get("error")))
        return self.emit.take()

    def finish(self) -> list[JSON]:
        if self.emit.outcome is None:
            self._fail("server_error", self.cut_message)  # billing the input Claude reported
        return self.emit.take()

    # -- content blocks

    def _block_start(self, event: Mapping[str, Any]) -> None:
        index = event.get("index")
        content = as_dict(event.get("content_block"))
        kind = content.get("type")
        if not isinstance(index, int):
            return
        if kind == "text":
            message = self.emit.message()
            self._blocks[index] = _Block(message)
            if isinstance(content.get("text"), str):
                message.delta(content["text"])
        elif kind == "thinking":
            reasoning = self.emit.reasoning()
            self._blocks[index] = _Block(reasoning, thinking=True, signature=as_str(content.get("signature")))
            if isinstance(content.get("thinking"), str):
                reasoning.delta(content["thinking"])
        elif kind == "redacted_thinking":
            self._blocks[index] = _Block(self.emit.reasoning(), redacted=as_str(content.get("data")))
        elif kind == "tool_use":
            tool = self._tools.resolve(str(content.get("name") or ""))
            call_id = str(content.get("id") or self.emit.new_id("toolu"))
            self._blocks[index] = _Block(self.emit.tool_call(tool.kind, call_id, tool.name, tool.namespace))
        # Server tool blocks (web search results and the like) are never requested: ignored.

    def _block_delta(self, event: Mapping[str, Any]) -> None:
        index = event.get("index")
        block = self._blocks.get(index) if isinstance(index, int) else None
        delta = event.get("delta")
        if block is None or not isinstance(delta, dict):
            return
        kind, item = delta.get("type"), block.item
        if kind == "text_delta" and isinstance(item, MessageItem) and isinstance(delta.get("text"), str):
            item.delta(delta["text"])
        elif kind == "thinking_delta" and block.thinking and isinstance(delta.get("thinking"), str):
            item.delta(delta["thinking"])
        elif kind == "signature_delta" and block.thinking and isinstance(delta.get("signature"), str):
            block.signature += delta["signature"]
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            if isinstance(item, CustomToolCallItem):
                # Claude has no free-form tools: it writes {"input": "..."}, decoded as it streams.
                item.json_delta(delta["partial_json"])
            elif isinstance(item, FunctionCallItem):
                item.delta(delta["partial_json"])

    def _close(self, block: _Block) -> None:
        item = block.item
        if not isinstance(item, ReasoningItem):
            item.done()  # a message of only whitespace never appears; a call without input gets {}
            return
        record: JSON | None = None
        if block.redacted:
            record = {"type": "redacted_thinking", "data": block.redacted}
        elif block.thinking and block.signature:
            # Without its signature a thinking block cannot be replayed: keep only the summary.
            record = {"type": "thinking", "thinking": item.text, "signature": block.signature}
        sealed = seal_reasoning(self.ctx.provider_name, self._envelope_model, {"blocks": [record]}) if record else None
        item.done(sealed)

    # -- endings

    def _complete(self) -> None:
        for index in sorted(self._blocks):
            self._close(self._blocks.pop(index))  # a block never stopped: close it with what it has
        if self._stop_reason == "refusal":
            partial = any(item["type"] == "message" for item in self.emit.output)
            refusal = self.emit.message()
            refusal.delta(_refusal_text(self._stop_details, partial))
            refusal.done()
        incomplete = "max_output_tokens" if self._stop_reason in _INCOMPLETE_STOPS else None
        usage = self._counter.normalised()
        self.emit.complete(usage, incomplete=incomplete, cache_write_tokens=self._counter.cache_creation)

    def _fail(self, code: str, message: str) -> None:
        # Input already processed is billed even when the answer breaks off.
        seen = self._counter.seen
        self.emit.fail(
            code,
            message,
            self._counter.normalised() if seen else None,
            cache_write_tokens=self._counter.cache_creation if seen else None,
        )


def _refusal_text(stop_details: Any, partial: bool = False) -> str:
    text = (
        "[The model stopped here and declined to continue this answer.]"
        if partial
        else "The model declined to answer this request."
    )
    if isinstance(stop_details, dict) and isinstance(stop_details.get("explanation"), str):
        text += f" {stop_details['explanation']}"
    return text


_DELTA = b"event: content_block_delta\ndata: "
_AFTER = len(_DELTA)


class TextDeltaBridge(StreamBridge):
    """The Anthropic stream's bridge: `StreamBridge`, with a shortest path for the bulk of a stream,
    a text or thinking delta of the message or reasoning being written. Such an event is decoded,
    checked and encoded here in a few calls (`encoded_delta` of the item), the same bytes as the
    general path's (decoder, translator, `encode_events`), which takes every other event and any
    delta in doubt (the checks only read: nothing has changed when one fails). Anthropic writes
    each event on its own: a chunk that is one whole delta (nothing pending before it, one line
    of data) is not even split."""

    __slots__ = ("_blocks", "_parser")

    def __init__(self, decoder: StreamDecoder, translator: StreamTranslator) -> None:
        super().__init__(decoder, translator)
        self._parser = decoder._parser
        self._blocks = translator._blocks

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""  # the end of the stream (`finish` follows): no bytes, no event completed
        events: list[tuple[str, bytes]] | None = None
        read: Any = _UNREAD  # what `_delta` decoded of the one event in `events`, for the general path
        # A chunk that is one event's two lines and its blank one, without "\r" (which SSEParser
        # rewrites): its data is what the parser would read, as it would name it.
        if chunk[:_AFTER] == _DELTA and chunk[-2:] == b"\n\n" and not self._parser._buffer:
            data = chunk[_AFTER:-2]
            if 10 not in data and 13 not in data:  # 10: b"\n", 13: b"\r"
                read = self._delta(data)
                if read.__class__ is bytes:
                    self.events_out += 1
                    return read  # type: ignore[no-any-return]
                events = [("content_block_delta", data)]  # for the general path, not tried again
        shortest = events is None
        pieces: list[bytes] = []
        translated: list[JSON] = []  # the general path's events since the last piece
        translate = self._translator.feed
        for name, data in self._parser.feed_raw(chunk) if events is None else events:
            if shortest and name == "content_block_delta":
                read = self._delta(data)
                if read.__class__ is bytes:
                    if translated:
                        self.events_out += len(translated)
                        pieces.append(encode_events(translated))
                        translated = []
                    self.events_out += 1
                    pieces.append(read)
                    read = _UNREAD
                    continue
            event = decoded(name, data, read)
            read = _UNREAD  # (read of this event only)
            if event is not None:
                translated += translate(event)
        if translated:
            self.events_out += len(translated)
            pieces.append(encode_events(translated))
        return b"".join(pieces)

    def _delta(self, data: bytes) -> Any:
        """The encoded Responses event (bytes) of a content_block_delta event's data that is a
        text delta of an announced message or a thinking delta of a thinking block's open summary
        (the item's `encoded_delta`); else, with nothing done, the data as `decoded` reads it
        (orjson's reading, or the stdlib's where orjson refuses it), for `decoded` to take
        without reading it again."""
        try:
            event = orjson.loads(data)
        except ValueError:  # orjson's JSONDecodeError: what `decoded` would read in its place
            return _stdlib_decoded(data)
        try:
            index, delta = event["index"], event["delta"]
            # (isinstance's int but for bool, which the general path takes just the same)
            if event["type"] != "content_block_delta" or index.__class__ is not int:
                return event
            block = self._blocks[index]
            kind = delta["type"]
            if kind == "text_delta":
                text, fits = delta["text"], block.item.__class__ is MessageItem
            elif kind == "thinking_delta":
                text, fits = delta["thinking"], block.thinking
            else:
                return event
            if fits and text.__class__ is str:
                encoded = block.item.encoded_delta(text)
                if encoded is not None:
                    return encoded
        except (ValueError, KeyError, TypeError):
            pass  # not this shape: the general path reads it (and decides what it is)
        return event
