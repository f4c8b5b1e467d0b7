"""Counter store in Redis: several gateway instances share budgets and rate limits.

Keys (all under `prefix`):
  c:<counter_id>    hash    bucket_start -> amount used in that bucket (settled + reserved); old
                            buckets are deleted as reservations pass, the key expires after its last window
  res:<request_id>  string  the open reservation, JSON [counter key, bucket field, kind, amount, ...];
                            expires a while after stale_after_seconds
  open              zset    reservation key -> `now` of its reserve, to find stale ones by the caller's clock

`reserve`, `settle`/`release` and `snapshot` are each one Lua script, so one round trip that
Redis runs atomically: concurrent gateways cannot both pass the last free unit. The scripts
travel over `RedisLink` (one pipelined connection, hiredis), not redis-py's client: see
redis_link.py for why.

Every key a script touches is passed in KEYS, including the counters a settlement corrects (which
it reads from the reservation record): Redis Cluster checks only KEYS against the slot's state, so
while the store's slot migrates a script runs only on a node that holds all of them (else TRYAGAIN
or ASK, before anything ran). A script touching a key it did not declare could read a counter as
absent on the target, or fail halfway on the source, where writes before the failing call stay
(Redis does not roll a script back). The store remembers the counter keys of the reservations it
made; for one it did not make (another process's, e.g. settled from the write-ahead log after a
restart) the script answers -1 instead of settling, and the store reads the record and sends the
settlement again with its keys.

Numbers cross into Lua as Python `repr` strings and leave it as "%.17g" strings, both exact for
doubles (Lua's own tostring keeps only 14 digits), so both stores do the same float arithmetic.

Reservations were hashes under r:<request_id> before; one left by an older version when it is
upgraded is never settled by this one: its estimate stays charged, as for any request that died
in flight, and the record goes with the stale sweep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from codexgate.stores.base import Admission, Amounts, Counter, CounterState, StoreUnavailable
from codexgate.stores.redis_link import LinkError, RedisLink, ReplyError, SlotMigrating
from codexgate.stores.rules import (
    PRUNE_MARGIN_SECONDS,
    STALE_SWEEP_LIMIT,
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
# Counters whose script arguments are kept (they change when a window rolls over).
COUNTER_ARGS_CACHE_SIZE = 10_000
# A settlement that failed (store slow, restarting) is tried again after this long, for at most
# SETTLE_RETRY_SECONDS; only then is its reservation left to be charged at its estimate.
SETTLE_RETRY_DELAY_SECONDS = 0.25
SETTLE_RETRY_SECONDS = 60.0
# A release of a reservation whose caller gave up goes this long after its read timeout ran out.
RELEASE_MARGIN_SECONDS = 0.05
# Stale reservations are looked for at most this often per instance (by the caller's clock).
SWEEP_INTERVAL_SECONDS = 1.0
# While a Redis Cluster migrates the store's slot, a call whose keys are split between the two
# nodes is refused (TRYAGAIN) before it runs: an admission is sent again after these pauses
# (doubling) for up to `slot_migration_wait_seconds` before the request gets a 503.
SLOT_RETRY_FIRST_SECONDS = 0.01
SLOT_RETRY_MAX_SECONDS = 0.2
SLOT_MIGRATION_WAIT_SECONDS = 2.0
# Counter keys of this many open reservations are remembered to declare them when settling; past
# that the oldest are forgotten (settling one then costs a read of its record first).
RESERVATION_KEYS_REMEMBERED = 50_000
_PRUNE_MARGIN = repr(float(PRUNE_MARGIN_SECONDS))
_SWEEP_LIMIT = str(STALE_SWEEP_LIMIT)


@dataclasses.dataclass(eq=False)  # compared by identity: two settlements are never the same one
class _PendingFinish:
    reservation_key: str
    actual_args: tuple[str, str, str]  # usd, requests, tokens, as exact strings for the script
    done: asyncio.Future[bool]
    since: float  # loop time it was first asked for (failed ones are retried for a while)
    keys_read: bool = False  # its counter keys were read from the record (see _learn_keys)
    withdrawn: bool = False  # a release the same request's next reservation made moot (see reserve)


# Lua helpers shared by the scripts. Values of counter hashes are read once per script run into
# `vals` and written back once (`flush`): a settlement riding along with a reservation usually
# touches the same buckets. The script runs on every request's path, and under the gateway's load
# it costs Redis several times what it costs back to back, so it makes few calls and few tables.
_COMMON = """
local call, tonumber, format, unpack = redis.call, tonumber, string.format, unpack
local vals = {}    -- counter key -> {field -> number}
local full = {}    -- counter key -> the HGETALL reply, for keys read whole
local dirty = {}   -- counter key -> {field -> true}
local dirty_keys = {}

