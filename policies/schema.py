"""The policy file's shape: pydantic models for every section.

The file is a human document kept in git, so unknown fields are errors (a typo must not
silently turn a limit off) and every reference between sections is checked.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from codexgate.detectors import GuardrailSettings
from codexgate.policies.egress import Egress
from codexgate.secrets import REFERENCE_HELP, parse_reference
from codexgate.windows import parse_period

KEY_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _period(value: str) -> str:
    parse_period(value)  # raises ValueError naming the accepted units
    return value


class Budget(Strict):
    """A spend cap in US dollars per period (calendar-aligned in UTC unless rolling)."""

    limit_usd: float = Field(ge=0)
    period: str = "1M"
    rolling: bool = False
    hard: bool = Field(
        default=True,
        description="no request may take this budget past its limit (+ gateway.hard_budgets.epsilon_usd): a"
        " request whose worst case does not fit gets its output capped to what remains, or a 402",
    )

    _check_period = field_validator("period")(_period)


class RateLimit(Strict):
    """At most `requests` requests or `tokens` tokens (input + output) per window."""

    requests: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    per: str = "1m"
    rolling: bool = False

    _check_period = field_validator("per")(_period)

    @model_validator(mode="after")
    def _one_measure(self) -> RateLimit:
        if (self.requests is None) == (self.tokens is None):
            raise ValueError("a rate limit counts either requests or tokens: give exactly one of them")
        return self


class Price(Strict):
    """USD per million tokens; overrides genai-prices (self-hosted = 0, negotiated rates)."""

    input_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    output_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    cached_input_per_mtok: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="default: the input price"
    )


class Limited(Strict):
    budgets: list[Budget] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)


class SecretRef(Strict):
    """A provider credential, referenced and never written into the policy."""

    value: str = Field(description=REFERENCE_HELP)
    weight: int = Field(default=1, ge=0, description="share of traffic among the provider's keys")

    @field_validator("value")
    @classmethod
    def _must_be_reference(cls, value: str) -> str:
        try:
            parse_reference(value)
        except ValueError:
            # The value itself is never echoed: it may be a real key someone pasted.
            raise ValueError(f"must reference a secret as {REFERENCE_HELP}; literal keys are not allowed") from None
        return value


class OpenAIProvider(Limited):
    kind: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    keys: list[SecretRef] = Field(min_length=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.openai.com/v1")
        return value.rstrip("/")


class MockProvider(Limited):
    """Answers locally in the real wire formats: for trying the gateway and for tests."""

    kind: Literal["mock"]
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    input_tokens: int | None = Field(default=None, ge=0, description="default: request bytes / 4")
    output_tokens: int = Field(default=12, ge=1)
    cached_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    return value.rstrip("/")


class AnthropicProvider(Limited):
    """Anthropic Messages API (`/v1/messages`); Codex's Responses requests are translated."""

    kind: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    keys: list[SecretRef] = Field(min_length=1)
    default_max_tokens: int = Field(default=16384, ge=1, description="max_tokens when Codex sends none")

    _url = field_validator("base_url")(_check_http_url)


class GeminiProvider(Limited):
    """Google Gemini API (`generateContent` / `streamGenerateContent?alt=sse`) with an API key."""

    kind: Literal["gemini"]
    base_url: str = "https://generativelanguage.googleapis.com"
    keys: list[SecretRef] = Field(min_length=1)
    default_max_tokens: int = Field(default=16384, ge=1)

    _url = field_validator("base_url")(_check_http_url)


