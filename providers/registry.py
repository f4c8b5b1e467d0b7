"""Provider kind → family: every family the gateway knows, registered once, here.

Adding a provider is one package `providers/<family>/` with a `family.py` subclassing
`ProviderFamily`, plus one line below. Everything else reads this table: the addons send a
provider's requests through its family for the loaded policy (`family_of`: one instance per
provider per load, kept with the `CompiledPolicy`, holding the provider's runtime state), ask a
throwaway one about settings (`family_for`), price it (`ProviderFamily.price_id`), strip and mask
its credential headers (`SECRET_HEADERS`, `CLIENT_CREDENTIAL_HEADERS`), describe its models to
Codex (`codex_defaults`).

Layering (core → policies → providers → addons): settings models live in
`codexgate.policies.schema` and core (`codexgate.headers`, `codexgate.pricing`) knows no provider.
The dependency is inverted by handing values down, not by registering into core at import: the
addons take the secret header names and price ids from here and pass them to the core functions
(`strip_client_credentials(headers, CLIENT_CREDENTIAL_FIELDS)`, `Pricer.source(price_id, ...)`);
the Codex catalog (request-state layer, above providers) calls `codex_defaults` itself. So no
module keeps mutable global state (a family's runtime state lives with the loaded policy) and a
core module never depends on import order.
`check_registry` (run by the tests) holds the table and the policy schema's `Provider` union to
the same kinds.
"""

from __future__ import annotations

import typing
from typing import Any

from codexgate.headers import CLIENT_CREDENTIAL_HEADERS as CLIENT_HEADERS_CORE
from codexgate.headers import field_names
from codexgate.policies.loader import CompiledPolicy
from codexgate.policies.schema import Provider
from codexgate.providers.anthropic.family import AnthropicFamily
from codexgate.providers.bedrock.family import BedrockFamily
from codexgate.providers.chat.family import AzureFamily, ChatFamily
from codexgate.providers.family import FamilyDefaults, ProviderFamily, header_names
from codexgate.providers.gemini.family import GeminiFamily, VertexFamily
from codexgate.providers.mock import MockFamily
from codexgate.providers.openai import OpenAIFamily

__all__ = [
    "CLIENT_CREDENTIAL_FIELDS",
    "CLIENT_CREDENTIAL_HEADERS",
    "FAMILIES",
    "SECRET_HEADERS",
    "check_registry",
    "codex_defaults",
    "family_for",
    "family_of",
    "kinds",
]

FamilyType = type[ProviderFamily[Any]]

FAMILIES: dict[str, FamilyType] = {
    family.kind: family
    for family in (
        OpenAIFamily,
        MockFamily,
        AnthropicFamily,
        GeminiFamily,
        VertexFamily,
        BedrockFamily,
        ChatFamily,
        AzureFamily,
    )
}

# Credentials a client may send (its virtual key, or a provider key of any family): stripped from
# every request before it leaves. Anything that may hold a secret on a flow: masked everywhere.
CLIENT_CREDENTIAL_HEADERS: tuple[str, ...] = tuple(
    dict.fromkeys((*CLIENT_HEADERS_CORE, *header_names(list(FAMILIES.values()))))
)
CLIENT_CREDENTIAL_FIELDS: frozenset[bytes] = field_names(CLIENT_CREDENTIAL_HEADERS)
SECRET_HEADERS: tuple[str, ...] = CLIENT_CREDENTIAL_HEADERS


def family_for(settings: Any) -> ProviderFamily[Any]:
    """A new family for a provider's settings (a policy `providers.<name>` entry): for questions
    about the settings; requests go through `family_of`."""
    return FAMILIES[settings.kind](settings)


def family_of(policy: CompiledPolicy, provider: str) -> ProviderFamily[Any]:
    """The family of configured provider `provider` for this loaded policy: made on first use and
    kept with the policy, so its runtime state (Vertex's access tokens) is this provider's alone,
    outlives requests, and is left behind with the policy a reload replaces."""
    family = policy.families.get(provider)
    if family is None:
        family = policy.families[provider] = family_for(policy.policy.providers[provider])
    return family


def codex_defaults(settings: Any, upstream_model: str) -> FamilyDefaults:
    """What Codex's model catalog says about a model of this provider (`codexgate.catalog.DefaultsFor`)."""
    return family_for(settings).codex_defaults(upstream_model)


def kinds() -> tuple[str, ...]:
    return tuple(FAMILIES)


def check_registry() -> None:
    """Every kind of the policy schema has a family, and each family's settings model is the
    schema's model for its kind."""
    models = typing.get_args(typing.get_args(Provider)[0])
    by_kind = {typing.get_args(model.model_fields["kind"].annotation)[0]: model for model in models}
    if set(by_kind) != set(FAMILIES):
        raise AssertionError(f"policy kinds {sorted(by_kind)} != registered families {sorted(FAMILIES)}")
    for kind, family in FAMILIES.items():
        if family.settings_type is not by_kind[kind]:
            raise AssertionError(f"family {family.__name__} settings {family.settings_type} != schema's {kind} model")
