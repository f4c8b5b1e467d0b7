"""One gateway per data dir: an OS lock on DATA_DIR/gateway.lock.

Two gateways on one data dir would append to one audit chain (which `audit verify` then reports
as tampered) and share the embedded counters unannounced. `codexgate up` therefore takes an
exclusive `flock` on the lock file before it touches anything in the data dir, and keeps it for
the life of the process: the descriptor survives the `exec` into mitmproxy, and the kernel drops
the lock when the process ends, however it ends (kill -9 included), so a stale lock file never
blocks a restart. The file itself only says who holds it, for the refusal message.

Several processes of ONE deployment (a supervisor and its workers) share the lock the
supervisor took: it passes the descriptor down and names it in CODEXGATE_DATA_DIR_LOCK_FD, and
each worker writes its own audit chain and write-ahead log (`codexgate_writer_id`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path

LOCK_FILE = "gateway.lock"
LOCK_FD_ENV = "CODEXGATE_DATA_DIR_LOCK_FD"


def default_data_dir() -> Path:
    return Path(os.environ.get("CODEXGATE_HOME") or Path.home() / ".codexgate")


def ensure_data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class DataDirBusy(Exception):
    """Another process holds the data dir; the message says which and what to do."""


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        if isinstance(info, dict) and info.get("pid"):
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info.get("started", 0))))
            return f"codexgate pid {info['pid']} (started {started})"
    return "another process"


def acquire(data_dir: Path) -> int:
    """Lock `data_dir` for this process; returns the lock's descriptor (keep it open).

    Raises DataDirBusy when another process holds it."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DataDirBusy(
                f"data dir {data_dir} is in use by {_holder(path)}: one gateway per data dir "
                "(it owns the audit chain and the embedded counters). Stop that one first, or give this one "
                "another --data-dir / CODEXGATE_HOME; gateways that should share budgets share a --store redis://…"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.time()}).encode(), 0)
    return fd


def adopted(data_dir: Path) -> int | None:
    """The lock descriptor a parent process passed down for `data_dir` (CODEXGATE_DATA_DIR_LOCK_FD),
    if it really is that data dir's lock file."""
    raw = os.environ.get(LOCK_FD_ENV, "")
    if not raw.isdigit():
        return None
    fd = int(raw)
    try:
        held = os.fstat(fd)
        expected = os.stat(data_dir / LOCK_FILE)
    except OSError:
        return None
    if (held.st_dev, held.st_ino) != (expected.st_dev, expected.st_ino):
        return None
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)
