"""Gemini stream chunks → Responses stream events; the whole answer derived from the same translator."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import (
    ResponseContext,
    echoed_fields,
    seal_reasoning,
)
from codexgate.providers.gemini.errors import classify, scrub
from codexgate.providers.gemini.tools import ToolMap, as_dict
from codexgate.providers.jsonstring import without_lone_surrogates
from codexgate.sse import SSEParser
from codexgate.usage import Usage

log = logging.getLogger(__name__)

# ==================================================================================================
# generateContent answers → Responses
# ==================================================================================================

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


def _usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


class StreamDecoder:
    """`streamGenerateContent?alt=sse` bytes → GenerateContentResponse chunks (or `{"error"}`)."""

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events = []
        for _name, data in self._parser.feed(chunk):
            if not data.strip():
                continue
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                event = {"error": {"code": 502, "status": "INTERNAL", "message": "undecodable Gemini stream event"}}
            events.append(event)
        return events

    def close(self) -> list[dict[str, Any]]:
        """Events of a last block the server did not terminate with a blank line."""
        return self.feed(b"\n\n")


def _item_id(response_id: str, prefix: str, index: int) -> str:
    # Stable for the whole stream and unique across responses (response ids are unique).
    return f"{prefix}_{hashlib.sha256(f'{response_id}:{index}'.encode()).hexdigest()[:32]}"


class StreamTranslator:
    """Gemini stream chunks in, Responses stream events out (see the module docstring).

    A non-streamed answer is the same object as one big chunk, so `translate_response` runs it
    through here too.
    """

    def __init__(self, ctx: ResponseContext, tools: ToolMap | None = None, upstream_model: str | None = None) -> None:
        self.ctx = ctx
        self.tools = tools or ToolMap.codex_default()
        self.upstream_model = upstream_model or ctx.model
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self._held = ""  # whitespace before a message opens: announced only with real text
        self._sequence = 0
        self._ids = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # finished items, by output_index
        self._open: dict[str, Any] | None = None  # the reasoning or message item being streamed
        self._anchors: list[dict[str, Any]] = []  # signatures not yet sealed into a reasoning item
        self._finish_reason: str | None = None
        self._finish_message: str | None = None
        self._blocked: str | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _event(self, event: dict[str, Any]) -> dict[str, Any]:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        return event

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return _item_id(self.ctx.response_id, prefix, self._ids)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": self.ctx.response_id,
            "object": "response",
            "created_at": self.ctx.created_at,
            "status": status,
            "model": self.ctx.model,
            "output": list(self._output),
            **echoed_fields(self.ctx),
            "usage": _usage_object(self.usage) if status != "in_progress" else None,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
        }
        response.update(extra)
        return response

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        started = self._response("in_progress")
        return [
            self._event({"type": "response.created", "response": started}),
            self._event({"type": "response.in_progress", "response": dict(started)}),
        ]

    @property
    def _index(self) -> int:
        return len(self._output)

    # -- items ---------------------------------------------------------------------------------
    def _open_reasoning(self) -> list[dict[str, Any]]:
        item_id = self._new_id("rs")
        self._open = {"kind": "reasoning", "id": item_id, "text": ""}
        return [
            self._event(
                {
                    "type": "response.output_item.added",
                    "output_index": self._index,
                    "item": {"type": "reasoning", "id": item_id, "summary": []},
                }
            ),
            self._event(
                {
                    "type": "response.reasoning_summary_part.added",
                    "item_id": item_id,
                    "output_index": self._index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }
            ),
        ]

    def _open_message(self) -> list[dict[str, Any]]:
        item_id = self._new_id("msg")
        self._open = {"kind": "message", "id": item_id, "text": ""}
        return [
            self._event(
                {
                    "type": "response.output_item.added",
                    "output_index": self._index,
                    "item": {
                        "type": "message",
                        "id": item_id,
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                    },
                }
            ),
            self._event(
                {
                    "type": "response.content_part.added",
                    "item_id": item_id,
                    "output_index": self._index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            ),
        ]

    def _seal(self) -> str:
        sealed = seal_reasoning(self.ctx.provider_name, self.upstream_model, {"anchors": self._anchors})
        self._anchors = []
        return sealed

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        current, self._open, self._held = self._open, None, ""
        if current is None:
            return []
        item_id, text, index = current["id"], current["text"], self._index
        if current["kind"] == "reasoning":
            summary = {"type": "summary_text", "text": text}
            item = {"type": "reasoning", "id": item_id, "summary": [summary], "encrypted_content": self._seal()}
            events = [
                {
                    "type": "response.reasoning_summary_text.done",
                    "item_id": item_id,
                    "output_index": index,
                    "summary_index": 0,
                    "text": text,
                },
                {
                    "type": "response.reasoning_summary_part.done",
                    "item_id": item_id,
                    "output_index": index,
                    "summary_index": 0,
                    "part": summary,
                },
            ]
        else:
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": [part]}
            events = [
                {
                    "type": "response.output_text.done",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
                {
                    "type": "response.content_part.done",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
                },
            ]
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        self._output.append(item)
        return [self._event(event) for event in events]

    def _thought(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        text = part.get("text") if isinstance(part.get("text"), str) else ""
        events: list[dict[str, Any]] = []
        if text:
            if self._open is None or self._open["kind"] != "reasoning":
                events += self._close()
                events += self._open_reasoning()
            assert self._open is not None
            self._open["text"] += text
            events.append(
                self._event(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        "item_id": self._open["id"],
                        "output_index": self._index,
                        "summary_index": 0,
                        "delta": text,
                    }
                )
            )
        if isinstance(part.get("thoughtSignature"), str):
            self._anchors.append({"k": "thought", "text": text, "sig": part["thoughtSignature"]})
        return events

    def _text(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        text = part["text"] if isinstance(part.get("text"), str) else ""
        events: list[dict[str, Any]] = []
        prefix = ""
        if text and (self._open is None or self._open["kind"] != "message"):
            if not text.strip():
                # A whitespace-only message would be replayed by Codex and refused ("empty text
                # parameter"): hold it until real text comes; a signature on it is kept as is.
                self._held += text
                if isinstance(part.get("thoughtSignature"), str):
                    self._anchors.append(
                        {"k": "text", "item": None, "at": 0, "len": 0, "text": text, "sig": part["thoughtSignature"]}
                    )
                return events
            prefix = self._held
            events += self._close()
            events += self._open_message()
        message = self._open if self._open is not None and self._open["kind"] == "message" else None
        if isinstance(part.get("thoughtSignature"), str):
            self._anchors.append(
                {
                    "k": "text",
                    "item": message["id"] if message else None,
                    "at": len(message["text"]) + len(prefix) if message else 0,
                    "len": len(text),
                    "sig": part["thoughtSignature"],
                }
            )
        text = prefix + text
        if text and message is not None:
            message["text"] += text
            events.append(
                self._event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": message["id"],
                        "output_index": self._index,
                        "content_index": 0,
                        "delta": text,
                        "logprobs": [],
                    }
                )
            )
        return events

    def _function_call(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        call = as_dict(part.get("functionCall"))
        events = self._close()
        target = self.tools.resolve(str(call.get("name") or ""))
        args = as_dict(call.get("args"))
        gemini_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        call_id = gemini_id or self._new_id("call")
        if gemini_id is not None or isinstance(part.get("thoughtSignature"), str):
            anchor: dict[str, Any] = {"k": "call", "call_id": call_id, "sig": part.get("thoughtSignature")}
            if gemini_id is not None:
                anchor["id"] = True
            self._anchors.append(anchor)
        index = self._index
        item: dict[str, Any]
        if target.kind == "custom":
            value = args.get("input")
            if not isinstance(value, str):
                strings = [v for v in args.values() if isinstance(v, str)]
                value = strings[0] if len(args) == 1 and strings else json.dumps(args, ensure_ascii=False)
            value = without_lone_surrogates(value)  # as every family decodes custom input
            item = {"type": "custom_tool_call", "id": self._new_id("ctc"), "call_id": call_id, "name": target.name}
            if target.namespace:
                item["namespace"] = target.namespace
            events += [
                self._event(
                    {"type": "response.output_item.added", "output_index": index, "item": dict(item, input="")}
                ),
                self._event(
                    {
                        "type": "response.custom_tool_call_input.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "delta": value,
                    }
                ),
                self._event(
                    {
                        "type": "response.custom_tool_call_input.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "input": value,
                    }
                ),
            ]
            item["input"] = value
        else:
            arguments = json.dumps(args, ensure_ascii=False)
            item = {"type": "function_call", "id": self._new_id("fc"), "call_id": call_id, "name": target.name}
            if target.namespace:
                item["namespace"] = target.namespace
            events += [
                self._event(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": dict(item, arguments="", status="in_progress"),
                    }
                ),
                self._event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "delta": arguments,
                    }
                ),
                self._event(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "arguments": arguments,
                    }
                ),
            ]
            item["arguments"] = arguments
            item["status"] = "completed"
        events.append(self._event({"type": "response.output_item.done", "output_index": index, "item": item}))
        self._output.append(item)
        return events

    def _notice(self, text: str) -> list[dict[str, Any]]:
        events = self._open_message()
        assert self._open is not None
        self._open["text"] = text
        events.append(
            self._event(
                {
                    "type": "response.output_text.delta",
                    "item_id": self._open["id"],
                    "output_index": self._index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            )
        )
        return events + self._close()

    def _signatures_item(self) -> list[dict[str, Any]]:
        """Signatures that arrived after the last reasoning item closed, in a reasoning item of
        their own (Codex replays it with the turn; the replay matches anchors, not positions)."""
        if not self._anchors:
            return []
        item = {"type": "reasoning", "id": self._new_id("rs"), "summary": [], "encrypted_content": self._seal()}
        index = self._index
        self._output.append(item)
        return [
            self._event({"type": "response.output_item.added", "output_index": index, "item": dict(item)}),
            self._event({"type": "response.output_item.done", "output_index": index, "item": item}),
        ]

    def _fail(self, code: str, message: str) -> list[dict[str, Any]]:
        # Items still open are not finished: Codex retries a failed turn from the start.
        self._open = None
        self.outcome = "failed"
        response = self._response("failed", error={"code": code, "message": message})
        return [self._event({"type": "response.failed", "response": response})]

    # -- interface -----------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start()
        if self.outcome is not None:
            return events
        error = event.get("error")
        if isinstance(error, dict):
            code = error["code"] if isinstance(error.get("code"), int) else 500
            classified = classify(code, error)
            return events + self._fail(classified.stream_code, classified.message)
        self.usage = _usage(event.get("usageMetadata")) or self.usage
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
            self._blocked = feedback["blockReason"]
        candidates = event.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            return events
        content = as_dict(candidate.get("content"))
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if part.get("thought") is True:
                events += self._thought(part)
            elif isinstance(part.get("functionCall"), dict):
                events += self._function_call(part)
            elif "text" in part:
                events += self._text(part)
            else:
                # executableCode, inlineData output, ...: nothing Codex can use
                log.debug("gemini: response part %s not translated", sorted(part))
        if isinstance(candidate.get("finishReason"), str):
            self._finish_reason = candidate["finishReason"]
            if isinstance(candidate.get("finishMessage"), str):
                self._finish_message = scrub(candidate["finishMessage"])
        return events

    def finish(self) -> list[dict[str, Any]]:
        events = self._start()
        if self.outcome is not None:
            return events
        reason = self._finish_reason
        if reason is None and self._blocked is None:
            return events + self._fail(
                "server_error",
                "The Gemini stream ended before its final chunk (no finishReason); the answer is cut off.",
            )
        incomplete = reason == "MAX_TOKENS"
        events += self._close("incomplete" if incomplete else "completed")
        if self._blocked is not None and reason is None:
            events += self._notice(f"[Gemini refused the prompt: block reason {self._blocked}.]")
        elif reason not in (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"):
            # A refusal-ish stop is a finished turn, not a failure: Codex would retry a failure
            # and get the same refusal, so it shows the reason and lets the user go on.
            explanation = _NOTICES.get(str(reason), "Gemini stopped early")
            detail = f" ({self._finish_message})" if self._finish_message else ""
            events += self._notice(f"[Gemini stopped this answer, finish reason {reason}: {explanation}{detail}.]")
        events += self._signatures_item()
        if incomplete:
            self.outcome = "incomplete"
            response = self._response("incomplete", incomplete_details={"reason": "max_output_tokens"})
            return events + [self._event({"type": "response.incomplete", "response": response})]
        self.outcome = "completed"
        return events + [self._event({"type": "response.completed", "response": self._response("completed")})]


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    tools: ToolMap | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A non-streamed generateContent answer → a Responses API `response` object."""
    translator = StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    events = translator.feed(provider_body) + translator.finish()
    response: dict[str, Any] = events[-1]["response"]
    return response
