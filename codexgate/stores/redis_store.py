"""Counter store in Redis: several gateway instances share budgets and rate limits.

Keys (all under `prefix`):
  c:<counter_id>  hash  bucket_start -> amount used in that bucket (settled + reserved);
                  old buckets are deleted as reservations pass, the key expires after its last window
  r:<request_id>  hash  the open reservation: n, then k<i>/f<i>/c<i>/a<i> = counter key, bucket
                  field, kind, amount per counter; expires a while after stale_after_seconds
  open            zset  reservation key -> `now` of its reserve, to find stale ones by the caller's clock

`reserve`, `settle`/`release` and `snapshot` are each one Lua script, so one round trip that
Redis runs atomically: concurrent gateways cannot both pass the last free unit.

Settle reads the counter keys from the reservation, so scripts touch keys not passed in KEYS:
fine on a single Redis (or a replicated primary), not on Redis Cluster.

Numbers cross into Lua as Python `repr` strings and leave it as "%.17g" strings, both exact for
doubles (Lua's own tostring keeps only 14 digits), so both stores do the same float arithmetic.
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from codexgate.stores.base import Admission, Amounts, Counter, CounterState, StoreUnavailable
from codexgate.stores.embedded import (
    PRUNE_MARGIN_SECONDS,
    STALE_SWEEP_LIMIT,
    bucket_ttl,
    build_admission,
    check_amounts,
    check_request,
    window,
)

logger = logging.getLogger(__name__)

# Reservations outlive stale_after_seconds by this much in Redis: the sweep by the caller's
# clock settles them first; the TTL only guarantees nothing piles up if sweeps stop.
RESERVATION_TTL_MARGIN_SECONDS = 3600.0

_RESERVE = """
-- KEYS[1..n] counter hashes, KEYS[n+1] reservation hash, KEYS[n+2] open-reservation zset
-- ARGV[1] now, ARGV[2] stale cutoff, ARGV[3] prune margin s, ARGV[4] reservation ttl ms, ARGV[5] sweep limit
-- then seven per counter: field, lo, hi (bucket starts in (lo, hi] count), limit, amount, kind, key ttl ms
-- returns {code (0 refused, 1 admitted, 2 already held), refused index (0 = none), used_1, held_1, ...}
local n = #KEYS - 2
local now = tonumber(ARGV[1])
local rkey, index = KEYS[n + 1], KEYS[n + 2]
local margin = tonumber(ARGV[3])

-- Stale reservations are settled at their reserved amount: that amount is already in the
-- buckets, so settling them is dropping the record.
local stale = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[5]))
for _, key in ipairs(stale) do
  redis.call('DEL', key)
  redis.call('ZREM', index, key)
end

local held = nil
if redis.call('EXISTS', rkey) == 1 then
  held = {}
  local raw = redis.call('HGETALL', rkey)
  local h = {}
  for j = 1, #raw, 2 do h[raw[j]] = raw[j + 1] end
  for i = 1, tonumber(h['n']) do
    local k = h['k' .. i]
    held[k] = held[k] or {}
    table.insert(held[k], {tonumber(h['f' .. i]), tonumber(h['a' .. i])})
  end
end

local out = {0, 0}
local refused = 0
local prune = {}
for i = 1, n do
  local b = 5 + (i - 1) * 7
  local lo, hi = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local limit, amount = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local used = 0
  local old = {}
  local buckets = redis.call('HGETALL', KEYS[i])
  for j = 1, #buckets, 2 do
    local s = tonumber(buckets[j])
    if s > lo and s <= hi then
      used = used + tonumber(buckets[j + 1])
    elseif s <= lo - margin then
      table.insert(old, buckets[j])
    end
  end
  prune[i] = old
  local own = 0
  if held ~= nil and held[KEYS[i]] ~= nil then
    for _, item in ipairs(held[KEYS[i]]) do
      if item[1] > lo and item[1] <= hi then own = own + item[2] end
    end
    used = used - own
  end
  -- Same rule as embedded.has_room: no room at the limit even for 0; tolerance for float sums.
  local eps = 1e-9 * math.max(1, math.abs(limit))
  local room = limit == math.huge or (used + amount <= limit + eps and used < limit - eps)
  if held == nil and refused == 0 and not room then refused = i end
  table.insert(out, string.format('%.17g', used))
  table.insert(out, string.format('%.17g', own))
end

if held ~= nil then
  out[1] = 2
  return out
end
out[2] = refused
if refused ~= 0 then return out end

local rec = {'n', n}
for i = 1, n do
  local b = 5 + (i - 1) * 7
  local field, amount, ttl = ARGV[b + 1], tonumber(ARGV[b + 5]), tonumber(ARGV[b + 7])
  local cur = tonumber(redis.call('HGET', KEYS[i], field) or '0')
  redis.call('HSET', KEYS[i], field, cur + amount)
  if #prune[i] > 0 then redis.call('HDEL', KEYS[i], unpack(prune[i])) end
  -- The key lives until its newest bucket leaves every window; never shorten it.
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  table.insert(rec, 'k' .. i); table.insert(rec, KEYS[i])
  table.insert(rec, 'f' .. i); table.insert(rec, field)
  table.insert(rec, 'c' .. i); table.insert(rec, ARGV[b + 6])
  table.insert(rec, 'a' .. i); table.insert(rec, amount)
