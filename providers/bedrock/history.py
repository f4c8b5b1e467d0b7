"""The conversation: Codex's input items → Converse system blocks and messages, repaired into what
Bedrock accepts (alternating roles opening with the user, every toolUse answered by a toolResult in
the next turn, no tool blocks without a toolConfig, no trailing whitespace in a final assistant
turn), with this provider's own reasoning replayed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import input_items as _input_items
from codexgate.providers.base import open_reasoning
from codexgate.providers.bedrock.content import content_blocks, tool_result_content
from codexgate.providers.bedrock.tools import tool_use_id
from codexgate.providers.responses import ToolNameMap


def _replayed_reasoning(item: Mapping[str, Any], provider_name: str, model: str) -> dict[str, Any] | None:
    """The reasoningContent block inside an envelope made for this provider and model.

    Only signed or redacted reasoning is replayed: that is what Claude checks and needs back to
    continue a tool loop with thinking; unsigned reasoning (e.g. DeepSeek) is not asked for.
    """
    payload = open_reasoning(item.get("encrypted_content"), provider_name, model)
    block = payload.get("block") if payload else None
    if not isinstance(block, dict):
        return None
    text_block = block.get("reasoningText")
    if isinstance(text_block, dict) and isinstance(text_block.get("signature"), str):
        if isinstance(text_block.get("text"), str):
            return {
                "reasoningContent": {
                    "reasoningText": {"text": text_block["text"], "signature": text_block["signature"]}
                }
            }
        return None
    redacted = block.get("redactedContent")
    if isinstance(redacted, str) and redacted:
        return {"reasoningContent": {"redactedContent": redacted}}
    return None


class _Conversation:
    """Accumulates Converse messages, merging consecutive turns of one role (Converse requires
    user and assistant to alternate)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def _tool_block_as_text(block: dict[str, Any]) -> dict[str, Any]:
    if "toolUse" in block:
        use = block["toolUse"]
        return {"text": f"[called tool {use['name']} (call {use['toolUseId']}) with input {json.dumps(use['input'])}]"}
    result = block["toolResult"]
    texts = [part["text"] for part in result["content"] if "text" in part]
    return {"text": f"[result of call {result['toolUseId']}]\n" + "\n".join(texts)}


def repair_tool_pairs(messages: list[dict[str, Any]], tools_available: bool) -> list[dict[str, Any]]:
    """Make every toolUse answered by a toolResult in the next user message and every toolResult
    answer a toolUse of the previous assistant message, as Bedrock requires. Without a toolConfig
    Bedrock refuses tool blocks altogether, so then they become text."""
    if not tools_available:
        for message in messages:
            message["content"] = [
                _tool_block_as_text(block) if "toolUse" in block or "toolResult" in block else block
                for block in message["content"]
            ]
        return messages
    repaired: list[dict[str, Any]] = []
    pending: list[str] = []  # toolUse ids of the previous assistant message
    for message in messages:
        if message["role"] == "assistant":
            if pending:  # an assistant turn follows unanswered calls: answer them first
                repaired.append({"role": "user", "content": _missing_results(pending)})
            pending = [block["toolUse"]["toolUseId"] for block in message["content"] if "toolUse" in block]
            repaired.append(message)
            continue
        answered = set(pending)
        results, others = [], []
        for block in message["content"]:
            if "toolResult" in block:
                if block["toolResult"]["toolUseId"] in answered:
                    answered.discard(block["toolResult"]["toolUseId"])
                    results.append(block)
                else:
                    others.append(_tool_block_as_text(block))  # an orphan result
            else:
                others.append(block)
        missing = [call for call in pending if call in answered]
        # Tool results lead the user turn (Claude requires it); text the user added follows.
        message["content"] = results + _missing_results(missing) + others
        pending = []
        repaired.append(message)
    if pending:
        repaired.append({"role": "user", "content": _missing_results(pending)})
    return repaired


def _missing_results(call_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"toolResult": {"toolUseId": call, "content": [{"text": "(no result was recorded for this call)"}]}}
        for call in call_ids
    ]


def mid_tool_loop_without_reasoning(messages: list[dict[str, Any]]) -> bool:
    """Claude with thinking refuses a tool loop whose last assistant turn does not start with its
    reasoning block (e.g. the block was dropped because it came from another model)."""
    if len(messages) < 2 or messages[-1]["role"] != "user" or messages[-2]["role"] != "assistant":
        return False
    if not any("toolResult" in block for block in messages[-1]["content"]):
        return False
    first = messages[-2]["content"][0] if messages[-2]["content"] else {}
    return "reasoningContent" not in first


def strip_final_assistant(messages: list[dict[str, Any]]) -> None:
    """A final (prefill) assistant message may not end in whitespace (Claude refuses it): trim its
    last text block, dropping the block, and the message, when nothing is left."""
    content = messages[-1]["content"]
    if content and isinstance(content[-1].get("text"), str):
        text = content[-1]["text"].rstrip()
        if text:
            content[-1] = {**content[-1], "text": text}
        else:
            content.pop()
    if not content:
        messages.pop()


def _tool_use(item: Mapping[str, Any], names: ToolNameMap, arguments: dict[str, Any]) -> dict[str, Any]:
    """A Codex function / custom tool call of the history as a Converse toolUse block."""
    namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
    use = {
        "toolUseId": tool_use_id(item.get("call_id")),
        "name": names.wire_name(str(item.get("name")), namespace),
        "input": arguments,
    }
    return {"toolUse": use}


def _function_arguments(item: Mapping[str, Any]) -> dict[str, Any]:
    try:
        arguments = json.loads(item.get("arguments") or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):  # Bedrock's toolUse input must be an object
        arguments = {"arguments": item.get("arguments")}
    return arguments


def system_and_conversation(
    body: Mapping[str, Any], names: ToolNameMap, provider_name: str, upstream_model: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Converse messages as the history has them, not yet repaired)."""
    system: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        system.append({"text": instructions})
    conversation = _Conversation()
    for item in _input_items(body):
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role in ("developer", "system"):
                # One system block per text part; images have no place in Converse's system.
                system.extend(block for block in content_blocks(item.get("content")) if block.get("text", "").strip())
            elif role in ("user", "assistant"):
                conversation.add(role, content_blocks(item.get("content")))
        elif kind == "function_call":
            conversation.add("assistant", [_tool_use(item, names, _function_arguments(item))])
        elif kind == "custom_tool_call":
            conversation.add("assistant", [_tool_use(item, names, {"input": str(item.get("input") or "")})])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            result = {
                "toolUseId": tool_use_id(item.get("call_id")),
                "content": tool_result_content(item.get("output")),
            }
            conversation.add("user", [{"toolResult": result}])
        elif kind == "reasoning":
            block = _replayed_reasoning(item, provider_name, upstream_model)
            if block is not None:
                conversation.add("assistant", [block])
        # Everything else (additional_tools, compaction, web_search_call, item_reference, ...)
        # has no Converse equivalent; additional_tools was read by ToolNameMap.from_request.
    return system, conversation.messages
