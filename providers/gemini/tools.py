"""Codex's tools ↔ Gemini function declarations and names (the shared `ToolNameMap` under
Gemini's naming rule)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.gemini.schema import gemini_schema
from codexgate.providers.responses.tools import ToolNameMap, WireNames

# A function name Gemini accepts: letters, digits, `_.:-`, at most 64, not starting with a digit.
GEMINI_NAMES = WireNames(
    invalid=re.compile(r"[^A-Za-z0-9_.:\-]"), max_length=64, leading=re.compile(r"[A-Za-z_]"), qualify="taken"
)


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def default_tool_map() -> ToolNameMap:
    """Without the request's tools: only Codex's freeform apply_patch is known as custom."""
    return ToolNameMap(GEMINI_NAMES)


def collect_tools(body: Mapping[str, Any]) -> tuple[ToolNameMap, list[dict[str, Any]], list[str]]:
    """(name map, Gemini function declarations, names of tools Gemini cannot serve)."""
    names, offered, dropped = ToolNameMap.from_request(body, GEMINI_NAMES)
    declarations = [
        custom_declaration(tool.wire, tool.definition)
        if tool.kind == "custom"
        else function_declaration(tool.wire, tool.definition)
        for tool in offered
    ]
    return names, declarations, dropped


def tool_map(body: Mapping[str, Any]) -> ToolNameMap:
    """Which Gemini function names stand for which Codex tools in this request."""
    return collect_tools(body)[0]


def function_declaration(gemini_name: str, tool: Mapping[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": gemini_name}
    if isinstance(tool.get("description"), str) and tool["description"]:
        declaration["description"] = tool["description"]
    parameters = tool.get("parameters")
    schema = gemini_schema(parameters) if isinstance(parameters, dict) else {}
    if schema.get("type") != "OBJECT":
        # Gemini wants an object at the root; a parameterless tool gets a bare OBJECT (a
        # `properties: {}` is rejected, and no `parameters` at all fails with mode ANY).
        schema = {"type": "OBJECT"}
    declaration["parameters"] = schema
    return declaration


def custom_declaration(gemini_name: str, tool: Mapping[str, Any]) -> dict[str, Any]:
    """A freeform tool (apply_patch) as a function with one string parameter, `input`."""
    description = as_str(tool.get("description"))
    tool_format = as_dict(tool.get("format"))
    if tool_format.get("type") == "grammar" and as_str(tool_format.get("definition")):
        description += (
            "\n\nPass the tool's raw text (not JSON) as the `input` argument. It must match this "
            f"{tool_format.get('syntax', 'lark')} grammar:\n{tool_format['definition']}"
        )
    else:
        description += "\n\nPass the tool's raw text (not JSON) as the `input` argument."
    return {
        "name": gemini_name,
        "description": description.strip(),
        "parameters": {
            "type": "OBJECT",
            "properties": {"input": {"type": "STRING", "description": "The raw input text for this tool."}},
            "required": ["input"],
        },
    }
