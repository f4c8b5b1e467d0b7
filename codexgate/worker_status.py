"""What a worker of `codexgate up --workers N` tells its supervisor (codexgate/workers.py), and how.

The supervisor must learn two things of each worker: the admin port it bound (a port the kernel
picked, `codexgate_metrics_port=-1`), so it can probe the worker's `/readyz`, and that it is ready
(every addon's `running` hook ran), so a worker that exits before that stops the deployment
instead of being restarted forever. Neither may depend on the log: a platform engineer who quiets
it (`--set termlog_verbosity=warn`) or a reworded message would leave the supervisor waiting.

So the supervisor gives each worker the write end of its own pipe (`pass_fds`), whose number the
worker gets as the option `codexgate_status_fd`, and the worker writes one JSON line per event:

    {"codexgate_worker":1,"event":"admin","port":PORT}   its admin server listens on 127.0.0.1:PORT
    {"codexgate_worker":1,"event":"ready"}               it serves (addons/lifecycle.py)

`codexgate_worker` is the version of this format. A line is far below PIPE_BUF, so each write is
atomic. The supervisor reads the lines with `parse`, which refuses anything else (an odd or
hostile line is reported and ignored, never fatal). The log lines stay, for humans only.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from dataclasses import dataclass

STATUS_FD_OPTION = "codexgate_status_fd"
VERSION = 1
MAX_LINE_BYTES = 256  # what the supervisor reads as one line; a real one is under 64


@dataclass(frozen=True)
class AdminBound:
    """The worker's admin server listens on 127.0.0.1:`port`."""

    port: int


@dataclass(frozen=True)
class Ready:
    """The worker serves."""


type StatusMessage = AdminBound | Ready


class MalformedStatus(ValueError):
    """A line that is not a status message of this version (the reason names no content)."""


def encode(message: StatusMessage) -> bytes:
    body: dict[str, object] = {"codexgate_worker": VERSION}
    match message:
        case AdminBound(port=port):
            body |= {"event": "admin", "port": port}
        case Ready():
            body |= {"event": "ready"}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def parse(line: bytes) -> StatusMessage:
    """One line the supervisor read, as the message it is; `MalformedStatus` if it is none."""
    if len(line) > MAX_LINE_BYTES:
        raise MalformedStatus(f"longer than {MAX_LINE_BYTES} bytes")
    if not line.endswith(b"\n"):
        raise MalformedStatus("not a whole line")
    try:
        body = json.loads(line)
    except ValueError:  # UnicodeDecodeError included
        raise MalformedStatus("not JSON") from None
    if not isinstance(body, dict):
        raise MalformedStatus("not a JSON object")
    version = body.get("codexgate_worker")
    if type(version) is not int or version != VERSION:
        raise MalformedStatus(f"not version {VERSION} of the worker status format")
    match body.get("event"):
        case "admin":
            port = body.get("port")
            if type(port) is not int or not 0 < port <= 65535:  # type(): True is an int to isinstance
                raise MalformedStatus("admin: no port")
            if body.keys() != {"codexgate_worker", "event", "port"}:
                raise MalformedStatus("admin: unexpected fields")
            return AdminBound(port)
        case "ready":
            if body.keys() != {"codexgate_worker", "event"}:
                raise MalformedStatus("ready: unexpected fields")
            return Ready()
        case _:
            raise MalformedStatus("unknown event")


def open_problem(fd: int) -> str | None:
    """Why `fd` cannot be the worker's status channel (not open, not a pipe, not writable), or None."""
    if fd < 3:
        return "not a status pipe (0: none; stdin, stdout and stderr are not one)"
    try:
        mode = os.fstat(fd).st_mode
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        return f"not open: {exc.strerror}"
    if not stat.S_ISFIFO(mode):
        return "not a pipe"
    if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        return "not open for writing"
    return None


def adopt(fd: int) -> None:
    """Ready `fd` (checked by `open_problem`) for `send`: a write never blocks the event loop (a
    supervisor that stopped reading loses a message, the worker keeps serving), and a process the
    worker starts does not inherit it (the supervisor would not see the pipe close with the worker)."""
    os.set_blocking(fd, False)
    os.set_inheritable(fd, False)


def send(fd: int, message: StatusMessage) -> bool:
    """Write `message` on the status pipe `fd` (0: none); whether it went out whole. Never raises:
    a supervisor that is gone is no reason for the worker to fail (it stops the worker anyway)."""
    if fd <= 0:
        return False
    data = encode(message)
    try:
        return os.write(fd, data) == len(data)
    except OSError:  # EPIPE (Python ignores SIGPIPE), EAGAIN, EBADF
        return False
