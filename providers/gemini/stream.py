"""Gemini stream chunks → Responses stream events, emitted through the shared `ResponseEmitter`.

A whole (non-streamed) answer is the same `GenerateContentResponse` as one big chunk, so it is
fed through the same translator (`translate_response`, `GeminiFamily.whole_events`): there is no
second, non-stream path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import seal_reasoning
from codexgate.providers.gemini.errors import classify, scrub
from codexgate.providers.gemini.tools import as_dict, default_tool_map
from codexgate.providers.responses import (
    MessageItem,
    ReasoningItem,
    ResponseContext,
    ToolNameMap,
    without_lone_surrogates,
)
from codexgate.providers.responses.emitter import EmittingTranslator
from codexgate.sse import SSEParser, decode_json
from codexgate.usage import Usage

log = logging.getLogger(__name__)

_NOTICES = {
    "SAFETY": "the answer was flagged by Gemini's safety filters",
    "RECITATION": "the answer was too close to material Gemini may not recite",
    "LANGUAGE": "the answer was in a language Gemini does not support",
    "BLOCKLIST": "the answer contained terms on Gemini's blocklist",
    "PROHIBITED_CONTENT": "the answer contained prohibited content",
    "SPII": "the answer contained sensitive personal information",
    "MALFORMED_FUNCTION_CALL": "the model produced a malformed tool call; ask it to try again",
    "UNEXPECTED_TOOL_CALL": "the model called a tool that was not offered; ask it to try again",
    "OTHER": "Gemini stopped for an unspecified reason",
}


def _usage(metadata: Any) -> Usage | None:
    if not isinstance(metadata, dict):
        return None

    def count(key: str) -> int:
        value = metadata.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    # promptTokenCount already includes the cached part; candidates exclude thoughts.
    thoughts = count("thoughtsTokenCount")
    return Usage(
        input_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        cached_tokens=count("cachedContentTokenCount"),
        output_tokens=count("candidatesTokenCount") + thoughts,
        reasoning_tokens=thoughts,
    )


class StreamDecoder:
    """`streamGenerateContent?alt=sse` bytes → GenerateContentResponse chunks (or `{"error"}`)."""

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events = []
        for _name, data in self._parser.feed_raw(chunk):
            try:
                event = decode_json(data)
            except ValueError:
                if not data.decode("utf-8", "replace").strip():
                    continue  # an empty data line (also one of whitespace only): nothing
                event = None
            if not isinstance(event, dict):
                event = {"error": {"code": 502, "status": "INTERNAL", "message": "undecodable Gemini stream event"}}
            events.append(event)
        return events

    def close(self) -> list[dict[str, Any]]:
        """Events of a last block the server did not terminate with a blank line."""
        return self.feed(b"\n\n")


class StreamTranslator(EmittingTranslator):
    """Gemini stream chunks in, Responses stream events out (see the package docstring).

    `usage` (as the chunks report it so far) and `outcome` are for accounting; `response` is the
    final `response` object once the terminal event was emitted (a whole answer is exactly that)."""

    cut_message = "The Gemini stream ended before its final chunk (no finishReason); the answer is cut off."

    def __init__(
        self, ctx: ResponseContext, tools: ToolNameMap | None = None, upstream_model: str | None = None
    ) -> None:
        super().__init__(ctx)
        self.tools = tools or default_tool_map()
        self.upstream_model = upstream_model or ctx.model
        self._usage: Usage | None = None  # the latest usageMetadata (Gemini repeats it cumulatively)
        self._held = ""  # whitespace before a message opens: announced only with real text
        self._open: MessageItem | ReasoningItem | None = None  # the item being streamed
        self._anchors: list[dict[str, Any]] = []  # signatures not yet sealed into a reasoning item
        self._finish_reason: str | None = None
        self._finish_message: str | None = None
        self._blocked: str | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    # -- items ---------------------------------------------------------------------------------
    def _seal(self) -> str:
        sealed = seal_reasoning(self.ctx.provider_name, self.upstream_model, {"anchors": self._anchors})
        self._anchors = []
        return sealed

    def _close(self, status: str = "completed") -> None:
        current, self._open, self._held = self._open, None, ""
        if isinstance(current, ReasoningItem):
            current.done(self._seal())
        elif isinstance(current, MessageItem):
            current.done(status)

    def _thought(self, part: Mapping[str, Any]) -> None:
        text = part.get("text") if isinstance(part.get("text"), str) else ""
        if text:
            if not isinstance(self._open, ReasoningItem):
                self._close()
                self._open = self.emit.reasoning()
            self._open.delta(text)
        if isinstance(part.get("thoughtSignature"), str):
            self._anchors.append({"k": "thought", "text": text, "sig": part["thoughtSignature"]})

    def _text(self, part: Mapping[str, Any]) -> None:
        text = part["text"] if isinstance(part.get("text"), str) else ""
        signature = part.get("thoughtSignature") if isinstance(part.get("thoughtSignature"), str) else None
        prefix = ""
        if text and not isinstance(self._open, MessageItem):
            if not text.strip():
                # A whitespace-only message would be replayed by Codex and refused ("empty text
                # parameter"): hold it until real text comes; a signature on it is kept as is.
                self._held += text
                if signature is not None:
                    self._anchors.append({"k": "text", "item": None, "at": 0, "len": 0, "text": text, "sig": signature})
                return
            prefix = self._held
            self._close()
            self._open = self.emit.message()
        message = self._open if isinstance(self._open, MessageItem) else None
        if signature is not None:
            self._anchors.append(
                {
                    "k": "text",
                    "item": message.item_id if message else None,
                    "at": len(message.text) + len(prefix) if message else 0,
                    "len": len(text),
                    "sig": signature,
                }
            )
        if message is not None:
            message.delta(prefix + text)

    def _function_call(self, part: Mapping[str, Any]) -> None:
        call = as_dict(part.get("functionCall"))
        self._close()
        target = self.tools.resolve(str(call.get("name") or ""))
        args = as_dict(call.get("args"))
        gemini_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        call_id = gemini_id or self.emit.new_id("call")
        if gemini_id is not None or isinstance(part.get("thoughtSignature"), str):
            anchor: dict[str, Any] = {"k": "call", "call_id": call_id, "sig": part.get("thoughtSignature")}
            if gemini_id is not None:
                anchor["id"] = True
            self._anchors.append(anchor)
        if target.kind == "custom":
            value = args.get("input")
            if not isinstance(value, str):
                strings = [v for v in args.values() if isinstance(v, str)]
                value = strings[0] if len(args) == 1 and strings else json.dumps(args, ensure_ascii=False)
            value = without_lone_surrogates(value)  # as every family decodes custom input
            custom = self.emit.custom_tool_call(call_id, target.name, target.namespace)
            custom.delta(value)
            custom.done(value)
        else:
            function = self.emit.function_call(call_id, target.name, target.namespace)
            function.delta(json.dumps(args, ensure_ascii=False))  # Gemini sends a call whole
            function.done()

    def _notice(self, text: str) -> None:
        message = self.emit.message()
        message.delta(text)
        message.done()

    def _signatures_item(self) -> None:
        """Signatures that arrived after the last reasoning item closed, in a reasoning item of
        their own (Codex replays it with the turn; the replay matches anchors, not positions)."""
        if self._anchors:
            self.emit.reasoning().done(self._seal())

    def _fail(self, code: str, message: str) -> None:
        # Items still open are not finished: Codex retries a failed turn from the start.
        self._open = None
        self.emit.fail(code, message, self.usage)

    # -- interface -----------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.emit.start()
        if self.outcome is None:
            self._read(event)
        return self.emit.take()

    def _read(self, event: dict[str, Any]) -> None:
        error = event.get("error")
        if isinstance(error, dict):
            code = error["code"] if isinstance(error.get("code"), int) else 500
            classified = classify(code, error)
            self._fail(classified.stream_code, classified.message)
            return
        self._usage = _usage(event.get("usageMetadata")) or self._usage
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
            self._blocked = feedback["blockReason"]
        candidates = event.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            return
        for part in as_dict(candidate.get("content")).get("parts") or []:
            if not isinstance(part, dict):
                continue
            if part.get("thought") is True:
                self._thought(part)
            elif isinstance(part.get("functionCall"), dict):
                self._function_call(part)
            elif "text" in part:
                self._text(part)
            else:
                # executableCode, inlineData output, ...: nothing Codex can use
                log.debug("gemini: response part %s not translated", sorted(part))
        if isinstance(candidate.get("finishReason"), str):
            self._finish_reason = candidate["finishReason"]
            if isinstance(candidate.get("finishMessage"), str):
                self._finish_message = scrub(candidate["finishMessage"])

    def finish(self) -> list[dict[str, Any]]:
        self.emit.start()
        if self.outcome is None:
            self._end()
        return self.emit.take()

    def _end(self) -> None:
        reason = self._finish_reason
        if reason is None and self._blocked is None:
            self._fail("server_error", self.cut_message)
            return
        incomplete = reason == "MAX_TOKENS"
        self._close("incomplete" if incomplete else "completed")
        if self._blocked is not None and reason is None:
            self._notice(f"[Gemini refused the prompt: block reason {self._blocked}.]")
        elif reason not in (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"):
            # A refusal-ish stop is a finished turn, not a failure: Codex would retry a failure
            # and get the same refusal, so it shows the reason and lets the user go on.
            explanation = _NOTICES.get(str(reason), "Gemini stopped early")
            detail = f" ({self._finish_message})" if self._finish_message else ""
            self._notice(f"[Gemini stopped this answer, finish reason {reason}: {explanation}{detail}.]")
        self._signatures_item()
        self.emit.complete(self.usage, incomplete="max_output_tokens" if incomplete else None)


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    tools: ToolNameMap | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A non-streamed generateContent answer → a Responses API `response` object: the answer
    fed through the stream translator as its one chunk."""
    translator = StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    translator.feed(provider_body)
    translator.finish()
    assert translator.response is not None  # finish() always ends the response
    return translator.response
