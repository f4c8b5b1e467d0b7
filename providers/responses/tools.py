"""Codex's tools under the names a provider accepts, and back.

Codex offers `function` and `custom` (freeform, e.g. apply_patch) tools, some inside `namespace`
groups (MCP servers) and some in `additional_tools` input items; every provider restricts tool
names (characters, length) and none knows namespaces. A `ToolNameMap` gives each Codex tool
(namespace, name, kind) one provider-safe wire name, unique within the request, and resolves the
wire name a model calls back into the Codex tool — the same for the request's definitions, its
history (earlier calls) and the answer. What differs between providers is a `WireNames` rule:
which characters, how long, how a namespace is spelled in, and what makes two names distinct.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["CodexTool", "OfferedTool", "ToolNameMap", "WireNames", "codex_tools"]

JSON = dict[str, Any]
ToolKind = Literal["function", "custom"]


@dataclasses.dataclass(frozen=True, slots=True)
class CodexTool:
    """A tool as Codex knows it: how its calls must come back."""

    kind: ToolKind
    name: str
    namespace: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class OfferedTool:
    """One servable tool of a request, flattened out of namespaces and `additional_tools`."""

    definition: JSON  # Codex's tool dict (`parameters`, `format`, `description`, ...)
    namespace: str | None
    namespace_description: str
    wire: str  # the name the provider sees

    @property
    def kind(self) -> ToolKind:
        return "custom" if self.definition.get("type") == "custom" else "function"


def _input_items(body: Mapping[str, Any]) -> list[JSON]:
    items = body.get("input")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def codex_tools(body: Mapping[str, Any]) -> tuple[list[tuple[JSON, str | None, str]], list[str]]:
    """(tool, namespace, namespace description) for every function/custom tool the request offers
    (`tools` and `additional_tools` input items, namespaces flattened one level), and the names of
    the tools no translated provider can run (web_search, tool_search, ... hosted by OpenAI)."""
    groups: list[Any] = [body.get("tools") or []]
    groups += [item.get("tools") or [] for item in _input_items(body) if item.get("type") == "additional_tools"]
    found: list[tuple[JSON, str | None, str]] = []
    dropped: list[str] = []

    def take(tool: Any, namespace: str | None, namespace_description: str) -> None:
        if not isinstance(tool, dict):
            return
        kind = tool.get("type")
        name = tool.get("name")
        if kind in ("function", "custom") and isinstance(name, str) and name:
            found.append((tool, namespace, namespace_description))
        elif kind == "namespace" and namespace is None and isinstance(name, str):
            description = tool["description"] if isinstance(tool.get("description"), str) else ""
            for inner in tool.get("tools") or []:
                take(inner, name or None, description)
        else:
            dropped.append(name if isinstance(name, str) and name else str(kind))

    for group in groups:
        if isinstance(group, list):
            for tool in group:
                take(tool, None, "")
    return found, dropped


@dataclasses.dataclass(frozen=True)
class WireNames:
    """A provider's rule for tool names.

    `invalid`: characters replaced by `_`; `max_length`; `leading`: what the first character must
    match (else `_` is prefixed); `qualify`: when a namespaced tool's name carries its namespace —
    "clash" (only when its bare name is offered more than once), "taken" (only when the bare
    name is already used), "always"; `joiner`: `ns__name`, or Codex's flat spelling `ns` + `name`
    when the namespace already ends in `_`/`-` ("flat"); `distinct`: how a sanitized name that is
    taken becomes unique — "number" (`name_2`), or "digest" (every sanitized name carries a digest
    of the original, so different names never meet) with duplicates dropped."""

    invalid: re.Pattern[str] = re.compile(r"[^A-Za-z0-9_-]")
    max_length: int = 64
    leading: re.Pattern[str] | None = None
    qualify: Literal["clash", "taken", "always"] = "taken"
    joiner: Literal["double_underscore", "flat"] = "double_underscore"
    distinct: Literal["number", "digest"] = "number"

    def qualified(self, name: str, namespace: str | None) -> str:
        if not namespace:
            return name
        if self.joiner == "flat" and namespace.endswith(("_", "-")):
            return namespace + name
        return f"{namespace}__{name}"

    def sanitize(self, name: str) -> str:
        cleaned = self.invalid.sub("_", name)
        if self.distinct == "digest":
            if cleaned == name and len(name) <= self.max_length and self._leading_ok(name):
                return name
            return f"{cleaned[: self.max_length - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        if not cleaned:
            cleaned = "tool" if self.leading is None else "_"
        if not self._leading_ok(cleaned):
            cleaned = "_" + cleaned
        return cleaned[: self.max_length]

    def _leading_ok(self, name: str) -> bool:
        return self.leading is None or bool(name) and self.leading.match(name) is not None

    def numbered(self, base: str, taken: Mapping[str, Any]) -> str:
        candidate, counter = base, 2
        while candidate in taken:
            suffix = f"_{counter}"
            candidate = base[: self.max_length - len(suffix)] + suffix
            counter += 1
        return candidate


class ToolNameMap:
    """Wire name ↔ Codex tool for one request (built by `from_request`, or added to one by one)."""

    __slots__ = ("by_codex", "by_wire", "rules")

    def __init__(self, rules: WireNames | None = None) -> None:
        self.rules = rules or WireNames()
        self.by_wire: dict[str, CodexTool] = {}
        self.by_codex: dict[tuple[str | None, str], str] = {}  # (namespace, name) -> wire name

    @classmethod
    def from_request(cls, body: Mapping[str, Any], rules: WireNames | None = None) -> tuple[
        ToolNameMap, list[OfferedTool], list[str]
    ]:  # fmt: skip
        """(the map, the tools to define under their wire names in order, dropped tool names)."""
        found, dropped = codex_tools(body)
        names = cls(rules)
        bare_counts = Counter(tool["name"] for tool, _, _ in found)
        offered: list[OfferedTool] = []
        for tool, namespace, namespace_description in found:
            wire = names.add(tool, namespace, offered_twice=bare_counts[tool["name"]] > 1)
            if wire is not None:
                offered.append(OfferedTool(tool, namespace, namespace_description, wire))
        return names, offered, dropped

    def add(self, tool: Mapping[str, Any], namespace: str | None = None, *, offered_twice: bool = False) -> str | None:
        """Name one Codex tool; None when it was already named (offered twice: one definition)."""
        name = str(tool.get("name") or "")
        if (namespace, name) in self.by_codex:
            return None
        rules = self.rules
        qualify = namespace is not None and (
            rules.qualify == "always"
            or rules.qualify == "clash"
            and offered_twice
            or rules.qualify == "taken"
            and rules.sanitize(name) in self.by_wire
        )
        wanted = rules.sanitize(rules.qualified(name, namespace) if qualify else name)
        if wanted in self.by_wire:
            if rules.distinct == "digest":
                return None  # the provider refuses duplicate names: the first definition wins
            wanted = rules.numbered(wanted, self.by_wire)
        kind: ToolKind = "custom" if tool.get("type") == "custom" else "function"
        self.by_wire[wanted] = CodexTool(kind, name, namespace)
        self.by_codex[(namespace, name)] = wanted
        return wanted

    def resolve(self, wire: str) -> CodexTool:
        """The Codex tool a model called by `wire`. Unknown names come back as functions, except
        Codex's one freeform tool, recognised by name even without the request's tools."""
        found = self.by_wire.get(wire)
        if found is not None:
            return found
        return CodexTool("custom" if wire == "apply_patch" else "function", wire)

    def wire_name(self, name: str, namespace: str | None = None) -> str:
        """The wire name for a Codex tool met in the history. A call recorded under another
        grouping than today's tool list matches the bare name when that is unambiguous, so
        history and definitions keep agreeing; else the name is sanitized as it is."""
        known = self.by_codex.get((namespace, name))
        if known is not None:
            return known
        same_name = [wire for (_, codex_name), wire in self.by_codex.items() if codex_name == name]
        if len(same_name) == 1:
            return same_name[0]
        return self.rules.sanitize(self.rules.qualified(name, namespace))
