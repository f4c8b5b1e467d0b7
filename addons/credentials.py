"""Swaps the client's virtual key for the provider's real key; nothing else may leave.

Every client credential header is removed first, so a virtual key never reaches a provider.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Decision, refuse, state_of
from codexgate.headers import replace_headers, strip_client_credentials
from codexgate.policies.schema import MockProvider, OpenAIProvider
from codexgate.providers.openai import auth_headers
from codexgate.secrets import SecretResolver, SecretUnavailable

logger = logging.getLogger(__name__)


class Credentials:
    def __init__(self) -> None:
        self._secrets = SecretResolver()

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.provider is None:
            return
        strip_client_credentials(flow.request.headers)
        provider = state.policy.policy.providers[state.provider]
        if state.relayed is not None:
            state.cleared = True  # each relayed attempt carries its own provider credentials
            return
        if isinstance(provider, MockProvider):
            state.cleared = True
            return
        if state.translation is not None:
            try:
                flow.request.headers.update(
                    state.translation.adapter.credentials(state.translation.prepared, self._secrets)
                )
            except SecretUnavailable as exc:
                self._unusable(flow, state.provider, exc)
                return
            state.cleared = True
            return
        if isinstance(provider, OpenAIProvider):
            try:
                secret = self._secrets.resolve(provider.keys[state.key_index].value)
            except SecretUnavailable as exc:
                self._unusable(flow, state.provider, exc)
                return
            replace_headers(flow.request.headers, auth_headers(secret))
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
