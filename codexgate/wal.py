"""The write-ahead log of forwarded requests: what left the gateway is on record before it leaves.

`Seal` clears a request; right after it, `WriteAhead` appends one line for it to
`DATA_DIR/wal/forwarded[-<writer>]-NNNNNN.jsonl` with `os.write` — in the kernel before mitmproxy
sends the request, so it survives a kill -9 of the gateway; an fsync every 50 ms (group commit,
in a worker thread) makes it survive a power loss as well, bar the last 50 ms. When the gateway
stops cleanly, the log ends with a `closed` line and is removed; a log found at start-up without
one is a crash, and every request in it that has no accounting line is recorded then
(`addons/write_ahead.py`).

A request the failover relay moves to another deployment (provider or model) gets a second, small
line before its reservation moves there: `{"switch": <request id>, "reservation": <store id>,
"provider", "model", "upstream_model", "estimate", "reserve"}` (`ForwardLog.note`). Recovery reads
the last one of each request (`PreviousRun.switches`) and charges that deployment, not the first
choice.

A segment lives while any of its requests is unfinished (a request is unfinished in each segment
that holds one of its lines), plus `DELETE_GRACE_SECONDS` (time for the deferred settlement of the
last one to reach the store); a new segment starts every `ROTATE_SECONDS`, so the files stay small
and recovery reads only the last minutes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from codexgate.jsonline import compact_line

logger = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^forwarded-(?:([a-z][a-z0-9_]{0,31})-)?(\d{6,})\.jsonl$")
ROTATE_SECONDS = 30.0
DELETE_GRACE_SECONDS = 10.0


def segment_name(number: int, writer: str = "") -> str:
    return f"forwarded-{writer}-{number:06d}.jsonl" if writer else f"forwarded-{number:06d}.jsonl"


def segments(directory: Path, writer: str = "") -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob("forwarded-*.jsonl"):
        match = FILE_PATTERN.match(path.name)
        if match and (match.group(1) or "") == writer:
            found.append((int(match.group(2)), path))
    return sorted(found)


class PreviousRun:
    """What an earlier run left in the write-ahead log."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.headers: list[dict[str, Any]] = []
        self.entries: dict[str, dict[str, Any]] = {}
        self.switches: dict[str, list[dict[str, Any]]] = {}  # request id -> its switch lines, in order
        self.closed_cleanly = bool(files)
        for path in files:
            closed = False
            with contextlib.suppress(OSError), open(path, "rb") as handle:
                for raw in handle:
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        continue  # a torn last line: that request had not left yet
                    if not isinstance(line, dict):
                        continue
                    if "wal" in line:
                        self.headers.append(line)
                    elif line.get("closed"):
                        closed = True
                    elif isinstance(line.get("id"), str):
                        self.entries.setdefault(line["id"], line)
                    elif isinstance(line.get("switch"), str):
                        self.switches.setdefault(line["switch"], []).append(line)
            self.closed_cleanly = self.closed_cleanly and closed

    @property
    def crashed(self) -> bool:
        return bool(self.files) and not self.closed_cleanly


class ForwardLog:
    def __init__(self, directory: Path, writer: str = "") -> None:
        self.directory = directory
        self.writer = writer
        try:
            directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass  # there already, or another worker of this data dir made it first (they start together)
        else:
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        existing = segments(directory, writer)
        self.previous = PreviousRun([path for _, path in existing])
        self._number = (existing[-1][0] if existing else 0) + 1
        self._fd: int | None = None
        self._open_requests: dict[int, int] = {}  # segment -> requests not finished yet
        self._segments_of: dict[str, list[int]] = {}  # request -> the segments holding its lines
        self._finished_at: dict[int, float] = {}  # old segment -> when its last request finished
        self._segment_started = 0.0
        self._entries_in_segment = 0
        self._open_segment()

    def _path(self, number: int) -> Path:
        return self.directory / segment_name(number, self.writer)

    def _open_segment(self) -> None:
        fd = os.open(self._path(self._number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        header = {"wal": 1, "writer": self.writer, "pid": os.getpid(), "started": round(time.time(), 3)}
        os.write(fd, json.dumps(header, separators=(",", ":")).encode() + b"\n")
        old, self._fd = self._fd, fd
        if old is not None:
            with contextlib.suppress(OSError):
                os.fsync(old)
            os.close(old)
        self._open_requests[self._number] = 0
        self._entries_in_segment = 0
        self._segment_started = time.monotonic()

    def append(self, request_id: str, entry: dict[str, Any]) -> None:
        """One line, one write(2): the request is on record once this returns."""
        assert self._fd is not None
        os.write(self._fd, compact_line(entry))
        self._segments_of[request_id] = [self._number]
        self._open_requests[self._number] += 1
        self._entries_in_segment += 1

    def note(self, request_id: str, line: dict[str, Any]) -> None:
        """A later line about an unfinished request (e.g. a failover `switch`), one write(2); its
        segment then lives until the request finishes too."""
        assert self._fd is not None
        os.write(self._fd, compact_line(line))
        self._entries_in_segment += 1
        held = self._segments_of.get(request_id)
        if held is not None and self._number not in held:
            held.append(self._number)
            self._open_requests[self._number] += 1

    def finish(self, request_id: str) -> None:
        numbers = self._segments_of.pop(request_id, None)
        for number in numbers or ():
            self._open_requests[number] -= 1
            if number != self._number and self._open_requests[number] == 0:
                self._finished_at[number] = time.monotonic()

    def duplicate_fd(self) -> int | None:
        return os.dup(self._fd) if self._fd is not None else None

    def maintain(self) -> None:
        """Start a new segment now and then; remove old ones whose requests have all finished."""
        now = time.monotonic()
        if now - self._segment_started >= ROTATE_SECONDS and self._entries_in_segment > 0:
            finished = self._open_requests[self._number] == 0
            self._number += 1
            self._open_segment()
            if finished:
                self._finished_at[self._number - 1] = now
        for number, when in list(self._finished_at.items()):
            if now - when >= DELETE_GRACE_SECONDS and self._open_requests.get(number) == 0:
                with contextlib.suppress(FileNotFoundError):
                    self._path(number).unlink()
                del self._finished_at[number]
                del self._open_requests[number]

    def discard_previous(self) -> None:
        """The earlier run's requests are all on record now: its segments go."""
        for path in self.previous.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.previous = PreviousRun([])

    @property
    def unfinished(self) -> int:
        return len(self._segments_of)

    def close(self) -> None:
        """Clean stop: with nothing unfinished the log goes; otherwise it says it was closed, and the
        next start records what is missing (without calling it a crash)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if not self._segments_of:
                os.close(fd)
                for number in list(self._open_requests):
                    with contextlib.suppress(FileNotFoundError):
                        self._path(number).unlink()
                return
            os.write(fd, json.dumps({"closed": True, "unfinished": len(self._segments_of)}).encode() + b"\n")
            os.fsync(fd)
            os.close(fd)
            for number in self._open_requests:
                if number != self._number:  # every segment must say it was closed
                    with contextlib.suppress(OSError), open(self._path(number), "ab") as handle:
                        handle.write(b'{"closed":true}\n')
        except OSError:
            logger.error("write-ahead log: closing failed", exc_info=True)
