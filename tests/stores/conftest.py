"""Fixtures for the counter-store contract: each test runs against the embedded and the Redis store.

Stores are opened inside the test's own `asyncio.run` (a redis.asyncio client belongs to the
loop it first ran in), so the `backend` fixture hands out a way to open them, not a store.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.redis_server import RedisServer
from fakes.redis_topology import RedisCluster, SentinelGroup

from codexgate.stores.base import CounterStore
from codexgate.stores.embedded import EmbeddedStore
from codexgate.stores.redis_store import RedisStore


@dataclasses.dataclass
class Backend:
    """How to open stores that share one state: the same SQLite file, or the same Redis prefix."""

    name: str
    open: Callable[..., CounterStore]
    location: str  # sqlite path or redis URL


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.kill()


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path_factory.mktemp("redis-sentinel"))
    yield group
    group.kill()


@pytest.fixture(params=["embedded", "redis", "redis-cluster", "redis-sentinel"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "embedded":
        path = str(tmp_path / "counters.sqlite3")

        def open_embedded(**kwargs: Any) -> CounterStore:
            return EmbeddedStore(path, **kwargs)

        return Backend("embedded", open_embedded, path)

    if request.param == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        # The hash tag (as open_store's CLUSTER_PREFIX has one) puts all of a test's keys in one slot.
        tagged = f"{{test-{uuid.uuid4().hex[:12]}}}:"

        def open_cluster(**kwargs: Any) -> CounterStore:
            return RedisStore(cluster.url, prefix=tagged, **kwargs)

        return Backend("redis-cluster", open_cluster, cluster.url)

    if request.param == "redis-sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        sentinel_prefix = f"test-{uuid.uuid4().hex[:12]}:"

        def open_sentinel(**kwargs: Any) -> CounterStore:
            return RedisStore(group.url, prefix=sentinel_prefix, **kwargs)

        return Backend("redis-sentinel", open_sentinel, group.url)

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
