"""OpenAI and OpenAI-compatible hosts: pass-through, only the destination, key and model change."""

from __future__ import annotations

from urllib.parse import urlsplit

ENDPOINT_PATHS = {"responses": "/responses", "chat": "/chat/completions"}


def upstream_target(base_url: str, endpoint: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of `endpoint` at `base_url` (which ends in /v1 or similar)."""
    parts = urlsplit(base_url)
    scheme = parts.scheme
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname or "", port, parts.path.rstrip("/") + ENDPOINT_PATHS[endpoint]


def auth_headers(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}
