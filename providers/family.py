"""The provider contract: what a provider family gives the gateway, and nothing more.

The addons (`Route`, `Credentials`, `Translate`, `MockUpstream`, `Resilience`, `Limits`) drive
every provider through `ProviderFamily` and the registry (`providers/registry.py`), never by its
settings class. A family is one package `providers/<family>/` whose `family.py` subclasses
`ProviderFamily`, registered with one line in the registry.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from codexgate.providers.responses.objects import ResponseContext
from codexgate.secrets import SecretResolver
from codexgate.sse import encode_events
from codexgate.usage import Usage

__all__ = [
    "CODEX_HEADERS",
    "GENERIC_DEFAULTS",
    "REASONING_LEVELS",
    "FamilyDefaults",
    "Prepared",
    "ProviderFamily",
    "StreamBridge",
    "StreamDecoder",
    "StreamTranslator",
    "answering",
    "json_bytes",
    "new_context",
]

JSON = dict[str, Any]

# Headers Codex adds for OpenAI; other providers have no use for them (and should not learn
# Codex's installation and session identifiers). Pass-through families keep them.
CODEX_HEADERS = (
    "session-id", "thread-id", "x-client-request-id", "x-codex-turn-metadata", "x-codex-window-id",
    "x-codex-beta-features", "x-openai-internal-codex-responses-lite", "originator", "version",
    "openai-beta", "openai-organization", "openai-project", "accept-encoding", "traceparent", "tracestate",
)  # fmt: skip


@dataclasses.dataclass
class Prepared:
    """The upstream request a family built for one attempt, and what its answer needs."""

    url: str
    headers: dict[str, str]  # fixed headers of the family (versions, content negotiation), no credentials
    body: bytes | None  # None: the body the flow already carries (a pass-through family that changed nothing)
    stream: bool
    upstream_model: str
    dropped_tools: list[str] = dataclasses.field(default_factory=list)  # tools it cannot serve (header, log)
    dropped_params: list[str] = dataclasses.field(default_factory=list)  # parameters without a counterpart
    translate: bool = True  # False: the answer is already what the client asked for (pass-through)
    answer: Any = None  # what the family's translator needs about the request (tool names, echo, ...)
    echo: JSON = dataclasses.field(default_factory=dict)  # request fields the `response` repeats
    # What `credentials` noted about the credentials it gave this attempt (Vertex: which cached
    # token), read back by `on_auth_error`; never a secret itself.
    issued: Any = None


@dataclasses.dataclass(frozen=True)
class FamilyDefaults:
    """What Codex's model catalog says about a model the policy describes no further."""

    context_window: int
    reasoning_levels: tuple[str, ...]
    default_reasoning_level: str
    input_modalities: tuple[str, ...]
    apply_patch: str  # "freeform" (its own grammar-constrained tool) or "shell" (patches via the shell tool)


REASONING_LEVELS = ("low", "medium", "high")
# What Codex is told about a model of a family that says nothing more (chat hosts, mock, ...).
GENERIC_DEFAULTS = FamilyDefaults(128_000, REASONING_LEVELS, "medium", ("text",), "freeform")


class StreamDecoder(Protocol):
    """Provider stream bytes (any chunking) → decoded provider events."""

    def feed(self, chunk: bytes) -> list[Any]: ...


class StreamTranslator(Protocol):
    """Decoded provider events → Responses stream events (a `ResponseEmitter` underneath).

    `finish()` is called once when the provider stream ended and emits the terminal event
    (`response.failed` for a stream cut short) unless one was already emitted. After the terminal
    event, `outcome` ("completed" | "incomplete" | "failed"), `usage` and `response` (the final
    `response` object) are set."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def outcome(self) -> str | None: ...

    @property
    def response(self) -> JSON | None: ...

    def feed(self, event: Any) -> list[JSON]: ...

    def finish(self) -> list[JSON]: ...


class StreamBridge:
    """Provider stream bytes in, Responses SSE bytes out; chunk boundaries anywhere."""

    __slots__ = ("_decoder", "_translator", "events_out")

    def __init__(self, decoder: StreamDecoder, translator: StreamTranslator) -> None:
        self._decoder = decoder
        self._translator = translator
        self.events_out = 0

    def feed(self, chunk: bytes) -> bytes:
        # `feed_events` written out, not called: this runs per chunk of every translated stream.
        events = self._decoder.feed(chunk)
        if not events:
            return b""
        translate = self._translator.feed
        # Translated first, then encoded together: the encoder may write them twice (its fallback).
        out = [translated for event in events for translated in translate(event)]
        self.events_out += len(out)
        return encode_events(out)

    def finish(self) -> bytes:
        return encode_events(self.finish_events())

    def feed_events(self, chunk: bytes) -> list[JSON]:
        """`feed`'s events, not encoded (for a relay that writes them in another form)."""
        events = self._decoder.feed(chunk)
        if not events:
            return []
        translate = self._translator.feed
        out = [translated for event in events for translated in translate(event)]
        self.events_out += len(out)
        return out

    def finish_events(self) -> list[JSON]:
        out = self._translator.finish()
        self.events_out += len(out)
        return out

    @property
    def translator(self) -> StreamTranslator:
        return self._translator

    @property
    def usage(self) -> Usage | None:
        return self._translator.usage

    @property
    def outcome(self) -> str | None:
        return self._translator.outcome


