"""Anthropic Messages (temporary wrapper over providers/anthropic.py)."""

from __future__ import annotations

from typing import Any

from codexgate.policies.schema import AnthropicProvider
from codexgate.providers import anthropic
from codexgate.providers.family import JSON, REASONING_LEVELS, FamilyDefaults, Prepared
from codexgate.providers.wrappers.module_family import ModuleFamily


class AnthropicFamily(ModuleFamily):
    kind = "anthropic"
    settings_type = AnthropicProvider
    secret_headers = ("x-api-key",)
    module = anthropic

    def answer_info(self, body: JSON, upstream_model: str) -> Any:
        return anthropic.request_info(body, upstream_model)

    def translator_args(self, prepared: Prepared) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (prepared.answer,), {}

    def price_id(self) -> str | None:
        return "anthropic"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        # Claude models: 200k tokens (the 1M window is an opt-in beta).
        return FamilyDefaults(200_000, REASONING_LEVELS, "medium", ("text", "image"), "freeform")
