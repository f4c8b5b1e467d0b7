"""The supervisor's pure parts: worker arguments, worker count, and the accounting files usage reads."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from codexgate import worker_status
from codexgate.addons.metrics_export import MetricsExport
from codexgate.metrics import GatewayMetrics
from codexgate.usage_report import report
from codexgate.workers import _last_setting, _with_settings, available_cores, default_workers


def test_worker_settings_replace_the_ones_given_instead_of_repeating_them() -> None:
    # mitmproxy refuses an option given twice ("Received multiple values").
    argv = ["--mode", "regular@1", "--set", "codexgate_metrics_port=9090", "--set", "codexgate_store=embedded"]
    out = _with_settings(argv, {"codexgate_metrics_port": "40001", "codexgate_writer_id": "w1"})
    assert out == [
        "--mode", "regular@1", "--set", "codexgate_store=embedded",
        "--set", "codexgate_metrics_port=40001", "--set", "codexgate_writer_id=w1",
    ]  # fmt: skip
    assert _last_setting(out, "codexgate_metrics_port") == "40001"
    assert _last_setting(argv, "codexgate_metrics_host") is None


def test_default_workers_from_the_environment_or_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXGATE_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.delenv("CODEXGATE_WORKERS")
    assert default_workers() >= 1
    monkeypatch.setenv("CODEXGATE_WORKERS", "many")
    with pytest.raises(SystemExit):
        default_workers()


def test_usage_reads_every_writers_accounting_file(tmp_path: Path) -> None:
    def line(key: str, request_id: str) -> str:
        record = {"ts": 1000.0, "request_id": request_id, "endpoint": "responses", "key": key,
                  "decision": "forwarded", "usage": {"input_tokens": 2}, "cost_usd": 0.5}  # fmt: skip
        return json.dumps(record) + "\n"

    (tmp_path / "accounting.jsonl").write_text(line("alice", "a"))
    (tmp_path / "accounting-w0.jsonl").write_text(line("alice", "b") + line("bob", "c"))
    (tmp_path / "accounting-w1.jsonl").write_text(line("alice", "d"))
    rows = {row["key"]: row for row in json.loads(report(tmp_path, "key", "1h", "json", now=1010.0))}
    assert rows["alice"]["requests"] == 3 and rows["bob"]["requests"] == 1
    assert rows["alice"]["input_tokens"] == 6


def test_available_cores_honours_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    unlimited = available_cores(cpu_max)
    assert unlimited >= 1
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two workers can use it
    assert available_cores(cpu_max) == min(unlimited, 2)
    cpu_max.write_text("50000 100000\n")
    assert available_cores(cpu_max) == 1
    assert available_cores(tmp_path / "absent") == unlimited


def test_a_worker_admin_server_binds_a_port_the_kernel_picks_and_names_it_as_the_supervisor_reads_it() -> None:
    # The supervisor cannot pick the port for the worker: between its pick and the worker's bind,
    # seconds later, another program can take it, and the worker would exit before it was ready.
    read_fd, write_fd = os.pipe()
    export = MetricsExport(GatewayMetrics())
    try:
        with taddons.context(export) as tctx:
            tctx.options.update(codexgate_metrics_port=-1, codexgate_status_fd=write_fd)
            try:
                assert export._server is not None
                port = export._server.port
                assert port > 0
                # Named on the status pipe, which the supervisor reads (not the log, which may be quiet).
                assert worker_status.parse(os.read(read_fd, 4096)) == worker_status.AdminBound(port)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    assert b"codexgate_requests" in answer.read()  # it serves there
                with pytest.raises(exceptions.OptionsError, match="not a port"):
                    tctx.options.update(codexgate_metrics_port=-2)
            finally:
                export._stop()
    finally:
        os.close(read_fd)
        os.close(write_fd)
