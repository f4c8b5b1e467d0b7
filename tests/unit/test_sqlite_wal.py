"""`connect_wal`: a SQLite file several workers open together (see test_data_dir_start_race.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from codexgate.sqlite_wal import connect_wal, is_busy
from codexgate.stores.base import StoreUnavailable
from codexgate.stores.embedded import EmbeddedStore

_SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v REAL NOT NULL);"


def test_a_lock_released_between_attempts_is_waited_out(tmp_path: Path) -> None:
    path = str(tmp_path / "held.sqlite3")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a worker switching the file to WAL holds
    # One plain attempt gives up: BUSY.
    with pytest.raises(sqlite3.OperationalError) as once:
        sqlite3.connect(path, timeout=0.01).execute("PRAGMA journal_mode=WAL")
    assert is_busy(once.value)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the other worker finishes while this one backs off
        slept.append(seconds)
        if holder.in_transaction:
            holder.execute("COMMIT")

    db = connect_wal(path, schema=_SCHEMA, busy_timeout_seconds=0.01, open_deadline_seconds=10, sleep=sleep)
    assert len(slept) == 1  # one attempt met the lock, the next one opened the file
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.execute("INSERT INTO t VALUES ('a', 1.0)")


def test_a_lock_never_released_fails_after_the_deadline(tmp_path: Path) -> None:
    path = str(tmp_path / "stuck.sqlite3")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += 0.5

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        connect_wal(path, schema=_SCHEMA, busy_timeout_seconds=0.0, open_deadline_seconds=3, clock=lambda: now[0],
                    sleep=sleep)  # fmt: skip
    assert 1 <= len(slept) <= 7  # retried, then gave up at the deadline instead of spinning forever
    # Named as the counter store, with its file.
    with pytest.raises(StoreUnavailable, match=r"stuck\.sqlite3 cannot be opened: database is locked"):
        EmbeddedStore(path, busy_timeout_seconds=0.0, open_deadline_seconds=0.2)
    holder.execute("ROLLBACK")


def test_an_error_other_than_a_lock_is_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    slept: list[float] = []
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        connect_wal(str(path), schema=_SCHEMA, busy_timeout_seconds=0.1, sleep=slept.append)
    assert slept == []
