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
import dataclasses
import json
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
# A settlement waits up to this long for a reservation to ride along with (one round trip for
# both); when none comes, the settlements waiting go in one round trip of their own.
SETTLE_BATCH_SECONDS = 0.02
# At most this many settlements per script run, which bounds how long Redis is busy with one.
SETTLE_BATCH_MAX = 32


@dataclasses.dataclass
class _PendingFinish:
    reservation_key: str
    actual: Amounts
    done: asyncio.Future[bool]


# Replaces an open reservation by the actual amounts (settle; release = all zero); 1 if it was
# open, 0 if not (already settled or released, or never made): so a request is charged once.
_FINISH_FUNCTION = """
local function finish(rkey, index, usd, requests, tokens)
  if redis.call('EXISTS', rkey) == 0 then return 0 end
  local actual = {usd = tonumber(usd), requests = tonumber(requests), tokens = tonumber(tokens)}
  local raw = redis.call('HGETALL', rkey)
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
  redis.call('DEL', rkey)
  redis.call('ZREM', index, rkey)
  return 1
end
"""

_RESERVE_BODY = """
-- KEYS[1..n] counter hashes, KEYS[n+1] reservation hash, KEYS[n+2] open-reservation zset,
-- KEYS[n+3..n+2+m] reservations to finish first (settlements riding along, see RedisStore)
-- ARGV[1] now, ARGV[2] stale cutoff, ARGV[3] prune margin s, ARGV[4] reservation ttl ms, ARGV[5] sweep limit,
-- ARGV[6] m, then seven per counter: field, lo, hi (bucket starts in (lo, hi] count), limit, amount, kind,
-- key ttl ms, then three per finish: actual usd, requests, tokens
-- returns {code (0 refused, 1 admitted, 2 already held), refused index (0 = none), used_1, held_1, ...,
-- finished_1 .. finished_m}
local ARGV = cjson.decode(ARGV[1])  -- the arguments come as one JSON array (see _pack)
local m = tonumber(ARGV[6])
local n = #KEYS - 2 - m
local now = tonumber(ARGV[1])
local rkey, index = KEYS[n + 1], KEYS[n + 2]
local margin = tonumber(ARGV[3])

-- Settlements first: they free what their estimates held beyond the actual cost.
local finished = {}
for i = 1, m do
  local a = 6 + 7 * n + 3 * (i - 1)
  finished[i] = finish(KEYS[n + 2 + i], index, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end

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
  local b = 6 + (i - 1) * 7
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

local function done(code)
  out[1] = code
  for i = 1, m do table.insert(out, finished[i]) end
  return cjson.encode(out)
end

if held ~= nil then return done(2) end
out[2] = refused
if refused ~= 0 then return done(0) end

local rec = {'n', n}
for i = 1, n do
  local b = 6 + (i - 1) * 7
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
return done(1)
"""

_FINISH_MANY_BODY = """
-- KEYS[1] open-reservation zset, KEYS[2..] reservations; ARGV three per reservation: actual usd,
-- requests, tokens. Returns finished (1/0) per reservation.
local ARGV = cjson.decode(ARGV[1])
local out = {}
for i = 2, #KEYS do
  local a = 3 * (i - 2)
  table.insert(out, finish(KEYS[i], KEYS[1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]))
end
return cjson.encode(out)
"""

