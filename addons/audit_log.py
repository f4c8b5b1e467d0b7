"""Writes one tamper-evident audit record per governed request (see `codexgate.audit`).

Place it at the end of the chain (after Charge and Accounting): the record then carries
the settled cost and the final decision. Its `body_sha256` is over the request body as the
gateway last held it, i.e. the bytes sent upstream (after a model rename) or, for a
refused request, the bytes the client sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from codexgate.audit import AuditWriter, audit_record
from codexgate.flowstate import GatewayRequest, state_of
from codexgate.guardrails import redact_text
from codexgate.secrets import SecretResolver, SecretUnavailable

logger = logging.getLogger(__name__)

AUDITED = "codexgate.audited"
SYNC_INTERVAL = 0.05  # seconds a record may wait for its fsync in "batch" mode

OPTIONS = {
    "codexgate_audit",
    "codexgate_audit_dir",
    "codexgate_audit_fsync",
    "codexgate_audit_hmac_key",
    "codexgate_data_dir",
}


class AuditLog:
    def __init__(self) -> None:
        self._writer: AuditWriter | None = None
        self._fsync_mode = "batch"
        self._written = 0  # records written so far
        self._syncing = False
        self._synced = 0  # records known to be on disk
        self._resolver = SecretResolver()
        self.records = 0
        self.failures = 0

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_audit",
            bool,
            True,
            "Write a hash-chained, tamper-evident audit record per governed request "
            "(check it with `codexgate audit verify`).",
        )
        loader.add_option(
            "codexgate_audit_dir",
            str,
            "",
            "Directory of the audit log (audit-NNNNNN.jsonl, owner-only). Default: <codexgate_data_dir>/audit.",
        )
        loader.add_option(
            "codexgate_audit_fsync",
            str,
            "batch",
            "When audit records reach the disk: 'always' (fsync per record, on the event loop: ~1-2 ms each "
            "here), 'batch' (group commit in a background thread: one fsync at most every 50 ms covering "
            "every record written meanwhile), 'off' (the OS decides).",
            choices=["batch", "always", "off"],
        )
        loader.add_option(
            "codexgate_audit_hmac_key",
            str,
            "",
            "Reference to the audit log's HMAC key, env:NAME or file:PATH. With a key kept away from the log, "
            "nobody who can edit the files can forge a chain that verifies. Default: plain sha256 chain.",
        )

    def configure(self, updated: set[str]) -> None:
        if not OPTIONS & updated:
            return
        # codexgate_data_dir belongs to PolicySource; without it (e.g. the addon on its own) it reads as unset.
        data_dir = getattr(ctx.options, "codexgate_data_dir", "") or ""
        directory = ctx.options.codexgate_audit_dir or (os.path.join(data_dir, "audit") if data_dir else "")
        self._close()
        if not ctx.options.codexgate_audit:
            return
        key: bytes | None = None
        reference = ctx.options.codexgate_audit_hmac_key
        if reference:
            if not reference.startswith(("env:", "file:")):
                raise exceptions.OptionsError("codexgate_audit_hmac_key must be env:NAME or file:PATH")
            try:
                key = self._resolver.resolve(reference).encode("utf-8")
            except SecretUnavailable as exc:
                raise exceptions.OptionsError(f"codexgate_audit_hmac_key: {exc}") from None
        if not directory:
            logger.warning("audit log is OFF: set codexgate_data_dir or codexgate_audit_dir")
            return
        try:
            self._fsync_mode = ctx.options.codexgate_audit_fsync
            self._writer = AuditWriter(Path(directory).expanduser(), hmac_key=key, fsync=self._fsync_mode == "always")
        except OSError as exc:
            raise exceptions.OptionsError(f"cannot open the audit log in {directory}: {exc}") from None
        logger.info(
            "audit log in %s (%s chain, next seq %d)",
            directory,
            "HMAC-SHA256" if key else "sha256",
            self._writer.seq + 1,
        )

    def record_option_change(self, names: list[str], refused: bool) -> None:
        """An option changed (or a change refused) while the gateway runs: one audit record, with
        the option names only (values can be secrets)."""
        if self._writer is None:
            return
        self._writer.write(
            {"event": "option_change", "ts": round(time.time(), 3), "options": names, "refused": refused}
        )
        self.records += 1

    def response(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and flow.response is not None:
            self._record(flow, state, flow.response.status_code, None)

    def error(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None:
            # A stream that broke after its headers keeps their status; nothing answered at all is a 502.
            status = flow.response.status_code if flow.response is not None else 502
            self._record(flow, state, status, flow.error.msg if flow.error else "unknown error")

    def _record(self, flow: http.HTTPFlow, state: GatewayRequest, status: int, error: str | None) -> None:
        if flow.metadata.get(AUDITED) or self._writer is None:
            return
        # Set first: whatever happens below, a flow never gets a second record.
        flow.metadata[AUDITED] = True
        try:
            record = audit_record(state, status, flow.request.raw_content or b"")
            guardrails = state.policy.policy.guardrails
            if guardrails is not None and guardrails.audit_content and state.body is not None:
                # Content only when the policy asks for it, and then with every detector applied.
                content = {
                    name: state.body[name] for name in ("instructions", "input", "messages") if name in state.body
                }
                record["content"] = redact_text(json.dumps(content), guardrails.detectors_compiled())
            findings = flow.metadata.get("codexgate.guardrail_findings")
            if findings:
                record["guardrail_findings"] = sorted(set(findings))
            if error is not None:
                record["error"] = error
                if record["decision"] in ("pending", "forwarded"):
                    # The same word Accounting uses, whichever of the two runs first.
                    record["decision"] = "upstream_error"
            self._writer.write(record)
            self.records += 1
            self._written += 1
            if self._fsync_mode == "batch":
                self._schedule_sync()
        except Exception:
            # An audit failure must not break the request, but nobody may miss it either.
            self.failures += 1
            logger.error(
                "AUDIT RECORD NOT WRITTEN for request %s (%d failures so far)",
                state.request_id,
                self.failures,
                exc_info=True,
            )

    def _schedule_sync(self) -> None:
        """Group commit: one fsync at a time in a worker thread, started at most every
        SYNC_INTERVAL after the first unsynced record (at 200 req/s an fsync per record costs
        ~0.4 ms of loop time each; batched, one covers every record of the interval)."""
        if self._syncing or self._writer is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (tests calling hooks directly): the OS flushes on close
        self._syncing = True
        loop.call_later(SYNC_INTERVAL, self._start_sync, loop)

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self._writer.duplicate_fd() if self._writer is not None else None
        if fd is None:
            self._syncing = False
            return
        target = self._written

        def sync() -> None:
            try:
                os.fsync(fd)
            except OSError:
                logger.error("audit log fsync failed", exc_info=True)
            finally:
                os.close(fd)
                loop.call_soon_threadsafe(done, target)

        def done(covered: int) -> None:
            self._syncing = False
            self._synced = max(self._synced, covered)
            if self._written > self._synced:
                self._schedule_sync()

        loop.run_in_executor(None, sync)

    def _close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            fd = writer.duplicate_fd() if self._fsync_mode == "batch" else None
            if fd is not None:  # on shutdown, the last records reach the disk before we stop
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            writer.close()

    def done(self) -> None:
        self._close()
