"""Codex's tools ↔ Gemini function declarations and names."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import input_items as _input_items
from codexgate.providers.gemini.schema import gemini_schema

# Responses tools the Gemini function-calling API cannot serve.
_SERVABLE_TOOL_TYPES = {"function", "custom", "namespace"}


# ==================================================================================================
# Tools: Codex's names ↔ Gemini function names
# ==================================================================================================


@dataclasses.dataclass(frozen=True)
class ToolTarget:
    """What Codex calls a tool that Gemini knows under some function name."""

    kind: str  # "function" or "custom" (freeform: answered as custom_tool_call with `input`)
    name: str
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class ToolMap:
    """Gemini function name → Codex tool, and back. Built from a request by `tool_map(body)`."""

    targets: Mapping[str, ToolTarget]
    names: Mapping[tuple[str | None, str], str]  # (namespace, Codex name) → Gemini name

    @classmethod
    def codex_default(cls) -> ToolMap:
        """Without the request: Codex's only freeform tool is apply_patch."""
        target = ToolTarget("custom", "apply_patch")
        return cls({"apply_patch": target}, {(None, "apply_patch"): "apply_patch"})

    def resolve(self, gemini_name: str) -> ToolTarget:
        return self.targets.get(gemini_name) or ToolTarget("function", gemini_name)

    def gemini_name(self, name: str, namespace: str | None = None) -> str:
        known = self.names.get((namespace, name)) or self.names.get((None, name))
        return known or _sanitize_function_name(name, set())


def _sanitize_function_name(name: str, taken: set[str]) -> str:
    """A name Gemini accepts (letters, digits, `_.:-`, ≤ 64, not starting with a digit), unique."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:\-]", "_", name) or "_"
    if not re.match(r"[A-Za-z_]", cleaned):
        cleaned = "_" + cleaned
    cleaned = cleaned[:64]
    candidate, counter = cleaned, 2
    while candidate in taken:
        suffix = f"_{counter}"
        candidate = cleaned[: 64 - len(suffix)] + suffix
        counter += 1
    return candidate


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _request_tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`tools` plus the tools of Codex's `additional_tools` input items, in order."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            tools.extend(tool for tool in item.get("tools") or [] if isinstance(tool, dict))
    return tools


def collect_tools(body: Mapping[str, Any]) -> tuple[ToolMap, list[dict[str, Any]], list[str]]:
    """(name map, Gemini function declarations, names of tools Gemini cannot serve)."""
    targets: dict[str, ToolTarget] = {}
    names: dict[tuple[str | None, str], str] = {}
    declarations: list[dict[str, Any]] = []
    dropped: list[str] = []

    def declare(tool: dict[str, Any], namespace: str | None) -> None:
        name = tool.get("name")
        kind = tool.get("type")
        if not isinstance(name, str) or not name or kind not in ("function", "custom"):
            dropped.append(str(name or kind))
            return
        if (namespace, name) in names:
            return  # the same tool offered twice (tools and additional_tools)
        preferred = name if name not in targets else f"{namespace}__{name}" if namespace else name
        gemini_name = _sanitize_function_name(preferred, set(targets))
        targets[gemini_name] = ToolTarget(kind, name, namespace)
        names[(namespace, name)] = gemini_name
        declarations.append(
            _custom_declaration(gemini_name, tool) if kind == "custom" else _function_declaration(gemini_name, tool)
        )

    for tool in _request_tools(body):
        kind = tool.get("type")
        if kind == "namespace":
            namespace = tool.get("name") if isinstance(tool.get("name"), str) else None
            for child in tool.get("tools") or []:
                if isinstance(child, dict):
                    declare(child, namespace)
        elif kind in _SERVABLE_TOOL_TYPES:
            declare(tool, None)
        else:
            dropped.append(str(tool.get("name") or kind))
    return ToolMap(targets, names), declarations, dropped


def tool_map(body: Mapping[str, Any]) -> ToolMap:
    """Which Gemini function names stand for which Codex tools in this request."""
    return collect_tools(body)[0]


def _function_declaration(gemini_name: str, tool: Mapping[str, Any]) -> dict[str, Any]:
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


def _custom_declaration(gemini_name: str, tool: Mapping[str, Any]) -> dict[str, Any]:
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
