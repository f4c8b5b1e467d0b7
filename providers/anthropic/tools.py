"""Codex tools as Claude tools: the definitions, their names (the toolkit's `ToolNameMap` under
Claude's rule), tool_choice, and what the answer side needs to know about the request."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from codexgate.providers.anthropic.values import JSON, as_dict, as_str
from codexgate.providers.responses import ToolNameMap, WireNames

# Claude's tool names: ^[a-zA-Z0-9_-]{1,64}$. A namespaced tool keeps its bare name unless another
# offered tool has it too (then `namespace__name`); a name taken after sanitizing gets `_2`, `_3`.
CLAUDE_NAMES = WireNames(max_length=64, qualify="clash")


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What the answer side needs to know about the request it answers."""

    upstream_model: str
    tools: ToolNameMap = dataclasses.field(default_factory=lambda: ToolNameMap(CLAUDE_NAMES))
    parallel_tool_calls: bool = True
    tool_choice: Any = "auto"  # echoed in the Responses object


@dataclasses.dataclass
class ToolPlan:
    """The request's tools for Claude: definitions, the name map, what was dropped."""

    definitions: list[JSON]  # Anthropic tool params
    names: ToolNameMap
    dropped: list[str]


def plan_tools(body: Mapping[str, Any]) -> ToolPlan:
    names, offered, dropped = ToolNameMap.from_request(body, CLAUDE_NAMES)
    definitions = [
        _tool_definition(tool.definition, tool.wire, tool.kind, tool.namespace, tool.namespace_description)
        for tool in offered
    ]
    return ToolPlan(definitions, names, dropped)


def _tool_definition(
    tool: JSON, anthropic_name: str, kind: str, namespace: str | None, namespace_description: str
) -> JSON:
    description = as_str(tool.get("description"))
    if namespace and namespace_description:
        description = f"{description}\n\n(Part of the tool group `{namespace}`: {namespace_description})".strip()
    if kind == "custom":
        # Claude has no free-form tools: the raw input travels as one string parameter and
        # comes back to Codex as a custom_tool_call with that string as its `input`.
        note = "Put the complete raw input for this tool (free-form text, not JSON) in the `input` string."
        tool_format = as_dict(tool.get("format"))
        if tool_format.get("type") == "grammar" and isinstance(tool_format.get("definition"), str):
            syntax = tool_format.get("syntax") or "grammar"
            note += f" It must match this {syntax} grammar:\n{tool_format['definition']}"
        definition: JSON = {
            "name": anthropic_name,
            "input_schema": {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The raw tool input."}},
                "required": ["input"],
                "additionalProperties": False,
            },
            "description": f"{description}\n\n{note}".strip(),
        }
        return definition
    parameters = tool.get("parameters")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        parameters = {"type": "object", "properties": {}}
    definition = {"name": anthropic_name, "input_schema": parameters}
    if description:
        definition["description"] = description
    return definition


def request_info(body: Mapping[str, Any], upstream_model: str) -> RequestInfo:
    """What `translate_response` / `StreamTranslator` need from the request (tool names, echo fields)."""
    choice = body.get("tool_choice", "auto")
    if _is_named_choice(choice):
        choice = {"type": choice["type"], "name": choice["name"]}
    elif choice not in ("auto", "none", "required"):
        choice = "auto"
    return RequestInfo(
        upstream_model=upstream_model,
        tools=plan_tools(body).names,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        tool_choice=choice,
    )


def _is_named_choice(choice: Any) -> bool:
    return (
        isinstance(choice, dict)
        and choice.get("type") in ("function", "custom")
        and isinstance(choice.get("name"), str)
    )


def tool_choice(choice: Any, names: ToolNameMap, parallel: bool) -> JSON | None:
    """Responses `tool_choice` → Claude's (`disable_parallel_tool_use` when calls must come singly)."""
    result: JSON
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        result = {"type": "any"}
    elif _is_named_choice(choice):
        namespace = as_str(choice.get("namespace")) or None
        result = {"type": "tool", "name": names.wire_name(choice["name"], namespace)}
        if result["name"] not in names.by_wire:
            result = {"type": "auto"}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools" and choice.get("mode") == "required":
        result = {"type": "any"}  # Claude cannot narrow the set; it can still be made to call one
    else:
        result = {"type": "auto"}
    if not parallel:
        result["disable_parallel_tool_use"] = True
    return result
