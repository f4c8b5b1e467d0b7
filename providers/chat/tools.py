"""Codex tools ↔ Chat Completions functions: names, definitions, tool_choice."""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping
from typing import Any, Literal

from codexgate.providers.base import input_items as _input_items

# --------------------------------------------------------------------------- tools

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


@dataclasses.dataclass(frozen=True)
class ToolEntry:
    kind: Literal["function", "custom"]
    name: str  # Codex's name for it
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class ToolMap:
    """Chat function names ↔ the Codex tools they stand for."""

    by_chat_name: Mapping[str, ToolEntry]

    def entry(self, chat_name: str) -> ToolEntry:
        found = self.by_chat_name.get(chat_name)
        if found is not None:
            return found
        # Without a map (or an unknown name) Codex's one freeform tool is still recognised.
        return ToolEntry("custom" if chat_name == "apply_patch" else "function", chat_name)

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        for chat, entry in self.by_chat_name.items():
            if entry.name == name and entry.namespace == namespace:
                return chat
        if namespace is not None:
            return self.chat_name(name)
        return _sanitize_name(name)


def _sanitize_name(name: str) -> str:
    return _NAME_OK.sub("_", name)[:64] or "tool"


def _codex_tools(body: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """(tool, namespace) for every tool in `tools` and in `additional_tools` items, flattened."""
    found: list[tuple[dict[str, Any], str | None]] = []

    def add(tools: Any, namespace: str | None) -> None:
        for tool in tools or []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                add(tool.get("tools"), str(tool.get("name") or "") or None)
            else:
                found.append((tool, namespace))

    add(body.get("tools"), None)
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            add(item.get("tools"), None)
    return found


def _tool_entries(body: dict[str, Any]) -> tuple[dict[str, ToolEntry], list[tuple[str, dict[str, Any]]], list[str]]:
    """(chat name → entry, [(chat name, Codex tool)], names of tools dropped)."""
    entries: dict[str, ToolEntry] = {}
    served: list[tuple[str, dict[str, Any]]] = []
    dropped: list[str] = []
    for tool, namespace in _codex_tools(body):
        kind = tool.get("type")
        name = str(tool.get("name") or "")
        if kind not in ("function", "custom") or not name:
            dropped.append(name or str(kind))
            continue
        chat = _sanitize_name(name)
        if chat in entries and namespace:
            chat = _sanitize_name(f"{namespace}__{name}")
        base, n = chat, 2
        while chat in entries:  # still taken: number it
            chat = f"{base[:60]}_{n}"
            n += 1
        entries[chat] = ToolEntry("custom" if kind == "custom" else "function", name, namespace)
        served.append((chat, tool))
    return entries, served, dropped


def tool_map(body: dict[str, Any]) -> ToolMap:
    """How `build_request` named the request's tools; hand it to the response translators."""
    return ToolMap(types.MappingProxyType(_tool_entries(body)[0]))


def _custom_tool_function(chat: str, tool: dict[str, Any]) -> dict[str, Any]:
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


def _function_tool(chat: str, tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": chat}
    if tool.get("description"):
        function["description"] = str(tool["description"])
    parameters = tool.get("parameters")
    function["parameters"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
    if tool.get("strict") is True:
        function["strict"] = True
    return function


def _tool_choice(choice: Any, tools: ToolMap) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and choice.get("name"):
            name = tools.chat_name(str(choice["name"]), choice.get("namespace"))
            return {"type": "function", "function": {"name": name}}
        if kind == "allowed_tools":
            return "required" if choice.get("mode") == "required" else "auto"
    return "auto"  # a hosted tool was chosen: it is not available here
