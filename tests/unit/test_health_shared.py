"""Cooldowns shared by the workers of one data dir: what one process marks, the others see."""

from __future__ import annotations

import asyncio
from pathlib import Path

from codexgate.health_shared import SQLiteHealth


def test_a_cooldown_marked_by_one_worker_is_seen_by_another(tmp_path: Path) -> None:
    now = [1000.0]
    path = str(tmp_path / "cooldowns.sqlite3")
    first, second = SQLiteHealth(path, clock=lambda: now[0]), SQLiteHealth(path, clock=lambda: now[0])

    async def scenario() -> None:
        await first.mark_down("openai/a", 30, "http_429")
        assert await second.down(["openai/a", "openai/b"]) == {"openai/a"}
        assert second.reason("openai/a") == "http_429"
        await second.mark_down("openai/a", 5, "error")  # a shorter cooldown does not cut a longer one short
        now[0] += 10
        assert await first.down(["openai/a"]) == {"openai/a"}
        now[0] += 25
        assert await first.down(["openai/a"]) == set()
        await first.close()
        await second.close()

    asyncio.run(scenario())


def test_a_broken_file_reads_as_all_healthy(tmp_path: Path) -> None:
    path = tmp_path / "cooldowns.sqlite3"
    health = SQLiteHealth(str(path))

    async def scenario() -> None:
        await health.mark_down("openai/a", 30, "error")
        health._db.execute("DROP TABLE cooldown")  # what a corrupted or replaced file looks like
        assert await health.down(["openai/a"]) == set()
        await health.mark_down("openai/b", 30, "error")  # logged, not raised

    asyncio.run(scenario())
