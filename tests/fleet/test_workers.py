"""`codexgate up --workers 2` on real processes: both workers serve the same ports, a rate limit
holds across them, both audit chains verify, `codexgate usage` and the merged metrics count each
request once, a worker killed with -9 is restarted while the other keeps serving, and SIGTERM to
the supervisor drains every worker (a held stream finishes)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, CAROL_KEY, Gateway, free_port
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

BOUND = 60.0  # seconds: only something that never happens takes this long
LIMIT = 12  # carol's requests a day, whichever worker serves them


def _policy(upstream: str) -> str:
    return f"""\
providers:
  openai: {{kind: openai, base_url: "{upstream}", keys: [{{value: "env:CG_TEST_UPSTREAM_KEY"}}]}}
  local: {{kind: mock, output_tokens: 5}}
  dead: {{kind: openai, base_url: "http://127.0.0.1:9/v1", keys: [{{value: "env:CG_TEST_UPSTREAM_KEY"}}]}}
models:
  gpt-test: {{routes: [{{provider: openai}}], price: {{input_per_mtok: 1.0, output_per_mtok: 8.0}}}}
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
  gpt-flaky:
    routes: [{{provider: dead}}]
    fallbacks: [gpt-test]
    price: {{input_per_mtok: 1.0, output_per_mtok: 8.0}}
