"""Options that decide what the gateway enforces cannot be changed while it runs.

mitmweb serves `PUT /options`: anyone who reaches the console could switch the audit log off
(`codexgate_audit=false`), point the counters at another store, or load another policy file.
Once the gateway is `running`, a change to one of these options is refused: `configure` raises
`OptionsError`, mitmproxy rolls every option of that update back (and mitmweb answers 400 with
the message), and the refusal is logged. Every runtime option change, accepted or refused, is
written to the audit log (names only: values may be secrets).

The policy itself still reloads from its file (that is not an option change).
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, exceptions

from codexgate.addons.audit_log import AuditLog

logger = logging.getLogger(__name__)

# mitmproxy's own options that widen what reaches whom, or what runs.
LOCKED_MITMPROXY_OPTIONS = frozenset(
    {"mode", "listen_host", "listen_port", "confdir", "scripts", "allow_hosts", "ignore_hosts", "tcp_hosts",
     "udp_hosts", "ssl_insecure", "upstream_auth", "proxyauth", "body_size_limit", "stream_large_bodies",
     "validate_inbound_headers", "map_remote", "map_local", "modify_headers", "modify_body", "block_global",
     "block_private", "web_password", "web_host", "connection_strategy", "keep_host_header", "rawtcp",
     "upstream_cert", "save_stream_file", "server_replay", "client_replay"}
)  # fmt: skip


def locked(name: str) -> bool:
    return name.startswith("codexgate_") or name in LOCKED_MITMPROXY_OPTIONS


class OptionsLock:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._values: dict[str, Any] | None = None  # the locked options' values once running
        self._rolling_back = False

    def running(self) -> None:
        options = ctx.options
        self._values = {name: getattr(options, name) for name in options.keys() if locked(name)}  # noqa: SIM118 (OptManager)

    def configure(self, updated: set[str]) -> None:
        if self._values is None:
            return  # starting up: options are being set from the command line and files
        if self._rolling_back:
            self._rolling_back = False  # mitmproxy restoring the values of the update just refused
            return
        options = ctx.options
        changed = sorted(n for n in updated if n in self._values and getattr(options, n) != self._values[n])
        if changed:
            logger.error("runtime change of %s refused: codexgate's enforcement options are fixed while it runs",
                         ", ".join(changed))  # fmt: skip
            self._record(sorted(updated), True)
            self._rolling_back = True
            raise exceptions.OptionsError(
                f"{', '.join(changed)} cannot be changed while the gateway runs; restart it with the new setting"
            )
        if all(name in self._values for name in updated):
            return  # locked options set to the values they have: nothing changed
        logger.info("runtime option change: %s", ", ".join(sorted(updated)))
        self._record(sorted(updated), False)

    def _record(self, names: list[str], refused: bool) -> None:
        try:
            self._audit.record_option_change(names, refused)
        except Exception:
            logger.error("AUDIT RECORD NOT WRITTEN for an option change (%s)", ", ".join(names), exc_info=True)
