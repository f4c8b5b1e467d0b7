"""Shared fixtures: a fake OpenAI upstream and a real codexgate gateway process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.gateway import Gateway, policy_text
from fakes.openai_upstream import FakeOpenAI
from fakes.redis_server import RedisServer

# `codexgate up` runs one worker per core by default; the tests of one gateway's behaviour run one
# process (tests/fleet/test_workers.py starts its workers with --workers).
os.environ.setdefault("CODEXGATE_WORKERS", "1")


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gw = Gateway(policy, root / "data").start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def fresh_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, for tests that kill or stop it."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.kill()
