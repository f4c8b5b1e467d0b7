"""The real Codex CLI (npm @openai/codex) through a real gateway, in both modes, with a tool round trip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import ALICE_KEY, Gateway

pytestmark = pytest.mark.e2e


def codex_binary() -> str:
    found = os.environ.get("CODEXGATE_CODEX_BIN") or shutil.which("codex")
    if not found or not os.access(found, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("the Codex CLI is required in CI (./dev test installs it)")
        pytest.skip("Codex CLI not installed; ./dev test installs it")
    return found


def run_codex(gateway: Gateway, mode: str, prompt: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    codex_home = tmp_path / "codex-home"
    workdir = tmp_path / "work"
    codex_home.mkdir()
    workdir.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "CODEX_")) and name.lower() not in ("https_proxy", "http_proxy", "all_proxy")
    }
    env.update(CODEX_HOME=str(codex_home), CODEXGATE_CODEX_BIN=codex_binary(), RUST_LOG="error")
    gateway_url = gateway.base_url if mode == "base-url" else gateway.proxy_url
    command = [
        sys.executable, "-m", "codexgate.cli", "codex", "--mode", mode, "--gateway", gateway_url, "--key", ALICE_KEY,
        "--ca", str(gateway.ca_cert), "--",
        "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "-m", "mock-model", prompt,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("mode", ["base-url", "proxy"])
def test_codex_turn_with_tool_round_trip(gateway: Gateway, mode: str, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex[:10]}"
    before = len(gateway.accounting())
    result = run_codex(gateway, mode, f"please run `echo {marker}` and tell me what it printed", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Codex ran the command the mock model asked for, sent its output back, and printed the answer.
    assert f"echo {marker}" in output
    assert "The command finished. Its output was:" in result.stdout
    assert marker in result.stdout
    records = [r for r in gateway.accounting()[before:] if r["endpoint"] == "responses" and r["decision"] == "answered"]
    assert len(records) >= 2, records  # the request asking for the tool, and the one carrying its output
    assert {r["key"] for r in records} == {"alice"} and {r["mode"] for r in records} == {
        "gateway" if mode == "base-url" else "proxy"
    }
    assert all(r["session_id"] for r in records)  # Codex's session-id header attributes the usage
    if mode == "proxy":
        # Codex sends its API key to chatgpt.com too; the gateway kept the virtual key in.
        assert "virtual key removed from GET request to chatgpt.com" in gateway.log_text()
