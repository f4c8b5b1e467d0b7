"""The admin port's probes, on real gateway processes: /healthz, /readyz, /metrics only at its
path, and readiness that flips to 503 on SIGTERM while requests are still served."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx2 as httpx
import openai
from fakes.gateway import ALICE_KEY, Gateway, free_port, policy_text
from fakes.redis_server import RedisServer


def _start(tmp_path: Path, store: str = "embedded", *extra: str) -> Gateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9/v1"))
    gateway = Gateway(policy, tmp_path / "data")
    gateway.metrics_port = free_port()
    gateway.store = store
    gateway.extra_args = list(extra)
    return gateway.start()


def _get(gateway: Gateway, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gateway.metrics_port}{path}", timeout=10)


def _wait_status(gateway: Gateway, path: str, status: int, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = _get(gateway, path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def _ask(gateway: Gateway) -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=ALICE_KEY, max_retries=0, timeout=20)
    return client.responses.create(model="mock-model", input="hello").output_text


def test_probes_and_metrics_answer_only_at_their_paths(tmp_path: Path) -> None:
    gateway = _start(tmp_path)
    try:
        assert _get(gateway, "/healthz").json() == {"status": "alive"}
        ready = _get(gateway, "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"draining": "no", "policy": "ok", "ca": "ok", "store": "ok"}
        metrics = _get(gateway, "/metrics")
        assert metrics.status_code == 200 and "codexgate_" in metrics.text
        for wrong in ("/", "/health", "/metrics/extra", "/readyz/x"):
            assert _get(gateway, wrong).status_code == 404, wrong
    finally:
        gateway.stop()


def test_readyz_says_the_store_is_unreachable(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    gateway = _start(tmp_path, redis.url)
    try:
        assert _get(gateway, "/readyz").status_code == 200
        redis.kill()
        gone = _wait_status(gateway, "/readyz", 503)
        assert gone.status_code == 503
        assert gone.json()["checks"]["store"].startswith("unreachable")
        assert _get(gateway, "/healthz").status_code == 200  # alive, just not ready
    finally:
        gateway.stop()
        redis.kill()


def test_sigterm_flips_readyz_before_requests_are_refused(tmp_path: Path) -> None:
    # A long delay: the test needs the window open while it looks, not a measured duration.
    gateway = _start(tmp_path, "embedded", "--set", "codexgate_shutdown_delay=120")
    try:
        assert _ask(gateway)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        draining = _wait_status(gateway, "/readyz", 503)
        assert draining.status_code == 503, draining.text
        assert draining.json()["checks"]["draining"].startswith("yes")
        # Out of the balancer's rotation, yet still serving whoever has not noticed.
        assert _ask(gateway)
        assert gateway.process.poll() is None
    finally:
        if gateway.process is not None:
            gateway.process.kill()
            gateway.process.wait(10)


def test_readyz_stays_ready_without_the_store_when_the_policy_fails_open(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9/v1") + "gateway: {on_store_error: open}\n")
    gateway = Gateway(policy, tmp_path / "data")
    gateway.metrics_port = free_port()
    gateway.store = redis.url
    gateway.start()
    try:
        redis.kill()
        store = _get(gateway, "/readyz").json()["checks"]["store"]
        deadline = time.monotonic() + 20
        while not store.startswith("unreachable") and time.monotonic() < deadline:
            time.sleep(0.05)
            store = _get(gateway, "/readyz").json()["checks"]["store"]
        assert store.startswith("unreachable") and "serving unmetered" in store
        assert _get(gateway, "/readyz").status_code == 200
        assert _ask(gateway)  # and it does serve
    finally:
        gateway.stop()
        redis.kill()
