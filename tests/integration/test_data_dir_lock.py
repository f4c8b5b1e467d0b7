"""One gateway per data dir: a second `codexgate up` on it refuses to start and says why; the lock
goes with the process, however it ends (kill -9 included)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fakes.gateway import UPSTREAM_KEY, Gateway, free_port, policy_text

from codexgate import datadir


def second_up(policy: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`codexgate up` on a data dir that may be taken, on ports of its own (so only the lock can stop it)."""
    command = [
        sys.executable, "-m", "codexgate.cli", "up", "--policy", str(policy), "--data-dir", str(data_dir),
        "--proxy-port", str(free_port()), "--gateway-port", str(free_port()), "--metrics-port", "0",
    ]  # fmt: skip
    env = {**os.environ, "CG_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    env.pop(datadir.LOCK_FD_ENV, None)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=20)


def test_second_gateway_on_a_data_dir_refuses_and_the_lock_survives_kill_9(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9/v1"))
    data_dir = tmp_path / "data"
    first = Gateway(policy, data_dir).start()
    try:
        assert first.process is not None
        refused = second_up(policy, data_dir)
        assert refused.returncode == 1
        assert f"data dir {data_dir} is in use by codexgate pid {first.process.pid}" in refused.stderr
        assert "one gateway per data dir" in refused.stderr
        assert first.process.poll() is None  # the first one is untouched
        audit_files = sorted(p.name for p in (data_dir / "audit").iterdir())

        first.process.kill()  # kill -9: no clean-up runs; the kernel drops the lock
        first.process.wait(10)
        second = Gateway(policy, data_dir).start()
        try:
            assert "ready" in second.log_text()
            again = second_up(policy, data_dir)
            assert again.returncode == 1 and "is in use by codexgate pid" in again.stderr
        finally:
            second.stop()
        assert second.process is not None and second.process.returncode == 0
        # A clean stop lets the next one in as well, and nobody forked the audit chain meanwhile.
        third = Gateway(policy, data_dir).start()
        third.stop()
        assert [p.name for p in sorted((data_dir / "audit").iterdir()) if p.name.startswith("audit-")] == [
            name for name in audit_files if name.startswith("audit-")
        ]
    finally:
        first.stop()


def test_lock_is_per_process_and_released(tmp_path: Path) -> None:
    fd = datadir.acquire(tmp_path)
    try:
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from codexgate import datadir;"
             " datadir.acquire(Path(sys.argv[1]))", str(tmp_path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert other.returncode != 0 and "DataDirBusy" in other.stderr and f"pid {os.getpid()}" in other.stderr
    finally:
        datadir.release(fd)
    datadir.release(datadir.acquire(tmp_path))  # free again once released
