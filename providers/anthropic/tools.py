"""Codex tools as Claude tools: planning the definitions, mapping names both ways, tool_choice."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from codexgate.providers.anthropic.values import JSON, _dict, _str
from codexgate.providers.base import input_items as _input_items

_TOOL_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


# --------------------------------------------------------------------------------------------
# Tools


@dataclasses.dataclass(frozen=True)
class ToolRef:
    """A Codex tool as Codex knows it: how its calls must come back."""

    kind: str  # "function" | "custom"
    name: str
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What the answer side needs to know about the request it answers."""

    upstream_model: str
    tools: Mapping[str, ToolRef] = dataclasses.field(default_factory=dict)  # Claude's name -> Codex tool
    parallel_tool_calls: bool = True
    tool_choice: Any = "auto"  # echoed in the Responses object


@dataclasses.dataclass
class _ToolPlan:
    definitions: list[JSON]  # Anthropic tool params
    by_anthropic: dict[str, ToolRef]
    by_codex: dict[tuple[str, str | None], str]  # (name, namespace) -> Claude's name
    dropped: list[str]


def _codex_tools(body: Mapping[str, Any]) -> tuple[list[tuple[JSON, str | None, str]], list[str]]:
    """(tool, namespace, namespace description) for every tool Codex offers, and what is dropped."""
    groups: list[Iterable[Any]] = [body.get("tools") or []]
    groups += [item.get("tools") or [] for item in _input_items(body) if item.get("type") == "additional_tools"]
    found: list[tuple[JSON, str | None, str]] = []
    dropped: list[str] = []

    def take(tool: Any, namespace: str | None, namespace_description: str) -> None:
        if not isinstance(tool, dict):
            return
        kind = tool.get("type")
        if kind in ("function", "custom") and isinstance(tool.get("name"), str) and tool["name"]:
            found.append((tool, namespace, namespace_description))
        elif kind == "namespace" and namespace is None:
            inner_description = _str(tool.get("description"))
            for inner in tool.get("tools") or []:
                take(inner, str(tool.get("name") or ""), inner_description)
        else:
            name = _str(tool.get("name")) or None
            dropped.append(name or str(kind))

    for group in groups:
        if isinstance(group, list):
            for tool in group:
                take(tool, None, "")
    return found, dropped


def _sanitize_name(name: str) -> str:
    cleaned = _TOOL_NAME_BAD_CHARS.sub("_", name)[:64]
    return cleaned or "tool"


def _qualified(name: str, namespace: str | None) -> str:
    return f"{namespace}__{name}" if namespace else name


def _plan_tools(body: Mapping[str, Any]) -> _ToolPlan:
    found, dropped = _codex_tools(body)
    bare_counts = Counter(tool["name"] for tool, _, _ in found)
    plan = _ToolPlan([], {}, {}, dropped)
    for tool, namespace, namespace_description in found:
        name: str = tool["name"]
        key = (name, namespace)
        if key in plan.by_codex:
            continue  # offered twice (tools and additional_tools): one definition
        # A namespaced tool keeps its bare name unless another tool has it too.
        wanted = name if bare_counts[name] == 1 else _qualified(name, namespace)
        candidate = _sanitize_name(wanted)
        suffix = 2
        while candidate in plan.by_anthropic:
            candidate = f"{_sanitize_name(wanted)[:60]}_{suffix}"
            suffix += 1
        kind = "custom" if tool.get("type") == "custom" else "function"
        plan.by_anthropic[candidate] = ToolRef(kind, name, namespace)
        plan.by_codex[key] = candidate
        plan.definitions.append(_tool_definition(tool, candidate, kind, namespace, namespace_description))
    return plan


def _tool_definition(
    tool: JSON, anthropic_name: str, kind: str, namespace: str | None, namespace_description: str
) -> JSON:
    description = _str(tool.get("description"))
    if namespace and namespace_description:
        description = f"{description}\n\n(Part of the tool group `{namespace}`: {namespace_description})".strip()
    if kind == "custom":
        # Claude has no free-form tools: the raw input travels as one string parameter and
        # comes back to Codex as a custom_tool_call with that string as its `input`.
        note = "Put the complete raw input for this tool (free-form text, not JSON) in the `input` string."
        tool_format = _dict(tool.get("format"))
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


def _anthropic_tool_name(plan: _ToolPlan, name: str, namespace: str | None) -> str:
    known = plan.by_codex.get((name, namespace))
    if known is None:
        # A call recorded under another grouping than today's tool list: match the bare name
        # when that is unambiguous, so history and tools keep agreeing.
        same_name = [anthropic_name for (codex_name, _), anthropic_name in plan.by_codex.items() if codex_name == name]
        known = same_name[0] if len(same_name) == 1 else None
    return known if known is not None else _sanitize_name(_qualified(name, namespace))


def request_info(body: Mapping[str, Any], upstream_model: str) -> RequestInfo:
    """What `translate_response` / `StreamTranslator` need from the request (tool names, echo fields)."""
    plan = _plan_tools(body)
    tool_choice = body.get("tool_choice", "auto")
    if _is_named_choice(tool_choice):
        tool_choice = {"type": tool_choice["type"], "name": tool_choice["name"]}
    elif tool_choice not in ("auto", "none", "required"):
        tool_choice = "auto"
    return RequestInfo(
        upstream_model=upstream_model,
        tools=dict(plan.by_anthropic),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        tool_choice=tool_choice,
    )


def _is_named_choice(choice: Any) -> bool:
    return (
        isinstance(choice, dict)
        and choice.get("type") in ("function", "custom")
        and isinstance(choice.get("name"), str)
    )


def _tool_choice(choice: Any, plan: _ToolPlan, parallel: bool) -> JSON | None:
    result: JSON
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        result = {"type": "any"}
    elif _is_named_choice(choice):
        namespace = _str(choice.get("namespace")) or None
        result = {"type": "tool", "name": _anthropic_tool_name(plan, choice["name"], namespace)}
        if result["name"] not in plan.by_anthropic:
            result = {"type": "auto"}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools" and choice.get("mode") == "required":
        result = {"type": "any"}  # Claude cannot narrow the set; it can still be made to call one
    else:
        result = {"type": "auto"}
    if not parallel:
        result["disable_parallel_tool_use"] = True
    return result
