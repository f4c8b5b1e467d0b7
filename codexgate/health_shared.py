"""Cooldowns shared by the workers of one host (`codexgate up --workers N`) with the embedded store.

Each worker is its own process, so `MemoryHealth` would let every worker learn of a failing
deployment on its own (up to N failed attempts before all avoid it). The workers share the data
dir, so they share the cooldowns in one small SQLite file there, `DATA_DIR/cooldowns.sqlite3`: one
row per deployment with the wall-clock time its cooldown ends (wall clock, not monotonic: the
rows outlive a reboot). WAL mode lets the per-request read run while another worker writes.

Health is advisory, as in `RedisHealth`: a SQLite error never reaches the request path; it reads
as "all healthy" and is logged once until the file answers again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable

from codexgate.sqlite_wal import connect_wal

logger = logging.getLogger(__name__)

COOLDOWNS_FILE = "cooldowns.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cooldown (
    deployment TEXT PRIMARY KEY,
    until      REAL NOT NULL,   -- time.time() at which the cooldown ends
    reason     TEXT NOT NULL
) WITHOUT ROWID;
"""

# Keeps a longer cooldown already running (another worker's): one statement, atomic.
_MARK_DOWN = """
INSERT INTO cooldown (deployment, until, reason) VALUES (?, ?, ?)
ON CONFLICT (deployment) DO UPDATE SET until = excluded.until, reason = excluded.reason
WHERE excluded.until > cooldown.until
"""


class SQLiteHealth:
    """Cooldowns of the processes sharing one data dir."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time, busy_timeout_seconds: float = 0.25) -> None:
        self.path = path
        self._clock = clock
        self._failing = False
        # synchronous=NORMAL: a cooldown lost to a power cut is harmless.
        self._db = connect_wal(path, schema=_SCHEMA, busy_timeout_seconds=busy_timeout_seconds)

    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        if not self._failing:
            logger.warning("shared cooldowns %s: %s failed (%s); treating every deployment as healthy", self.path,
                           what, exc)  # fmt: skip
        self._failing = True

    async def mark_down(self, deployment: str, seconds: float, reason: str) -> None:
        if not seconds > 0:
            return
        try:
            self._db.execute(_MARK_DOWN, (deployment, self._clock() + seconds, reason))
        except sqlite3.Error as exc:
            self._failed("mark_down", exc)
            return
        self._failing = False

    async def down(self, deployments: list[str]) -> set[str]:
        if not deployments:
            return set()
        marks = ",".join("?" * len(deployments))
        try:
            rows = self._db.execute(
                f"SELECT deployment FROM cooldown WHERE until > ? AND deployment IN ({marks})",
                (self._clock(), *deployments),
            ).fetchall()
        except sqlite3.Error as exc:
            self._failed("read", exc)
            return set()
        self._failing = False
        return {row[0] for row in rows}

    def reason(self, deployment: str) -> str | None:
        with contextlib.suppress(sqlite3.Error):
            row = self._db.execute(
                "SELECT reason FROM cooldown WHERE deployment = ? AND until > ?", (deployment, self._clock())
            ).fetchone()
            return row[0] if row else None
        return None

    async def close(self) -> None:
        self._db.close()