end
redis.call('HSET', rkey, unpack(rec))
redis.call('PEXPIRE', rkey, ARGV[4])
redis.call('ZADD', index, now, rkey)
redis.call('PEXPIRE', index, ARGV[4])
out[1] = 1
return out
"""

_FINISH = """
-- KEYS[1] reservation hash, KEYS[2] open-reservation zset; ARGV actual usd, requests, tokens
-- returns 1 if the reservation was open (and is now replaced by the actual amounts), else 0
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local actual = {usd = tonumber(ARGV[1]), requests = tonumber(ARGV[2]), tokens = tonumber(ARGV[3])}
local raw = redis.call('HGETALL', KEYS[1])
local h = {}
for j = 1, #raw, 2 do h[raw[j]] = raw[j + 1] end
for i = 1, tonumber(h['n']) do
  local key, field = h['k' .. i], h['f' .. i]
  local cur = redis.call('HGET', key, field)
  -- A bucket pruned or expired meanwhile lies outside every window: nothing to correct there.
  if cur then
    local v = tonumber(cur) - tonumber(h['a' .. i]) + actual[h['c' .. i]]
    if v < 0 then v = 0 end
    redis.call('HSET', key, field, v)
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return 1
"""

_SNAPSHOT = """
-- KEYS counter hashes; ARGV per counter: lo, hi (bucket starts in (lo, hi] count). Returns used per counter.
local out = {}
for i = 1, #KEYS do
  local lo, hi = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local used = 0
  local buckets = redis.call('HGETALL', KEYS[i])
  for j = 1, #buckets, 2 do
    local s = tonumber(buckets[j])
    if s > lo and s <= hi then used = used + tonumber(buckets[j + 1]) end
  end
  table.insert(out, string.format('%.17g', used))
end
return out
"""


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


class RedisStore:
    def __init__(
        self,
        url: str,
        stale_after_seconds: float = 900,
        prefix: str = "codexgate:",
        connect_timeout_seconds: float = 0.5,
        read_timeout_seconds: float = 0.5,
    ) -> None:
        self.url = redact(url)
        self.stale_after_seconds = float(stale_after_seconds)
        self.prefix = prefix
        # One immediate reconnect covers a connection the server dropped (restart, idle
        # timeout); more retries would only delay fail-closed/open. Timeouts are not retried:
        # the script may have run, and waiting twice is what "never hang" rules out.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_seconds,
            socket_timeout=read_timeout_seconds,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            decode_responses=True,
        )
        # Last line against a hang the socket timeouts miss (e.g. a stuck TLS handshake).
        self._deadline = connect_timeout_seconds + read_timeout_seconds + 0.5
        self._reserve = self._client.register_script(_RESERVE)
        self._finish = self._client.register_script(_FINISH)
        self._snapshot = self._client.register_script(_SNAPSHOT)
        self._open_key = prefix + "open"

    def _reservation_key(self, request_id: str) -> str:
        return f"{self.prefix}r:{request_id}"

    def _counter_key(self, counter: Counter) -> str:
        return f"{self.prefix}c:{counter.counter_id}"

    async def _run(self, what: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
                return await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"counter store {self.url} unavailable during {what}: {detail}") from exc

    async def reserve(self, request_id: str, counters: list[Counter], amounts: Amounts, now: float) -> Admission:
        check_request(counters, amounts)
        reservation_ttl_ms = math.ceil((self.stale_after_seconds + RESERVATION_TTL_MARGIN_SECONDS) * 1000)
        args: list[Any] = [
            float(now),
            float(now) - self.stale_after_seconds,
            PRUNE_MARGIN_SECONDS,
            reservation_ttl_ms,
            STALE_SWEEP_LIMIT,
        ]
        for c in counters:
            lo, hi = window(c, now)
            ttl_ms = max(1000, math.ceil(bucket_ttl(c, now) * 1000))
            args += [repr(float(c.bucket_start)), lo, hi, float(c.limit), float(amounts.of(c.kind)), c.kind, ttl_ms]
        keys = [self._counter_key(c) for c in counters] + [self._reservation_key(request_id), self._open_key]
        out = await self._run("reserve", self._reserve, keys, args)
        try:
            code, refused = int(out[0]), int(out[1])
            used = [float(out[2 + 2 * i]) for i in range(len(counters))]
            held = [float(out[3 + 2 * i]) for i in range(len(counters))]
            if code not in (0, 1, 2) or (code == 0) != (1 <= refused <= len(counters)):
                raise ValueError("inconsistent admission")
        except (TypeError, ValueError, IndexError) as exc:
            raise StoreUnavailable(f"counter store {self.url} answered reserve with {out!r}") from exc
        if code == 2:
            return build_admission(counters, amounts, used, held, None)
        return build_admission(counters, amounts, used, None, refused - 1 if code == 0 else None)

    async def _finish_reservation(self, what: str, request_id: str, actual: Amounts) -> bool:
        keys = [self._reservation_key(request_id), self._open_key]
        out = await self._run(what, self._finish, keys, [actual.usd, actual.requests, actual.tokens])
        return out == 1

    async def settle(self, request_id: str, actual: Amounts) -> bool:
        check_amounts(actual)
        return await self._finish_reservation("settle", request_id, actual)

    async def release(self, request_id: str) -> bool:
        return await self._finish_reservation("release", request_id, Amounts())

    async def snapshot(self, counters: list[Counter], now: float) -> list[CounterState]:
        if not counters:
            return []
        args: list[Any] = []
        for c in counters:
            args += list(window(c, now))
        out = await self._run("snapshot", self._snapshot, [self._counter_key(c) for c in counters], args)
        try:
            used = [float(v) for v in out]
        except (TypeError, ValueError) as exc:
            raise StoreUnavailable(f"counter store {self.url} answered snapshot with {out!r}") from exc
        return [CounterState(counter=c, used=u, remaining=c.limit - u) for c, u in zip(counters, used, strict=True)]

    async def close(self) -> None:
        await self._client.aclose()
