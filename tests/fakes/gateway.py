"""Real codexgate gateway processes for tests, and the keys and policy they use."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from codexgate.policies.keys import hash_key

UPSTREAM_KEY = "sk-upstream-test"
ALICE_KEY = "sk-cg-alice-test-key-0000000000000000000000000"
BOB_KEY = "sk-cg-bob-disabled-key-000000000000000000000000"
CAROL_KEY = "sk-cg-carol-mock-only-0000000000000000000000000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"gateway did not listen on {port}:\n{log.read_text()}")


def policy_text(upstream_url: str) -> str:
    return f"""\
# integration-test policy
providers:
  openai: {{kind: openai, base_url: "{upstream_url}", keys: [{{value: "env:CG_TEST_UPSTREAM_KEY"}}]}}
  local: {{kind: mock, output_tokens: 5}}
  nokey: {{kind: openai, base_url: "http://127.0.0.1:9/v1", keys: [{{value: "env:CG_TEST_NOT_SET"}}]}}
models:
  gpt-test: {{routes: [{{provider: openai}}], price: {{input_per_mtok: 1.0, output_per_mtok: 8.0}}}}
  gpt-renamed:
    routes: [{{provider: openai, model: gpt-upstream-name}}]
    price: {{input_per_mtok: 1, output_per_mtok: 8}}
  gpt-5-mini: {{routes: [{{provider: openai}}]}}  # priced by genai-prices
  gpt-nokey: {{routes: [{{provider: nokey}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
  gpt-unpriced: {{routes: [{{provider: openai}}]}}
  mock-model: {{routes: [{{provider: local}}], aliases: [mock], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
  claude-mock: {{routes: [{{provider: local}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}", models: ["gpt-*", "mock-*"]}}
  - {{name: bob, team: platform, hash: "{hash_key(BOB_KEY)}", disabled: true}}
  - {{name: carol, team: platform, hash: "{hash_key(CAROL_KEY)}", models: ["mock-*"]}}
"""


class Gateway:
    def __init__(self, policy: Path, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.policy = policy
        self.data_dir = data_dir
        self.proxy_port = free_port()
        self.gateway_port = free_port()
        self.log = data_dir / "gateway.log"
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.store = "embedded"
        self.metrics_port = 0
        self.extra_args: list[str] = []
        # What start() waits for in the log once the ports listen; None: the caller waits otherwise
        # (a gateway started with a quieter log never writes it).
        self.ready_log: str | None = "codexgate ready"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "mitmproxy" / "mitmproxy-ca-cert.pem"

    def start(self) -> Gateway:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CG_TEST_UPSTREAM_KEY": UPSTREAM_KEY, **self.extra_env}
        env.pop("CG_TEST_NOT_SET", None)
        command = [
            sys.executable, "-m", "codexgate.cli", "up", "--policy", str(self.policy), "--data-dir", str(self.data_dir),
            "--proxy-port", str(self.proxy_port), "--gateway-port", str(self.gateway_port),
            "--store", self.store, "--metrics-port", str(self.metrics_port), *self.extra_args,
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.proxy_port, self.process, self.log)
        wait_for_port(self.gateway_port, self.process, self.log)
        # Listening comes before the addons' `running` hooks; wait for those too.
        deadline = time.monotonic() + 30
        while self.ready_log is not None and self.ready_log not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not get ready:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def accounting(self) -> list[dict]:
        from codexgate.usage_report import accounting_paths  # each worker's file too (`up --workers N`)

        return [
            json.loads(line)
            for path in accounting_paths(self.data_dir)
            if path.exists()
            for line in path.read_text().splitlines()
            if line.strip()
        ]

    def wait_accounting(self, match: Callable[[dict], bool], count: int = 1, timeout: float = 15) -> list[dict]:
        """The accounting lines `match` selects, once there are at least `count` (a line is written
        when the request ends, which for a stream can be just after the client saw its end)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.accounting() if match(line)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def wait_log(self, text: str, timeout: float = 15) -> str:
        """The gateway's log once it contains `text` (or at the timeout, for the assertion to show)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return log