gateway: {{resilience: {{cooldown_seconds: 600}}}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
  - {{name: carol, team: platform, hash: "{hash_key(CAROL_KEY)}", rate_limits: [{{requests: {LIMIT}, per: 1d}}]}}
"""


def wait_until(what: str, condition: Callable[[], bool], gateway: Gateway | None = None) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() >= deadline:
            log = f"\n{gateway.log_text()}" if gateway is not None else ""  # why, when it is the gateway's
            raise AssertionError(f"not within {BOUND:.0f} s: {what}{log}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def _start(tmp_path: Path, upstream: FakeOpenAI, *extra: str, ready_log: str | None = "codexgate ready") -> Gateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(upstream.url))
    gateway = Gateway(policy, tmp_path / "data")
    gateway.metrics_port = free_port()
    gateway.extra_args = ["--workers", "2", *extra]
    gateway.ready_log = ready_log
    gateway.start()
    wait_until("both workers ready", lambda: _both_ready(gateway), gateway)
    return gateway


def _readyz(gateway: Gateway) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/readyz", timeout=10).json()
    except httpx.HTTPError:
        return {}


def _both_ready(gateway: Gateway) -> bool:
    checks = _readyz(gateway).get("checks", {})
    return checks.get("w0") == "ready" and checks.get("w1") == "ready"


def _ask(gateway: Gateway, key: str = ALICE_KEY, model: str = "mock-model") -> httpx.Response:
    # A new connection each time: the kernel spreads connections (not requests) over the workers.
    return httpx.post(
        f"{gateway.base_url}/responses", json={"model": model, "input": "hi"},
        headers={"authorization": f"Bearer {key}"}, timeout=20,
    )  # fmt: skip


def _worker_pids(gateway: Gateway) -> dict[str, int]:
    """The latest pid of each worker, from the supervisor's log."""
    return {name: int(pid) for name, pid in re.findall(r"worker (w\d) started \(pid (\d+)\)", gateway.log_text())}


def _codexgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexgate.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _metric_total(gateway: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_share_the_ports_the_limits_and_the_records(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = _start(tmp_path, upstream)
    try:
        # 1. Both workers take connections on the one port (bounded: the kernel hashes each new
        # connection to a worker, so both appear within a few requests).
        answered = 0
        for _ in range(200):
            answer = _ask(gateway)
            assert answer.status_code == 200, answer.text
            answered += 1
            writers = {path.name for path in (gateway.data_dir).glob("accounting-w*.jsonl") if path.stat().st_size}
            if writers == {"accounting-w0.jsonl", "accounting-w1.jsonl"}:
                break
        assert writers == {"accounting-w0.jsonl", "accounting-w1.jsonl"}, writers
        assert not (gateway.data_dir / "accounting.jsonl").exists()  # never one file appended by two processes
        for pid in _worker_pids(gateway).values():  # run as a single gateway is: optimised (cli.py)
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"-O" in argv[: argv.index(b"-c")], argv

        # 2. The official SDK through the same port, for a streamed answer too.
        client = openai.OpenAI(base_url=gateway.base_url, api_key=ALICE_KEY, max_retries=0, timeout=20)
        with client.responses.stream(model="mock-model", input="stream") as stream:
            assert stream.get_final_response().status == "completed"
        answered += 1

        # 3. A rate limit holds across the workers: exactly LIMIT admitted, whoever serves them.
        statuses = [_ask(gateway, CAROL_KEY).status_code for _ in range(LIMIT + 6)]
        assert statuses.count(200) == LIMIT and statuses.count(429) == 6, statuses

        # 4. Every request counted once: in `codexgate usage`, and in the supervisor's merged metrics.
        expected = {"alice": answered, "carol": LIMIT + 6}
        wait_until("every accounting line written", lambda: len(gateway.accounting()) >= sum(expected.values()))
        usage = _codexgate("usage", "--data-dir", str(gateway.data_dir), "--json")
        assert usage.returncode == 0, usage.stderr
        rows = {row["key"]: row for row in json.loads(usage.stdout)}
        assert {key: row["requests"] for key, row in rows.items()} == expected
        assert rows["carol"]["refused"] == 6
        ids = [line["request_id"] for line in gateway.accounting()]
        assert len(ids) == len(set(ids)) == sum(expected.values())
        assert _metric_total(gateway, "codexgate_requests_total", key="alice") == answered
        assert _metric_total(gateway, "codexgate_requests_total", key="carol", status="200") == LIMIT

        # 5. Both workers' audit chains verify, together.
        verify = _codexgate("audit", "verify", "--data-dir", str(gateway.data_dir))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "chain w0: OK" in verify.stdout and "chain w1: OK" in verify.stdout, verify.stdout
    finally:
        gateway.stop()
    assert gateway.process is not None and gateway.process.returncode == 0, gateway.log_text()


def test_a_killed_worker_is_restarted_and_the_other_keeps_serving(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = _start(tmp_path, upstream)
    try:
        victim = _worker_pids(gateway)["w0"]
        subprocess.run(["kill", "-9", str(victim)], check=True)
        # Once it is gone (a connection the kernel queued for it in the instant before is reset with
        # it), requests keep succeeding while it restarts: new connections go to the worker listening.
        wait_until("the supervisor saw w0 die", lambda: f"(pid {victim}) died (exit -9)" in gateway.log_text())
        for _ in range(10):
            answer = _ask(gateway)
            assert answer.status_code == 200, answer.text
        wait_until("w0 restarted", lambda: _worker_pids(gateway)["w0"] != victim)
        wait_until("w0 ready again", lambda: _readyz(gateway).get("checks", {}).get("w0") == "ready")
        assert _readyz(gateway)["status"] == "ready"
        # The restarted worker is w0 again: it found its predecessor's write-ahead log.
        assert "[w0]" in gateway.wait_log("ended without shutting down")
        for _ in range(10):
            answer = _ask(gateway)
            assert answer.status_code == 200, answer.text
    finally:
        gateway.stop()


def test_sigterm_drains_every_worker(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = _start(tmp_path, upstream)
    assert gateway.process is not None
    try:
        upstream.hold_stream.set()
        with httpx.stream(
            "POST", f"{gateway.base_url}/responses", json={"model": "gpt-test", "input": "stream", "stream": True},
            headers={"authorization": f"Bearer {ALICE_KEY}"}, timeout=30,
        ) as stream:  # fmt: skip
            assert stream.status_code == 200
            chunks = stream.iter_bytes()
            first = next(chunks)  # the answer is mid-stream
            gateway.process.send_signal(signal.SIGTERM)
            wait_until("the supervisor not ready", lambda: _readyz(gateway).get("status") != "ready")
            wait_until("both workers draining", lambda: gateway.log_text().count("SIGTERM: draining") >= 3)
            upstream.release_stream.set()
            body = first + b"".join(chunks)
        assert b"response.completed" in body
        assert gateway.process.wait(BOUND) == 0, gateway.log_text()
        log = gateway.log_text()
        assert "worker w0" in log and re.search(r"worker w0 \(pid \d+\) stopped \(exit 0\)", log), log
        assert re.search(r"worker w1 \(pid \d+\) stopped \(exit 0\)", log), log
        streamed = gateway.wait_accounting(lambda line: line.get("model") == "gpt-test")
        assert [line["status"] for line in streamed] == [200]
    finally:
        upstream.hold_stream.clear()
        upstream.release_stream.clear()
        gateway.stop()


def test_workers_with_a_quiet_log_get_ready_restart_and_drain(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # A platform engineer quiets the log: the supervisor learns each worker's admin port and that it
    # is ready on the worker's status pipe, not from the INFO lines it no longer sees.
    gateway = _start(tmp_path, upstream, "--set", "termlog_verbosity=warn", ready_log=None)
    assert gateway.process is not None
    try:
        log = gateway.log_text()
        assert not re.search(r"\[w\d\] .*(codexgate ready|metrics at)", log), log  # the workers' INFO lines
        assert _readyz(gateway)["status"] == "ready"
        answer = _ask(gateway)
        assert answer.status_code == 200, answer.text
        # A restarted worker binds a new admin port and says so again: it is probed there.
        victim = _worker_pids(gateway)["w1"]
        subprocess.run(["kill", "-9", str(victim)], check=True)
        wait_until("w1 restarted", lambda: _worker_pids(gateway)["w1"] != victim, gateway)
        wait_until("both workers ready again", lambda: _both_ready(gateway), gateway)
        for _ in range(4):
            answer = _ask(gateway)
            assert answer.status_code == 200, answer.text
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(BOUND) == 0, gateway.log_text()
        log = gateway.log_text()
        assert re.search(r"worker w0 \(pid \d+\) stopped \(exit 0\)", log), log
        assert re.search(r"worker w1 \(pid \d+\) stopped \(exit 0\)", log), log
        assert "status line ignored" not in log, log
    finally:
        gateway.stop()


def test_a_worker_that_exits_before_it_is_ready_stops_the_deployment(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # Every restart would fail the same way (here: an option the worker refuses): the supervisor
    # stops with an error instead of restarting it forever, whatever the log's level.
    with pytest.raises(RuntimeError, match="gateway exited with 1"):
        _start(tmp_path, upstream, "--set", "termlog_verbosity=warn", "--set", "codexgate_shutdown_grace=-1")
    log = (tmp_path / "data" / "gateway.log").read_text()
    assert "before it was ready; stopping" in log, log
    assert "restarting in" not in log, log


def test_a_cooldown_one_worker_learns_is_shared_with_the_other(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = _start(tmp_path, upstream)
    try:
        # The first request finds the `dead` deployment refusing connections and falls back.
        first = _ask(gateway, model="gpt-flaky")
        assert first.status_code == 200, first.text
        assert first.headers["x-codexgate-attempt-count"] == "2"
        # From then on every worker skips it: each request is served at the first attempt.
        for _ in range(200):
            answer = _ask(gateway, model="gpt-flaky")
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-codexgate-attempt-count"] == "1", answer.headers
            lines = gateway.wait_accounting(lambda line: line.get("model_requested") == "gpt-flaky", count=1)
            writers = {path.name for path in gateway.data_dir.glob("accounting-w*.jsonl")
                       if "gpt-flaky" in path.read_text()}  # fmt: skip
            if len(writers) == 2:
                break
        assert len(writers) == 2 and lines, writers  # both workers served it, neither tried `dead` again
    finally:
        gateway.stop()


def test_a_worker_killed_mid_stream_is_recorded_once_by_its_successor(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = _start(tmp_path, upstream)
    try:
        upstream.hold_stream.set()
        with httpx.stream(
            "POST", f"{gateway.base_url}/responses", json={"model": "gpt-test", "input": "stream", "stream": True},
            headers={"authorization": f"Bearer {ALICE_KEY}"}, timeout=30,
        ) as stream:  # fmt: skip
            assert stream.status_code == 200
            request_id = stream.headers["x-codexgate-request-id"]
            chunks = stream.iter_bytes()
            next(chunks)  # mid-stream
            # Which worker holds it is the kernel's choice: kill both, as a crash of the host's gateway would.
            victims = _worker_pids(gateway)
            for pid in victims.values():
                subprocess.run(["kill", "-9", str(pid)], check=True)
            with pytest.raises(httpx.HTTPError):
                for _ in chunks:
                    pass
        upstream.release_stream.set()
        wait_until("both workers restarted", lambda: all(
            _worker_pids(gateway)[name] != pid for name, pid in victims.items()))  # fmt: skip
        wait_until("both workers ready", lambda: _both_ready(gateway))
        lines = gateway.wait_accounting(lambda line: line.get("request_id") == request_id)
        # Recorded once, by the worker that had it in flight (from its write-ahead log), charged its estimate.
        assert len(lines) == 1, lines
        assert lines[0]["recovered"] is True and lines[0]["charge"] == "estimate"
        answer = _ask(gateway)
        assert answer.status_code == 200, answer.text
        verify = _codexgate("audit", "verify", "--data-dir", str(gateway.data_dir))
        assert verify.returncode == 2 and "CRASH" in verify.stdout, verify.stdout  # recorded crashes, chains intact
        assert "tampered" not in verify.stdout.lower()
    finally:
        upstream.hold_stream.clear()
        upstream.release_stream.clear()
        gateway.stop()
