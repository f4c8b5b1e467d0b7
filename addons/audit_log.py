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
from hashlib import sha256
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from codexgate.audit import WRITER_PATTERN, AuditWriter
from codexgate.detectors import redact_text
from codexgate.flowstate import METADATA_KEY, GatewayRequest, state_of
from codexgate.metrics import GatewayMetrics
from codexgate.records import audit_fields, request_record
from codexgate.secrets import REFERENCE_HELP, SecretResolver, SecretUnavailable

logger = logging.getLogger(__name__)

SYNC_INTERVAL = 0.05  # seconds a record may wait for its fsync in "batch" mode
HEAD_INTERVAL = 1.0  # seconds between updates of the head file (the restart check lags by that much)

OPTIONS = {
    "codexgate_audit",
    "codexgate_audit_dir",
    "codexgate_audit_fsync",
    "codexgate_audit_hmac_key",
    "codexgate_audit_signing_key",
    "codexgate_audit_checkpoint_records",
    "codexgate_audit_checkpoint_seconds",
    "codexgate_data_dir",
    "codexgate_writer_id",
}


class AuditLog:
    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self._metrics = metrics or GatewayMetrics()
        self._writer: AuditWriter | None = None
        self._checkpoint_records = 1000
        self._checkpoint_seconds = 60.0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._last_head = 0.0
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
        loader.add_option(
            "codexgate_audit_signing_key",
            str,
            "",
            "Reference to an Ed25519 private key (PEM, from `codexgate audit keygen`) that signs checkpoints of "
            f"the audit chain ({REFERENCE_HELP}); an auditor then checks the log with the public key alone: "
            "`codexgate audit verify --public-key FILE`. Default: no checkpoints.",
        )
        loader.add_option(
            "codexgate_audit_checkpoint_records",
            int,
            1000,
            "A signed checkpoint at least every this many audit records (with codexgate_audit_signing_key).",
        )
        loader.add_option(
            "codexgate_audit_checkpoint_seconds",
            float,
            60.0,
            "A signed checkpoint at most this many seconds after the first record it does not cover yet, "
            "and at shutdown (with codexgate_audit_signing_key).",
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
        if ctx.options.codexgate_audit_checkpoint_records < 1 or ctx.options.codexgate_audit_checkpoint_seconds <= 0:
            raise exceptions.OptionsError(
                "codexgate_audit_checkpoint_records must be >= 1 and codexgate_audit_checkpoint_seconds > 0"
            )
        writer_id = getattr(ctx.options, "codexgate_writer_id", "") or ""
        if writer_id and not WRITER_PATTERN.match(writer_id):
            raise exceptions.OptionsError(
                f"codexgate_writer_id {writer_id!r}: a lower-case letter, then letters, digits or _ (at most 32)"
            )
        self._checkpoint_records = ctx.options.codexgate_audit_checkpoint_records
        self._checkpoint_seconds = ctx.options.codexgate_audit_checkpoint_seconds
        signing_key = None
        if ctx.options.codexgate_audit_signing_key:
            from codexgate.audit_signing import load_private_key

            try:
                signing_key = load_private_key(self._resolver.resolve(ctx.options.codexgate_audit_signing_key))
            except (SecretUnavailable, ValueError) as exc:
                raise exceptions.OptionsError(f"codexgate_audit_signing_key: {exc}") from None
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
            path = Path(directory).expanduser()
            signer = None
            if signing_key is not None:
                from codexgate.audit_signing import CheckpointLog

                signer = CheckpointLog(path, writer_id, signing_key)  # the writer makes the directory (0700)
            self._writer = AuditWriter(
                path,
                hmac_key=key,
                fsync=self._fsync_mode == "always",
                writer=writer_id,
                signer=signer,
                on_break=self._on_break,
            )
        except OSError as exc:
            raise exceptions.OptionsError(f"cannot open the audit log in {directory}: {exc}") from None
        self._last_checkpoint = time.monotonic()
        logger.info(
            "audit log in %s (%s chain%s, next seq %d%s)",
            directory,
            "HMAC-SHA256" if key else "sha256",
            f" of writer {writer_id}" if writer_id else "",
            self._writer.seq + 1,
            ", signed checkpoints" if signer is not None else "",
        )

    def _on_break(self, reason: str) -> None:
        self._metrics.audit_breaks.inc()

    @property
    def writer(self) -> AuditWriter | None:
        return self._writer

    def append(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write a record that is not about one flow (a crash, a recovered request); None if the log is off."""
        if self._writer is None:
            return None
        stored = self._writer.write(record)
        self._written += 1
        self._schedule_sync()
        return stored

    def record_option_change(self, names: list[str], refused: bool) -> None:
        """An option changed (or a change refused) while the gateway runs: one audit record, with
        the option names only (values can be secrets)."""
        self.append({"event": "option_change", "ts": round(time.time(), 3), "options": names, "refused": refused})

    def response(self, flow: http.HTTPFlow) -> None:
        # `state_of(flow)` and the `status_code` property, inline: this runs once per request.
        state = flow.metadata.get(METADATA_KEY)
        response = flow.response
        if isinstance(state, GatewayRequest) and response is not None:
            self._record(flow, state, response.data.status_code, None)

    def error(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None:
            # A stream that broke after its headers keeps their status; nothing answered at all is a 502.
            status = flow.response.status_code if flow.response is not None else 502
            self._record(flow, state, status, flow.error.msg if flow.error else "unknown error")

    def _record(self, flow: http.HTTPFlow, state: GatewayRequest, status: int, error: str | None) -> None:
        if state.audited or self._writer is None:
            return
        # Set first: whatever happens below, a flow never gets a second record.
        state.audited = True
        try:
            # `codexgate.audit.audit_record`, inline: the request's one record (Accounting, before
            # this step, built it already), its audit view and the body's hash (`raw_content` is
            # the message data's `content`).
            record = state.record
            if record is None:
                record = request_record(state, status, error)
            record = audit_fields(record, sha256(flow.request.data.content or b"").hexdigest())
            guardrails = state.policy.policy.guardrails
            if guardrails is not None and guardrails.audit_content and state.body is not None:
                # Content only when the policy asks for it, and then with every detector applied.
                content = {
                    name: state.body[name] for name in ("instructions", "input", "messages") if name in state.body
                }
                record["content"] = redact_text(json.dumps(content), guardrails.detectors_compiled())
            if state.guardrail_findings:
                record["guardrail_findings"] = sorted(set(state.guardrail_findings))
            self._writer.write(record)
            self.records += 1
            self._written += 1
            if not self._syncing:  # `_schedule_sync`'s own first test: no call while one is pending
                self._schedule_sync()
        except Exception:
            # An audit failure must not break the request, but nobody may miss it either.
            self.failures += 1
            self._metrics.audit_failures.inc()
            logger.error(
                "AUDIT RECORD NOT WRITTEN for request %s (%d failures so far)",
                state.request_id,
                self.failures,
                exc_info=True,
            )

    def _schedule_sync(self) -> None:
        """Group commit: one fsync at a time in a worker thread, started at most every
        SYNC_INTERVAL after the first unsynced record (at 200 req/s an fsync per record costs
        ~0.4 ms of loop time each; batched, one covers every record of the interval). The same
        commit refreshes the head file and, when one is due, appends a signed checkpoint."""
        if self._syncing or self._writer is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (tests calling hooks directly): everything is synced at close
        self._syncing = True
        loop.call_later(SYNC_INTERVAL, self._start_sync, loop)

    def _checkpoint_due(self) -> bool:
        writer = self._writer
        if writer is None or not writer.signing:
            return False
        pending = writer.seq - writer.checkpointed_seq
        return pending >= self._checkpoint_records or (
            pending > 0 and time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
        )

    def _start_sync(self, loop: asyncio.AbstractEventLoop, force_checkpoint: bool = False) -> None:
        writer = self._writer
        fd = writer.duplicate_fd() if writer is not None and self._fsync_mode == "batch" else None
        if writer is None:
            self._syncing = False
            return
        target = self._written
        now = time.monotonic()
        head = None
        if now - self._last_head >= HEAD_INTERVAL:
            head, self._last_head = writer.head(), now
        snapshot = writer.checkpoint_snapshot() if force_checkpoint or self._checkpoint_due() else None
        if snapshot is not None:
            self._last_checkpoint = time.monotonic()

        def sync() -> None:
            try:
                if fd is not None:
                    os.fsync(fd)
                # Only records known to be on disk go into the head file and a checkpoint.
                if head is not None:
                    writer.save_head(head)
                if snapshot is not None:
                    writer.sign_checkpoint(snapshot)
            except OSError:
                logger.error("audit log fsync, head or checkpoint failed", exc_info=True)
            finally:
                if fd is not None:
                    os.close(fd)
                loop.call_soon_threadsafe(done, target)

        def done(covered: int) -> None:
            self._syncing = False
            self._synced = max(self._synced, covered)
            if self._written > self._synced:
                self._schedule_sync()
            elif self._writer is not None and self._writer.signing and self._writer.seq > self._writer.checkpointed_seq:
                self._arm_checkpoint_timer(loop)

        loop.run_in_executor(None, sync)

    def _arm_checkpoint_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Records the last checkpoint does not cover get one within codexgate_audit_checkpoint_seconds,
        even when no further record comes."""
        if self._checkpoint_timer is not None:
            return
        wait = max(0.0, self._checkpoint_seconds - (time.monotonic() - self._last_checkpoint))

        def fire() -> None:
            self._checkpoint_timer = None
            if self._syncing or self._writer is None:
                return
            self._syncing = True
            self._start_sync(loop, force_checkpoint=True)

        self._checkpoint_timer = loop.call_later(wait, fire)

    def _close(self) -> None:
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            fd = writer.duplicate_fd() if self._fsync_mode == "batch" else None
            try:
                if fd is not None:  # on shutdown, the last records reach the disk before we stop
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                writer.save_head(writer.head())
                snapshot = writer.checkpoint_snapshot()
                if snapshot is not None:
                    writer.sign_checkpoint(snapshot)
            except OSError:
                logger.error("audit log: final fsync, head or checkpoint failed", exc_info=True)
            finally:
                writer.close()

    def done(self) -> None:
        self._close()
