"""Codex tools ↔ Chat Completions functions: names, definitions, tool_choice.

Naming is the toolkit's `ToolNameMap` under the Chat rule (OpenAI's: `[A-Za-z0-9_-]{1,64}`; a
namespaced tool is spelled `namespace__name` only when its bare name is taken, then numbered).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codexgate.providers.responses.tools import OfferedTool, ToolNameMap, WireNames

__all__ = ["CHAT_TOOL_NAMES", "chat_tools", "custom_tool_function", "function_tool", "tool_choice", "tool_map"]

CHAT_TOOL_NAMES = WireNames()


def tool_map(body: Mapping[str, Any]) -> ToolNameMap:
    """How `build_request` named the request's tools; hand it to the response translators."""
    return ToolNameMap.from_request(body, CHAT_TOOL_NAMES)[0]


def chat_tools(body: Mapping[str, Any]) -> tuple[ToolNameMap, list[OfferedTool], list[str]]:
    """(the name map, the tools to define in order, names of the tools a chat host cannot run)."""
    return ToolNameMap.from_request(body, CHAT_TOOL_NAMES)


def custom_tool_function(chat: str, tool: dict[str, Any]) -> dict[str, Any]:
    description = str(tool.get("description") or "")
    # Codex describes these tools as freeform ("do not wrap in JSON"); a chat host can only call
    # functions, so the model is told where the freeform text goes instead.
    note = (
        "Here the tool is called as a function: put the complete freeform text in its one string "
        "argument `input`; it reaches the tool verbatim."
    )
    param_description = "The tool's freeform input."
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and fmt.get("definition"):
        param_description += f" It must match this {fmt.get('syntax') or ''} grammar:\n{fmt['definition']}"
    return {
        "name": chat,
        "description": f"{description}\n\n{note}".strip(),
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string", "description": param_description}},
            "required": ["input"],
            "additionalProperties": False,
        },
    }


def function_tool(chat: str, tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": chat}
    if tool.get("description"):
        function["description"] = str(tool["description"])
    parameters = tool.get("parameters")
    function["parameters"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
    if tool.get("strict") is True:
        function["strict"] = True
    return function


def tool_choice(choice: Any, tools: ToolNameMap) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and choice.get("name"):
            name = tools.wire_name(str(choice["name"]), choice.get("namespace"))
            return {"type": "function", "function": {"name": name}}
        if kind == "allowed_tools":
            return "required" if choice.get("mode") == "required" else "auto"
    return "auto"  # a hosted tool was chosen: it is not available here
