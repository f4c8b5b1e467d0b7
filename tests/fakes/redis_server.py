"""A throwaway real redis-server for tests: no persistence, own directory, killed at teardown."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway redis-server: no persistence, own directory, killed at teardown.

    With `tls` (certificate file, key file, CA file) it listens with TLS only (no plain port) and
    its URL is rediss://localhost:PORT/0."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path, Path] | None = None, password: str | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is required in CI (./dev test installs it)")
            pytest.skip("redis-server not found on PATH: ./dev test installs it")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = ["--port", str(self.port)]
        context: ssl.SSLContext | None = None
        if password is not None:
            args += ["--requirepass", password]
            self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"
        if tls is not None:
            cert, key, ca = tls
            self.url = f"rediss://localhost:{self.port}/0"
            args = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
            context = ssl.create_default_context(cafile=str(ca))
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "redis.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, *args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
                    s = context.wrap_socket(raw, server_hostname="localhost") if context else raw
                    s.sendall((f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n")
                    if s.recv(32).replace(b"+OK\r\n", b"").startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start: {self.log.read_text(errors='replace')}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL also ends a server a test left stopped (SIGSTOP)
        self.proc.wait(timeout=10)
