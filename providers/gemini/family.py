"""Gemini (`kind: gemini`, Google's Gemini API with an API key) and Vertex AI (`kind: vertex`,
Gemini models in a Google Cloud project with OAuth2 tokens) as provider families: one request
and answer translation, two ways to address and authorize it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from codexgate.policies.schema import GeminiProvider, VertexProvider
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
from codexgate.providers.gemini import vertex
from codexgate.providers.gemini.errors import retry_after_seconds, translate_error
from codexgate.providers.gemini.request import auth_headers, build, request_target
from codexgate.providers.gemini.stream import StreamDecoder, StreamTranslator
from codexgate.providers.responses import ResponseContext, request_echo
from codexgate.secrets import SecretResolver

FIXED_HEADERS = {"content-type": "application/json"}


class _GenerateContentFamily[SettingsT: GeminiProvider | VertexProvider](ProviderFamily[SettingsT]):
    """What Gemini and Vertex AI share: the generateContent body, its stream and its errors."""

    def target(self, upstream_model: str, stream: bool) -> str:
        raise NotImplementedError

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        payload, tools = build(body, upstream_model, options)
        stream = bool(body.get("stream"))
        return Prepared(
            self.target(upstream_model, stream), dict(FIXED_HEADERS), json_bytes(payload), stream, upstream_model,
            list(options.dropped_tools), list(options.dropped_params), answer=tools, echo=request_echo(body),
        )  # fmt: skip

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        ctx = answering(ctx, prepared)
        translator = StreamTranslator(ctx, tools=prepared.answer, upstream_model=prepared.upstream_model)
        return StreamBridge(StreamDecoder(), translator)

    def whole_events(self, prepared: Prepared, raw: bytes) -> Iterable[Any]:
        # generateContent answers one GenerateContentResponse: the stream's chunks in one
        answer = json.loads(raw)
        return [event for event in answer if isinstance(event, dict)] if isinstance(answer, list) else [answer]

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        return translate_error(status, raw)

    def retry_after(self, raw: bytes) -> int | None:
        return retry_after_seconds(raw)

    def price_id(self) -> str | None:
        return "google"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        # Gemini 2.5 and 3 models: a 1M-token window, images in
        return FamilyDefaults(1_048_576, REASONING_LEVELS, "medium", ("text", "image"), "freeform")


class GeminiFamily(_GenerateContentFamily[GeminiProvider]):
    kind = "gemini"
    settings_type = GeminiProvider
    secret_headers = ("x-goog-api-key",)

    def target(self, upstream_model: str, stream: bool) -> str:
        return request_target(self.settings.base_url, upstream_model, stream)[0]

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        return auth_headers(self.secret(key_index, secrets))


class VertexFamily(_GenerateContentFamily[VertexProvider]):
    kind = "vertex"
    settings_type = VertexProvider
    secret_headers = ("authorization",)

    def __init__(self, settings: VertexProvider) -> None:
        super().__init__(settings)
        # This provider's access tokens: the instance lives as long as the loaded policy
        # (`registry.family_of`), so they are fetched once per hour, not per request.
        self._auth = vertex.VertexAuth()

    def target(self, upstream_model: str, stream: bool) -> str:
        settings = self.settings
        return vertex.request_target(settings.endpoint, settings.project, settings.location, upstream_model, stream)

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        headers, prepared.issued = await self._auth.headers(self.settings, secrets)
        return headers

    def on_auth_error(self, prepared: Prepared, status: int, raw: bytes) -> bool:
        if isinstance(prepared.issued, vertex.Issued) and vertex.token_refused(status, raw):
            self._auth.refused(prepared.issued, status)
            return True  # dropped now, or already replaced by a newer one: not given again
        return False

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        status_out, body = translate_error(status, raw)
        if vertex.token_refused(status, raw) and self.settings.credentials is not None:
            # Not the operator's key to fix: a revoked or early-expired token, already dropped.
            body["error"]["message"] = (
                f"Vertex AI refused the gateway's access token (HTTP {status}); the gateway fetches a new "
                "one for the next request: retry it."
            )
        return status_out, body
