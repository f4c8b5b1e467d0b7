"""Anthropic's Messages API as a provider family (`kind: anthropic`): the contract of
`providers/family.py` over this package's translators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from codexgate.policies.schema import AnthropicProvider
from codexgate.providers.anthropic.errors import translate_error
from codexgate.providers.anthropic.request import auth_headers, build_request, request_target
from codexgate.providers.anthropic.stream import StreamDecoder, StreamTranslator, TextDeltaBridge
from codexgate.providers.anthropic.tools import request_info
from codexgate.providers.anthropic.whole import message_events
from codexgate.providers.base import TranslateOptions, refuse_stateful
from codexgate.providers.family import (
    JSON,
    REASONING_LEVELS,
    FamilyDefaults,
    Prepared,
    ProviderFamily,
    StreamBridge,
    answering,
    json_bytes,
)
from codexgate.providers.responses import ResponseContext, request_echo
from codexgate.secrets import SecretResolver


class AnthropicFamily(ProviderFamily[AnthropicProvider]):
    kind = "anthropic"
    settings_type = AnthropicProvider
    secret_headers = ("x-api-key",)

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        payload = build_request(body, upstream_model, options)
        stream = bool(body.get("stream"))
        url, fixed = request_target(str(self.settings.base_url), upstream_model, stream)
        return Prepared(
            url, dict(fixed), json_bytes(payload), stream, upstream_model, list(options.dropped_tools),
            list(options.dropped_params), answer=request_info(body, upstream_model), echo=request_echo(body),
        )  # fmt: skip

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        return auth_headers(self.secret(key_index, secrets))

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        return TextDeltaBridge(StreamDecoder(), StreamTranslator(answering(ctx, prepared), prepared.answer))

    def whole_events(self, prepared: Prepared, raw: bytes) -> Iterator[JSON]:
        message: Any = json.loads(raw)
        if not isinstance(message, dict):
            raise ValueError("the Anthropic answer is not a JSON object")
        return message_events(message)

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        return translate_error(status, raw)

    def price_id(self) -> str | None:
        return "anthropic"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        # Claude models: 200k tokens (the 1M window is an opt-in beta).
        return FamilyDefaults(200_000, REASONING_LEVELS, "medium", ("text", "image"), "freeform")
