"""Google Gemini API (temporary wrapper over providers/gemini.py)."""

from __future__ import annotations

from codexgate.policies.schema import GeminiProvider
from codexgate.providers import gemini
from codexgate.providers.family import REASONING_LEVELS, FamilyDefaults
from codexgate.providers.wrappers.module_family import ModuleFamily


class GeminiFamily(ModuleFamily):
    kind = "gemini"
    settings_type = GeminiProvider
    secret_headers = ("x-goog-api-key",)
    module = gemini

    def retry_after(self, raw: bytes) -> int | None:
        return gemini.retry_after_seconds(raw)

    def price_id(self) -> str | None:
        return "google"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        return FamilyDefaults(1_048_576, REASONING_LEVELS, "medium", ("text", "image"), "freeform")
