"""Counter store in one SQLite file: one gateway instance, or several processes on one host.

Layout: `bucket` holds one row per (counter, bucket) with the amount used in it — settled and
reserved together, because admission only ever needs their sum; `reservation` holds each open
reservation with the exact amounts it added, so settle/release can take them out again.

Every `reserve` is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before
reading, so two processes sharing the file cannot both read the same free room. WAL with
`synchronous=NORMAL` makes each commit durable against a crash or kill -9 of the process (the
WAL is written before COMMIT returns; only an OS crash or power loss can lose the last commits).
The work is microseconds, so the async methods run it inline instead of in a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator

from codexgate.sqlite_wal import connect_wal
from codexgate.stores.base import Admission, Amounts, Counter, CounterState, Kind, StoreUnavailable
from codexgate.stores.rules import (
    PRUNE_MARGIN_SECONDS,
    STALE_SWEEP_LIMIT,
    build_admission,
    check_amounts,
    check_request,
    has_room,
    window,
)

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bucket (
    counter_id   TEXT NOT NULL,
    bucket_start REAL NOT NULL,
    used         REAL NOT NULL,   -- settled + reserved
    expires_at   REAL NOT NULL,   -- no window includes the bucket after this (plus margin)
    PRIMARY KEY (counter_id, bucket_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bucket_expiry ON bucket (expires_at);
CREATE TABLE IF NOT EXISTS reservation (
    request_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,     -- the `now` of the reserve call
    items      TEXT NOT NULL      -- JSON [[counter_id, bucket_start, kind, amount], ...]
);
CREATE INDEX IF NOT EXISTS reservation_age ON reservation (created_at);
"""

_WINDOW_SUM = (
    "SELECT COALESCE(SUM(used), 0.0) FROM bucket WHERE counter_id = ? AND bucket_start > ? AND bucket_start <= ?"
)

_Item = tuple[str, float, Kind, float]  # counter_id, bucket_start, kind, amount


