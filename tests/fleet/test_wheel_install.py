"""`pip install .` (what the image and `pipx install` do) gives a working `codexgate`: the built
package carries the addons, providers, policies, the example policy and mitm_config.yaml under
the one `codexgate` namespace, and starts the gateway from them. (That the runtime dependencies
are declared is tests/fleet/test_dependencies.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fakes.gateway import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_installed_package_starts_the_gateway(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    shipped_files = [
        "codexgate/mitm_config.yaml", "codexgate/policies/example.yaml", "codexgate/addons/__init__.py",
        "codexgate/providers/openai.py", "codexgate/scripts/codexgate_chain.py", "codexgate/probe.py",
    ]  # fmt: skip
    for shipped in shipped_files:
        assert (target / shipped).exists(), shipped
    # The checkout's one mitm_config.yaml (the package holds a link to it) ships as a plain file.
    shipped_config = target / "codexgate/mitm_config.yaml"
    assert not shipped_config.is_symlink()
    assert shipped_config.read_text() == (ROOT / "mitm_config.yaml").read_text()
    # The installed copy, not this checkout's (which the test venv has as an editable install).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import codexgate.addons, codexgate.cli; print(codexgate.cli.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    metrics_port = free_port()
    log = tmp_path / "gateway.log"
    command = [sys.executable, "-P", "-m", "codexgate.cli", "up", "--data-dir", str(tmp_path / "data"),
               "--proxy-port", str(free_port()), "--gateway-port", str(free_port()),
               "--metrics-port", str(metrics_port)]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        probe = [sys.executable, "-P", "-m", "codexgate.probe", "/readyz"]
        probe_env = {**env, "CODEXGATE_METRICS_PORT": str(metrics_port)}
        deadline = time.monotonic() + 60
        while subprocess.run(probe, env=probe_env, capture_output=True).returncode != 0:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "demo virtual key" in log.read_text()  # made from the packaged example policy
    finally:
        process.terminate()
        process.wait(30)
