"""CPU cost on the event loop of the crash-safe record and the audit writer's checks, per request.

What each request pays on mitmproxy's loop, measured directly (the fsyncs run in a worker thread
and are batched per 50 ms, so they are not on the request's path):

  wal            WriteAhead.request + its finish: one JSON line, one write(2), bookkeeping
  audit          AuditWriter.write of a request-sized record (with the file check: one stat(2))
  audit-nocheck  the same without the file check
  audit-signed   the same with the running sha256 for checkpoints
  head           the head file a group commit writes (in the worker thread, at most once a second)
  checkpoint     one checkpoint: snapshot on the loop + Ed25519 signature and append (in the
                 worker thread in the gateway), amortised over codexgate_audit_checkpoint_records

CPU time of the calling thread (`time.thread_time`), median over batches taken in turn across the
rows, so that other load on the machine inflates every row alike.

    .venv/bin/python bench/bench_audit_wal.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy.test import tflow

from codexgate.audit import AuditWriter
from codexgate.audit_signing import CheckpointLog, load_private_key, write_key_pair
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest
from codexgate.policies.loader import parse_policy
from codexgate.wal import ForwardLog

POLICY = """\
providers:
  openai: {kind: openai, base_url: "http://127.0.0.1:9/v1", keys: [{value: "env:X"}]}
models:
  gpt-bench: {routes: [{provider: openai}], price: {input_per_mtok: 1, output_per_mtok: 8}}
orgs: {acme: {}}
teams: {platform: {org: acme}}
keys:
  - {name: alice, team: platform, hash: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}
"""

RECORD = {
    "time": "2026-12-07T02:00:00.000Z", "ts": 1796608800.0, "request_id": "0" * 36, "session_id": "s" * 36,
    "mode": "gateway", "endpoint": "responses", "key": "alice", "team": "platform", "org": "acme",
    "model_requested": "gpt-bench", "model": "gpt-bench", "provider": "openai", "upstream_model": "gpt-bench",
    "usage": {"input_tokens": 11, "cached_tokens": 3, "output_tokens": 7, "reasoning_tokens": 2},
    "cost_usd": 0.000067, "charge": "actual", "status": 200, "decision": "forwarded", "body_sha256": "f" * 64,
}  # fmt: skip


def per_call_us(rows: dict[str, Any], calls: int, batches: int = 40) -> dict[str, float]:
    """Median CPU µs per call of each row, batches of the rows taken in turn."""
    samples: dict[str, list[float]] = {name: [] for name in rows}
    size = max(1, calls // batches)
    for _ in range(batches):
        for name, run in rows.items():
            start = time.thread_time()
            run(size)
            samples[name].append((time.thread_time() - start) / size * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codexgate-bench-wal-"))
    policy = parse_policy(POLICY, "bench.yaml")
    from codexgate.records import forwarded_entry

    flows = []
    for _ in range(1000):
        flow = tflow.tflow()
        state = GatewayRequest(request_id=flow.id, policy=policy, mode="gateway", endpoint="responses")
        state.key = next(iter(policy.keys_by_hash.values()))
        state.team, state.org, state.session_id = "platform", "acme", "s" * 36
        state.model_requested = state.model = state.upstream_model = "gpt-bench"
        state.provider, state.decision = "openai", Decision.FORWARDED
        flow.metadata[METADATA_KEY] = state
        flows.append(state)
    log = ForwardLog(work / "wal")

    def wal(n: int) -> None:
        for i in range(n):
            state = flows[i % 1000]
            log.append(state.request_id, forwarded_entry(state))
            log.finish(state.request_id)

    def audit_rows(directory: Path, check: bool, signer: CheckpointLog | None) -> Any:
        writer = AuditWriter(directory, fsync=False, signer=signer)
        if not check:
            writer._file_changed = lambda: None  # type: ignore[method-assign]

        def run(n: int) -> None:
            for _ in range(n):
                writer.write(RECORD)

        return run, writer

    write_key_pair(work / "k", work / "k.pub")
    key = load_private_key((work / "k").read_text())
    rows: dict[str, Any] = {"wal": wal}
    writers = []
    for label, check, signed in (("audit", True, False), ("audit-nocheck", False, False), ("audit-signed", True, True)):
        directory = work / label
        directory.mkdir(mode=0o700)
        run, writer = audit_rows(directory, check, CheckpointLog(directory, "", key) if signed else None)
        rows[label] = run
        writers.append(writer)
    results = per_call_us(rows, args.requests)
    signed_writer = writers[-1]

    def checkpoint(n: int) -> None:
        for _ in range(n):
            signed_writer.write(RECORD)
            snapshot = signed_writer.checkpoint_snapshot()
            assert snapshot is not None
            signed_writer.sign_checkpoint(snapshot)

    results["checkpoint"] = per_call_us({"checkpoint": checkpoint}, 400, 20)["checkpoint"] - results["audit-signed"]

    def head(n: int) -> None:
        for _ in range(n):
            signed_writer.save_head(signed_writer.head())

    results["head"] = per_call_us({"head": head}, 400, 20)["head"]
    for writer in writers:
        writer.close()
    for name, value in results.items():
        print(f"{name:14s} {value:8.1f} µs")
    print(f"file check (audit - audit-nocheck): {results['audit'] - results['audit-nocheck']:.1f} µs")
    print(f"checkpoint every 1000 records: {results['checkpoint'] / 1000:.2f} µs per record (in the sync thread)")
    print(f"head file, once a second: {results['head'] / 1000:.2f} ms of CPU a second (sync thread)")


if __name__ == "__main__":
    main()
