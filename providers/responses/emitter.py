"""Responses API stream events, written once for every translating family.

A family's stream translator reads its provider's events and drives a `ResponseEmitter`:

    emit = ResponseEmitter(ctx)
    emit.start()                                  # response.created + response.in_progress
    text = emit.message()                         # announced only once it holds non-whitespace text
    text.delta("Hello")                           # output_item.added, content_part.added, output_text.delta
    text.done()                                   # output_text.done, content_part.done, output_item.done
    call = emit.function_call("call_1", "exec_command")
    call.delta('{"cmd":'); call.delta('"ls"}'); call.done()
    emit.complete(usage)                          # response.completed with the finished output
    return emit.take()                            # the events so far, sequence-numbered

The emitter assigns `sequence_number`s and `output_index`es, keeps the finished items, and builds
the terminal `response` object, so a whole (non-streamed) answer is simply `emit.response` after
the provider's answer has been fed through the same translator. It guarantees what Codex relies
on: exactly one terminal event (`response.completed`, `response.incomplete` or `response.failed`)
and nothing after it; no whitespace-only message item (Codex would replay it and Anthropic and
Gemini refuse such text on the next turn); a function call always carries JSON arguments (`{}`
when the model streamed none); a custom tool call's streamed input and final input decoded the
same way from the `{"input": "..."}` JSON the model writes (`jsonstring`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from codexgate.providers.responses.jsonstring import InputStringStream, custom_input
from codexgate.providers.responses.objects import ResponseContext, echoed_fields, response_object, usage_block
from codexgate.usage import Usage

__all__ = [
    "CustomToolCallItem",
    "EmittingTranslator",
    "FunctionCallItem",
    "MessageItem",
    "ReasoningItem",
    "ResponseEmitter",
]

JSON = dict[str, Any]


def _delta_head(event_type: bytes, output_index: int, item_id: str, part_key: bytes) -> bytes | None:
    """What `codexgate.sse.encode_events` writes (orjson) for a delta event `{"type", "output_index",
    "item_id", part_key: 0, "delta", ...}`, up to its delta text (see `_Item.encoded_delta`); None
    for an id orjson refuses (the standard encoder writes those events)."""
    try:
        item = orjson.dumps(item_id)
    except TypeError:
        return None
    return b'event: %s\ndata: {"type":"%s","output_index":%d,"item_id":%s,"%s":0,"delta":' % (
        event_type,
        event_type,
        output_index,
        item,
        part_key,
    )


class ResponseEmitter:
    """Sequence-numbered Responses stream events for one answer; see the module docstring."""

    __slots__ = (
        "_echoed",
        "_ids",
        "_next_index",
        "_open",
        "_started",
        "ctx",
        "done_items",
        "events",
        "outcome",
        "response",
        "sequence",
        "usage",
    )

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.events: list[JSON] = []  # emitted since the last `take()`
        self.sequence = 0
        self.done_items: dict[int, JSON] = {}  # output_index -> finished item
        self.outcome: str | None = None  # "completed" | "incomplete" | "failed" once terminal
        self.response: JSON | None = None  # the terminal event's `response` object
        self.usage: Usage | None = None  # what the terminal event reported, for accounting
        self._started = False
        self._next_index = 0
        self._ids = 0
        self._open: dict[int, _Item] = {}  # announced items not yet done, by output_index
        # The request fields every `response` object of the answer echoes (`echoed_fields`), read
        # from the context once: the first and the terminal object repeat the same ones.
        self._echoed: JSON | None = None

    # -- plumbing ---------------------------------------------------------------------------------

    def emit(self, event: JSON) -> None:
        """Number and queue one event; nothing is emitted after the terminal one."""
        if self.outcome is not None:
            return
        event["sequence_number"] = self.sequence
        self.sequence += 1
        self.events.append(event)

    def take(self) -> list[JSON]:
        """The events emitted since the last call (what a translator's `feed` returns)."""
        events, self.events = self.events, []
        return events

    def new_id(self, prefix: str) -> str:
        """An item id unique across responses (response ids are) and the same for any split of
        the provider stream (chunk-split equivalence compares events)."""
        self._ids += 1
        digest = hashlib.sha256(f"{self.ctx.response_id}:{self._ids}".encode()).hexdigest()[:32]
        return f"{prefix}_{digest}"

    @property
    def started(self) -> bool:
        return self._started

    @property
    def output(self) -> list[JSON]:
        """The finished items in output order."""
        return [self.done_items[index] for index in sorted(self.done_items)]

    def start(self) -> None:
        """response.created + response.in_progress, once (every other method calls it)."""
        if self._started:
            return
        self._started = True
        self._echoed = echoed = echoed_fields(self.ctx)
        shell = response_object(self.ctx, "in_progress", [], None, echoed=echoed)
        self.emit({"type": "response.created", "response": shell})
        self.emit({"type": "response.in_progress", "response": dict(shell)})

    def _announce(self, item: _Item, shell: JSON) -> None:
        self.start()
        item.output_index = self._next_index
        self._next_index += 1
        self._open[item.output_index] = item
        self.emit({"type": "response.output_item.added", "output_index": item.output_index, "item": shell})

    def _finish(self, item: _Item, finished: JSON) -> None:
        self._open.pop(item.output_index, None)
        self.done_items[item.output_index] = finished
        self.emit({"type": "response.output_item.done", "output_index": item.output_index, "item": finished})

    # -- items ------------------------------------------------------------------------------------

    def message(self, item_id: str | None = None) -> MessageItem:
        """An assistant message with one output_text part, announced with its first non-whitespace text."""
        return MessageItem(self, item_id or self.new_id("msg"))

    def reasoning(self, item_id: str | None = None) -> ReasoningItem:
        """A reasoning item (summary text, and the provider's record as `encrypted_content`)."""
        item = ReasoningItem(self, item_id or self.new_id("rs"))
        self._announce(item, {"type": "reasoning", "id": item.item_id, "summary": []})
        return item

    def function_call(
        self, call_id: str, name: str, namespace: str | None = None, item_id: str | None = None
    ) -> FunctionCallItem:
        item = FunctionCallItem(self, item_id or self.new_id("fc"), call_id, name, namespace)
        self._announce(item, item.item(""))
        return item

    def custom_tool_call(
        self, call_id: str, name: str, namespace: str | None = None, item_id: str | None = None
    ) -> CustomToolCallItem:
        item = CustomToolCallItem(self, item_id or self.new_id("ctc"), call_id, name, namespace)
        self._announce(item, item.item(""))
        return item

    def tool_call(
        self, kind: str, call_id: str, name: str, namespace: str | None = None, item_id: str | None = None
    ) -> FunctionCallItem | CustomToolCallItem:
        """A function_call or custom_tool_call, as `kind` ("function" | "custom") says
        (see `ToolNameMap.resolve`)."""
        if kind == "custom":
            return self.custom_tool_call(call_id, name, namespace, item_id)
        return self.function_call(call_id, name, namespace, item_id)

    def close_open(self) -> None:
        """Finish every announced item still open (a provider that never closed a block)."""
        for index in sorted(self._open):
            item = self._open.get(index)
            if item is not None:
                item.done()

    # -- endings ----------------------------------------------------------------------------------

    def complete(self, usage: Usage | None, *, incomplete: str | None = None, cache_write_tokens: int = 0) -> None:
        """Close what is open and emit `response.completed` (or `response.incomplete` with
        `incomplete` as its reason, e.g. "max_output_tokens" / "content_filter"). Once only."""
        if self.outcome is not None:
            return
        self.start()
        self.close_open()
        outcome = "incomplete" if incomplete else "completed"
        block = usage_block(usage, cache_write_tokens) if usage is not None else None
        response = response_object(self.ctx, outcome, self.output, block, incomplete=incomplete, echoed=self._echoed)
        self._terminal(outcome, response, usage)

    def fail(self, code: str, message: str, usage: Usage | None = None, *, cache_write_tokens: int = 0) -> None:
        """Emit `response.failed` with an error code Codex understands (`server_error`,
        `rate_limit_exceeded`, `context_length_exceeded`, `insufficient_quota`, ...). Items still
        open are left out of the output; `usage` bills input already processed. Once only."""
        if self.outcome is not None:
            return
        self.start()
        block = usage_block(usage, cache_write_tokens) if usage is not None else None
        error = {"code": code, "message": message}
        response = response_object(self.ctx, "failed", self.output, block, error=error, echoed=self._echoed)
        self._terminal("failed", response, usage)

    def _terminal(self, outcome: str, response: JSON, usage: Usage | None) -> None:
        self.emit({"type": f"response.{outcome}", "response": response})
        self.outcome, self.response, self.usage = outcome, response, usage

    def ensure_terminal(self, message: str, code: str = "server_error") -> None:
        """At the end of the provider stream: `response.failed` unless an answer was given (a
        stream cut before its end must never look complete: Codex would keep half an answer)."""
        if self.outcome is None:
            self.fail(code, message, self.usage)


class _Item:
    __slots__ = ("_delta_head", "_delta_tail", "emitter", "finished", "item_id", "output_index")

    # The items with text deltas (message, reasoning) keep it in `_parts`; `_delta_head` and
    # `_delta_tail` are their delta events' bytes around the text, set once they stream.
    _parts: list[str]

    def __init__(self, emitter: ResponseEmitter, item_id: str) -> None:
        self.emitter = emitter
        self.item_id = item_id
        self.output_index = -1  # assigned when announced
        self.finished = False
        self._delta_head: bytes | None = None
        self._delta_tail = b""

    def done(self) -> JSON | None:
        raise NotImplementedError

    def encoded_delta(self, text: str) -> bytes | None:
        """`delta(text)` emitted and encoded in one step, for a stream bridge's shortest path (the
        bulk of a streamed answer): the bytes `codexgate.sse.encode_events` writes for the delta
        event `delta` emits (`response.output_text.delta`, `response.reasoning_summary_text.delta`),
        with the same bookkeeping (the text kept, the sequence number taken), without building the
        event. None, with nothing done, where `delta` must take it: the item not streaming yet
        (a message not announced, a summary not opened) or finished, the answer over, events
        still queued (they come first), no text, or a text orjson refuses (a lone surrogate: the
        standard encoder's bytes differ)."""
        head, emitter = self._delta_head, self.emitter
        if head is None or self.finished or emitter.outcome is not None or emitter.events or not text:
            return None
        try:
            encoded = orjson.dumps(text)
        except TypeError:
            return None
        self._parts.append(text)
        sequence = emitter.sequence
        emitter.sequence = sequence + 1
        return b"%s%s%s%d}\n\n" % (head, encoded, self._delta_tail, sequence)


class MessageItem(_Item):
    """An assistant message; held back while only whitespace arrived (then it never appears)."""

    __slots__ = ("_held", "_parts", "announced")

    def __init__(self, emitter: ResponseEmitter, item_id: str) -> None:
        super().__init__(emitter, item_id)
        self._parts: list[str] = []
        self._held = ""
        self.announced = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def delta(self, text: str) -> None:
        if not text or self.finished:
            return
        if not self.announced:
            held = self._held + text
            if not held.strip():
                self._held = held
                return
            self._held, text = "", held
            self.announced = True
            emitter = self.emitter
            emitter._announce(
                self,
                {"type": "message", "id": self.item_id, "role": "assistant", "status": "in_progress", "content": []},
            )
            emitter.emit(
                {
                    "type": "response.content_part.added",
                    "output_index": self.output_index,
                    "item_id": self.item_id,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
            self._delta_head = _delta_head(
                b"response.output_text.delta", self.output_index, self.item_id, b"content_index"
            )
            self._delta_tail = b',"logprobs":[],"sequence_number":'  # `delta`'s keys after its text
        self._parts.append(text)
        self.emitter.emit(
            {
                "type": "response.output_text.delta",
                "output_index": self.output_index,
                "item_id": self.item_id,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }
        )

    def done(self, status: str = "completed") -> JSON | None:
        """The finished message item, or None when only whitespace came (no item at all)."""
        if self.finished:
            return self.emitter.done_items.get(self.output_index)
        self.finished = True
        if not self.announced:
            return None
        text = self.text
        part = {"type": "output_text", "text": text, "annotations": []}
        common = {"output_index": self.output_index, "item_id": self.item_id, "content_index": 0}
        self.emitter.emit({"type": "response.output_text.done", **common, "text": text, "logprobs": []})
        self.emitter.emit({"type": "response.content_part.done", **common, "part": part})
        item = {"type": "message", "id": self.item_id, "role": "assistant", "status": status, "content": [part]}
        self.emitter._finish(self, item)
        return item


class ReasoningItem(_Item):
    """Reasoning: summary text streamed as it comes, the provider's record sealed at the end."""

    __slots__ = ("_parts", "encrypted_content", "summary_open")

    def __init__(self, emitter: ResponseEmitter, item_id: str) -> None:
        super().__init__(emitter, item_id)
        self._parts: list[str] = []
        self.summary_open = False
        self.encrypted_content: str | None = None  # may be set any time before `done`

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def delta(self, text: str) -> None:
        if not text or self.finished:
            return
        common = {"output_index": self.output_index, "item_id": self.item_id, "summary_index": 0}
        if not self.summary_open:
            self.summary_open = True
            part = {"type": "summary_text", "text": ""}
            self.emitter.emit({"type": "response.reasoning_summary_part.added", **common, "part": part})
            self._delta_head = _delta_head(
                b"response.reasoning_summary_text.delta", self.output_index, self.item_id, b"summary_index"
            )
            self._delta_tail = b',"sequence_number":'
        self._parts.append(text)
        self.emitter.emit({"type": "response.reasoning_summary_text.delta", **common, "delta": text})

    def done(self, encrypted_content: str | None = None) -> JSON:
        if self.finished:
            return self.emitter.done_items.get(self.output_index) or {}
        self.finished = True
        text = self.text
        if self.summary_open:
            common = {"output_index": self.output_index, "item_id": self.item_id, "summary_index": 0}
            self.emitter.emit({"type": "response.reasoning_summary_text.done", **common, "text": text})
            part = {"type": "summary_text", "text": text}
            self.emitter.emit({"type": "response.reasoning_summary_part.done", **common, "part": part})
        item: JSON = {
            "type": "reasoning",
            "id": self.item_id,
            "summary": [{"type": "summary_text", "text": text}] if text else [],
        }
        sealed = encrypted_content if encrypted_content is not None else self.encrypted_content
        if sealed is not None:
            item["encrypted_content"] = sealed
        self.emitter._finish(self, item)
        return item


class FunctionCallItem(_Item):
    """A function call whose JSON arguments stream as the model writes them."""

    __slots__ = ("_parts", "call_id", "name", "namespace")

    def __init__(self, emitter: ResponseEmitter, item_id: str, call_id: str, name: str, namespace: str | None) -> None:
        super().__init__(emitter, item_id)
        self.call_id, self.name, self.namespace = call_id, name, namespace
        self._parts: list[str] = []

    def item(self, arguments: str, status: str = "in_progress") -> JSON:
        item: JSON = {
            "type": "function_call",
            "id": self.item_id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": arguments,
            "status": status,
        }
        if self.namespace:
            item["namespace"] = self.namespace
        return item

    @property
    def arguments(self) -> str:
        return "".join(self._parts)

    def delta(self, piece: str) -> None:
        if not piece or self.finished:
            return
        self._parts.append(piece)
        self.emitter.emit(
            {
                "type": "response.function_call_arguments.delta",
                "output_index": self.output_index,
                "item_id": self.item_id,
                "delta": piece,
            }
        )

    def done(self, arguments: str | None = None) -> JSON:
        """Finish with `arguments` (default: what streamed); a call without any gets `{}`."""
        if self.finished:
            return self.emitter.done_items.get(self.output_index) or {}
        self.finished = True
        final = self.arguments if arguments is None else arguments
        common = {"output_index": self.output_index, "item_id": self.item_id}
        if not final.strip():
            # A call without arguments streams none; Codex still wants a JSON object.
            final = "{}"
            if not self._parts:
                self.emitter.emit({"type": "response.function_call_arguments.delta", **common, "delta": final})
        self.emitter.emit({"type": "response.function_call_arguments.done", **common, "arguments": final})
        item = self.item(final, "completed")
        self.emitter._finish(self, item)
        return item


class CustomToolCallItem(_Item):
    """A custom (freeform) tool call. Non-OpenAI models call it as a function taking one string,
    `{"input": "..."}`: `json_delta` decodes that JSON as it arrives and streams the string;
    `delta` streams raw input as is."""

    __slots__ = ("_decoder", "_raw", "_streamed", "call_id", "name", "namespace")

    def __init__(self, emitter: ResponseEmitter, item_id: str, call_id: str, name: str, namespace: str | None) -> None:
        super().__init__(emitter, item_id)
        self.call_id, self.name, self.namespace = call_id, name, namespace
        self._raw: list[str] = []  # the JSON text (json_delta) as it came
        self._streamed: list[str] = []  # the input streamed to the client so far
        self._decoder: InputStringStream | None = None

    def item(self, text: str) -> JSON:
        item: JSON = {"type": "custom_tool_call", "id": self.item_id, "call_id": self.call_id, "name": self.name,
                      "input": text}  # fmt: skip
        if self.namespace:
            item["namespace"] = self.namespace
        return item

    def _stream(self, text: str) -> None:
        if not text:
            return
        self._streamed.append(text)
        self.emitter.emit(
            {
                "type": "response.custom_tool_call_input.delta",
                "output_index": self.output_index,
                "item_id": self.item_id,
                "delta": text,
            }
        )

    def json_delta(self, piece: str) -> None:
        if not piece or self.finished:
            return
        if self._decoder is None:
            self._decoder = InputStringStream()
        self._raw.append(piece)
        self._stream(self._decoder.feed(piece))

    def delta(self, text: str) -> None:
        if not self.finished:
            self._stream(text)

    def done(self, input_text: str | None = None) -> JSON:
        """Finish with `input_text` (default: decoded from the JSON that streamed, else the raw
        input that streamed)."""
        if self.finished:
            return self.emitter.done_items.get(self.output_index) or {}
        self.finished = True
        if input_text is None:
            input_text = custom_input("".join(self._raw)) if self._decoder is not None else "".join(self._streamed)
        self.emitter.emit(
            {
                "type": "response.custom_tool_call_input.done",
                "output_index": self.output_index,
                "item_id": self.item_id,
                "input": input_text,
            }
        )
        item = self.item(input_text)
        self.emitter._finish(self, item)
        return item


class EmittingTranslator:
    """Base for a family's stream translator that writes through a `ResponseEmitter`: `usage`,
    `outcome` and `response` are the emitter's; `finish()` fails a stream that ended without its
    terminal event (`cut_message` says why). Subclasses implement `feed(event)`, driving
    `self.emit` and returning `self.emit.take()`."""

    cut_message = "The provider's stream ended before the answer was complete."

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.emit = ResponseEmitter(ctx)

    @property
    def usage(self) -> Usage | None:
        return self.emit.usage

    @property
    def outcome(self) -> str | None:
        return self.emit.outcome

    @property
    def response(self) -> JSON | None:
        return self.emit.response

    def feed(self, event: Any) -> list[JSON]:
        raise NotImplementedError

    def finish(self) -> list[JSON]:
        self.emit.ensure_terminal(self.cut_message)
        return self.emit.take()
