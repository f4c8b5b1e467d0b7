"""Codex's model catalog and startup fetches answered by a real gateway, and the CA hint."""

from __future__ import annotations

import socket
import ssl

import httpx2 as httpx
import pytest
from fakes.gateway import ALICE_KEY, BOB_KEY, CAROL_KEY, Gateway

# Every field of Codex 0.169's ModelInfo (the catalog built into Codex carries all of them; Codex
# refuses a catalog missing any required one). The e2e tests prove Codex accepts ours.
MODEL_INFO_FIELDS = {
    "slug", "display_name", "description", "default_reasoning_level", "supported_reasoning_levels", "shell_type",
    "visibility", "supported_in_api", "priority", "context_window", "max_context_window", "apply_patch_tool_type",
    "input_modalities", "truncation_policy", "supports_parallel_tool_calls", "experimental_supported_tools",
    "base_instructions", "model_messages", "minimal_client_version", "upgrade",
}  # fmt: skip


def _catalog(gateway: Gateway, key: str) -> httpx.Response:
    return httpx.get(f"{gateway.base_url}/codex/models", headers={"Authorization": f"Bearer {key}"})


def test_catalog_lists_the_keys_models_with_codex_fields(gateway: Gateway) -> None:
    response = _catalog(gateway, CAROL_KEY)  # carol may use mock-* only
    assert response.status_code == 200, response.text
    models = response.json()["models"]
    assert [m["slug"] for m in models] == ["mock-model"]
    assert set(models[0]) >= MODEL_INFO_FIELDS
    assert models[0]["base_instructions"] and models[0]["context_window"] > 0
    alice = [m["slug"] for m in _catalog(gateway, ALICE_KEY).json()["models"]]
    assert "mock-model" in alice and "gpt-test" in alice and "claude-mock" not in alice


def test_catalog_refuses_unknown_and_disabled_keys(gateway: Gateway) -> None:
    unknown = _catalog(gateway, "sk-cg-nobody-000000000000000000000000000000")
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"
    disabled = _catalog(gateway, BOB_KEY)
    assert disabled.status_code == 401 and disabled.json()["error"]["code"] == "key_disabled"
    assert httpx.get(f"{gateway.base_url}/codex/models").status_code == 401


def _proxy_client(gateway: Gateway) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(gateway.ca_cert))
    return httpx.Client(proxy=gateway.proxy_url, verify=context)


def test_proxy_mode_answers_codex_catalog_fetch_for_the_key(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {CAROL_KEY}"}
    with _proxy_client(gateway) as http:
        catalog = http.get("https://chatgpt.com/backend-api/codex/models?client_version=0.169.0", headers=headers)
        other = http.get("https://chatgpt.com/backend-api/wham/usage", headers=headers)
    assert catalog.status_code == 200 and [m["slug"] for m in catalog.json()["models"]] == ["mock-model"]
    # Anything else of chatgpt.com carrying the key: still refused, the key kept in (KeyGuard).
    assert other.status_code == 403 and other.json()["error"]["code"] == "virtual_key_not_forwarded"
    assert "Codex model catalog for key carol served" in gateway.wait_log("Codex model catalog for key carol")


def test_client_rejecting_the_ca_gets_a_hint_in_the_log(gateway: Gateway) -> None:
    # A client that trusts only the system CAs, through the proxy to a governed host.
    with socket.create_connection(("127.0.0.1", gateway.proxy_port)) as raw:
        raw.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        assert b" 200 " in raw.recv(4096)
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="api.openai.com")
    log = gateway.wait_log("does not trust the gateway's CA")
    hint = next(line for line in log.splitlines() if "does not trust the gateway's CA" in line)
    assert "codexgate ca" in hint and str(gateway.ca_cert) in hint
