"""A virtual key never leaves the gateway for a host that is not governed.

Codex sends its API key to chatgpt.com (and, through a proxy, anywhere it is told to), so
on every flow the gateway does not govern, credentials carrying a virtual key are removed;
on guard hosts such a request is answered locally.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mitmproxy import http

from codexgate.addons.identify import key_from_proxy_authorization
from codexgate.addons.policy_source import PolicySource
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import state_of
from codexgate.headers import CLIENT_CREDENTIAL_HEADERS
from codexgate.policies.keys import KEY_PREFIX, hash_key

logger = logging.getLogger(__name__)

VIRTUAL_KEY_REMOVED = "codexgate.virtual_key_removed"  # header names SecretMask already removed


def carries_virtual_key(value: str, known_hashes: Mapping[str, object]) -> bool:
    if KEY_PREFIX in value:
        return True
    parts = value.split()
    token = parts[-1] if parts else ""
    if not token:
        return False
    if hash_key(token) in known_hashes:
        return True
    # Basic credentials (proxy or HTTP auth) carry the key base64-encoded.
    basic = key_from_proxy_authorization(value) if parts[0].lower() == "basic" else None
    return basic is not None and (KEY_PREFIX in basic or hash_key(basic) in known_hashes)


class KeyGuard:
    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or state_of(flow) is not None:
            return
        policy = self._policy.current()
        removed = list(flow.metadata.get(VIRTUAL_KEY_REMOVED, ())) + [
            name
            for name in CLIENT_CREDENTIAL_HEADERS
            if any(carries_virtual_key(v, policy.keys_by_hash) for v in flow.request.headers.get_all(name))
        ]
        if not removed:
            return
        for name in removed:
            flow.request.headers.pop(name, None)
        host = flow.request.pretty_host.lower()
        logger.warning("virtual key removed from %s request to %s (%s)", flow.request.method, host, ", ".join(removed))
        flow.comment = f"codexgate: virtual key removed ({', '.join(removed)})"
        if policy.is_guard_host(host):
            flow.response = error_response(
                403,
                "virtual_key_not_forwarded",
                f"codexgate does not forward virtual keys to {host}; "
                "only model providers are reached through the gateway",
            )
