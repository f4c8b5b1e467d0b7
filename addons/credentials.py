"""Swaps the client's virtual key for the provider's real key; nothing else may leave.

Every client credential header is removed first, so a virtual key never reaches a provider. The
provider's own headers come from its family (`ProviderFamily.credentials`), for the key the route
chose by weight.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Decision, refuse, state_of
from codexgate.headers import replace_headers, strip_client_credentials
from codexgate.providers.registry import CLIENT_CREDENTIAL_FIELDS
from codexgate.secrets import SecretResolver, SecretUnavailable

logger = logging.getLogger(__name__)


class Credentials:
    def __init__(self) -> None:
        self._secrets = SecretResolver()

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.provider is None:
            return
        translation = state.translation
        family = translation.family if translation is not None and state.relayed is None else None
        if translation is None or family is None or family.answers_locally:
            strip_client_credentials(flow.request.headers, CLIENT_CREDENTIAL_FIELDS)
            if state.relayed is not None or translation is not None:
                # Relayed: each attempt carries its own provider credentials; answered locally
                # (mock): nothing leaves. Not pointed at a provider at all: never cleared.
                state.cleared = True
            return
        try:
            headers = await family.credentials(translation.prepared, state.key_index, self._secrets)
        except SecretUnavailable as exc:
            strip_client_credentials(flow.request.headers, CLIENT_CREDENTIAL_FIELDS)
            self._unusable(flow, state.provider, exc)
            return
        # The client's credentials out and the provider's in, in one pass over the fields.
        replace_headers(flow.request.data.headers, headers, removing=CLIENT_CREDENTIAL_FIELDS)
        state.cleared = True

    @staticmethod
    def _unusable(flow: http.HTTPFlow, provider: str, exc: Exception) -> None:
        # The detail (which variable, file or Vault path) is for the platform team's log only.
        logger.error("provider %s has no usable key: %s", provider, exc)
        refuse(
            flow,
            error_response(
                503, "provider_credentials_unavailable",
                f"provider {provider} is not usable right now (its credentials cannot be read); "
                "tell your platform team",
            ),
            Decision.PROVIDER_UNAVAILABLE,
        )  # fmt: skip
