"""SIGTERM lets in-flight requests finish and settle; new ones are told to retry."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
from fakes.gateway import ALICE_KEY, Gateway

from codexgate.policies.keys import hash_key


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  slow: {{kind: mock, latency_ms: 1500}}
models:
  slow-model: {{routes: [{{provider: slow}}], price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
teams: {{platform: {{org: acme, budgets: [{{limit_usd: 100, period: 1M}}]}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    gateway = Gateway(policy, tmp_path / "data").start()
    results: dict[str, httpx.Response] = {}

    def ask(name: str) -> None:
        results[name] = httpx.post(
            f"{gateway.base_url}/responses",
            json={"model": "slow-model", "input": name},
            headers={"authorization": f"Bearer {ALICE_KEY}"},
            timeout=20,
        )

    try:
        in_flight = threading.Thread(target=ask, args=("in-flight",))
        in_flight.start()
        time.sleep(0.4)  # the request reaches the gateway (the mock answers after 1.5 s)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        gateway.wait_log("SIGTERM: draining 1 in-flight request(s)")  # it had arrived, and SIGTERM is in effect
        ask("late")
        in_flight.join(10)
        assert results["in-flight"].status_code == 200  # finished despite the SIGTERM
        assert results["late"].status_code == 503
        assert results["late"].json()["error"]["code"] == "gateway_shutting_down"
        assert gateway.process.wait(10) == 0
    finally:
        gateway.stop()
    records = gateway.accounting()
    finished = [r for r in records if r["decision"] == "answered"]
    assert len(finished) == 1 and finished[0]["charge"] == "actual" and finished[0]["cost_usd"] > 0
    assert "all in-flight requests finished; stopping" in gateway.log_text()
