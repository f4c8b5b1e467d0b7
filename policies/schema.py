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

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0, description="default: the input price")


class Limited(Strict):
    budgets: list[Budget] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)


class SecretRef(Strict):
    """A provider credential, referenced and never written into the policy."""

    value: str = Field(description=REFERENCE_HELP)

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


Provider = Annotated[OpenAIProvider | MockProvider, Field(discriminator="kind")]


class Route(Strict):
    provider: Name
    model: str | None = Field(default=None, description="upstream model name; default: the model asked for")


class ModelEntry(Limited):
    routes: list[Route] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    price: Price | None = None
    output_allowance: int = Field(
        default=4096, ge=1, description="output tokens reserved per request before the real count is known"
    )


class Org(Limited):
    description: str = ""


class Team(Limited):
    org: Name
    description: str = ""


class VirtualKey(Limited):
    name: Name
    team: Name
    hash: str
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
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
    unknown_price: Literal["deny"] | Price = Field(
        default="deny", description="a model without a known price is refused, or charged this price"
    )


class Policy(Strict):
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    providers: dict[Name, Provider] = Field(min_length=1)
    models: dict[str, ModelEntry] = Field(min_length=1)
    orgs: dict[Name, Org] = Field(default_factory=dict)
    teams: dict[Name, Team] = Field(default_factory=dict)
    keys: list[VirtualKey] = Field(default_factory=list)
