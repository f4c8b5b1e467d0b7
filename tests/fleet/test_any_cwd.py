"""`codexgate up` starts the same from any working directory, one holding an unrelated
`codexgate/` folder included (the parent of a clone, or a project named so)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.gateway import free_port, policy_text


@pytest.mark.parametrize("shadow", ["namespace", "package"])
def test_up_starts_from_a_directory_holding_another_codexgate(tmp_path: Path, shadow: str) -> None:
    workdir = tmp_path / "work"
    (workdir / "codexgate").mkdir(parents=True)
    if shadow == "package":
        (workdir / "codexgate" / "__init__.py").write_text('raise ImportError("the wrong codexgate was imported")\n')
    else:
        (workdir / "codexgate" / "README.md").write_text("a clone's checkout, not a package\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9/v1"))
    # The installed console script, as a user runs it (not `python -m`, which itself puts the
    # current directory first on the path).
    command = Path(sys.executable).with_name("codexgate")
    assert command.exists(), f"console script missing next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = tmp_path / "gateway.log"
    args = [str(command), "up", "--policy", str(policy), "--data-dir", str(tmp_path / "data"),
            "--proxy-port", str(free_port()), "--gateway-port", str(free_port()), "--metrics-port", "0"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while "codexgate ready" not in log.read_text(errors="replace"):
            assert process.poll() is None, f"gateway exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"gateway did not get ready:\n{log.read_text()}"
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(10)
