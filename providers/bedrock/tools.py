"""Codex tools ↔ Bedrock toolSpecs: names Bedrock accepts (the toolkit's `ToolNameMap` under
Bedrock's rule), toolUse ids, custom (freeform) tools as one-string functions, toolChoice."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.responses import OfferedTool, ToolNameMap, WireNames

# Bedrock's own limits (botocore service model: ToolName, ToolUseId patterns). A tool's name is
# Codex's own flat spelling (namespace + name, e.g. `mcp__docs__` + `search`) when Bedrock accepts
# it, else sanitized with a digest so two different names never collide; Bedrock rejects duplicate
# tool names, so the first definition wins.
BEDROCK_NAMES = WireNames(
    invalid=re.compile(r"[^a-zA-Z0-9_-]"), max_length=64, qualify="always", joiner="flat", distinct="digest"
)
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_CUSTOM_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The raw input for the tool."}},
    "required": ["input"],
    "additionalProperties": False,
}

# Bedrock tool name → Codex tool (what the answer's translation needs about the request's tools).
ToolNames = ToolNameMap


def tool_names(body: Mapping[str, Any]) -> ToolNameMap:
    """The request's tools under their Bedrock names."""
    names, _, _ = ToolNameMap.from_request(body, BEDROCK_NAMES)
    return names


def tool_use_id(call_id: object) -> str:
    """A Bedrock toolUseId for a Codex call_id; the same function serves toolUse and toolResult,
    so pairs stay paired even when an id from another provider needs rewriting."""
    text = call_id if isinstance(call_id, str) else ""
    if _TOOL_USE_ID.fullmatch(text):
        return text
    clean = re.sub(r"[^a-zA-Z0-9_.:-]", "_", text)
    return f"{clean[:50]}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


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


def tool_spec(tool: OfferedTool) -> dict[str, Any]:
    """A Converse toolSpec; a custom tool is a function taking its raw input as one string."""
    definition = tool.definition
    if tool.kind == "custom":
        schema: dict[str, Any] = _CUSTOM_SCHEMA
        description = _custom_description(definition)
    else:
        parameters = definition.get("parameters")
        schema = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        description = str(definition.get("description") or "")
    spec: dict[str, Any] = {"name": tool.wire, "inputSchema": {"json": schema}}
    if description:
        spec["description"] = description
    return {"toolSpec": spec}


def converse_tool_choice(
    choice: Any, names: ToolNameMap, tools: list[OfferedTool]
) -> tuple[dict[str, Any] | None, list[OfferedTool], bool]:
    """(Converse toolChoice or None for the default, the tools to offer, whether tools are off)."""
    if choice == "none":
        return None, [], True
    if choice == "required":
        return {"any": {}}, tools, False
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
            wire = names.by_codex.get((namespace, choice["name"]))
            if wire is not None and any(tool.wire == wire for tool in tools):
                return {"tool": {"name": wire}}, tools, False
        elif kind == "allowed_tools":
            allowed = {
                BEDROCK_NAMES.sanitize(entry["name"])
                for entry in choice.get("tools") or []
                if isinstance(entry, dict) and isinstance(entry.get("name"), str)
            }
            kept = [tool for tool in tools if tool.wire in allowed or tool.definition.get("name") in allowed]
            mode = choice.get("mode")
            return ({"any": {}} if mode == "required" and kept else None), kept, False
    return None, tools, False  # "auto" (Bedrock's default) and anything unknown
