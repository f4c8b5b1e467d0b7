"""kill -9 loses no request's record: every forwarded request ends with exactly one accounting line
(`charge: estimate`, `recovered: true` where the answer was lost), the counter store and
`codexgate usage` agree, and the audit log names the crash (`audit verify` exits 2, "CRASH")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI
from mitmproxy.test import taddons, tflow

from codexgate.addons.accounting import Accounting
from codexgate.addons.audit_log import AuditLog
from codexgate.addons.limits import Limits, counters_for
from codexgate.addons.policy_source import PolicySource
from codexgate.addons.write_ahead import WriteAhead
from codexgate.audit import verify
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest
from codexgate.metrics import GatewayMetrics
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import load_policy
from codexgate.stores.base import Amounts
from codexgate.stores.factory import open_store

IN_FLIGHT = 5
COMPLETED = 2


def policy_file(tmp_path: Path, upstream: str) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  openai: {{kind: openai, base_url: "{upstream}", keys: [{{value: "env:CG_TEST_UPSTREAM_KEY"}}]}}
models:
  gpt-test: {{routes: [{{provider: openai}}], price: {{input_per_mtok: 1.0, output_per_mtok: 8.0}}}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme, budgets: [{{limit_usd: 1000, period: 1M}}]}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    return policy


def wait_until(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def store_total(policy: Path, store_spec: str, data_dir: Path) -> float:
    """The team's spend as the counter store has it, through the store's own API."""
    compiled = load_policy(policy)
    now = time.time()
    counters = counters_for([("team", "platform", compiled.policy.teams["platform"])], now)

    async def read() -> float:
        store = open_store(store_spec, str(data_dir))
        try:
            states = await store.snapshot(counters, now)
        finally:
            await store.close()
        return states[0].used

    return asyncio.run(read())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codexgate.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def upstream() -> Any:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_kill_9_mid_stream_every_request_keeps_one_record(
    tmp_path: Path, upstream: FakeOpenAI, store: str, request: pytest.FixtureRequest
) -> None:
    store_spec = "embedded"
    if store == "redis":
        store_spec = request.getfixturevalue("fresh_redis_server").url
    policy = policy_file(tmp_path, upstream.url)
    data_dir = tmp_path / "data"
    gateway = Gateway(policy, data_dir)
    gateway.store = store_spec
    gateway.start()
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
    try:
        for n in range(COMPLETED):
            client.responses.create(model="gpt-test", input=f"done {n}")
        gateway.wait_accounting(lambda line: line["charge"] == "actual", COMPLETED)

        upstream.hold_stream.set()  # streams send their first event, then wait: in flight for sure
        started = threading.Barrier(IN_FLIGHT + 1, timeout=30)

        def stream(n: int) -> None:
            try:
                with client.responses.create(model="gpt-test", input=f"stream {n}", stream=True) as events:
                    for _ in events:
                        started.wait()  # the first event got through the gateway
                        break
                    for _ in events:
                        pass
            except (openai.APIError, threading.BrokenBarrierError):
                pass  # the gateway dies under it

        threads = [threading.Thread(target=stream, args=(n,), daemon=True) for n in range(IN_FLIGHT)]
        for thread in threads:
            thread.start()
        started.wait()
        assert gateway.process is not None
        gateway.process.kill()  # kill -9: no hook, no flush, no settlement runs
        gateway.process.wait(10)
    finally:
        upstream.release_stream.set()
        gateway.stop()
    for thread in threads:
        thread.join(10)
    before = gateway.accounting()
    assert len(before) == COMPLETED  # the in-flight ones left no accounting line themselves
    forwarded_ids = {line["request_id"] for line in before}

    restarted = Gateway(policy, data_dir)
    restarted.store = store_spec
    restarted.start()
    try:
        log = restarted.wait_log("write-ahead log:")
        assert f"{IN_FLIGHT + COMPLETED} forwarded request(s) were in flight" in log or (
            f"{IN_FLIGHT} had no record and were recorded now" in log
        ), log
        lines = restarted.wait_accounting(lambda line: bool(line.get("recovered")), IN_FLIGHT)
        # A request finished since the restart still works.
        client = openai.OpenAI(api_key=ALICE_KEY, base_url=restarted.base_url, max_retries=0, timeout=30)
        client.responses.create(model="gpt-test", input="after")
        restarted.wait_accounting(lambda line: line["charge"] == "actual", COMPLETED + 1)
    finally:
        restarted.stop()
    assert len(lines) == IN_FLIGHT
    for line in lines:
        assert line["charge"] == "estimate" and line["cost_usd"] > 0 and line["decision"] == "forwarded"
        assert line["request_id"] not in forwarded_ids
    accounting = restarted.accounting()
    ids = [line["request_id"] for line in accounting]
    assert len(ids) == len(set(ids)) == COMPLETED + IN_FLIGHT + 1  # exactly one line per request
    spent = sum(line["cost_usd"] for line in accounting)
    assert store_total(policy, store_spec, data_dir) == pytest.approx(spent, rel=1e-9, abs=1e-12)
    usage = run_cli("usage", "--data-dir", str(data_dir), "--by", "team", "--json")
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout)[0]["cost_usd"] == pytest.approx(spent, rel=1e-9)
    verdict = run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert verdict.returncode == 2, verdict.stdout
    assert verdict.stdout.startswith("CRASH: ") and "chain intact" in verdict.stdout
    assert f"{IN_FLIGHT} had no record and were recorded now" in verdict.stdout
    result = verify(data_dir / "audit")
    assert result.ok and len(result.crashes) == 1
    audited = [
        json.loads(line)
        for path in sorted((data_dir / "audit").glob("audit-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    recovered = [record for record in audited if record.get("recovered")]
    assert sorted(record["request_id"] for record in recovered) == sorted(line["request_id"] for line in lines)
    # A clean stop leaves no write-ahead log behind: nothing to recover next time.
    assert not list((data_dir / "wal").glob("forwarded-*.jsonl"))


def test_crash_between_answer_and_settlement_is_settled_at_the_actual_cost(tmp_path: Path) -> None:
    """The answer was accounted (actual cost) but the settlement had not reached the store: recovery
    settles it at the accounted cost, so the store and the accounting log agree."""
    data_dir = tmp_path / "data"
    (data_dir / "wal").mkdir(parents=True)
    policy = policy_file(tmp_path, "http://127.0.0.1:9/v1")
    compiled = load_policy(policy)
    now = time.time()
    counters = counters_for([("team", "platform", compiled.policy.teams["platform"])], now)
    estimate = Amounts(usd=0.5, requests=1, tokens=4100)

    async def reserve() -> None:
        store = open_store("embedded", str(data_dir))
        assert (await store.reserve("req-settled-late", counters, estimate, now)).admitted
        assert (await store.reserve("req-lost", counters, estimate, now)).admitted
        await store.close()

    asyncio.run(reserve())
    entry = {"id": "req-settled-late", "ts": now, "key": "alice", "team": "platform", "reserved": True,
             "estimate": [0.5, 1, 4100], "endpoint": "responses", "model": "gpt-test"}  # fmt: skip
    lost = dict(entry, id="req-lost")
    (data_dir / "wal" / "forwarded-000001.jsonl").write_text(
        json.dumps({"wal": 1, "pid": 1, "started": now}) + "\n" + json.dumps(entry) + "\n" + json.dumps(lost) + "\n"
    )
    (data_dir / "accounting.jsonl").write_text(
        json.dumps({"ts": now, "request_id": "req-settled-late", "endpoint": "responses", "team": "platform",
                    "decision": "forwarded", "charge": "actual", "cost_usd": 0.001,
                    "usage": {"input_tokens": 10, "output_tokens": 5}}) + "\n"
    )  # fmt: skip
    metrics = GatewayMetrics()
    source = PolicySource(metrics)
    limits = Limits(source, metrics)
    accounting = Accounting(metrics)
    audit_log = AuditLog(metrics)
    write_ahead = WriteAhead(limits, accounting, audit_log, metrics)

    async def start() -> tuple[float, Any]:
        # Everything that logs happens while the loop lives: taddons' log handler is bound to it.
        with taddons.context(source, limits, accounting, audit_log, write_ahead) as context:
            context.configure(source, codexgate_policy=str(policy), codexgate_data_dir=str(data_dir))
            await write_ahead.running()
            await limits.done()
            accounting.done()
            audit_log.done()
            write_ahead.done()
            store = open_store("embedded", str(data_dir))
            try:
                (state,) = await store.snapshot(counters, time.time())
            finally:
                await store.close()
            return state.used, verify(data_dir / "audit")

    total, result = asyncio.run(start())
    assert (write_ahead.recovered, write_ahead.resettled) == (1, 1)
    assert total == pytest.approx(0.001 + 0.5)
    lines = [json.loads(line) for line in (data_dir / "accounting.jsonl").read_text().splitlines()]
    assert [(line["request_id"], line["charge"], line.get("recovered")) for line in lines] == [
        ("req-settled-late", "actual", None),
        ("req-lost", "estimate", True),
    ]
    assert not list((data_dir / "wal").glob("forwarded-*.jsonl"))
    assert result.ok and len(result.crashes) == 1 and "1 had no record" in result.crashes[0]


def test_a_request_that_cannot_be_put_on_record_does_not_leave(tmp_path: Path) -> None:
    """Fail closed: the write-ahead log failing (disk full, I/O error) refuses the request with 503."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    policy = policy_file(tmp_path, "http://127.0.0.1:9/v1")
    compiled = load_policy(policy)
    metrics = GatewayMetrics()
    source = PolicySource(metrics)
    write_ahead = WriteAhead(Limits(source, metrics), Accounting(metrics), AuditLog(metrics), metrics)
    with taddons.context(source, write_ahead) as context:
        context.configure(source, codexgate_policy=str(policy), codexgate_data_dir=str(data_dir))
        flow = tflow.tflow()
        state = GatewayRequest(request_id=flow.id, policy=compiled, mode="gateway", endpoint="responses")
        state.cleared, state.decision = True, Decision.FORWARDED
        flow.metadata[METADATA_KEY] = state
        log = write_ahead._log
        assert log is not None and log._fd is not None
        os.close(log._fd)  # what a failing disk looks like to write(2): an error
        write_ahead.request(flow)
        assert flow.response is not None and flow.response.status_code == 503
        assert json.loads(flow.response.content or b"{}")["error"]["code"] == "record_unavailable"
        assert state.decision == "record_unavailable" and not state.cleared
        log._fd = None
    assert metrics.registry.get_sample_value("codexgate_audit_write_failures_total") == 1