_RESERVE = _FINISH_FUNCTION + _RESERVE_BODY
_FINISH_MANY = _FINISH_FUNCTION + _FINISH_MANY_BODY

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
        settle_batch_seconds: float = SETTLE_BATCH_SECONDS,
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
        self._finish_many = self._client.register_script(_FINISH_MANY)
        self._snapshot = self._client.register_script(_SNAPSHOT)
        self._open_key = prefix + "open"
        # Settlements are off the answer's path (the caller does not wait for them), so they
        # ride along with the next reservation: one round trip per request instead of two,
        # which is most of what Redis costs the gateway per request (docs/benchmarks.md).
        self.settle_batch_seconds = settle_batch_seconds
        self._pending: list[_PendingFinish] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

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
        riders = self._pending[:SETTLE_BATCH_MAX]
        del self._pending[: len(riders)]
        if not self._pending and self._flush_timer is not None:
            self._flush_timer.cancel()  # nothing left to send alone
            self._flush_timer = None
        args.append(len(riders))
        for c in counters:
            lo, hi = window(c, now)
            ttl_ms = max(1000, math.ceil(bucket_ttl(c, now) * 1000))
            args += [repr(float(c.bucket_start)), lo, hi, float(c.limit), float(amounts.of(c.kind)), c.kind, ttl_ms]
        for rider in riders:
            args += [rider.actual.usd, rider.actual.requests, rider.actual.tokens]
        keys = [self._counter_key(c) for c in counters] + [self._reservation_key(request_id), self._open_key]
        keys += [rider.reservation_key for rider in riders]
        try:
            out = _unpack(await self._run("reserve", self._reserve, keys, _pack(args)))
            try:
                n = len(counters)
                code, refused = int(out[0]), int(out[1])
                used = [float(out[2 + 2 * i]) for i in range(n)]
                held = [float(out[3 + 2 * i]) for i in range(n)]
                finished = [int(v) == 1 for v in out[2 + 2 * n :]]
                if code not in (0, 1, 2) or (code == 0) != (1 <= refused <= n) or len(finished) != len(riders):
                    raise ValueError("inconsistent admission")
            except (TypeError, ValueError, IndexError) as exc:
                raise StoreUnavailable(f"counter store {self.url} answered reserve with {out!r}") from exc
        except StoreUnavailable as exc:
            _resolve(riders, exc)
            raise
        except BaseException:
            self._requeue(riders)  # cancelled: finishing again is harmless (idempotent), losing it is not
            raise
        _resolve(riders, finished)
        if code == 2:
            return build_admission(counters, amounts, used, held, None)
        return build_admission(counters, amounts, used, None, refused - 1 if code == 0 else None)

    async def _finish_reservation(self, request_id: str, actual: Amounts) -> bool:
        loop = asyncio.get_running_loop()
        pending = _PendingFinish(self._reservation_key(request_id), actual, loop.create_future())
        self._pending.append(pending)
        if self.settle_batch_seconds <= 0:
            await self._flush()
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(self.settle_batch_seconds, self._start_flush)
        return await pending.done

    def _start_flush(self) -> None:
        self._flush_timer = None
        if not self._pending:
            return
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        """Settles what no reservation took along, SETTLE_BATCH_MAX per round trip."""
        while self._pending:
            batch = self._pending[:SETTLE_BATCH_MAX]
            del self._pending[: len(batch)]
            keys = [self._open_key] + [item.reservation_key for item in batch]
            args = [amount for item in batch for amount in (item.actual.usd, item.actual.requests, item.actual.tokens)]
            try:
                out = _unpack(await self._run("settle", self._finish_many, keys, _pack(args)))
                if not isinstance(out, list) or len(out) != len(batch):
                    raise StoreUnavailable(f"counter store {self.url} answered settle with {out!r}")
            except StoreUnavailable as exc:
                _resolve(batch, exc)
                continue
            except BaseException:
                self._requeue(batch)
                raise
            _resolve(batch, [int(v) == 1 for v in out])

    def _requeue(self, batch: list[_PendingFinish]) -> None:
        self._pending[:0] = [item for item in batch if not item.done.done()]
        if self._pending and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                max(self.settle_batch_seconds, 0.001), self._start_flush
            )

    async def settle(self, request_id: str, actual: Amounts) -> bool:
        check_amounts(actual)
        return await self._finish_reservation(request_id, actual)

    async def release(self, request_id: str) -> bool:
        return await self._finish_reservation(request_id, Amounts())

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
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self._flush()  # nothing waiting is dropped
        await self._client.aclose()


def _pack(args: list[Any]) -> list[str]:
    """The script's arguments as ONE JSON array of strings: redis-py packs a command argument by
    argument, a quarter of the store's CPU with ~30 arguments a reservation (cProfile, see
    docs/benchmarks.md). Each value is the string redis-py would have sent (floats as their
    `repr`, exact), so Lua's `tonumber` reads the same numbers as before."""
    return [json.dumps([repr(a) if isinstance(a, float) else str(a) for a in args], separators=(",", ":"))]


def _unpack(raw: Any) -> Any:
    """The script's JSON answer; anything else is left for the caller's checks to reject."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _resolve(batch: list[_PendingFinish], outcome: list[bool] | BaseException) -> None:
    """Hands each waiting settlement its result (or the store's failure)."""
    for i, item in enumerate(batch):
        if item.done.done():  # its caller gave up (cancelled)
            continue
        if isinstance(outcome, BaseException):
            item.done.set_exception(outcome)
        else:
            item.done.set_result(outcome[i])
