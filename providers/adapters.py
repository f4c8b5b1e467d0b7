"""One uniform face per translating provider family, for the addons to drive.

Each family module (`anthropic`, `gemini`, `bedrock`, `chat_compat`) has its own translators
and quirks; an `Adapter` wraps them into: prepare the upstream request, add credentials,
translate a streamed answer chunk by chunk, translate a whole answer, translate an error.
Pure apart from credential lookup, which goes through the resolver it is handed.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from codexgate.policies.schema import (
    AnthropicProvider,
    AzureProvider,
    BedrockProvider,
    ChatProvider,
    GeminiProvider,
)
from codexgate.providers.base import (
    ResponseContext,
    TranslateOptions,
    refuse_stateful,
    request_echo,
    sampling_params,
)
from codexgate.secrets import SecretResolver
from codexgate.sse import encode_event
from codexgate.usage import Usage

JSON = dict[str, Any]

# Headers Codex adds for OpenAI; other providers have no use for them (and should not learn
# Codex's installation and session identifiers).
CODEX_HEADERS = (
    "session-id", "thread-id", "x-client-request-id", "x-codex-turn-metadata", "x-codex-window-id",
    "x-codex-beta-features", "x-openai-internal-codex-responses-lite", "originator", "version",
    "openai-beta", "openai-organization", "openai-project", "accept-encoding", "traceparent", "tracestate",
)  # fmt: skip


@dataclasses.dataclass
class Prepared:
    """The upstream request an adapter built, and what its answer's translation needs."""

    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    upstream_model: str
    dropped_tools: list[str]
    translate: bool = True  # False: the answer is already a Responses answer (Azure v1 Responses)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Request parameters the provider has no counterpart for (see TranslateOptions.dropped_params).
    dropped_params: list[str] = dataclasses.field(default_factory=list)


class StreamBridge:
    """Provider stream bytes in, Responses SSE bytes out; chunk boundaries anywhere."""

    def __init__(self, decoder: Any, translator: Any) -> None:
        self._decoder = decoder
        self._translator = translator
        self.events_out = 0

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            for translated in self._translator.feed(event):
                out.append(encode_event(translated))
        self.events_out += len(out)
        return b"".join(out)

    def finish(self) -> bytes:
        out = [encode_event(event) for event in self._translator.finish()]
        self.events_out += len(out)
        return b"".join(out)

    @property
    def usage(self) -> Usage | None:
        usage: Usage | None = self._translator.usage
        return usage

    @property
    def outcome(self) -> str | None:
        outcome: str | None = self._translator.outcome
        return outcome


class Adapter(Protocol):
    def prepare(self, body: JSON, upstream_model: str, provider_name: str) -> Prepared: ...

    def credentials(self, prepared: Prepared, secrets: SecretResolver) -> dict[str, str]: ...

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge: ...

    def whole(self, prepared: Prepared, ctx: ResponseContext, raw: bytes) -> JSON: ...

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]: ...


def new_context(model: str, provider_name: str) -> ResponseContext:
    return ResponseContext(
        response_id=f"resp_{uuid.uuid4().hex}", model=model, provider_name=provider_name, created_at=int(time.time())
    )


def _first_secret(keys: list[Any], secrets: SecretResolver) -> str:
    return secrets.resolve(keys[0].value)


def _answering(ctx: ResponseContext, prepared: Prepared) -> ResponseContext:
    """`ctx` with the request fields the answer echoes (tools, tool_choice, ...)."""
    echo = prepared.extra.get("echo")
    return dataclasses.replace(ctx, echo=echo) if echo else ctx


def _json(body: JSON) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@dataclasses.dataclass
class ChatAdapter:
    settings: ChatProvider | AzureProvider

    def prepare(self, body: JSON, upstream_model: str, provider_name: str) -> Prepared:
        from codexgate.providers import chat as chat_compat

        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        if isinstance(self.settings, AzureProvider):
            if self.settings.api == "responses":
                url, fixed = chat_compat.azure_target(self.settings.endpoint, upstream_model, None, "responses")
                out = chat_compat.azure_responses_body(body, upstream_model)
                sampling_params(body, options, ())  # the Responses API has none of them: all reported
                return Prepared(
                    url, dict(fixed), _json(out), bool(out.get("stream")), upstream_model, [], False,
                    dropped_params=list(options.dropped_params),
                )  # fmt: skip
            refuse_stateful(body, provider_name)
            preset = chat_compat.PRESETS["azure"]
            chat = chat_compat.build_request(body, upstream_model, options, preset=preset)
            url, fixed = chat_compat.azure_target(
                self.settings.endpoint, upstream_model, self.settings.api_version, "chat"
            )
        else:
            refuse_stateful(body, provider_name)
            preset = chat_compat.PRESETS[self.settings.preset]
            chat = chat_compat.build_request(body, upstream_model, options, preset=preset)
            url, fixed = chat_compat.request_target(self.settings.url, upstream_model, bool(chat.get("stream")))
        return Prepared(
            url, dict(fixed), _json(chat), bool(chat.get("stream")), upstream_model, list(options.dropped_tools),
            extra={"tools": chat_compat.tool_map(body), "echo": request_echo(body)},
            dropped_params=list(options.dropped_params),
        )  # fmt: skip

    def credentials(self, prepared: Prepared, secrets: SecretResolver) -> dict[str, str]:
        from codexgate.providers import chat as chat_compat

        if not self.settings.keys:
            return {}
        secret = _first_secret(self.settings.keys, secrets)
        if isinstance(self.settings, AzureProvider):
            return chat_compat.azure_auth_headers(secret)
        return chat_compat.auth_headers(secret)

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        from codexgate.providers import chat as chat_compat

        translator = chat_compat.StreamTranslator(
            _answering(ctx, prepared), tools=prepared.extra["tools"], upstream_model=prepared.upstream_model
        )
        return StreamBridge(chat_compat.ChatStreamDecoder(), translator)

    def whole(self, prepared: Prepared, ctx: ResponseContext, raw: bytes) -> JSON:
        from codexgate.providers import chat as chat_compat

        result: JSON = chat_compat.translate_response(
            json.loads(raw),
            _answering(ctx, prepared),
            tools=prepared.extra["tools"],
            upstream_model=prepared.upstream_model,
        )
        return result

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        from codexgate.providers import chat as chat_compat

        return chat_compat.translate_error(status, raw)


