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

from pydantic import BaseModel, ConfigDict, Field, field_validator

KEY_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """A provider credential, referenced and never written into the policy."""

    value: str = Field(description="env:NAME or file:PATH")

    @field_validator("value")
    @classmethod
    def _must_be_reference(cls, value: str) -> str:
        if value.startswith("env:") and len(value) > 4:
            return value
        if value.startswith("file:") and len(value) > 5:
            return value
        # The value itself is never echoed: it may be a real key someone pasted.
        raise ValueError("must reference a secret as env:NAME or file:PATH; literal keys are not allowed")


class OpenAIProvider(Strict):
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


class MockProvider(Strict):
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


class ModelEntry(Strict):
    routes: list[Route] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)


class Org(Strict):
    description: str = ""


class Team(Strict):
    org: Name
    description: str = ""


class VirtualKey(Strict):
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


class Policy(Strict):
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    providers: dict[Name, Provider] = Field(min_length=1)
    models: dict[str, ModelEntry] = Field(min_length=1)
    orgs: dict[Name, Org] = Field(default_factory=dict)
    teams: dict[Name, Team] = Field(default_factory=dict)
    keys: list[VirtualKey] = Field(default_factory=list)
