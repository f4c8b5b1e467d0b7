"""OpenAI-compatible Chat Completions hosts and Azure OpenAI (temporary wrappers over
providers/chat_compat.py)."""

from __future__ import annotations

import json

from codexgate.policies.schema import AzureProvider, ChatProvider
from codexgate.providers import chat_compat
from codexgate.providers.base import TranslateOptions, refuse_stateful, sampling_params
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

# genai-prices ids of the presets that have list prices; self-hosted ones (ollama, vllm,
# lmstudio, generic) have none: the policy sets one (0 is a price too).
PRESET_PRICE_IDS = {
    "groq": "groq", "mistral": "mistral", "deepseek": "deepseek", "xai": "x-ai", "openrouter": "openrouter",
    "together": "together", "fireworks": "fireworks", "cerebras": "cerebras", "perplexity": "perplexity",
}  # fmt: skip


class _ChatTranslated(ProviderFamily[ChatProvider | AzureProvider]):
    """The answer side both share: Chat Completions back into the Responses API."""

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        translator = chat_compat.StreamTranslator(
            answering(ctx, prepared), tools=prepared.answer, upstream_model=prepared.upstream_model
        )
        return StreamBridge(chat_compat.ChatStreamDecoder(), translator)

    def whole(self, prepared: Prepared, ctx: ResponseContext, raw: bytes) -> JSON:
        result: JSON = chat_compat.translate_response(
            json.loads(raw), answering(ctx, prepared), tools=prepared.answer, upstream_model=prepared.upstream_model
        )
        return result

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        return chat_compat.translate_error(status, raw)

    def _chat(self, body: JSON, upstream_model: str, provider_name: str, preset: str) -> tuple[JSON, TranslateOptions]:
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        chat = chat_compat.build_request(body, upstream_model, options, preset=chat_compat.PRESETS[preset])
        return chat, options

    def _prepared(self, url: str, fixed: dict[str, str], chat: JSON, body: JSON, options: TranslateOptions,
                  upstream_model: str) -> Prepared:  # fmt: skip
        return Prepared(
            url, dict(fixed), json_bytes(chat), bool(chat.get("stream")), upstream_model, list(options.dropped_tools),
            list(options.dropped_params), answer=chat_compat.tool_map(body), echo=request_echo(body),
        )  # fmt: skip


class ChatFamily(_ChatTranslated):
    kind = "chat"
    settings_type = ChatProvider
    secret_headers = ("authorization",)

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        settings: ChatProvider = self.settings  # type: ignore[assignment]
        chat, options = self._chat(body, upstream_model, provider_name, settings.preset)
        url, fixed = chat_compat.request_target(settings.url, upstream_model, bool(chat.get("stream")))
        return self._prepared(url, fixed, chat, body, options, upstream_model)

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        if not self.settings.keys:
            return {}  # a local host without a key
        return chat_compat.auth_headers(self.secret(key_index, secrets))

    def price_id(self) -> str | None:
        return PRESET_PRICE_IDS.get(self.settings.preset)  # type: ignore[union-attr]


class AzureFamily(_ChatTranslated):
    kind = "azure"
    settings_type = AzureProvider
    secret_headers = ("api-key",)

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        settings: AzureProvider = self.settings  # type: ignore[assignment]
        if settings.api == "responses":
            url, fixed = chat_compat.azure_target(settings.endpoint, upstream_model, None, "responses")
            out = chat_compat.azure_responses_body(body, upstream_model)
            options = TranslateOptions(provider_name=provider_name, default_max_tokens=settings.default_max_tokens)
            sampling_params(body, options, ())  # the Responses API has none of them: all reported
            return Prepared(
                url, dict(fixed), json_bytes(out), bool(out.get("stream")), upstream_model,
                dropped_params=list(options.dropped_params), translate=False,
            )  # fmt: skip
        chat, options = self._chat(body, upstream_model, provider_name, "azure")
        url, fixed = chat_compat.azure_target(settings.endpoint, upstream_model, settings.api_version, "chat")
        return self._prepared(url, fixed, chat, body, options, upstream_model)

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        return chat_compat.azure_auth_headers(self.secret(key_index, secrets))

    def price_id(self) -> str | None:
        return "azure"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        return openai_model_defaults(upstream_model)
