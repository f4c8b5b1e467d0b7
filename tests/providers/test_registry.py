"""The provider registry: one family per policy kind, and what the addons read from it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes.sdk_validation import valid_response

from codexgate.policies.loader import parse_policy
from codexgate.policies.schema import AnthropicProvider, OpenAIProvider, SecretRef
from codexgate.providers.family import Prepared, ProviderFamily, StreamBridge, new_context
from codexgate.providers.registry import (
    CLIENT_CREDENTIAL_FIELDS,
    FAMILIES,
    SECRET_HEADERS,
    check_registry,
    family_for,
    family_of,
    kinds,
)
from codexgate.providers.responses import EmittingTranslator, ResponseContext
from codexgate.usage import Usage


def test_every_policy_kind_has_exactly_its_family() -> None:
    check_registry()
    assert set(kinds()) == {"openai", "mock", "anthropic", "gemini", "vertex", "bedrock", "chat", "azure"}
    settings = AnthropicProvider(kind="anthropic", keys=[SecretRef(value="env:K")])
    family = family_for(settings)
    assert family.kind == "anthropic" and family.settings is settings
    assert family_for(OpenAIProvider(kind="openai", keys=[SecretRef(value="env:K")])).passthrough


def test_a_provider_has_one_family_per_loaded_policy() -> None:
    """Where a family's runtime state (Vertex's tokens) lives: one instance per provider for as
    long as the loaded policy, another provider's apart, a reloaded policy's new."""
    text = """\
providers:
  one: {kind: vertex, project: acme-prod-1, credentials: {value: env:A}}
  two: {kind: vertex, project: acme-prod-1, credentials: {value: env:A}}
models:
  m: {routes: [{provider: one}, {provider: two}]}
"""
    loaded, reloaded = parse_policy(text), parse_policy(text)
    one = family_of(loaded, "one")
    assert family_of(loaded, "one") is one and one.settings is loaded.policy.providers["one"]
    assert family_of(loaded, "two") is not one  # same settings, another provider: its own state
    assert family_of(reloaded, "one") is not one and family_of(reloaded, "one") is family_of(reloaded, "one")


def test_every_familys_secret_headers_are_stripped_from_clients_and_masked() -> None:
    for family in FAMILIES.values():
        for name in family.secret_headers:
            assert name in SECRET_HEADERS
            assert name.encode() in CLIENT_CREDENTIAL_FIELDS
    assert {"x-api-key", "x-goog-api-key", "api-key", "x-amz-security-token", "authorization"} <= set(SECRET_HEADERS)


class _LinesDecoder:
    """A toy provider framing: one JSON event per line."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Any]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


class _LinesTranslator(EmittingTranslator):
    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._message = self.emit.message()

    def feed(self, event: Any) -> list[dict[str, Any]]:
        self.emit.start()
        if "text" in event:
            self._message.delta(event["text"])
        if "stop" in event:
            self.emit.complete(Usage(input_tokens=3, output_tokens=event["stop"]))
        return self.emit.take()


class _LinesFamily(ProviderFamily[OpenAIProvider]):
    """A family written against the contract alone: its whole answer is derived from its stream."""

    kind = "lines"
    settings_type = OpenAIProvider

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        return StreamBridge(_LinesDecoder(), _LinesTranslator(ctx))

    def whole_events(self, prepared: Prepared, raw: bytes) -> list[Any]:
        answer = json.loads(raw)
        return [{"text": answer["text"]}, {"stop": answer["tokens"]}]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_a_whole_answer_is_the_stream_translators_final_response(chunk: int) -> None:
    family = _LinesFamily(OpenAIProvider(kind="openai", keys=[SecretRef(value="env:K")]))
    prepared = Prepared("http://x", {}, b"{}", False, "m")
    ctx = new_context("m", "p")
    whole = family.whole(prepared, ctx, b'{"text": "Hi there", "tokens": 2}')
    valid_response(whole)
    stream = b'{"text": "Hi"}\n{"text": " there"}\n{"stop": 2}\n'
    bridge = family.stream(prepared, ctx)
    sse = b"".join(bridge.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + bridge.finish()
    completed = [json.loads(line[6:]) for line in sse.split(b"\n") if b'"response.completed"' in line]
    assert completed[0]["response"]["output"][0]["content"] == whole["output"][0]["content"]
    assert whole["usage"]["output_tokens"] == 2 and bridge.outcome == "completed"


def test_a_stream_cut_short_is_failed_by_the_translator_base() -> None:
    family = _LinesFamily(OpenAIProvider(kind="openai", keys=[SecretRef(value="env:K")]))
    bridge = family.stream(Prepared("http://x", {}, b"{}", False, "m"), new_context("m", "p"))
    sse = bridge.feed(b'{"text": "Hal') + bridge.feed(b'f"}\n') + bridge.finish()
    assert bridge.outcome == "failed" and sse.count(b"event: response.failed") == 1
