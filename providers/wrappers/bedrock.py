"""AWS Bedrock Converse (temporary wrapper over providers/bedrock.py)."""

from __future__ import annotations

from typing import Any

from codexgate.policies.schema import BedrockProvider
from codexgate.providers import bedrock
from codexgate.providers.family import GENERIC_DEFAULTS, JSON, REASONING_LEVELS, FamilyDefaults, Prepared
from codexgate.providers.wrappers.module_family import ModuleFamily
from codexgate.secrets import SecretResolver, SecretUnavailable


class BedrockFamily(ModuleFamily):
    kind = "bedrock"
    settings_type = BedrockProvider
    secret_headers = ("authorization", "x-amz-security-token")
    module = bedrock
    decoder = "EventStreamDecoder"

    def base_url(self) -> str:
        return str(self.settings.endpoint)

    def answer_info(self, body: JSON, upstream_model: str) -> Any:
        return bedrock.tool_names(body)

    def key_weights(self) -> list[int]:
        return []  # one key pair (or the AWS default sources), no key list

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        """SigV4 over exactly the URL and body that will be sent (signed anew per attempt)."""
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
        assert prepared.body is not None
        return bedrock.sign_request(prepared.url, prepared.body, settings.region, access_key, secret_key, token)

    def price_id(self) -> str | None:
        return "aws"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        if "claude" in upstream_model.lower():
            return FamilyDefaults(200_000, REASONING_LEVELS, "medium", ("text", "image"), "freeform")
        return GENERIC_DEFAULTS
