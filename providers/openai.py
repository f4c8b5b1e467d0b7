"""OpenAI and OpenAI-compatible hosts: pass-through, only the destination, key and model change."""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import urlsplit

from codexgate.policies.schema import OpenAIProvider
from codexgate.providers.family import REASONING_LEVELS, FamilyDefaults, Prepared, ProviderFamily
from codexgate.secrets import SecretResolver

ENDPOINT_PATHS = {"responses": "/responses", "chat": "/chat/completions"}


@functools.lru_cache(maxsize=256)  # a few providers' URLs, asked on every request
def upstream_target(base_url: str, endpoint: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of `endpoint` at `base_url` (which ends in /v1 or similar)."""
    parts = urlsplit(base_url)
    scheme = parts.scheme
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname or "", port, parts.path.rstrip("/") + ENDPOINT_PATHS[endpoint]


def openai_model_defaults(upstream_model: str) -> FamilyDefaults:
    """Codex catalog defaults of OpenAI models (OpenAI itself, Azure deployments)."""
    name = upstream_model.lower()
    if name.startswith("gpt-4.1"):
        window = 1_047_576
    elif name.startswith(("o1", "o3", "o4")):
        window = 200_000
    elif name.startswith(("gpt-4o", "gpt-4")):
        window = 128_000
    else:
        window = 272_000  # the GPT-5 family, as Codex's own catalog gives it
    return FamilyDefaults(window, REASONING_LEVELS, "medium", ("text", "image"), "freeform")


def auth_headers(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


class OpenAIFamily(ProviderFamily[OpenAIProvider]):
    kind = "openai"
    settings_type = OpenAIProvider
    secret_headers = ("authorization", "openai-organization", "openai-project")
    passthrough = True
    endpoints = frozenset({"responses", "chat"})

    def prepare(self, body: dict[str, Any], upstream_model: str, provider_name: str,
                endpoint: str = "responses") -> Prepared:  # fmt: skip
        """The client's request at this host with the deployment's model; the body is re-encoded
        only when something in it changed (bodies of 40–80 KB are the norm for Codex)."""
        stream = bool(body.get("stream"))
        changed = body.get("model") != upstream_model
        if changed:
            body = dict(body, model=upstream_model)
        if endpoint == "chat" and stream and not (body.get("stream_options") or {}).get("include_usage"):
            # Without it a Chat stream carries no usage and the request could not be accounted.
            body = dict(body, stream_options={**(body.get("stream_options") or {}), "include_usage": True})
            changed = True
        scheme, host, port, path = upstream_target(self.settings.base_url, endpoint)
        # The stream is read as it passes; a compressed stream could not be.
        headers = {"accept-encoding": "identity"} if stream else {}
        content = json.dumps(body).encode() if changed else None
        return Prepared(f"{scheme}://{host}:{port}{path}", headers, content, stream, upstream_model, translate=False)

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        return auth_headers(self.secret(key_index, secrets))

    def price_id(self) -> str | None:
        return "openai"

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        return openai_model_defaults(upstream_model)
