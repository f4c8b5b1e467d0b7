"""Proxy-mode hygiene: only governed and guarded hosts are TLS-intercepted; all else is tunnelled."""

from __future__ import annotations

import logging

from mitmproxy import tls

from codexgate.addons.policy_source import PolicySource

logger = logging.getLogger(__name__)


class TlsScope:
    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        server = data.context.server
        if server.address is None:
            return
        host = data.client_hello.sni or server.address[0]
        port = server.address[1]
        try:
            intercept = self._policy.current().should_intercept(host, port)
        except Exception:
            # Unsure: intercept, so that a virtual key cannot slip past the key guard.
            logger.exception("cannot decide TLS scope for %s:%s; intercepting", host, port)
            intercept = True
        if not intercept:
            data.ignore_connection = True
