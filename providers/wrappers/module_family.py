"""A `ProviderFamily` over a single family module with the old translator functions
(`build_request`, `request_target`, `auth_headers`, `StreamTranslator`, `translate_response`,
`translate_error`); subclasses name the module and what differs."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, ClassVar

from codexgate.providers.base import TranslateOptions, refuse_stateful
from codexgate.providers.family import JSON, Prepared, ProviderFamily, StreamBridge, answering, json_bytes
from codexgate.providers.responses.objects import ResponseContext, request_echo
from codexgate.secrets import SecretResolver


class ModuleFamily(ProviderFamily[Any]):
    module: ClassVar[ModuleType]
    decoder: ClassVar[str] = "StreamDecoder"

    def base_url(self) -> str:
        return str(self.settings.base_url)

    def answer_info(self, body: JSON, upstream_model: str) -> Any:
        """What the module's translators take about the request (its tool map, ...)."""
        return self.module.tool_map(body)

    def translator_args(self, prepared: Prepared) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {"tools": prepared.answer, "upstream_model": prepared.upstream_model}

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        payload = self.module.build_request(body, upstream_model, options)
        stream = bool(body.get("stream"))
        url, fixed = self.module.request_target(self.base_url(), upstream_model, stream)
        return Prepared(
            url, dict(fixed), json_bytes(payload), stream, upstream_model, list(options.dropped_tools),
            list(options.dropped_params), answer=self.answer_info(body, upstream_model), echo=request_echo(body),
        )  # fmt: skip

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        headers: dict[str, str] = self.module.auth_headers(self.secret(key_index, secrets))
        return headers

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        args, kwargs = self.translator_args(prepared)
        translator = self.module.StreamTranslator(answering(ctx, prepared), *args, **kwargs)
        return StreamBridge(getattr(self.module, self.decoder)(), translator)

    def whole(self, prepared: Prepared, ctx: ResponseContext, raw: bytes) -> JSON:
        args, kwargs = self.translator_args(prepared)
        result: JSON = self.module.translate_response(json.loads(raw), answering(ctx, prepared), *args, **kwargs)
        return result

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        result: tuple[int, JSON] = self.module.translate_error(status, raw)
        return result
