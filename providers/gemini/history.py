"""Codex's input items → Gemini `contents`: roles, tool calls and their outputs, thought signatures,
and the repairs that make any history one Gemini accepts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import open_reasoning
from codexgate.providers.gemini.content import text_of, user_parts
from codexgate.providers.gemini.tools import as_dict
from codexgate.providers.responses.tools import ToolNameMap

log = logging.getLogger(__name__)

# The documented stand-in for a thought signature, for function calls Gemini did not produce
# (another provider earlier in the session, or an envelope that cannot be opened): Gemini 3
# answers 400 for a function call in the current turn without any signature.
DUMMY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"


def _call_args(arguments: Any) -> dict[str, Any]:
    """Responses `arguments` (a JSON string) → Gemini `args` (an object)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _is_model_item(item: Mapping[str, Any]) -> bool:
    kind = item.get("type")
    if kind in ("function_call", "custom_tool_call", "reasoning"):
        return True
    return kind in ("message", None) and item.get("role") == "assistant"


class History:
    """Builds `contents` (and collects the system text) from Codex's input items."""

    def __init__(self, tools: ToolNameMap, provider_name: str, upstream_model: str) -> None:
        self.tools = tools
        self.provider_name = provider_name
        self.upstream_model = upstream_model
        self.contents: list[dict[str, Any]] = []
        self.system: list[str] = []
        self._call_names: dict[str, str] = {}  # call_id → Gemini function name
        self._call_ids: set[str] = set()  # call_ids Gemini itself issued (replayed as `id`)

    def build(self, items: list[dict[str, Any]]) -> None:
        group: list[dict[str, Any]] = []
        for item in items:
            kind = item.get("type")
            role = item.get("role")
            if kind in ("message", None) and role in ("developer", "system"):
                # Gemini has one system instruction; Codex's developer messages all go there.
                text = text_of(item.get("content"))
                if text:
                    self.system.append(text)
                continue
            if _is_model_item(item):
                group.append(item)
                continue
            if kind in ("message", None) and role == "user":
                self._flush(group)
                group = []
                self._add("user", user_parts(item.get("content")))
            elif kind in ("function_call_output", "custom_tool_call_output"):
                self._flush(group)
                group = []
                self._add("user", self._tool_output_parts(item))
            else:
                # additional_tools (served as tools), item_reference, web_search_call, ...
                log.debug("gemini: input item of type %s not forwarded", kind)
        self._flush(group)

    def _add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def _tool_output_parts(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        call_id = str(item.get("call_id") or "")
        output = item.get("output")
        text = output if isinstance(output, str) else text_of(output)
        media = (
            [
                part
                for part in user_parts(output)
                if "text" not in part  # the text went into the function response
            ]
            if isinstance(output, list)
            else []
        )
        name = self._call_names.get(call_id)
        if name is None:
            # An output without its call (history trimmed): Gemini needs the pairing, so say it.
            return [{"text": f"Output of tool call {call_id}:\n{text}"}, *media]
        response: dict[str, Any] = {"name": name, "response": {"output": text}}
        if call_id in self._call_ids:
            response["id"] = call_id
        return [{"functionResponse": response}, *media]

    def _flush(self, group: list[dict[str, Any]]) -> None:
        if not group:
            return
        anchors: list[dict[str, Any]] = []
        for item in group:
            if item.get("type") == "reasoning":
                payload = open_reasoning(item.get("encrypted_content"), self.provider_name, self.upstream_model)
                found = payload.get("anchors") if payload else None
                anchors.extend(a for a in found or [] if isinstance(a, dict))
        calls = {a.get("call_id"): a for a in anchors if a.get("k") == "call"}
        texts = [a for a in anchors if a.get("k") == "text" and isinstance(a.get("sig"), str)]
        parts: list[dict[str, Any]] = []
        for anchor in anchors:
            if anchor.get("k") == "thought" and isinstance(anchor.get("sig"), str):
                text = anchor.get("text") if isinstance(anchor.get("text"), str) else ""
                parts.append({"text": text, "thought": True, "thoughtSignature": anchor["sig"]})
        messages = [
            item for item in group if item.get("type") not in ("reasoning", "function_call", "custom_tool_call")
        ]
        message_ids = {item.get("id") for item in messages if item.get("id")}
        # Spans of a message whose id did not survive the replay still fit when it is the only one.
        orphans = [a for a in texts if a.get("item") is not None and a.get("item") not in message_ids]
        placed: list[dict[str, Any]] = []
        for item in group:
            kind = item.get("type")
            if kind == "reasoning":
                continue
            if kind in ("function_call", "custom_tool_call"):
                parts.append(self._call_part(item, calls))
                continue
            own = [a for a in texts if a.get("item") is not None and a.get("item") == item.get("id")]
            if len(messages) == 1:
                own += orphans
            text = text_of(item.get("content"))
            text_parts, used = _signed_text_parts(text if text.strip() else "", own)
            parts.extend(text_parts)
            placed += used
        # Text signatures not placed yet (a signature on an empty part after a call, or spans
        # that no longer fit): keep them, on the last text or as the empty part they came on.
        for anchor in texts:
            if any(anchor is done for done in placed):
                continue
            last_text = next((p for p in reversed(parts) if "text" in p and not p.get("thought")), None)
            if anchor.get("len") == 0 or last_text is None:
                held = anchor.get("text") if isinstance(anchor.get("text"), str) else ""
                parts.append({"text": held, "thoughtSignature": anchor["sig"]})
            elif "thoughtSignature" not in last_text:
                last_text["thoughtSignature"] = anchor["sig"]
        self._add("model", parts)

    def _call_part(self, item: Mapping[str, Any], anchors: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
        call_id = str(item.get("call_id") or "")
        namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
        name = self.tools.wire_name(str(item.get("name") or ""), namespace)
        self._call_names[call_id] = name
        if item.get("type") == "custom_tool_call":
            args: dict[str, Any] = {"input": item.get("input") if isinstance(item.get("input"), str) else ""}
        else:
            args = _call_args(item.get("arguments"))
        call: dict[str, Any] = {"name": name, "args": args}
        part: dict[str, Any] = {"functionCall": call}
        anchor = anchors.get(call_id)
        if anchor is not None:
            if anchor.get("id"):
                call["id"] = call_id
                self._call_ids.add(call_id)
            if isinstance(anchor.get("sig"), str):
                part["thoughtSignature"] = anchor["sig"]
        return part


def _signed_text_parts(text: str, anchors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A message's text split back into the parts that carried signatures; (parts, anchors used)."""
    spans = sorted(
        (a for a in anchors if isinstance(a.get("at"), int) and isinstance(a.get("len"), int)),
        key=lambda a: (a["at"], a["len"]),
    )
    parts: list[dict[str, Any]] = []
    used: list[dict[str, Any]] = []
    cursor = 0
    for anchor in spans:
        start, end = anchor["at"], anchor["at"] + anchor["len"]
        if start < cursor or end > len(text):
            continue  # the text was edited since: the span no longer fits
        if start > cursor:
            parts.append({"text": text[cursor:start]})
        parts.append({"text": text[start:end], "thoughtSignature": anchor["sig"]})
        used.append(anchor)
        cursor = end
    if cursor < len(text):
        parts.append({"text": text[cursor:]})
    return parts, used


_NO_OUTPUT = "No output was recorded for this call."


def _answer_part(call: Mapping[str, Any], responses: list[dict[str, Any]]) -> dict[str, Any]:
    """The function response answering `call` (taken out of `responses`), or a stand-in."""
    for index, part in enumerate(responses):
        response = part["functionResponse"]
        same_id = "id" in call and response.get("id") == call["id"]
        if same_id or ("id" not in call or "id" not in response) and response.get("name") == call.get("name"):
            return responses.pop(index)
    stand_in: dict[str, Any] = {"name": call.get("name"), "response": {"output": _NO_OUTPUT}}
    if "id" in call:
        stand_in["id"] = call["id"]
    return {"functionResponse": stand_in}


def repair_turns(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make the history acceptable to generateContent: it starts and ends with a user turn, and
    each function-call turn is followed by a user turn answering every call, in order (a call
    whose output is missing, interrupted turns, gets a stand-in output, as for Anthropic).
    Responses left over (their call is gone) become text."""
    repaired: list[dict[str, Any]] = []
    for index, content in enumerate(contents):
        if content["role"] == "model":
            repaired.append(content)
            calls = [part["functionCall"] for part in content["parts"] if "functionCall" in part]
            following = contents[index + 1] if index + 1 < len(contents) else None
            if calls and (following is None or following["role"] != "user"):
                repaired.append({"role": "user", "parts": [_answer_part(call, []) for call in calls]})
            continue
        previous = contents[index - 1] if index else None
        calls = [p["functionCall"] for p in previous["parts"] if "functionCall" in p] if previous else []
        responses = [part for part in content["parts"] if "functionResponse" in part]
        others = [part for part in content["parts"] if "functionResponse" not in part]
        answers = [_answer_part(call, responses) for call in calls]
        leftovers = [  # answers to calls not in the turn before
            {"text": f"Output of tool call {part['functionResponse'].get('name')}:\n"
                     f"{as_dict(part['functionResponse'].get('response')).get('output')}"}
            for part in responses
        ]  # fmt: skip
        repaired.append({"role": "user", "parts": answers + leftovers + others})
    if not repaired or repaired[0]["role"] != "user":
        repaired.insert(0, {"role": "user", "parts": [{"text": "(The conversation so far follows.)"}]})
    if repaired[-1]["role"] != "user":
        # Gemini takes no final model turn to continue from; ask for the continuation instead.
        repaired.append({"role": "user", "parts": [{"text": "Continue."}]})
    return repaired


def ensure_current_turn_signatures(contents: list[dict[str, Any]]) -> None:
    """Gemini 3 rejects a function-call step of the current turn without a signature on its first
    call. Steps we could not restore (another provider's calls) get the documented dummy."""
    last_user = -1
    for index, content in enumerate(contents):
        # A user turn is one with text; function responses (and images they carry) are steps.
        if content["role"] == "user" and any("text" in part for part in content["parts"]):
            last_user = index
    for content in contents[last_user + 1 :]:
        if content["role"] != "model":
            continue
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and not any("thoughtSignature" in part for part in calls):
            calls[0]["thoughtSignature"] = DUMMY_THOUGHT_SIGNATURE
