"""The workers of `codexgate up --workers N` start together on one fresh data dir: all of them start.

Each worker opens what the data dir shares (the counter store, the shared cooldowns) and makes what
it keeps for itself in shared directories (its write-ahead log and audit log, under `wal/` and
`audit/`) within milliseconds of the others. Two races were found by CI's two-worker fleet tests,
each of which stopped the whole deployment ("worker w0 exited before it was ready"):

- SQLite answers BUSY at once on the switch of a new file to WAL: four processes opening one new
  counter file together failed in 18 of 100 rounds ("database is locked");
- the write-ahead log made its directory after checking that it did not exist, so the second
  worker's `mkdir` raised FileExistsError.

Here every such opener runs in four forked processes released together by a barrier, round after
round on a new data dir; any exception in any process fails the test.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import stat
from pathlib import Path

from codexgate.audit import AuditWriter
from codexgate.health_shared import COOLDOWNS_FILE, SQLiteHealth
from codexgate.stores.embedded import EmbeddedStore
from codexgate.wal import ForwardLog

WORKERS = 4
ROUNDS = 25


def _start_worker(
    data_dir: str,
    writer: str,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[str],
) -> None:
    """What one worker does with the data dir when it starts, in the order the chain configures it."""
    barrier.wait()
    try:
        EmbeddedStore(str(Path(data_dir) / "counters.sqlite3"))
        SQLiteHealth(str(Path(data_dir) / COOLDOWNS_FILE))
        ForwardLog(Path(data_dir) / "wal", writer).close()
        AuditWriter(Path(data_dir) / "audit", fsync=False, writer=writer).close()
    except Exception as exc:  # reported to the parent, which asserts there are none
        results.put(f"{writer}: {type(exc).__name__}: {exc}")
    else:
        results.put("")


def test_workers_starting_together_on_a_new_data_dir_all_start(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")  # the parent holds nothing open in these dirs
    failures: list[str] = []
    for round_number in range(ROUNDS):
        data_dir = tmp_path / str(round_number) / "data"
        data_dir.mkdir(parents=True)  # the supervisor made it (it holds the data dir's lock); nothing in it
        barrier, results = fork.Barrier(WORKERS), fork.Queue()
        processes = [
            fork.Process(target=_start_worker, args=(str(data_dir), f"w{i}", barrier, results)) for i in range(WORKERS)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        failures += [outcome for outcome in outcomes if outcome]
        if failures:
            break
        for name in ("wal", "audit"):  # made by whichever worker came first, owner-only all the same
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o700
        # Each worker's audit log is its own (a clean close removes the write-ahead log).
        assert {p.name.split("-")[1] for p in (data_dir / "audit").glob("audit-*")} == {f"w{i}" for i in range(WORKERS)}
    assert failures == []
