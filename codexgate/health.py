"""Deployment health: cooldowns shared across gateway instances, and the weighted try order.

A deployment that failed (rate limited, overloaded, unreachable, bad key) is marked down for a
while; routing tries healthy deployments first, by weight, and keeps cooling ones as a last resort.

`MemoryHealth` serves one instance; `RedisHealth` shares cooldowns between instances through one
key per deployment (`SET ... PX`, read with one `MGET`). Health is advisory: a Redis error never
reaches the request path; it reads as "all healthy", is logged once per outage, and Redis is
left alone for a short back-off so a hung server does not slow every request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from codexgate.stores.redis_store import redact

logger = logging.getLogger(__name__)


class HealthStore(Protocol):
    async def mark_down(self, deployment: str, seconds: float, reason: str) -> None:
        """Cool `deployment` down for `seconds` (an existing longer cooldown is kept)."""
        ...

    async def down(self, deployments: list[str]) -> set[str]:
        """Those of `deployments` cooling down now."""
        ...

    async def close(self) -> None: ...


class MemoryHealth:
    """Cooldowns of one gateway instance."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, tuple[float, str]] = {}

    async def mark_down(self, deployment: str, seconds: float, reason: str) -> None:
        if not seconds > 0:
            return
        until = self._clock() + seconds
        current = self._until.get(deployment)
        if current is None or current[0] < until:
            self._until[deployment] = (until, reason)

    async def down(self, deployments: list[str]) -> set[str]:
        now = self._clock()
        out: set[str] = set()
        for deployment in deployments:
            entry = self._until.get(deployment)
            if entry is None:
                continue
            if entry[0] > now:
                out.add(deployment)
            else:
                del self._until[deployment]
        return out

    def reason(self, deployment: str) -> str | None:
        entry = self._until.get(deployment)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    async def close(self) -> None:
        return None


# Sets the cooldown unless a longer one is already running: one round trip, atomic.
_MARK_DOWN = """
local ttl = redis.call('PTTL', KEYS[1])
local ms = tonumber(ARGV[2])
if ttl < ms then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
  return 1
end
return 0
"""


class RedisHealth:
    """Cooldowns shared by every gateway instance on one Redis: key `{prefix}{deployment}`."""

    def __init__(
        self,
        url: str,
        prefix: str = "codexgate:health:",
        *,
        timeout_seconds: float = 0.25,
        backoff_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = redact(url)
        self.prefix = prefix
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            decode_responses=True,
        )
        self._deadline = 2 * timeout_seconds + 0.1  # against a hang the socket timeouts miss
        self._backoff = backoff_seconds
        self._clock = clock
        self._mark = self._client.register_script(_MARK_DOWN)
        self._skip_until = 0.0  # after a failure Redis is not asked again before this
        self._failing = False  # an outage is being reported; logged once

    def _key(self, deployment: str) -> str:
        return self.prefix + deployment

    def _available(self) -> bool:
        return not self._failing or self._clock() >= self._skip_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._skip_until = self._clock() + self._backoff
        if not self._failing:
            self._failing = True
            detail = str(exc) or type(exc).__name__
            logger.warning(
                "health store %s unavailable during %s (%s): deployments count as healthy until it is back",
                self.url, what, detail,
            )  # fmt: skip

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            logger.warning("health store %s is back", self.url)

    async def _call(self, what: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        if not self._available():
            return False, None
        try:
            async with asyncio.timeout(self._deadline):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(what, exc)
            return False, None
        self._succeeded()
        return True, result

    async def mark_down(self, deployment: str, seconds: float, reason: str) -> None:
        if not seconds > 0:
            return
        ms = max(1, math.ceil(seconds * 1000))
        await self._call("mark_down", lambda: self._mark(keys=[self._key(deployment)], args=[reason or "down", ms]))

    async def down(self, deployments: list[str]) -> set[str]:
        if not deployments:
            return set()
        ok, values = await self._call("down", lambda: self._client.mget([self._key(d) for d in deployments]))
        if not ok:
            return set()
        return {d for d, value in zip(deployments, values, strict=True) if value is not None}

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("closing the health store: %s", exc)


def weighted_order(candidates: Sequence[tuple[str, int]], rng: random.Random) -> list[str]:
    """A weighted-random order without replacement: each next pick is proportional to its weight
    among those left (weights 3:1 put the first first 75% of the time). Weights ≤ 0 come last, in
    their given order."""
    left = [(name, float(weight)) for name, weight in candidates if weight > 0]
    zero = [name for name, weight in candidates if not weight > 0]
    out: list[str] = []
    total = sum(weight for _, weight in left)
    while left:
        if len(left) == 1:
            out.append(left.pop()[0])
            break
        point = rng.random() * total
        chosen = len(left) - 1  # float rounding can leave `point` a hair past the last bucket
        for i, (_, weight) in enumerate(left):
            if point < weight:
                chosen = i
                break
            point -= weight
        name, weight = left.pop(chosen)
        total -= weight
        out.append(name)
    return out + zero