class FamilyAdapter:
    """A family module with the common translator interface (`providers/base.py`): its request
    builder, stream decoder and translators; subclasses say only what differs."""

    module_name = ""
    decoder_name = "StreamDecoder"

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @property
    def module(self) -> Any:
        import importlib

        return importlib.import_module(f"codexgate.providers.{self.module_name}")

    def base_url(self) -> str:
        return str(self.settings.base_url)

    def extra(self, body: JSON, upstream_model: str) -> dict[str, Any]:
        """What the answer's translation needs to know about the request (tool names, ...)."""
        return {"tools": self.module.tool_map(body)}

    def translator_args(self, prepared: Prepared) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {"tools": prepared.extra["tools"], "upstream_model": prepared.upstream_model}

    def prepare(self, body: JSON, upstream_model: str, provider_name: str) -> Prepared:
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        payload = self.module.build_request(body, upstream_model, options)
        stream = bool(body.get("stream"))
        url, fixed = self.module.request_target(self.base_url(), upstream_model, stream)
        return Prepared(
            url, dict(fixed), _json(payload), stream, upstream_model, list(options.dropped_tools),
            extra={**self.extra(body, upstream_model), "echo": request_echo(body)},
            dropped_params=list(options.dropped_params),
        )  # fmt: skip

    def credentials(self, prepared: Prepared, secrets: SecretResolver) -> dict[str, str]:
        headers: dict[str, str] = self.module.auth_headers(_first_secret(self.settings.keys, secrets))
        return headers

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        args, kwargs = self.translator_args(prepared)
        decoder = getattr(self.module, self.decoder_name)()
        return StreamBridge(decoder, self.module.StreamTranslator(_answering(ctx, prepared), *args, **kwargs))

    def whole(self, prepared: Prepared, ctx: ResponseContext, raw: bytes) -> JSON:
        args, kwargs = self.translator_args(prepared)
        result: JSON = self.module.translate_response(json.loads(raw), _answering(ctx, prepared), *args, **kwargs)
        return result

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        result: tuple[int, JSON] = self.module.translate_error(status, raw)
        return result


class GeminiAdapter(FamilyAdapter):
    module_name = "gemini"

    def retry_after(self, raw: bytes) -> int | None:
        seconds: int | None = self.module.retry_after_seconds(raw)
        return seconds


class AnthropicAdapter(FamilyAdapter):
    module_name = "anthropic"

    def extra(self, body: JSON, upstream_model: str) -> dict[str, Any]:
        return {"info": self.module.request_info(body, upstream_model)}

    def translator_args(self, prepared: Prepared) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (prepared.extra["info"],), {}


class BedrockAdapter(FamilyAdapter):
    module_name = "bedrock"
    decoder_name = "EventStreamDecoder"

    def base_url(self) -> str:
        return str(self.settings.endpoint)

    def extra(self, body: JSON, upstream_model: str) -> dict[str, Any]:
        return {"tools": self.module.tool_names(body)}

    def credentials(self, prepared: Prepared, secrets: SecretResolver) -> dict[str, str]:
        """SigV4 over exactly the URL and body that will be sent (signed anew per attempt)."""
        from codexgate.secrets import SecretUnavailable

        settings: BedrockProvider = self.settings
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            access_key = secrets.resolve(settings.access_key_id.value)
            secret_key = secrets.resolve(settings.secret_access_key.value)
            token = secrets.resolve(settings.session_token.value) if settings.session_token else None
        else:
            import botocore.session

            found = botocore.session.get_session().get_credentials()
            if found is None:
                raise SecretUnavailable("no AWS credentials found (environment, shared config or instance role)")
            frozen = found.get_frozen_credentials()
            access_key, secret_key, token = frozen.access_key, frozen.secret_key, frozen.token
        headers: dict[str, str] = self.module.sign_request(
            prepared.url, prepared.body, settings.region, access_key, secret_key, token
        )
        return headers


# kind -> adapter factory; families register here as their modules land.
ADAPTERS: dict[str, Callable[[Any], Adapter]] = {
    "chat": ChatAdapter,
    "azure": ChatAdapter,
    "gemini": GeminiAdapter,
    "bedrock": BedrockAdapter,
    "anthropic": AnthropicAdapter,
}


def adapter_for(settings: Any) -> Adapter | None:
    factory = ADAPTERS.get(getattr(settings, "kind", ""))
    return factory(settings) if factory else None


__all__ = [
    "ADAPTERS",
    "CODEX_HEADERS",
    "AnthropicProvider",
    "BedrockProvider",
    "GeminiProvider",
    "Prepared",
    "StreamBridge",
    "adapter_for",
    "new_context",
]
