"""Codex tools ↔ Bedrock toolSpecs: names Bedrock accepts, toolUse ids, custom (freeform) tools."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import input_items as _input_items

# Bedrock's own limits (botocore service model: ToolName, ToolUseId patterns).
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")


@dataclasses.dataclass(frozen=True)
class ToolDef:
    wire: str  # the name Bedrock sees
    name: str
    namespace: str | None
    custom: bool
    description: str
    schema: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ToolNames:
    """Bedrock tool name → (namespace, Codex name, is a custom tool), from the request's tools."""

    by_wire: Mapping[str, tuple[str | None, str, bool]] = dataclasses.field(default_factory=dict)


def wire_name(namespace: str | None, name: str) -> str:
    """The Bedrock tool name for a Codex tool: Codex's own flat spelling (namespace + name, e.g.
    `mcp__docs__` + `search`) when Bedrock accepts it, else a sanitized name with a digest so two
    different names never collide."""
    raw = name
    if namespace:
        raw = namespace + name if namespace.endswith(("_", "-")) else f"{namespace}__{name}"
    if _TOOL_NAME.fullmatch(raw):
        return raw
    clean = re.sub(r"[^a-zA-Z0-9_-]", "_", raw)
    return f"{clean[:55]}_{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def tool_use_id(call_id: object) -> str:
    """A Bedrock toolUseId for a Codex call_id; the same function serves toolUse and toolResult,
    so pairs stay paired even when an id from another provider needs rewriting."""
    text = call_id if isinstance(call_id, str) else ""
    if _TOOL_USE_ID.fullmatch(text):
        return text
    clean = re.sub(r"[^a-zA-Z0-9_.:-]", "_", text)
    return f"{clean[:50]}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _raw_tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tools from `tools` and from Codex's `additional_tools` input items."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            tools.extend(tool for tool in item.get("tools") or [] if isinstance(tool, dict))
    return tools


def _custom_description(tool: Mapping[str, Any]) -> str:
    description = str(tool.get("description") or "")
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        # The model only sees a string parameter; the grammar tells it what the string must be.
        syntax = fmt.get("syntax") or "lark"
        description += (
            f"\n\nPass the raw input as the `input` string. It must match this {syntax} grammar:\n"
            f"```{syntax}\n{fmt['definition']}\n```"
        )
    elif description:
        description += "\n\nPass the raw input as the `input` string."
    return description


def collect_tools(body: Mapping[str, Any]) -> tuple[list[ToolDef], list[str]]:
    tools: list[ToolDef] = []
    dropped: list[str] = []
    seen: set[str] = set()

    def add(tool: Mapping[str, Any], namespace: str | None) -> None:
        kind = tool.get("type")
        name = tool.get("name")
        if kind not in ("function", "custom") or not isinstance(name, str) or not name:
            label = name if isinstance(name, str) and name else str(kind)
            dropped.append(f"{namespace}{label}" if namespace else label)
            return
        wire = wire_name(namespace, name)
        if wire in seen:  # Bedrock rejects duplicate tool names; the first definition wins
            return
        seen.add(wire)
        if kind == "custom":
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The raw input for the tool."}},
                "required": ["input"],
                "additionalProperties": False,
            }
            description = _custom_description(tool)
        else:
            parameters = tool.get("parameters")
            schema = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
            description = str(tool.get("description") or "")
        tools.append(ToolDef(wire, name, namespace, kind == "custom", description, schema))

    for tool in _raw_tools(body):
        if tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            for inner in tool.get("tools") or []:
                if isinstance(inner, dict):
                    add(inner, tool["name"])
        else:
            add(tool, None)
    return tools, dropped


def tool_names(body: Mapping[str, Any]) -> ToolNames:
    """What the response translators need to know about the request's tools."""
    tools, _ = collect_tools(body)
    return ToolNames({tool.wire: (tool.namespace, tool.name, tool.custom) for tool in tools})


def resolve_tool(wire: str, tools: ToolNames | None) -> tuple[str | None, str, bool]:
    if tools is not None and wire in tools.by_wire:
        return tools.by_wire[wire]
    # Without the request's tools, Codex's one freeform tool is still recognised by name.
    return None, wire, wire == "apply_patch"


def converse_tool_choice(choice: Any, tools: list[ToolDef]) -> tuple[dict[str, Any] | None, list[ToolDef], bool]:
    """(Converse toolChoice or None for the default, the tools to offer, whether tools are off)."""
    if choice == "none":
        return None, [], True
    if choice == "required":
        return {"any": {}}, tools, False
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            wire = wire_name(
                choice.get("namespace") if isinstance(choice.get("namespace"), str) else None, choice["name"]
            )
            if any(tool.wire == wire for tool in tools):
                return {"tool": {"name": wire}}, tools, False
        elif kind == "allowed_tools":
            allowed = {
                wire_name(None, entry["name"])
                for entry in choice.get("tools") or []
                if isinstance(entry, dict) and isinstance(entry.get("name"), str)
            }
            kept = [tool for tool in tools if tool.wire in allowed or tool.name in allowed]
            mode = choice.get("mode")
            return ({"any": {}} if mode == "required" and kept else None), kept, False
    return None, tools, False  # "auto" (Bedrock's default) and anything unknown
