"""Open a SQLite file in WAL mode that several worker processes open at the same moment.

`codexgate up --workers N` starts N processes that open the same files in the data dir within
milliseconds of each other. Switching a new file to WAL and creating its tables take SQLite's
exclusive lock, and on some of those paths (the journal-mode change, WAL recovery) SQLite answers
SQLITE_BUSY at once instead of calling the busy handler: measured, 18 of 100 rounds of four
processes opening one new file failed with "database is locked". So the open is retried as a
whole, with a short back-off, until `open_deadline_seconds`; a lock still held after that (another
process stuck inside a transaction) is a real failure and is raised to the caller.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable

# SQLite's primary result codes for "another connection holds a lock"; the extended codes
# (SQLITE_BUSY_RECOVERY, SQLITE_BUSY_SNAPSHOT, …) carry them in their low byte.
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether `exc` is SQLite saying another connection holds a lock (worth retrying)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY_CODES


def _connect_once(path: str, busy_timeout_seconds: float, schema: str, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.DatabaseError(f"SQLite refused WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


def connect_wal(
    path: str,
    *,
    schema: str,
    busy_timeout_seconds: float,
    synchronous: str = "NORMAL",
    open_deadline_seconds: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> sqlite3.Connection:
    """A connection to `path` in WAL mode with `schema` applied (statements that must be idempotent).

    Raises the last `sqlite3.Error` when the file stays locked past the deadline, or at once
    for any other error (a corrupt file, a read-only directory, WAL refused).
    """
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous={synchronous!r}")
    deadline = clock() + open_deadline_seconds
    delay = 0.005
    while True:
        try:
            return _connect_once(path, busy_timeout_seconds, schema, synchronous)
        except sqlite3.Error as exc:
            if not is_busy(exc) or clock() >= deadline:
                raise
        # Jittered so processes that collided once do not collide again in step.
        sleep(min(delay, max(0.0, deadline - clock())) * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 0.2)
