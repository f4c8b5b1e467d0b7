"""Fixtures for the counter-store contract: each test runs against the embedded and the Redis store.

Stores are opened inside the test's own `asyncio.run` (a redis.asyncio client belongs to the
loop it first ran in), so the `backend` fixture hands out a way to open them, not a store.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.redis_server import RedisServer

from codexgate.stores.base import CounterStore
from codexgate.stores.embedded import EmbeddedStore
from codexgate.stores.redis_store import RedisStore


@dataclasses.dataclass
class Backend:
    """How to open stores that share one state: the same SQLite file, or the same Redis prefix."""

    name: str
    open: Callable[..., CounterStore]
    location: str  # sqlite path or redis URL


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "embedded":
        path = str(tmp_path / "counters.sqlite3")

        def open_embedded(**kwargs: Any) -> CounterStore:
            return EmbeddedStore(path, **kwargs)

        return Backend("embedded", open_embedded, path)

    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"  # one shared server, so each test gets its own key space

    def open_redis(**kwargs: Any) -> CounterStore:
        return RedisStore(server.url, prefix=prefix, **kwargs)

    return Backend("redis", open_redis, server.url)


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child interpreters: they must import this checkout's codexgate."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