class ProviderFamily[SettingsT: BaseModel]:
    """One kind of provider (`kind` in the policy), an instance per configured provider.

    The gateway sends a provider's requests through one instance per loaded policy
    (`registry.family_of(policy, name)`, kept with the `CompiledPolicy`): what a family keeps
    between requests (Vertex's OAuth access tokens) lives in its own attributes, is never shared
    with another provider, and goes with its policy — a reload builds new instances from the new
    settings, so nothing cached under the old ones is used again. `registry.family_for(settings)`
    builds a throwaway instance, for questions about the settings alone (price id, key weights,
    catalog defaults).

    The gateway uses a family like this, and a family promises the following:

    Identity (class attributes, read without an instance):
        `kind`: the policy's `kind:` value. `settings_type`: its pydantic settings model, defined in
        `codexgate.policies.schema` (policies never import providers: the registry checks the two
        agree). `secret_headers`: the header names its credentials travel in; the gateway strips
        them from client requests and masks them in mitmweb, traces and saved flows.
        `passthrough`: True when the provider already speaks what the client speaks (OpenAI,
        Azure's Responses API): the answer is not translated and Codex's own headers are kept.
        `answers_locally`: True for a family answered inside the gateway (mock): never relayed,
        no credentials; `answer_locally(body, endpoint, stream, model, raw_body)` gives the
        answer's bytes and content type. `endpoints`: the client endpoints it serves natively ("responses",
        "chat"); a Chat Completions request to a family serving only "responses" is translated
        to a Responses request first (`chat_ingress`) and its answer back.

    `prepare(body, upstream_model, provider_name, endpoint) -> Prepared`
        The upstream request for one attempt: URL, fixed headers, body bytes, stream flag, the
        tools and parameters it had to drop, and in `answer`/`echo` whatever its translator
        needs. Pure (no I/O), called anew per attempt (a failover attempt on another provider
        gets its own). Raises `UnsupportedRequest` (answered 400) for a request it cannot serve
        faithfully, never sends half of it.

    `key_weights() -> list[int]`
        The weights of its keys (`keys[].weight` in the policy), in order; empty when the family
        has no key list (AWS default credentials, local Chat hosts). The gateway picks a key per
        request by weight and fails over to the others like any other deployment.

    `async credentials(prepared, key_index, secrets) -> dict[str, str]`
        The auth headers for the chosen key, over exactly the prepared request (SigV4 signs URL
        and body). Async so a family can do I/O (an OAuth token fetch) — it should cache, since
        this runs per attempt; a family that needs none returns without awaiting anything.
        Raises `SecretUnavailable` when the key cannot be read (answered 503, logged). A family
        that caches credentials notes in `prepared.issued` which ones it gave (never the secret).

    `on_auth_error(prepared, status, raw) -> bool`
        The provider refused the credentials given for `prepared` (HTTP 401 or 403, `raw` its
        error body; direct or relayed, translated or not). A family that caches credentials drops
        the refused ones — only those, not newer ones `prepared.issued` does not name — so the
        next request gets fresh ones, and returns True: those credentials will not be given again
        (the failover relay then makes the attempt once more, with fresh ones; a request sent
        directly is answered `error(status, raw)`). A refusal that fresh credentials cannot cure
        (a missing permission) changes nothing and returns False. Never raises; the default
        returns False.

    `stream(prepared, ctx) -> StreamBridge`
        A decoder for the provider's framing (SSE lines, AWS event-stream frames) and a
        `StreamTranslator` for its events; any split of the bytes gives the same events.

    `whole(prepared, ctx, raw) -> dict`
        A whole (non-streamed) provider answer as a Responses `response` object, DERIVED from the
        stream translator: `whole_events` turns the answer into the events its stream would have
        carried, the same translator consumes them, its final `response` is the answer. A family
        overrides `whole_events`, not `whole`.

    `error(status, raw) -> (status, body)`
        A provider error → the client's status and OpenAI-shaped `{"error": {...}}` body, with a
        code Codex understands (`rate_limit_exceeded`, `context_length_exceeded`,
        `insufficient_quota`, `server_error`, `invalid_request_error`); never a provider secret.

    `retry_after(raw) -> int | None`
        Seconds to wait that the provider states in its error body (Gemini's RetryInfo) when it
        sends no Retry-After header; Codex retries a 429 only with one.

    `price_id() -> str | None`
        The provider id genai-prices knows its models under ("anthropic", "google", ...), None
        where there is no list price (self-hosted hosts: the policy sets one).

    `codex_defaults(upstream_model) -> FamilyDefaults`
        What Codex's model catalog says about a model the policy describes no further (context
        window, reasoning levels, input modalities, apply_patch flavour).
    """

    kind: ClassVar[str]
    settings_type: ClassVar[type[BaseModel]]
    secret_headers: ClassVar[tuple[str, ...]] = ()
    passthrough: ClassVar[bool] = False
    answers_locally: ClassVar[bool] = False
    endpoints: ClassVar[frozenset[str]] = frozenset({"responses"})

    __slots__ = ("settings",)

    def __init__(self, settings: SettingsT) -> None:
        self.settings = settings

    # -- request --------------------------------------------------------------------------------

    def prepare(self, body: JSON, upstream_model: str, provider_name: str, endpoint: str = "responses") -> Prepared:
        raise NotImplementedError

    def key_weights(self) -> list[int]:
        keys = getattr(self.settings, "keys", None)
        return [key.weight for key in keys] if isinstance(keys, list) else []

    async def credentials(self, prepared: Prepared, key_index: int, secrets: SecretResolver) -> dict[str, str]:
        return {}

    def on_auth_error(self, prepared: Prepared, status: int, raw: bytes) -> bool:
        return False

    def secret(self, key_index: int, secrets: SecretResolver) -> str:
        """The chosen key's secret (`keys[key_index]`, the first when out of range)."""
        keys: list[Any] = self.settings.keys  # type: ignore[attr-defined]
        return secrets.resolve(keys[key_index if 0 <= key_index < len(keys) else 0].value)

    # -- answer ---------------------------------------------------------------------------------

    def stream(self, prepared: Prepared, ctx: ResponseContext) -> StreamBridge:
        raise NotImplementedError

    def whole_events(self, prepared: Prepared, raw: bytes) -> Iterable[Any]:
        """A whole provider answer as the events its stream translator reads."""
        raise NotImplementedError

    def whole(self, prepared: Prepared, ctx: ResponseContext, raw: bytes) -> JSON:
        bridge = self.stream(prepared, ctx)
        translator = bridge.translator
        for event in self.whole_events(prepared, raw):
            translator.feed(event)
        translator.finish()
        response = translator.response
        if response is None:
            raise RuntimeError(f"the {self.kind} stream translator gave no final response")
        return response

    def error(self, status: int, raw: bytes) -> tuple[int, JSON]:
        raise NotImplementedError

    async def answer_locally(
        self, body: JSON, endpoint: str, stream: bool, model: str, raw_body: bytes
    ) -> tuple[bytes, str]:
        """(content, content type) of the answer of a family that `answers_locally`."""
        raise NotImplementedError

    def retry_after(self, raw: bytes) -> int | None:
        return None

    def price_id(self) -> str | None:
        return None

    def codex_defaults(self, upstream_model: str) -> FamilyDefaults:
        return GENERIC_DEFAULTS


def new_context(model: str, provider_name: str, echo: JSON | None = None) -> ResponseContext:
    """A fresh `ResponseContext` (response id, creation time) for one answer."""
    return ResponseContext(
        response_id=f"resp_{uuid.uuid4().hex}",
        model=model,
        provider_name=provider_name,
        created_at=int(time.time()),
        echo=echo or {},
    )


def answering(ctx: ResponseContext, prepared: Prepared) -> ResponseContext:
    """`ctx` with the request fields the answer echoes (tools, tool_choice, ...)."""
    return dataclasses.replace(ctx, echo=prepared.echo) if prepared.echo and not ctx.echo else ctx


def json_bytes(body: JSON) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def header_names(families: Sequence[type[ProviderFamily[Any]]]) -> tuple[str, ...]:
    """Every family's secret header names, lower case, each once, in registration order."""
    seen: dict[str, None] = {}
    for family in families:
        for name in family.secret_headers:
            seen.setdefault(name.lower(), None)
    return tuple(seen)
