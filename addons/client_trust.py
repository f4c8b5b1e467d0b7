"""A one-line hint when a client rejects the gateway's CA (proxy mode).

A client without the gateway's CA fails the TLS handshake with an `unknown ca` alert; Codex then
loops on "Reconnecting…" and the cause is only in mitmproxy's own log line. This names the fix.
"""

from __future__ import annotations

import logging
import os

from mitmproxy import ctx, tls

logger = logging.getLogger(__name__)

REJECTED_CA = ("unknown ca", "bad certificate", "certificate unknown")
MAX_REMEMBERED = 1024  # (client address, host) pairs already told about, so a retry loop logs once


class ClientTrustHint:
    def __init__(self) -> None:
        self._told: set[tuple[str, str]] = set()

    def tls_failed_client(self, data: tls.TlsData) -> None:
        error = data.conn.error or ""
        if not any(reason in error for reason in REJECTED_CA):
            return
        peer = data.context.client.peername[0] if data.context.client.peername else "?"
        host = data.conn.sni or (data.context.server.address[0] if data.context.server.address else "?")
        if (peer, host) in self._told:
            return
        if len(self._told) >= MAX_REMEMBERED:
            self._told.clear()
        self._told.add((peer, host))
        cert = os.path.join(os.path.expanduser(ctx.options.confdir), "mitmproxy-ca-cert.pem")
        logger.warning(
            "client %s does not trust the gateway's CA (TLS to %s: %s); give it the CA that `codexgate ca` "
            "prints (%s), e.g. CODEX_CA_CERTIFICATE for Codex",
            peer, host, error.rsplit("(", 1)[-1].rstrip(")") or error, cert,
        )  # fmt: skip
