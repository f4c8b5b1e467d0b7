"""AWS Bedrock (Converse / ConverseStream) as a `ProviderFamily`: the contract's face over the
package's translators."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from codexgate.policies.schema import BedrockProvider
from codexgate.providers.base import TranslateOptions, refuse_stateful
from codexgate.providers.bedrock.decode import EventStreamDecoder, converse_events
from codexgate.providers.bedrock.errors import translate_error
from codexgate.providers.bedrock.request import build_request
from codexgate.providers.bedrock.signing import auth_headers, request_target, sign_request
from codexgate.providers.bedrock.stream import StreamTranslator
from codexgate.providers.bedrock.tools import tool_names
from codexgate.providers.family import (
    GENERIC_DEFAULTS,
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
from codexgate.secrets import SecretResolver, SecretUnavailable


def _default_aws_credentials() -> tuple[str, str, str | None]:
    """(access key, secret key, session token) from the usual AWS sources: environment, shared
    config / credentials files, container or instance role (botocore's chain; may do I/O)."""
    import botocore.session

    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise SecretUnavailable("no AWS credentials found (environment, shared config or instance role)")
    frozen = found.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


class BedrockFamily(ProviderFamily[BedrockProvider]):
    kind = "bedrock"
    settings_type = BedrockProvider
    secret_headers = ("authorization", "x-amz-security-token")

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        refuse_stateful(body, provider_name)
        options = TranslateOptions(provider_name=provider_name, default_max_tokens=self.settings.default_max_tokens)
        converse = build_request(body, upstream_model, options)
        stream = bool(body.get("stream"))
        url, fixed = request_target(self.settings.endpoint, upstream_model, stream)
        return Prepared(
            url, dict(fixed), json_bytes(converse), stream, upstream_model, list(options.dropped_tools),
            list(options.dropped_params), answer=tool_names(body), echo=request_echo(body),
        )  # fmt: skip

    def key_weights(self) -> list[int]:
        # Bedrock API keys are weighed like any family's keys; one AWS key pair (or the AWS
        # default sources) is one deployment.
        return [key.weight for key in self.settings.keys]

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        """The chosen Bedrock API key as a bearer token; else SigV4 over exactly the URL and body
        that will be sent, signed anew per attempt (a signature covers host, region and body and
        is valid for minutes)."""
        settings = self.settings
        if settings.keys:
            return auth_headers(self.secret(key_index, secrets))
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            access_key = secrets.resolve(settings.access_key_id.value)
            secret_key = secrets.resolve(settings.secret_access_key.value)
            token = secrets.resolve(settings.session_token.value) if settings.session_token else None
        else:
            # botocore's chain reads files and may ask the instance metadata service: off the loop.
            access_key, secret_key, token = await asyncio.to_thread(_default_aws_credentials)
        if prepared.body is None:
            raise ValueError("a Bedrock request is always built by prepare(): there is a body to sign")
        return sign_request(prepared.url, prepared.body, settings.region, access_key, secret_key, token)

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        translator = StreamTranslator(
            answering(ctx, prepared), tools=prepared.answer, upstream_model=prepared.upstream_model
        )
        return StreamBridge(EventStreamDecoder(), translator)

    def whole_events(self, prepared: Prepared, raw: bytes) -> Iterable[Any]:
        return converse_events(json.loads(raw))

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        return translate_error(status, raw)

    def price_id(self) -> str | None:
        return "aws"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        if "claude" in upstream_model.lower():
            return FamilyDefaults(200_000, REASONING_LEVELS, "medium", ("text", "image"), "freeform")
        return GENERIC_DEFAULTS