class VertexProvider(Limited):
    """Gemini models on Google Cloud Vertex AI (`publishers/google/models/MODEL:generateContent`),
    authorized by OAuth2 bearer tokens: minted from a service-account key (`credentials`, refreshed
    before they expire) or given as they are (`access_token`, e.g. from a sidecar)."""

    kind: Literal["vertex"]
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="Google Cloud project id")
    location: str = Field(default="us-central1", pattern=r"^(global|[a-z]+-[a-z]+[0-9]+)$")
    credentials: SecretRef | None = Field(default=None, description="the service account's JSON key")
    access_token: SecretRef | None = Field(default=None, description="an OAuth2 access token, used as it is")
    base_url: str | None = Field(default=None, description="endpoint override; default LOCATION-aiplatform")
    default_max_tokens: int = Field(default=16384, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @model_validator(mode="after")
    def _one_credential(self) -> VertexProvider:
        if (self.credentials is None) == (self.access_token is None):
            raise ValueError("give exactly one of credentials (a service-account key) or access_token")
        return self

    @property
    def endpoint(self) -> str:
        if self.base_url:
            return self.base_url
        host = (
            "aiplatform.googleapis.com" if self.location == "global" else f"{self.location}-aiplatform.googleapis.com"
        )
        return f"https://{host}"


class BedrockProvider(Limited):
    """AWS Bedrock Converse / ConverseStream, signed with SigV4. Credentials: the policy's
    references, else the usual AWS sources (environment, shared config, instance role); or Bedrock
    API keys (`keys`, bearer tokens, chosen by weight) instead of SigV4."""

    kind: Literal["bedrock"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    base_url: str | None = Field(default=None, description="endpoint override; default bedrock-runtime.REGION")
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    session_token: SecretRef | None = None
    keys: list[SecretRef] = Field(default_factory=list, description="Bedrock API keys, instead of SigV4")
    default_max_tokens: int = Field(default=16384, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @model_validator(mode="after")
    def _key_pair(self) -> BedrockProvider:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither (AWS default sources)")
        if self.keys and self.access_key_id is not None:
            raise ValueError("give Bedrock API keys (keys) or an AWS key pair (access_key_id), not both")
        return self

    @property
    def endpoint(self) -> str:
        return self.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com"


# The Chat Completions hosts a `chat` provider may name as its preset, and where each lives (proxy
# mode intercepts the providers' hosts). How each host is spoken to is the chat family's `PRESETS`,
# under the same names (tests/unit/test_layering.py keeps the two in step). "": no fixed address.
CHAT_PRESET_URLS: dict[str, str] = {
    "generic": "",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com",
    "xai": "https://api.x.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together": "https://api.together.ai/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "cerebras": "https://api.cerebras.ai/v1",
    "perplexity": "https://api.perplexity.ai",
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
    "lmstudio": "http://localhost:1234/v1",
    "azure": "",
}


class ChatProvider(Limited):
    """An OpenAI-compatible Chat Completions host: a preset (groq, mistral, deepseek, xai,
    openrouter, together, fireworks, cerebras, perplexity, ollama, vllm, lmstudio) or any base_url."""

    kind: Literal["chat"]
    preset: str = "generic"
    base_url: str | None = None
    keys: list[SecretRef] = Field(default_factory=list, description="none for local hosts (ollama, vllm, lmstudio)")
    default_max_tokens: int = Field(default=16384, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in CHAT_PRESET_URLS:
            raise ValueError(f"unknown preset {value!r}; presets: {', '.join(sorted(CHAT_PRESET_URLS))}")
        return value

    @model_validator(mode="after")
    def _has_url(self) -> ChatProvider:
        if not (self.base_url or CHAT_PRESET_URLS[self.preset]):
            raise ValueError("the generic preset needs a base_url")
        return self

    @property
    def url(self) -> str:
        return (self.base_url or CHAT_PRESET_URLS[self.preset]).rstrip("/")


class AzureProvider(Limited):
    """Azure OpenAI: the v1 Responses API (pass-through) or a Chat Completions deployment."""

    kind: Literal["azure"]
    endpoint: str = Field(description="https://RESOURCE.openai.azure.com")
    api: Literal["responses", "chat"] = "responses"
    api_version: str = "2024-10-21"
    keys: list[SecretRef] = Field(min_length=1)
    default_max_tokens: int = Field(default=16384, ge=1)

    _url = field_validator("endpoint")(_check_http_url)


Provider = Annotated[
    OpenAIProvider
    | MockProvider
    | AnthropicProvider
    | GeminiProvider
    | VertexProvider
    | BedrockProvider
    | ChatProvider
    | AzureProvider,
    Field(discriminator="kind"),
]


class ModelRoute(Strict):
    provider: Name
    model: str | None = Field(default=None, description="upstream model name; default: the model asked for")
    weight: int = Field(default=1, ge=0, description="share of traffic among the model's routes")


ReasoningLevel = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class CodexModelInfo(Strict):
    """What Codex is told about a model (its `/model` picker and model catalog). Anything left out
    comes from the provider family's defaults (codexgate/catalog.py)."""

    display_name: str | None = None
    description: str | None = None
    context_window: int | None = Field(default=None, gt=0, description="tokens; drives Codex's auto-compaction")
    reasoning_levels: list[ReasoningLevel] | None = Field(default=None, min_length=1)
    default_reasoning_level: ReasoningLevel | None = None
    input_modalities: list[Literal["text", "image"]] | None = Field(default=None, min_length=1)
    apply_patch: Literal["freeform", "shell"] | None = Field(
        default=None, description="apply_patch as its own (grammar) tool, or patches through the shell tool"
    )

    @model_validator(mode="after")
    def _default_among_levels(self) -> CodexModelInfo:
        if (
            self.default_reasoning_level
            and self.reasoning_levels
            and (self.default_reasoning_level not in self.reasoning_levels)
        ):
            raise ValueError("default_reasoning_level must be one of reasoning_levels")
        return self


class ModelEntry(Limited):
    routes: list[ModelRoute] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(
        default_factory=list, description="models tried in order when every route of this one failed (429/5xx/timeout)"
    )
    price: Price | None = None
    output_allowance: int = Field(
        default=4096, ge=1, description="output tokens reserved per request before the real count is known"
    )
    codex: CodexModelInfo | None = Field(default=None, description="display name, context window, ... for Codex")
    max_output_tokens: int = Field(
        default=128_000,
        ge=1,
        description="the most output (reasoning included) the model can produce in one answer: a request's"
        " worst case under a hard budget (genai-prices does not know it; 128000 is the GPT-5 family's)",
    )


class Org(Limited):
    description: str = ""


class Team(Limited):
    org: Name
    description: str = ""
    providers: list[Name] | None = Field(
        default=None, description="providers this team's keys may reach (default: all); a key may only narrow it"
    )
    models: list[str] | None = Field(
        default=None, description="model patterns this team's keys may use (default: all); a key may only narrow it"
    )

    def allows_model(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


class VirtualKey(Limited):
    name: Name
    team: Name
    hash: str
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    providers: list[Name] | None = Field(
        default=None, description="providers this key may reach (default: all its team may); narrows the team's"
    )
    disabled: bool = False
    expires_at: dt.datetime | None = None

    @field_validator("hash")
    @classmethod
    def _hash_shape(cls, value: str) -> str:
        if not KEY_HASH_PATTERN.match(value):
            raise ValueError("must be sha256:<64 lowercase hex digits> (use `codexgate keys create`)")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def unusable(self, now: dt.datetime | None = None) -> tuple[str, str] | None:
        """Why this key cannot be used at `now` — (error code, message for its holder) — or None.
        The one reading of "usable now" for every door a key opens (proxy credentials, the Codex
        backend, the WebSocket upgrade, each model request)."""
        if self.disabled:
            return "key_disabled", f"virtual key {self.name} is disabled"
        if self.expires_at is not None and self.expires_at <= (now or dt.datetime.now(dt.UTC)):
            return "key_expired", f"virtual key {self.name} expired at {self.expires_at.isoformat(timespec='minutes')}"
        return None


class Resilience(Strict):
    """When an upstream attempt is given up and the next deployment tried (before any byte
    reached the client), and how long a failing deployment is left alone."""

    connect_timeout: float = Field(default=5, gt=0)
    first_byte_timeout: float = Field(default=60, gt=0)
    idle_timeout: float = Field(
        default=60, gt=0, description="longest silence between stream chunks (cut within 1.25x of it on the fast path)"
    )
    total_timeout: float = Field(default=900, gt=0)
    cooldown_seconds: float = Field(default=30, ge=0, description="a failing deployment is skipped this long")
    retry_after_max: float = Field(default=2.0, ge=0, description="a shorter provider Retry-After is waited out")
    read_after_client_left: float = Field(
        default=120,
        ge=0,
        le=600,
        description="seconds a relayed stream is read on after its client left, for the provider's usage (the"
        " provider keeps generating meanwhile; 0: close it at once and charge the estimate)",
    )


class HardBudgets(Strict):
    """How hard budgets cap requests (see Budget.hard)."""

    epsilon_usd: float = Field(
        default=0.0, ge=0, description="how far a hard budget may go past its limit (added to the room it admits)"
    )
    min_output_tokens: int = Field(
        default=1024, ge=1, description="a request whose output would be capped below this is refused (402) instead"
    )


class GatewaySettings(Strict):
    intercept_hosts: list[str] = Field(
        default_factory=lambda: ["api.openai.com"],
        description="hosts governed in proxy mode, besides the providers' own hosts",
    )
    guard_hosts: list[str] = Field(
        default_factory=lambda: ["chatgpt.com"],
        description="hosts intercepted only so that a virtual key sent to them never leaves",
    )
    on_store_error: Literal["closed", "open"] = Field(
        default="closed", description="when the counter store is unreachable: refuse (503) or admit unmetered"
    )
    resilience: Resilience = Field(default_factory=Resilience)
    hard_budgets: HardBudgets = Field(default_factory=HardBudgets)
    unknown_price: Literal["deny"] | Price = Field(
        default="deny", description="a model without a known price is refused, or charged this price"
    )
    egress: Egress = Field(default_factory=Egress, description="where the proxy listener may tunnel to")
    proxy_auth: Literal["optional", "required"] = Field(
        default="optional", description="required: the proxy listener serves only clients giving a virtual key"
    )


class Policy(Strict):
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    providers: dict[Name, Provider] = Field(min_length=1)
    models: dict[str, ModelEntry] = Field(min_length=1)
    orgs: dict[Name, Org] = Field(default_factory=dict)
    teams: dict[Name, Team] = Field(default_factory=dict)
    keys: list[VirtualKey] = Field(default_factory=list)
    guardrails: GuardrailSettings | None = None
