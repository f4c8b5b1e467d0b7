"""Write-ahead record of forwarded requests, and recovery after a crash (see `codexgate.wal`).

Right after `Seal`, each request about to leave the gateway gets a line in the write-ahead log:
who, what, and the estimate `Limits` reserved for it. At start-up, a log the previous run left
without a clean close means it crashed (kill -9, OOM, power loss); for every request in it:

- with an accounting line (its answer was recorded): its settlement is applied to the store again
  (settle is idempotent per request: a no-op if it had landed, the actual cost if the crash came
  between the answer and the settlement);
- without one (the answer was lost): an accounting line and an audit record with
  `charge: estimate` and `recovered: true`, and the store's reservation is settled at that same
  estimate — which admission already added to the counters, so nothing is counted twice and the
  store and `codexgate usage` agree. (Redis: a reservation nobody settles stays charged at its
  estimate too; settling it at the estimate only closes it sooner.)

A request the failover relay moved to another provider or model is recovered as that deployment's:
`Limits` moves its reservation there (under an id of its own) only after a `switch` line naming it
is on record, so recovery settles the last one named (its provider, model and estimate; the record
names them too) and releases any earlier one — the first choice's counters are not charged for an
answer another provider was giving.

The audit log gets one `event: crash` record naming the gap, which `codexgate audit verify`
reports as a crash (exit 2), not as tampering and not as intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from codexgate.addons.accounting import Accounting
from codexgate.addons.audit_log import AuditLog
from codexgate.addons.limits import Limits, Switch
from codexgate.audit import CRASH_EVENT, _utc_iso
from codexgate.errors import error_response
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest, refuse, state_of
from codexgate.metrics import GatewayMetrics
from codexgate.records import audit_fields, forwarded_entry, recovered_record
from codexgate.stores.base import Amounts, StoreUnavailable
from codexgate.wal import ForwardLog, PreviousRun

logger = logging.getLogger(__name__)

SYNC_INTERVAL = 0.05
LOST_ANSWER = "the gateway stopped before this request's answer was recorded; charged its estimate"
ACCOUNTING_SCAN_MARGIN = 5.0  # seconds before the oldest forwarded request the accounting scan looks back


def _estimate(entry: dict[str, Any]) -> Amounts:
    usd, requests, tokens = entry.get("estimate") or (0.0, 0.0, 0.0)
    return Amounts(usd=float(usd), requests=float(requests), tokens=float(tokens))


def answering(entry: dict[str, Any], switches: list[dict[str, Any]]) -> dict[str, Any]:
    """A request's write-ahead entry as of its last failover switch: the deployment it was moved to
    (provider, model, estimate, the reservation made there) and the reservations it left
    (`superseded`, released by then unless a crash came first)."""
    if not switches:
        return entry
    last = switches[-1]
    return {
        **entry,
        "provider": last.get("provider"),
        "model": last.get("model"),
        "upstream_model": last.get("upstream_model"),
        "estimate": last.get("estimate"),
        "reserved": bool(last.get("reserve")),
        "reservation": last.get("reservation"),
        "superseded": [entry["id"], *(s.get("reservation") for s in switches[:-1])],
    }


def settled_amounts(line: dict[str, Any], entry: dict[str, Any]) -> Amounts | None:
    """What the accounting line says was charged, as store amounts (None: released)."""
    charge = line.get("charge")
    if charge == "release":
        return None
    usage = line.get("usage") or {}
    if usage:
        tokens = float(usage.get("input_tokens", 0) + usage.get("output_tokens", 0))
    else:
        tokens = _estimate(entry).tokens if charge == "estimate" else 0.0
    return Amounts(usd=float(line.get("cost_usd") or 0.0), requests=1, tokens=tokens)


def accounted_lines(path: str | None, ids: set[str], since: float) -> dict[str, dict[str, Any]]:
    """Accounting lines of `ids`, read backwards from the end until lines are older than `since`."""
    found: dict[str, dict[str, Any]] = {}
    if not path or not ids:
        return found
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return found
    with handle:
        end = handle.seek(0, os.SEEK_END)
        position, rest = end, b""
        while position > 0 and len(found) < len(ids):
            step = min(position, 1 << 20)
            position -= step
            handle.seek(position)
            block = handle.read(step) + rest
            lines = block.split(b"\n")
            rest = lines.pop(0) if position > 0 else b""
            oldest = None
            for raw in reversed(lines):
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(line, dict):
                    continue
                oldest = line.get("ts", oldest)
                if line.get("request_id") in ids:
                    found.setdefault(line["request_id"], line)
            if isinstance(oldest, int | float) and oldest < since:
                break
    return found


class WriteAhead:
    def __init__(self, limits: Limits, accounting: Accounting, audit: AuditLog, metrics: GatewayMetrics) -> None:
        self._limits = limits
        self._accounting = accounting
        self._audit = audit
        self._metrics = metrics
        self._log: ForwardLog | None = None
        self._fsync = True
        self._syncing = False
        self._spec: tuple[str, str] | None = None
        self.recovered = 0
        self.resettled = 0
        limits.on_switch.append(self._switched)

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_wal", bool, True,
            "Write-ahead record of every forwarded request (DATA_DIR/wal/), so that a crash (kill -9) loses "
            "no request's accounting: at the next start each one without a record is recorded, charged its "
            "estimate, and the audit log names the crash.",
        )  # fmt: skip
        loader.add_option(
            "codexgate_wal_fsync", str, "batch",
            "'batch': the write-ahead record is written before the request leaves (survives kill -9) and "
            "fsynced within 50 ms by a group commit (survives power loss but for those 50 ms); 'off': the "
            "OS decides when it reaches the disk.",
            choices=["batch", "off"],
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if not {"codexgate_wal", "codexgate_wal_fsync", "codexgate_data_dir", "codexgate_writer_id"} & updated:
            return
        self._fsync = ctx.options.codexgate_wal_fsync == "batch"
        data_dir = getattr(ctx.options, "codexgate_data_dir", "") or ""
        writer = getattr(ctx.options, "codexgate_writer_id", "") or ""
        spec = (data_dir, writer) if ctx.options.codexgate_wal and data_dir else None
        if spec == self._spec:
            return
        self._close()
        self._spec = spec
        if spec is not None:
            self._log = ForwardLog(Path(data_dir).expanduser() / "wal", writer)

    async def running(self) -> None:
        if self._log is not None and self._log.previous.files:
            await self.recover(self._log.previous)
            self._log.discard_previous()

    async def recover(self, previous: PreviousRun) -> None:
        entries = {
            request_id: answering(entry, previous.switches.get(request_id, []))
            for request_id, entry in previous.entries.items()
        }
        since = min((entry.get("ts", 0.0) for entry in entries.values()), default=0.0) - ACCOUNTING_SCAN_MARGIN
        accounted = accounted_lines(self._accounting.path, set(entries), since)
        lost = [entry for request_id, entry in entries.items() if request_id not in accounted]
        runs = ", ".join(
            f"pid {h.get('pid')} started {_utc_iso(float(h.get('started', 0)))}" for h in previous.headers[:1]
        )
        how = (
            "ended without shutting down (kill -9, crash or power loss)"
            if previous.crashed
            else "stopped with requests unfinished"
        )
        summary = (
            f"the previous run ({runs or 'unknown'}) {how}; {len(entries)} forwarded request(s) were in flight: "
            f"{len(lost)} had no record and were recorded now, charged their estimate; "
            f"{len(entries) - len(lost)} were recorded already"
        )
        # A warning, not an error: mitmproxy stops a gateway that logs an error while starting.
        logger.warning("write-ahead log: %s", summary)
        if previous.crashed or lost:
            self._audit_append(
                {
                    "event": CRASH_EVENT if previous.crashed else "unfinished_at_shutdown",
                    "time": _utc_iso(time.time()),
                    "ts": round(time.time(), 3),
                    "summary": summary,
                    "in_flight": len(entries),
                    "recovered_ids": sorted(entry["id"] for entry in lost),
                }
            )
        for entry in lost:
            self._record_lost(entry)
        self.recovered += len(lost)
        self._metrics.recovered.labels("answer").inc(len(lost))
        with contextlib.suppress(OSError):
            self._accounting.sync()
        store = self._limits.store
        if store is None:
            return
        for request_id, entry in entries.items():
            for earlier in entry.get("superseded", ()):
                if not isinstance(earlier, str):
                    continue
                try:
                    await store.release(earlier)  # (a no-op when the failover had released it)
                except (StoreUnavailable, ValueError) as exc:
                    logger.error("write-ahead recovery: cannot release %s (%s); it stays charged as held", earlier, exc)
            if not entry.get("reserved"):
                continue
            line = accounted.get(request_id)
            amounts = _estimate(entry) if line is None else settled_amounts(line, entry)
            held = entry.get("reservation") or request_id
            try:
                changed = await (store.release(held) if amounts is None else store.settle(held, amounts))
            except (StoreUnavailable, ValueError) as exc:
                logger.error(
                    "write-ahead recovery: cannot settle %s (%s); it stays charged its estimate", request_id, exc
                )
                continue
            if changed and line is not None:
                self.resettled += 1
                self._metrics.recovered.labels("settlement").inc()

    def _record_lost(self, entry: dict[str, Any]) -> None:
        record = recovered_record(entry, _estimate(entry).usd, LOST_ANSWER, time.time())
        self._accounting.append_record(record)
        self._audit_append(audit_fields(record, None))

    def _audit_append(self, record: dict[str, Any]) -> None:
        try:
            self._audit.append(record)
        except Exception:
            logger.warning("AUDIT RECORD NOT WRITTEN during crash recovery", exc_info=True)

    def _switched(self, switch: Switch) -> None:
        """A relayed request is about to move to another deployment: on record before its
        reservation moves (raises when it cannot be written: Limits does not try that deployment)."""
        if self._log is None:
            return
        candidate, estimate = switch.candidate, switch.estimate
        line = {
            "switch": switch.request_id,
            "ts": round(time.time(), 3),
            "reservation": switch.reservation_id,
            "provider": candidate.provider,
            "model": candidate.model,
            "upstream_model": candidate.upstream_model,
            "estimate": [estimate.usd, estimate.requests, estimate.tokens],
            "reserve": switch.reserving,
        }
        try:
            self._log.note(switch.request_id, line)
        except Exception:
            self._metrics.audit_failures.inc()
            raise
        self._schedule_sync()

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or self._log is None:
            return
        # `state_of(flow)`, inline (once per request).
        state = flow.metadata.get(METADATA_KEY)
        if not isinstance(state, GatewayRequest) or state.decision is not Decision.FORWARDED:
            return
        try:
            self._log.append(state.request_id, forwarded_entry(state))
        except Exception:
            # Fail closed: a request that cannot be put on record does not leave (its reservation
            # is released like any refusal's). A full disk stops traffic rather than the record.
            self._metrics.audit_failures.inc()
            logger.error("write-ahead record not written for %s; refused", state.request_id, exc_info=True)
            state.cleared = False
            refuse(
                flow,
                error_response(
                    503, "record_unavailable",
                    "codexgate cannot put this request on record right now (its write-ahead log failed); retry shortly",
                    headers={"retry-after": "5"},
                ),
                Decision.RECORD_UNAVAILABLE,
            )  # fmt: skip
            return
        if not self._syncing:  # `_schedule_sync`'s own first test: no call while one is pending
            self._schedule_sync()

    def response(self, flow: http.HTTPFlow) -> None:
        # `_finish` and `state_of(flow)`, inline (once per request).
        state = flow.metadata.get(METADATA_KEY)
        if isinstance(state, GatewayRequest) and self._log is not None:
            self._log.finish(state.request_id)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and self._log is not None:
            self._log.finish(state.request_id)

    def _schedule_sync(self) -> None:
        if self._syncing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._syncing = True
        loop.call_later(SYNC_INTERVAL, self._start_sync, loop)

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        log = self._log
        if log is None:
            self._syncing = False
            return
        try:
            log.maintain()
        except OSError:
            logger.error("write-ahead log: rotating failed", exc_info=True)
        fd = log.duplicate_fd() if self._fsync else None
        if fd is None:
            self._syncing = False
            return

        def sync() -> None:
            try:
                os.fsync(fd)
            except OSError:
                logger.error("write-ahead log fsync failed", exc_info=True)
            finally:
                os.close(fd)
                loop.call_soon_threadsafe(done)

        def done() -> None:
            self._syncing = False
            if self._log is not None and self._log.unfinished:
                self._schedule_sync()  # keeps maintaining while requests are in flight

        loop.run_in_executor(None, sync)

    def _close(self) -> None:
        if self._log is not None:
            log, self._log = self._log, None
            log.close()

    def done(self) -> None:
        self._close()
