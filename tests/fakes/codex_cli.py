"""Running the real Codex CLI (npm @openai/codex) against a test gateway."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fakes.gateway import ALICE_KEY, Gateway


def codex_binary() -> str:
    found = os.environ.get("CODEXGATE_CODEX_BIN") or shutil.which("codex")
    if not found or not os.access(found, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("the Codex CLI is required in CI (./dev test installs it)")
        pytest.skip("Codex CLI not installed; ./dev test installs it")
    return found


def run_codex(
    gateway: Gateway,
    mode: str,
    prompt: str,
    tmp_path: Path,
    key: str = ALICE_KEY,
    model: str = "mock-model",
    resume: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`codex exec` through the gateway via `codexgate codex`; `resume` continues the last session
    of the same CODEX_HOME (like switching models with /model in an interactive session)."""
    codex_home = tmp_path / "codex-home"
    workdir = tmp_path / "work"
    codex_home.mkdir(exist_ok=True)
    workdir.mkdir(exist_ok=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "CODEX_")) and name.lower() not in ("https_proxy", "http_proxy", "all_proxy")
    }
    # The developer's CODEX_HOME, and codexgate's data dir (profile, overlay CODEX_HOME) per test.
    env.update(
        CODEX_HOME=str(codex_home),
        CODEXGATE_HOME=str(tmp_path / "codexgate-home"),
        CODEXGATE_CODEX_BIN=codex_binary(),
        RUST_LOG="error",
    )
    gateway_url = gateway.base_url if mode == "base-url" else gateway.proxy_url
    command = [
        sys.executable, "-m", "codexgate.cli", "codex", "--mode", mode, "--gateway", gateway_url, "--key", key,
        "--ca", str(gateway.ca_cert), "--",
        "exec", *(["resume", "--last"] if resume else []),
        "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "-m", model, prompt,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def codex_env(tmp_path: Path, codex_home: Path) -> dict[str, str]:
    """A developer's environment for Codex: no OpenAI/Codex/proxy settings of the machine running
    the tests, their CODEX_HOME, and codexgate's data dir (profile, overlay) of the test's own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "CODEX_", "CODEXGATE_"))
        and name.lower() not in ("https_proxy", "http_proxy", "all_proxy", "no_proxy")
    }
    env.update(
        CODEX_HOME=str(codex_home), CODEXGATE_HOME=str(tmp_path / "codexgate-home"), CODEXGATE_CODEX_BIN=codex_binary()
    )
    return env


# ERROR lines that are about the machine the tests run on, not about the gateway: each names what it
# is about, narrowly (a missing sandbox helper; no route to GitHub for update checks and plugin sync).
MACHINE_ERRORS = (
    "could not find bubblewrap",
    "https://api.github.com/repos/openai/codex/releases/latest",
    "github.com/openai/plugins",
)


def gateway_errors(lines: list[str]) -> list[str]:
    """The ERROR lines not explained by the machine."""
    return [line for line in lines if "ERROR" in line and not any(known in line for known in MACHINE_ERRORS)]


def log_db_errors(codex_home: Path) -> list[str]:
    """ERROR rows of Codex's log database (CODEX_HOME/logs_*.sqlite, table logs), as text lines."""
    import sqlite3

    lines = []
    for path in sorted(codex_home.glob("logs_*.sqlite")):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT level, target, feedback_log_body FROM logs WHERE level = 'ERROR'").fetchall()
        lines += [f"{level} {target}: {body}" for level, target, body in rows]
    return lines