local function load_full(key)
  local raw = call('HGETALL', key)
  local v = {}
  for j = 1, #raw, 2 do v[raw[j]] = tonumber(raw[j + 1]) end
  vals[key], full[key] = v, raw
end

local function value(key, field)
  local v = vals[key]
  if v == nil then v = {}; vals[key] = v end
  local x = v[field]
  if x == nil and full[key] == nil then
    local raw = call('HGET', key, field)
    if raw then x = tonumber(raw); v[field] = x end
  end
  return x
end

local function put(key, field, x)
  vals[key][field] = x
  local d = dirty[key]
  if d == nil then d = {}; dirty[key] = d; dirty_keys[#dirty_keys + 1] = key end
  d[field] = true
end

local function flush()
  for _, key in ipairs(dirty_keys) do
    local args, v = {}, vals[key]
    for field in pairs(dirty[key]) do
      args[#args + 1] = field
      args[#args + 1] = format('%.17g', v[field])
    end
    call('HSET', key, unpack(args))
  end
  dirty, dirty_keys = {}, {}
end

-- KEYS as a set, made when a settlement first needs it.
local declared = nil
local function all_declared(r)
  if declared == nil then
    declared = {}
    for _, k in ipairs(KEYS) do declared[k] = true end
  end
  for i = 1, #r, 4 do
    if not declared[r[i]] then return false end
  end
  return true
end

-- Replaces an open reservation by the actual amounts (settle; release = all zero); 1 if it was
-- open, 0 if not (already settled or released, or never made): so a request is charged once;
-- -1, changing nothing, if a counter it names is not in KEYS (on Redis Cluster only declared keys
-- are checked to be on this node: see the module docstring). The record is a flat JSON array:
-- counter key, bucket field, kind, reserved amount (an exact string), then the next counter's four.
local function finish(rkey, index, usd, requests, tokens)
  local rec = call('GET', rkey)
  if not rec then return 0 end
  local r = cjson.decode(rec)
  if not all_declared(r) then return -1 end
  for i = 1, #r, 4 do
    local key, field, kind = r[i], r[i + 1], r[i + 2]
    local cur = value(key, field)
    -- A bucket pruned or expired meanwhile lies outside every window: nothing to correct there.
    if cur then
      local actual = kind == 'usd' and usd or (kind == 'requests' and requests or tokens)
      local x = cur - tonumber(r[i + 3]) + tonumber(actual)
      if x < 0 then x = 0 end
      put(key, field, x)
    end
  end
  call('DEL', rkey)
  call('ZREM', index, rkey)
  return 1
end
"""

_RESERVE_BODY = """
-- KEYS[1..n] counter hashes, KEYS[n+1] reservation record, KEYS[n+2] open-reservation zset,
-- KEYS[n+3..n+2+m] reservations to finish first (settlements riding along, see RedisStore), then e
-- more counter hashes those settlements correct (declared only, see the module docstring)
-- ARGV[1] now, ARGV[2] stale cutoff, ARGV[3] prune margin s, ARGV[4] reservation ttl ms,
-- ARGV[5] sweep limit (0: no sweep this time), ARGV[6] m, ARGV[7..9] amounts usd, requests, tokens,
-- ARGV[10] deadline (Redis clock, epoch s; 0: none), ARGV[11] e; then six per counter: field (bucket start), lo,
-- span (0: calendar, count (lo, hi]; else rolling, lo = now - span), limit, kind, expires_at (epoch s
-- when no window includes the bucket, plus margin); then three per finish: actual usd, requests, tokens.
-- returns {code (0 refused, 1 admitted, 2 already held, 3 past its deadline: nothing reserved), refused
-- index (0 = none), used_1, held_1, ..., finished_1 .. finished_m, Redis clock (epoch s)}
local m = tonumber(ARGV[6])
local n = #KEYS - 2 - m - tonumber(ARGV[11])
local now = tonumber(ARGV[1])
local rkey, index = KEYS[n + 1], KEYS[n + 2]
local margin = tonumber(ARGV[3])
local C = 11          -- counter arguments start after this
local F = C + 6 * n   -- finish arguments start after this
local function amount_arg(kind)
  return kind == 'usd' and ARGV[7] or (kind == 'requests' and ARGV[8] or ARGV[9])
end
local clock = call('TIME')
local redis_now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

for i = 1, n do load_full(KEYS[i]) end

-- Settlements first: they free what their estimates held beyond the actual cost.
local out = {0, 0}
local finished = {}
for i = 1, m do
  local a = F + 3 * (i - 1)
  finished[i] = finish(KEYS[n + 2 + i], index, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end

-- The caller gives up waiting at its deadline and answers 503: a reservation made after it would
-- be held for a request that never ran (a phantom charge). Settlements riding along still count.
local deadline = tonumber(ARGV[10])
if deadline > 0 and redis_now > deadline then
  flush()
  out[1] = 3
  for i = 1, n do out[#out + 1] = '0'; out[#out + 1] = '0' end
  for i = 1, m do out[#out + 1] = finished[i] end
  out[#out + 1] = format('%.17g', redis_now)
  return out
end

-- Stale reservations are settled at their reserved amount: that amount is already in the
-- buckets, so settling them is dropping the record. The caller asks for it about once a second
-- (ARGV[5] > 0), not on every reservation, and refreshes the index's TTL then.
local sweep = tonumber(ARGV[5])
if sweep > 0 then
  local stale = call('ZRANGEBYSCORE', index, '-inf', ARGV[2], 'LIMIT', 0, sweep)
  for _, key in ipairs(stale) do
    -- Records are not declared keys: while the slot migrates, one may already be on the other
    -- node, and DEL fails (pcall: the script goes on); its index entry stays for a later sweep.
    if type(redis.pcall('DEL', key)) == 'number' then call('ZREM', index, key) end
  end
end

local held = nil  -- counter key -> {bucket start, amount, ...} of this request's own reservation
local rec = call('GET', rkey)
if rec then
  held = {}
  local r = cjson.decode(rec)
  for i = 1, #r, 4 do
    local list = held[r[i]] or {}
    held[r[i]] = list
    list[#list + 1] = tonumber(r[i + 1])
    list[#list + 1] = tonumber(r[i + 3])
  end
end

local refused = 0
local prune = nil  -- counter index -> old bucket fields, only when there are any
for i = 1, n do
  local b = C + 6 * (i - 1)
  local key = KEYS[i]
  local start = tonumber(ARGV[b + 1])
  local span = tonumber(ARGV[b + 3])
  local lo = span > 0 and now - span or tonumber(ARGV[b + 2])
  local hi = math.max(now, start)
  local limit, amount = tonumber(ARGV[b + 4]), tonumber(amount_arg(ARGV[b + 5]))
  local used = 0
  local v, raw = vals[key], full[key]
  for j = 1, #raw, 2 do
    local s = tonumber(raw[j])
    if s > lo and s <= hi then
      used = used + v[raw[j]]
    elseif s <= lo - margin then
      prune = prune or {}
      prune[i] = prune[i] or {}
      prune[i][#prune[i] + 1] = raw[j]
    end
  end
  local own = 0
  if held ~= nil and held[key] ~= nil then
    local list = held[key]
    for j = 1, #list, 2 do
      if list[j] > lo and list[j] <= hi then own = own + list[j + 1] end
    end
    used = used - own
  end
  -- Same rule as rules.has_room: no room at the limit even for 0; tolerance for float sums.
  local eps = 1e-9 * math.max(1, math.abs(limit))
  local room = limit == math.huge or (used + amount <= limit + eps and used < limit - eps)
  if held == nil and refused == 0 and not room then refused = i end
  out[#out + 1] = format('%.17g', used)
  out[#out + 1] = own == 0 and '0' or format('%.17g', own)
end

local function done(code)
  flush()  -- what the settlements changed, when nothing else is written
  out[1] = code
  for i = 1, m do out[#out + 1] = finished[i] end
  out[#out + 1] = format('%.17g', redis_now)
  return out
end

if held ~= nil then return done(2) end
out[2] = refused
if refused ~= 0 then return done(0) end

local items = {}
local created = nil  -- counter indexes whose bucket this reservation creates
for i = 1, n do
  local b = C + 6 * (i - 1)
  local key, field, kind = KEYS[i], ARGV[b + 1], ARGV[b + 5]
  local amount = amount_arg(kind)
  local cur = vals[key][field]
  put(key, field, (cur or 0) + tonumber(amount))
  if cur == nil then
    created = created or {}
    created[#created + 1] = i
  end
  items[#items + 1] = key
  items[#items + 1] = field
  items[#items + 1] = kind
  items[#items + 1] = amount
end
flush()
if prune ~= nil then
  for i, old in pairs(prune) do call('HDEL', KEYS[i], unpack(old)) end
end
if created ~= nil then
  for _, i in ipairs(created) do
    -- A new bucket: the key lives until it leaves every window; never shorten it. (Older
    -- buckets leave sooner, so the TTL is only touched when a bucket is created.)
    local ttl = math.max(1000, math.ceil((tonumber(ARGV[C + 6 * (i - 1) + 6]) - now) * 1000))
    if call('PTTL', KEYS[i]) < ttl then call('PEXPIRE', KEYS[i], ttl) end
  end
end
call('SET', rkey, cjson.encode(items), 'PX', ARGV[4])
call('ZADD', index, now, rkey)
if sweep > 0 then call('PEXPIRE', index, ARGV[4]) end
return done(1)
"""

_FINISH_MANY_BODY = """
-- KEYS[1] open-reservation zset, KEYS[2..m+1] reservations, then the counter hashes they correct
-- (declared only); ARGV three per reservation: actual usd, requests, tokens. Returns finished
-- (1/0/-1, see finish) per reservation.
local out = {}
for i = 2, #ARGV / 3 + 1 do
  local a = 3 * (i - 2)
  out[#out + 1] = finish(KEYS[i], KEYS[1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
flush()
return out
"""

_SETTLE_TO_BODY = """
-- KEYS[1] open-reservation zset, KEYS[2] the reservation, KEYS[3..n+2] the counters to charge
-- instead, then the counter hashes the reservation holds (declared only, see the module docstring);
-- ARGV[1..3] actual usd, requests, tokens, ARGV[4] now; then three per counter to charge: field
-- (bucket start), kind, expires_at. Returns 1 if the reservation was open (and is settled), 0 if
-- not, -1 if its record names counters not declared (nothing written: read them, call again).
local now = tonumber(ARGV[4])
local n = (#ARGV - 4) / 3
local finished = finish(KEYS[2], KEYS[1], '0', '0', '0')
if finished ~= 1 then return finished end
for i = 3, n + 2 do
  local b = 4 + 3 * (i - 3)
  local key, field, kind = KEYS[i], ARGV[b + 1], ARGV[b + 2]
  local amount = tonumber(kind == 'usd' and ARGV[1] or (kind == 'requests' and ARGV[2] or ARGV[3]))
  put(key, field, (value(key, field) or 0) + amount)
end
flush()
for i = 3, n + 2 do
  local ttl = math.max(1000, math.ceil((tonumber(ARGV[4 + 3 * (i - 3) + 3]) - now) * 1000))
  if call('PTTL', KEYS[i]) < ttl then call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""

_RESERVE = _COMMON + _RESERVE_BODY
_FINISH_MANY = _COMMON + _FINISH_MANY_BODY
_SETTLE_TO = _COMMON + _SETTLE_TO_BODY

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
    """The URL without its passwords (the server's, and a Sentinel's in the query), for messages."""
    parts = urllib.parse.urlsplit(url)
    if "password" in parts.query:
        query = re.sub(r"((?:^|&)[^=&]*password=)[^&]*", r"\1***", parts.query)
        parts = parts._replace(query=query)
    if parts.password is None:
        return urllib.parse.urlunsplit(parts)
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
        slot_migration_wait_seconds: float = SLOT_MIGRATION_WAIT_SECONDS,
    ) -> None:
        self.url = redact(url)
        self.stale_after_seconds = float(stale_after_seconds)
        self.prefix = prefix
        self._link = RedisLink(url, connect_timeout_seconds, read_timeout_seconds)
        self._reserve = _Script(_RESERVE)
        self._finish_many = _Script(_FINISH_MANY)
        self._settle_to = _Script(_SETTLE_TO)
        self._snapshot = _Script(_SNAPSHOT)
        self._open_key = prefix + "open"
        self._reservation_ttl_ms = str(math.ceil((self.stale_after_seconds + RESERVATION_TTL_MARGIN_SECONDS) * 1000))
        # What a reservation sends per counter does not depend on the request (see _counter_args).
        self._args_of_counter: dict[int, tuple[Counter, tuple[str, tuple[str, ...]]]] = {}
        # Settlements are off the answer's path (the caller does not wait for them), so they
        # ride along with the next reservation: one round trip per request instead of two,
        # which is most of what Redis costs the gateway per request (docs/benchmarks.md).
        self.settle_batch_seconds = settle_batch_seconds
        self._pending: list[_PendingFinish] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._last_sweep = -math.inf
        self._read_timeout = float(read_timeout_seconds)
        self._clock_offset: float | None = None  # upper bound on Redis clock - this clock, see reserve()
        # Releases of reservations whose caller gave up, not yet due (see _release_later).
        self._orphans: dict[asyncio.TimerHandle, Callable[[], None]] = {}
        # The same, by reservation key, until sent and answered (see _withdraw_release).
        self._releases: dict[str, tuple[_PendingFinish, asyncio.TimerHandle]] = {}
        self.slot_migration_wait_seconds = float(slot_migration_wait_seconds)
        # Reservation key -> the counter keys its record names, declared when it is settled (see the
        # module docstring); insertion-ordered, so the oldest go first when it is full.
        self._keys_of_reservation: dict[str, tuple[str, ...]] = {}

    def _reservation_key(self, request_id: str) -> str:
        return f"{self.prefix}res:{request_id}"

    def _counter_key(self, counter: Counter) -> str:
        return f"{self.prefix}c:{counter.counter_id}"

    def _counter_args(self, counter: Counter) -> tuple[str, tuple[str, ...]]:
        """The counter's key and its six script arguments: the same for every request in its window
        (a rolling window's lower end is computed in the script from `now`)."""
        # Keyed by identity (Limits hands out the same Counter objects for a whole window); the
        # entry keeps its counter, so an id is never reused while it is cached.
        entry = self._args_of_counter.get(id(counter))
        if entry is not None and entry[0] is counter:
            return entry[1]
        start = float(counter.bucket_start)
        if counter.span_seconds <= counter.bucket_seconds:  # calendar: its own bucket only
            lo, span = window(counter, start)[0], 0.0
        else:
            lo, span = 0.0, float(counter.span_seconds)
        expires_at = start + float(counter.span_seconds) + PRUNE_MARGIN_SECONDS
        args = (repr(start), repr(lo), repr(span), repr(float(counter.limit)), counter.kind, repr(expires_at))
        cached = (self._counter_key(counter), args)
        if len(self._args_of_counter) >= COUNTER_ARGS_CACHE_SIZE:
            self._args_of_counter.clear()
        self._args_of_counter[id(counter)] = (counter, cached)
        return cached

    async def _run(self, what: str, script: _Script, keys: list[str], args: list[str]) -> Any:
        # No deadline of its own around this: the link bounds connecting (TLS included) and waiting.
        try:
            try:
                return await self._link.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except ReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                # Redis restarted or flushed its script cache: EVAL loads the script again.
                return await self._link.call("EVAL", script.source, len(keys), *keys, *args)
        except SlotMigrating as exc:
            raise _SlotMigrating(f"counter store {self.url} unavailable during {what}: slot migrating ({exc})") from exc
        except (LinkError, ReplyError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"counter store {self.url} unavailable during {what}: {detail}") from exc

    def _slot_pause(self, started: float, tries: int) -> float | None:
        """How long to wait before sending again a call refused with TRYAGAIN (monotonic `started`:
        when it was first sent), or None when that would exceed `slot_migration_wait_seconds`."""
        pause = min(SLOT_RETRY_FIRST_SECONDS * 2**tries, SLOT_RETRY_MAX_SECONDS)
        if time.monotonic() + pause - started > self.slot_migration_wait_seconds:
            return None
        return pause

    async def _redis_clock_offset(self) -> float:
        """An upper bound on (Redis clock - this host's clock): Redis's TIME minus when it was asked."""
        if self._clock_offset is None:
            asked = time.time()
            try:
                reply = await self._link.call("TIME")
                offset = float(reply[0]) + float(reply[1]) / 1_000_000 - asked
            except (LinkError, ReplyError, OSError, TimeoutError, TypeError, ValueError, IndexError) as exc:
                raise StoreUnavailable(f"counter store {self.url} unavailable during reserve: {exc}") from exc
            self._clock_offset = offset
        return self._clock_offset

    async def reserve(self, request_id: str, counters: list[Counter], amounts: Amounts, now: float) -> Admission:
        check_request(counters, amounts)
        self._withdraw_release(self._reservation_key(request_id))
        started, migrating = time.monotonic(), 0
        attempt = 0
        while attempt < 2:
            attempt += 1
            sent = time.time()
            try:
                offset = await self._redis_clock_offset()
                # Redis refuses the reservation past this moment (by its own clock): by then this
                # caller may have given up and answered 503, and the request never runs. Half the read
                # timeout, so a reservation made in time was also made well before the caller stops
                # waiting (see _release_later).
                deadline = sent + self._read_timeout / 2 + offset
                code, admission, redis_now = await self._reserve_once(request_id, counters, amounts, now, deadline)
            except _SlotMigrating:
                # Refused before the script ran (TRYAGAIN): nothing was reserved by this attempt, so it
                # is sent again as it is, with a new deadline. No release is queued while it may still
                # be admitted: a release arriving after the admission would leave it unmetered.
                pause = self._slot_pause(started, migrating)
                if pause is None:
                    self._release_later(request_id, sent)  # in case an earlier, dropped attempt ran
                    raise
                migrating += 1
                attempt -= 1
                await asyncio.sleep(pause)
                continue
            except StoreUnavailable:
                self._release_later(request_id, sent)
                raise
            except BaseException:
                self._release_later(request_id, sent)  # cancelled: the script may still run
                raise
            # Redis ran the script before the reply came: its clock then minus our sending time is an
            # upper bound on the offset; the least one seen is the tightest.
            sample = redis_now - sent
            if code != 3:
                assert self._clock_offset is not None
                self._clock_offset = min(self._clock_offset, sample)
                assert admission is not None
                return admission
            # Past the deadline although the answer came in time: this host's clock jumped back (or
            # Redis's ahead) since the offset was learnt. Learn it again and try once more.
            logger.warning("counter store %s: clock offset moved (reservation past its deadline); relearning", self.url)
            self._clock_offset = sample
        raise StoreUnavailable(f"counter store {self.url}: reservation refused as past its deadline twice")

    def _release_later(self, request_id: str, sent: float) -> None:
        """Releases a reservation whose caller gave up (timeout, lost connection, cancellation).

        The script may still run later (Redis was stuck, not gone); it refuses work past its
        deadline (sent + read_timeout / 2, by Redis's clock), so a reservation exists only if it ran
        before then. The release is sent a full read timeout after the reservation was, so it runs
        after any such reservation: no reservation of a refused request stays charged. Releasing
        one that was never made changes nothing (finishing is idempotent)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        future.add_done_callback(_consume)
        pending = _PendingFinish(self._reservation_key(request_id), ("0.0", "0.0", "0.0"), future, loop.time())

        def queue() -> None:
            self._orphans.pop(handle, None)
            self._pending.append(pending)
            if self._flush_timer is None:  # or it rides along with the next reservation
                self._flush_timer = loop.call_later(self.settle_batch_seconds, self._start_flush)

        delay = max(0.0, sent + self._read_timeout - time.time()) + RELEASE_MARGIN_SECONDS
        handle = loop.call_later(delay, queue)
        self._orphans[handle] = queue
        previous = self._releases.get(pending.reservation_key)
        if previous is not None:  # an earlier attempt's: this later one covers it
            self._withdraw_release(pending.reservation_key)
        self._releases[pending.reservation_key] = (pending, handle)

    def _withdraw_release(self, reservation_key: str) -> None:
        """The same request is being reserved again (a caller that retries a request id after
        StoreUnavailable): a release still due from its earlier attempt would undo this admission,
        leaving the request unmetered. This attempt covers the earlier one either way: admitted,
        its reservation is settled by its caller; refused, it queues a release of its own, due after
        any reservation either attempt could still make."""
        entry = self._releases.pop(reservation_key, None)
        if entry is None:
            return
        pending, handle = entry
        pending.withdrawn = True
        handle.cancel()
        self._orphans.pop(handle, None)
        if pending in self._pending:
            self._pending.remove(pending)
        if not pending.done.done():
            pending.done.set_result(False)

    async def _reserve_once(
        self, request_id: str, counters: list[Counter], amounts: Amounts, now: float, deadline: float
    ) -> tuple[int, Admission | None, float]:
        riders = self._pending[:SETTLE_BATCH_MAX]
        del self._pending[: len(riders)]
        if not self._pending and self._flush_timer is not None:
            self._flush_timer.cancel()  # nothing left to send alone
            self._flush_timer = None
        now = float(now)
        # Sweep stale reservations about once a second by the caller's clock (and whenever that
        # clock went back): each sweep is a sorted-set query Redis would otherwise run per request.
        sweep = not (self._last_sweep <= now < self._last_sweep + SWEEP_INTERVAL_SECONDS)
        if sweep:
            self._last_sweep = now
        counter_keys: list[str] = []
        counter_args: list[str] = []
        for counter in counters:
            key, args_of_counter = self._counter_args(counter)
            counter_keys.append(key)
            counter_args += args_of_counter
        reservation_key = self._reservation_key(request_id)
        self._remember_keys(reservation_key, tuple(counter_keys))
        corrected = self._corrected_keys(riders, counter_keys)  # declared only: see the module docstring
        keys = [*counter_keys, reservation_key, self._open_key]
        keys += [*(rider.reservation_key for rider in riders), *corrected]
        args = [
            repr(now),
            repr(now - self.stale_after_seconds),
            _PRUNE_MARGIN,
            self._reservation_ttl_ms,
            _SWEEP_LIMIT if sweep else "0",
            str(len(riders)),
            repr(float(amounts.usd)),
            repr(float(amounts.requests)),
            repr(float(amounts.tokens)),
            repr(float(deadline)),
            str(len(corrected)),
            *counter_args,
        ]
        for rider in riders:
            args += rider.actual_args
        try:
            out = await self._run("reserve", self._reserve, keys, args)
            try:
                n = len(counters)
                code, refused = int(out[0]), int(out[1])
                used = [float(out[2 + 2 * i]) for i in range(n)]
                held = [float(out[3 + 2 * i]) for i in range(n)]
                finished = [int(v) for v in out[2 + 2 * n : -1]]
                redis_now = float(out[-1])
                if (
                    code not in (0, 1, 2, 3)
                    or (code == 0) != (1 <= refused <= n)
                    or len(finished) != len(riders)
                    or any(v not in (-1, 0, 1) for v in finished)
                    or not math.isfinite(redis_now)
                ):
                    raise ValueError("inconsistent admission")
            except (TypeError, ValueError, IndexError) as exc:
                raise StoreUnavailable(f"counter store {self.url} answered reserve with {out!r}") from exc
        except StoreUnavailable:
            # The script may have run or may run yet: the settlements go again (idempotent).
            self._retry(riders)
            raise
        except BaseException:
            self._requeue(riders)  # cancelled: finishing again is harmless (idempotent), losing it is not
            raise
        self._settled(riders, finished)
        if code == 3:
            return code, None, redis_now
        if code == 2:
            return code, build_admission(counters, amounts, used, held, None), redis_now
        return code, build_admission(counters, amounts, used, None, refused - 1 if code == 0 else None), redis_now

    async def _finish_reservation(self, request_id: str, actual: Amounts) -> bool:
        loop = asyncio.get_running_loop()
        pending = _PendingFinish(
            self._reservation_key(request_id),
            (repr(float(actual.usd)), repr(float(actual.requests)), repr(float(actual.tokens))),
            loop.create_future(),
            loop.time(),
        )
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

    async def _flush(self, final: bool = False) -> None:
        """Settles what no reservation took along, SETTLE_BATCH_MAX per round trip. One that fails
        is tried again (finishing is idempotent) for SETTLE_RETRY_SECONDS, or not at all when `final`."""
        todo, self._pending = self._pending, []
        failed: list[_PendingFinish] = []
        error: StoreUnavailable | None = None
        for first in range(0, len(todo), SETTLE_BATCH_MAX):
            batch = todo[first : first + SETTLE_BATCH_MAX]
            keys = [self._open_key] + [item.reservation_key for item in batch]
            keys += self._corrected_keys(batch, [])
            args = [amount for item in batch for amount in item.actual_args]
            try:
                out = await self._run("settle", self._finish_many, keys, args)
                if not isinstance(out, list) or len(out) != len(batch) or any(v not in (-1, 0, 1) for v in out):
                    raise StoreUnavailable(f"counter store {self.url} answered settle with {out!r}")
            except StoreUnavailable as exc:
                # The rest waits too: while the store is down, one connection attempt per retry.
                failed += todo[first:]
                error = exc
                break
            except BaseException:
                self._requeue(todo[first:])
                raise
            self._settled(batch, [int(v) for v in out])
        if failed:
            assert error is not None
            if final:
                _resolve(failed, error)
            else:
                self._retry(failed, error)

    def _forget_release(self, item: _PendingFinish) -> None:
        entry = self._releases.get(item.reservation_key)
        if entry is not None and entry[0] is item:
            del self._releases[item.reservation_key]

    def _remember_keys(self, reservation_key: str, counter_keys: tuple[str, ...]) -> None:
        remembered = self._keys_of_reservation
        if reservation_key not in remembered and len(remembered) >= RESERVATION_KEYS_REMEMBERED:
            del remembered[next(iter(remembered))]
        remembered[reservation_key] = counter_keys

    def _corrected_keys(self, batch: list[_PendingFinish], declared: list[str]) -> list[str]:
        """The counter keys these settlements correct, less those already in `declared`."""
        remembered = self._keys_of_reservation
        extra = dict.fromkeys(key for item in batch for key in remembered.get(item.reservation_key, ()))
        for key in declared:
            extra.pop(key, None)
        return list(extra)

    def _settled(self, batch: list[_PendingFinish], finished: list[int]) -> None:
        """Hands settlements their results; those whose record names counters that were not declared
        (-1: a reservation another process made) have their keys read first and go again."""
        unknown = [item for item, code in zip(batch, finished, strict=True) if code == -1]
        for item, code in zip(batch, finished, strict=True):
            if code != -1:
                self._keys_of_reservation.pop(item.reservation_key, None)
                self._forget_release(item)
        _resolve(
            [item for item, code in zip(batch, finished, strict=True) if code != -1],
            [code == 1 for code in finished if code != -1],
        )
        if unknown:
            task = asyncio.get_running_loop().create_task(self._learn_keys(unknown))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _learn_keys(self, batch: list[_PendingFinish]) -> None:
        """Reads the counter keys of these reservations from their records, then settles them again."""
        for item in batch:
            if item.keys_read:  # its keys were declared and still did not match: the record is not ours
                problem = f"counter store {self.url}: {item.reservation_key} names keys it was not sent with"
                _resolve([item], StoreUnavailable(problem))
                continue
            try:
                record = await self._link.call("GET", item.reservation_key)
                counter_keys = tuple(json.loads(record)[0::4]) if record else ()
            except (LinkError, ReplyError, OSError, TimeoutError, TypeError, ValueError) as exc:
                self._retry([item], StoreUnavailable(f"counter store {self.url} unavailable during settle: {exc}"))
                continue
            item.keys_read = True
            self._remember_keys(item.reservation_key, counter_keys)
            self._requeue([item])

    def _retry(self, batch: list[_PendingFinish], error: StoreUnavailable | None = None) -> None:
        """Finishes that failed: their callers learn it at once, and the store tries them again
        every SETTLE_RETRY_DELAY_SECONDS for SETTLE_RETRY_SECONDS after they were first asked for
        (idempotent), so a store that was slow or restarting does not leave their reservations to
        be charged at their estimates."""
        loop = asyncio.get_running_loop()
        _resolve(batch, error or StoreUnavailable(f"counter store {self.url} unavailable during settle"))
        now = loop.time()
        again = [item for item in batch if now - item.since <= SETTLE_RETRY_SECONDS and not item.withdrawn]
        for item in batch:
            if item.withdrawn or now - item.since > SETTLE_RETRY_SECONDS:
                self._forget_release(item)
        if not again:
            return
        self._pending[:0] = again
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_timer = loop.call_later(SETTLE_RETRY_DELAY_SECONDS, self._start_flush)

    def _requeue(self, batch: list[_PendingFinish]) -> None:
        self._pending[:0] = [item for item in batch if not item.done.done() and not item.withdrawn]
        if self._pending and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                max(self.settle_batch_seconds, 0.001), self._start_flush
            )

    async def settle(self, request_id: str, actual: Amounts) -> bool:
        check_amounts(actual)
        return await self._finish_reservation(request_id, actual)

    async def settle_to(self, request_id: str, actual: Amounts, counters: list[Counter], now: float) -> bool:
        # Rare (a failed-over request): one round trip of its own rather than riding along.
        check_request(counters, actual)
        reservation_key = self._reservation_key(request_id)
        keys = [self._open_key, reservation_key]
        args = [repr(float(actual.usd)), repr(float(actual.requests)), repr(float(actual.tokens)), repr(float(now))]
        for counter in counters:
            key, (start, _lo, _span, _limit, kind, expires_at) = self._counter_args(counter)
            keys.append(key)
            args += [start, kind, expires_at]
        held = self._keys_of_reservation.get(reservation_key)
        for attempt in range(2):
            # Every key the script touches is declared (Redis Cluster): the reservation's own
            # counters too, remembered at reserve or read from its record (another process made it).
            declared = keys + [key for key in dict.fromkeys(held or ()) if key not in keys]
            out = await self._run("settle", self._settle_to, declared, args)
            if out in (0, 1):
                self._keys_of_reservation.pop(reservation_key, None)
                return bool(out == 1)
            if out != -1 or attempt:
                break
            try:
                record = await self._link.call("GET", reservation_key)
                held = tuple(json.loads(record)[0::4]) if record else ()
            except (LinkError, ReplyError, OSError, TimeoutError, TypeError, ValueError) as exc:
                raise StoreUnavailable(f"counter store {self.url} unavailable during settle: {exc}") from exc
        raise StoreUnavailable(f"counter store {self.url} answered settle with {out!r}")

    async def release(self, request_id: str) -> bool:
        return await self._finish_reservation(request_id, Amounts())

    async def snapshot(self, counters: list[Counter], now: float) -> list[CounterState]:
        if not counters:
            return []
        args: list[str] = []
        for c in counters:
            args += [repr(float(v)) for v in window(c, now)]
        started, tries = time.monotonic(), 0
        while True:
            try:
                out = await self._run("snapshot", self._snapshot, [self._counter_key(c) for c in counters], args)
                break
            except _SlotMigrating:
                pause = self._slot_pause(started, tries)
                if pause is None:
                    raise
                tries += 1
                await asyncio.sleep(pause)
        try:
            used = [float(v) for v in out]
            if len(used) != len(counters):
                raise ValueError("one value per counter expected")
        except (TypeError, ValueError) as exc:
            raise StoreUnavailable(f"counter store {self.url} answered snapshot with {out!r}") from exc
        return [CounterState(counter=c, used=u, remaining=c.limit - u) for c, u in zip(counters, used, strict=True)]

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self._orphans:
            # Releases not yet due: each waits out its time (at most a read timeout), so that it
            # still runs after any late reservation it undoes; then none is left held.
            wait = max(handle.when() for handle in self._orphans) - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
        orphans, self._orphans = self._orphans, {}
        for handle, queue in orphans.items():
            handle.cancel()
            queue()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        await self._flush(final=True)  # nothing waiting is dropped
        await self._link.close()


class _SlotMigrating(StoreUnavailable):
    """The call was refused with TRYAGAIN before it ran (a cluster slot migration is under way)."""


@dataclasses.dataclass(frozen=True)
class _Script:
    source: str
    sha: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _consume(future: asyncio.Future[bool]) -> None:
    """Nobody waits for a release after a timeout: its failure is logged, not left unretrieved."""
    if not future.cancelled() and future.exception() is not None:
        logger.error("releasing a reservation whose caller gave up failed: %s", future.exception())


def _resolve(batch: list[_PendingFinish], outcome: list[bool] | BaseException) -> None:
    """Hands each waiting settlement its result (or the store's failure)."""
    for i, item in enumerate(batch):
        if item.done.done():  # its caller gave up (cancelled)
            continue
        if isinstance(outcome, BaseException):
            item.done.set_exception(outcome)
        else:
            item.done.set_result(outcome[i])
