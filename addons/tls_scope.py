"""Proxy-mode hygiene: the CONNECT target decides what is TLS-intercepted, not the SNI.

Governed and guard hosts are intercepted; every other host the egress policy let through is
tunnelled untouched. A ClientHello whose server name differs from the CONNECT target, when either
is governed or guarded, is refused: otherwise a client could reach a governed host through a
tunnel opened to another name (no admission, no metering, no audit), or the other way round.
"""

from __future__ import annotations

import logging

from mitmproxy import tls

from codexgate.addons.egress import EgressGuard, normal_host
from codexgate.addons.policy_source import PolicySource

logger = logging.getLogger(__name__)


class TlsScope:
    def __init__(self, policy: PolicySource, egress: EgressGuard | None = None) -> None:
        self._policy = policy
        self._egress = egress

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        server = data.context.server
        if server.address is None:
            return
        target = self._egress.target_of(data.context.client) if self._egress is not None else None
        sni = normal_host(data.client_hello.sni) if data.client_hello.sni else None
        host, port = (target.host, target.port) if target is not None else (sni or server.address[0], server.address[1])
        try:
            policy = self._policy.current()
            intercept = target.intercepted if target is not None else policy.should_intercept(host, port)
            mismatch = sni is not None and sni != host and (intercept or policy.should_intercept(sni, port))
        except Exception:
            # Unsure: intercept, so that a virtual key cannot slip past the key guard.
            logger.exception("cannot decide TLS scope for %s:%s; intercepting", host, port)
            intercept, mismatch = True, False
        if mismatch:
            logger.warning(
                "TLS refused: server name %s does not match the CONNECT target %s:%s (governed or guarded)",
                sni, host, port,
            )  # fmt: skip
            if self._egress is not None:
                self._egress.count_refusal("sni_mismatch")
            # No HTTP answer is possible inside TLS: the tunnel's upstream connection is killed
            # before it opens, which closes the client's connection.
            server.error = f"codexgate: TLS server name {sni} does not match the CONNECT target {host}"
            data.ignore_connection = True
            return
        if not intercept:
            data.ignore_connection = True
