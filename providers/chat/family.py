"""The Chat Completions families: `chat` (OpenAI-compatible hosts, by preset) and `azure` (Azure
OpenAI: a Chat Completions deployment, translated like any chat host, or the v1 Responses API,
passed through). Registered in `providers/registry.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from codexgate.policies.schema import AzureProvider, ChatProvider
from codexgate.providers.base import TranslateOptions, refuse_stateful, sampling_params
from codexgate.providers.chat.azure import azure_auth_headers, azure_responses_body, azure_target
from codexgate.providers.chat.errors import translate_error
from codexgate.providers.chat.presets import PRESETS
from codexgate.providers.chat.request import auth_headers, build_request, request_target
from codexgate.providers.chat.stream import ChatStreamDecoder, StreamTranslator
from codexgate.providers.chat.tools import tool_map
from codexgate.providers.chat.whole import completion_chunks
from codexgate.providers.family import (
    JSON,
    FamilyDefaults,
    Prepared,
    ProviderFamily,
    StreamBridge,
    answering,
    json_bytes,
)
from codexgate.providers.openai import openai_model_defaults
from codexgate.providers.responses.objects import ResponseContext, request_echo
from codexgate.secrets import SecretResolver

__all__ = ["AzureFamily", "ChatFamily"]


class _ChatCompletions[SettingsT: (ChatProvider, AzureProvider)](ProviderFamily[SettingsT]):
    """What both families share: a Chat Completions request, and its answer back into the
    Responses API (the stream translator; a whole completion read as its stream)."""

    def _translated(self, body: JSON, upstream_model: str, provider_name: str, preset: str,
                    target: tuple[str, dict[str, str]]) -> Prepared:  # fmt: skip
        """The chat request for `preset`'s host at `target` (URL, fixed headers)."""
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        chat = build_request(body, upstream_model, options, preset=PRESETS[preset])
        url, fixed = target
        return Prepared(
            url, dict(fixed), json_bytes(chat), bool(chat.get("stream")), upstream_model, list(options.dropped_tools),
            list(options.dropped_params), answer=tool_map(body), echo=request_echo(body),
        )  # fmt: skip

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        translator = StreamTranslator(
            answering(ctx, prepared), tools=prepared.answer, upstream_model=prepared.upstream_model
        )
        return StreamBridge(ChatStreamDecoder(), translator)

    def whole_events(self, prepared: Prepared, raw: bytes) -> Iterable[Any]:
        return completion_chunks(json.loads(raw))

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        return translate_error(status, raw)


class ChatFamily(_ChatCompletions[ChatProvider]):
    kind = "chat"
    settings_type = ChatProvider
    secret_headers = ("authorization",)

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        target = request_target(self.settings.url, upstream_model, bool(body.get("stream")))
        return self._translated(body, upstream_model, provider_name, self.settings.preset, target)

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        if not self.settings.keys:
            return {}  # a local host without a key (Ollama, vLLM, LM Studio)
        return auth_headers(self.secret(key_index, secrets))

    def price_id(self) -> str | None:
        return PRESETS[self.settings.preset].price_id


class AzureFamily(_ChatCompletions[AzureProvider]):
    kind = "azure"
    settings_type = AzureProvider
    secret_headers = ("api-key",)

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        settings = self.settings
        if settings.api == "chat":
            target = azure_target(settings.endpoint, upstream_model, settings.api_version, "chat")
            return self._translated(body, upstream_model, provider_name, "azure", target)
        # The v1 Responses API: Codex's request as it is (Azure keeps previous responses itself).
        url, fixed = azure_target(settings.endpoint, upstream_model, None, "responses")
        out = azure_responses_body(body, upstream_model)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=settings.default_max_tokens)
        sampling_params(body, options, ())  # the Responses API has none of them: all reported
        return Prepared(
            url, dict(fixed), json_bytes(out), bool(out.get("stream")), upstream_model,
            dropped_params=list(options.dropped_params), translate=False,
        )  # fmt: skip

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        return azure_auth_headers(self.secret(key_index, secrets))

    def price_id(self) -> str | None:
        return "azure"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        return openai_model_defaults(upstream_model)  # Azure deploys OpenAI's own models
