"""The supervisor's pure parts: worker arguments, worker count, and the accounting files usage reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