def _create_private(path: str) -> None:
    """Create the file owner-only before SQLite opens it (its -wal/-shm files copy this mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    if mode & 0o077:
        logger.warning("counter store %s is accessible to other users (mode %o); expected 0600", path, mode)


class EmbeddedStore:
    def __init__(
        self,
        path: str,
        stale_after_seconds: float = 900,
        busy_timeout_seconds: float = 2.0,
        open_deadline_seconds: float = 10.0,
    ) -> None:
        self.path = path
        self.stale_after_seconds = float(stale_after_seconds)
        # Several processes may share the file; one holding the write lock makes the others
        # wait this long (blocking the event loop, but transactions are microseconds) before
        # the store reports itself unavailable rather than hanging.
        self._lock = threading.Lock()  # only matters if a caller shares the store across threads
        try:
            _create_private(path)
            # Workers of one `codexgate up` open the file together: see codexgate.sqlite_wal.
            self._db = connect_wal(
                path,
                schema=_SCHEMA,
                busy_timeout_seconds=busy_timeout_seconds,
                open_deadline_seconds=open_deadline_seconds,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"counter store {path} cannot be opened: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            try:
                db.execute(begin)
                try:
                    yield db
                    db.execute("COMMIT")
                finally:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"counter store {self.path}: {exc}") from exc

    def _settle_stale(self, db: sqlite3.Connection, now: float) -> None:
        # A reservation nobody settled within stale_after_seconds belongs to a request that died
        # mid-flight: it stays charged at its reserved amount (already in the buckets), so
        # settling it is dropping the record — a late settle/release then finds nothing.
        rows = db.execute(
            "SELECT request_id FROM reservation WHERE created_at <= ? ORDER BY created_at LIMIT ?",
            (now - self.stale_after_seconds, STALE_SWEEP_LIMIT),
        ).fetchall()
        if rows:
            db.executemany("DELETE FROM reservation WHERE request_id = ?", rows)
            logger.warning(
                "settled %d stale reservation(s) at their reserved amounts: %s",
                len(rows),
                ", ".join(r[0] for r in rows[:10]),
            )

    async def reserve(self, request_id: str, counters: list[Counter], amounts: Amounts, now: float) -> Admission:
        check_request(counters, amounts)
        with self._transaction("BEGIN IMMEDIATE") as db:
            self._settle_stale(db, now)
            used: list[float] = []
            for counter in counters:
                lo, hi = window(counter, now)
                used.append(db.execute(_WINDOW_SUM, (counter.counter_id, lo, hi)).fetchone()[0])

            row = db.execute("SELECT items FROM reservation WHERE request_id = ?", (request_id,)).fetchone()
            if row is not None:
                # A retry of an admitted request: admitted again, nothing added. Its own
                # reservation is not "use before this request".
                items: list[_Item] = json.loads(row[0])
                held = []
                for i, counter in enumerate(counters):
                    lo, hi = window(counter, now)
                    own = sum(a for cid, start, _, a in items if cid == counter.counter_id and lo < start <= hi)
                    held.append(own)
                    used[i] -= own
                return build_admission(counters, amounts, used, held, None)

            for i, counter in enumerate(counters):
                if not has_room(used[i], amounts.of(counter.kind), counter.limit):
                    return build_admission(counters, amounts, used, None, i)

            db.execute("DELETE FROM bucket WHERE expires_at < ?", (now,))
            new_items: list[_Item] = []
            for counter in counters:
                amount = amounts.of(counter.kind)
                start = float(counter.bucket_start)
                expires_at = start + counter.span_seconds + PRUNE_MARGIN_SECONDS
                db.execute(
                    "INSERT INTO bucket (counter_id, bucket_start, used, expires_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (counter_id, bucket_start) DO UPDATE"
                    " SET used = used + excluded.used, expires_at = MAX(expires_at, excluded.expires_at)",
                    (counter.counter_id, start, amount, expires_at),
                )
                new_items.append((counter.counter_id, start, counter.kind, amount))
            db.execute(
                "INSERT INTO reservation (request_id, created_at, items) VALUES (?, ?, ?)",
                (request_id, now, json.dumps(new_items)),
            )
            return build_admission(counters, amounts, used, None, None)

    def _finish(self, request_id: str, actual: Amounts, elsewhere: list[Counter] | None = None) -> bool:
        """Replaces the reservation by `actual`: in the counters it touched, or (`elsewhere`) in those."""
        with self._transaction("BEGIN IMMEDIATE") as db:
            row = db.execute("SELECT items FROM reservation WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                return False
            charged = Amounts() if elsewhere is not None else actual
            for counter_id, start, kind, amount in json.loads(row[0]):
                # (used - reserved) + actual, in the same order as the Redis script. A bucket
                # pruned meanwhile lies outside every window: nothing to correct there.
                db.execute(
                    "UPDATE bucket SET used = MAX(used - ? + ?, 0.0) WHERE counter_id = ? AND bucket_start = ?",
                    (amount, charged.of(kind), counter_id, start),
                )
            for counter in elsewhere or ():
                start = float(counter.bucket_start)
                db.execute(
                    "INSERT INTO bucket (counter_id, bucket_start, used, expires_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (counter_id, bucket_start) DO UPDATE"
                    " SET used = used + excluded.used, expires_at = MAX(expires_at, excluded.expires_at)",
                    (counter.counter_id, start, actual.of(counter.kind),
                     start + counter.span_seconds + PRUNE_MARGIN_SECONDS),
                )  # fmt: skip
            db.execute("DELETE FROM reservation WHERE request_id = ?", (request_id,))
            return True

    async def settle(self, request_id: str, actual: Amounts) -> bool:
        check_amounts(actual)
        return self._finish(request_id, actual)

    async def settle_to(self, request_id: str, actual: Amounts, counters: list[Counter], now: float) -> bool:
        check_request(counters, actual)
        return self._finish(request_id, actual, counters)

    async def release(self, request_id: str) -> bool:
        return self._finish(request_id, Amounts())

    async def snapshot(self, counters: list[Counter], now: float) -> list[CounterState]:
        # A read transaction so all counters are read from one consistent point in time.
        with self._transaction("BEGIN DEFERRED") as db:
            states = []
            for counter in counters:
                lo, hi = window(counter, now)
                used = db.execute(_WINDOW_SUM, (counter.counter_id, lo, hi)).fetchone()[0]
                states.append(CounterState(counter=counter, used=used, remaining=counter.limit - used))
            return states

    async def close(self) -> None:
        with self._lock:
            self._db.close()
