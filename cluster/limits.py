"""The limits several processes hold together, in Redis (domain.ratelimit.SharedLimits): login
attempts, open connections per user, and the chat's frame buckets handed over between a user's
sockets.

Each check-and-take is one Lua script, which Redis runs atomically: two attempts on two processes
cannot both pass a check before either counts. Times are Redis's own clock (TIME), so processes on
hosts whose clocks differ count alike.

Open connections are counted per process: a hash `<prefix>connections:<kind>:<process>` (user ->
count) that expires HEARTBEAT_TTL seconds after this process last refreshed it, and a sorted set of
the processes by their last heartbeat. An admission sums the user's count over the processes heard
from within the TTL. A process killed with kill -9 stops refreshing: its connections stop counting
within HEARTBEAT_TTL seconds, and its hash expires. After Redis was unreachable or lost its data (a
restart without persistence), the next heartbeat writes this process's counts again from what it
holds (`_claimed`).

When Redis cannot be reached the callers fall back on their in-process limits (SharedLimitsDown):
each process then limits alone, which multiplies a limit by the number of processes for the outage
but never lifts it; logged once per outage and counted in cluster_redis_failures{part="limits"}.
"""
import asyncio
import logging
import uuid

import redis.exceptions

from domain.ratelimit import SharedLimits, SharedLimitsDown

log = logging.getLogger("cluster")

PREFIX = "event-server:"
HEARTBEAT_TTL = 15  # seconds: the bound on a killed process's connections still counting
HEARTBEAT_SECONDS = 5
MAX_SPENT_BUCKETS = 64  # per key: more than a user can have open at once
REDIS_DOWN = (redis.exceptions.RedisError, OSError)

_NOW = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
"""

# KEYS: token buckets, then backoffs. ARGV[1]: how many buckets; then capacity, rate per bucket;
# then free, leak, cap per backoff. Returns the wait as a string ("0": taken).
TAKE = _NOW + """
local buckets = tonumber(ARGV[1])
local wait = 0
local levels, counts = {}, {}
for i = 1, buckets do
  local capacity, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 't', 'u')
  local tokens = capacity
  if state[1] then tokens = math.min(capacity, tonumber(state[1]) + (now - tonumber(state[2])) * rate) end
  levels[i] = tokens
  if tokens < 1 then wait = math.max(wait, (1 - tokens) / rate) end
end
local first = 2 + 2 * buckets
for j = buckets + 1, #KEYS do
  local at = first + 3 * (j - buckets - 1)
  local free, leak, cap = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local state = redis.call('HMGET', KEYS[j], 'c', 'l')
  local count, last = 0, now
  if state[1] then
    last = tonumber(state[2])
    count = math.max(0, tonumber(state[1]) - (now - last) * leak)
  end
  counts[j] = count
  local over = count + 1 - free
  if over > 0 then
    local delay = math.min(cap, 2 ^ math.min(math.ceil(over) - 1, 64))
    wait = math.max(wait, last + delay - now)
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, buckets do
  local capacity, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 't', levels[i] - 1, 'u', now)
  redis.call('EXPIRE', KEYS[i], math.ceil(capacity / rate) + 1)
end
for j = buckets + 1, #KEYS do
  local at = first + 3 * (j - buckets - 1)
  local leak, cap = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  redis.call('HSET', KEYS[j], 'c', counts[j] + 1, 'l', now)
  redis.call('EXPIRE', KEYS[j], math.ceil((counts[j] + 1) / leak + cap) + 1)
end
return '0'
"""

# KEYS: keys to act on; ARGV: per key, an action: 'refund:<capacity>', 'reset', 'unhit'.
GIVE_BACK = """
for i, key in ipairs(KEYS) do
  local action = ARGV[i]
  if action == 'reset' then
    redis.call('DEL', key)
  elseif action == 'unhit' then
    local count = redis.call('HGET', key, 'c')
    if count then redis.call('HSET', key, 'c', math.max(0, tonumber(count) - 1)) end
  else
    local capacity = tonumber(string.sub(action, 8))
    local tokens = redis.call('HGET', key, 't')
    if tokens then redis.call('HSET', key, 't', math.min(capacity, tonumber(tokens) + 1)) end
  end
end
return 1
"""

# KEYS[1]: the processes (sorted set). ARGV: prefix of the hashes, this process, user, cap, ttl.
ACQUIRE = _NOW + """
local prefix, me, user, cap, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('ZADD', KEYS[1], now, me)
local open = 0
for _, process in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  open = open + (tonumber(redis.call('HGET', prefix .. process, user)) or 0)
end
if open >= cap then return 0 end
redis.call('HINCRBY', prefix .. me, user, 1)
redis.call('EXPIRE', prefix .. me, ttl)
return 1
"""

# KEYS[1]: this process's hash. ARGV[1]: user.
RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS[1]: the processes; ARGV: this process, ttl, then the hash keys of this process to keep.
# Returns 0 when Redis did not know this process (it lost its data, or we were away past the ttl).
HEARTBEAT = _NOW + """
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[1])
for i = 3, #ARGV do redis.call('EXPIRE', ARGV[i], ARGV[2]) end
if known and tonumber(known) >= now - tonumber(ARGV[2]) then return 1 end
return 0
"""

# KEYS[1]: the list of spent buckets. ARGV: capacity, rate. The newest one not yet full again,
# refilled since (as ChatService.frame_limiter takes one in a process alone).
TAKE_SPENT = _NOW + """
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
while true do
  local entry = redis.call('RPOP', KEYS[1])
  if not entry then return false end
  local comma = string.find(entry, ',')
  local tokens = tonumber(string.sub(entry, 1, comma - 1)) + (now - tonumber(string.sub(entry, comma + 1))) * rate
  if tokens < capacity then return tostring(tokens) end
end
"""

# KEYS[1]: the list. ARGV: tokens, capacity, rate, max entries.
KEEP_SPENT = _NOW + """
local tokens, capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('RPUSH', KEYS[1], tostring(tokens) .. ',' .. tostring(now))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
-- Kept until the emptiest of them is full again: never shortened by a fuller one.
local needed = math.ceil((capacity - tokens) / rate) + 1
if redis.call('TTL', KEYS[1]) < needed then redis.call('EXPIRE', KEYS[1], needed) end
return 1
"""


class RedisLimits(SharedLimits):
    def __init__(self, client, failures):
        self.client = client
        self.failures = failures  # a prometheus counter with a `part` label
        self.process = uuid.uuid4().hex
        self._processes = PREFIX + "processes"
        self._scripts = {name: client.register_script(source) for name, source in (
            ("take", TAKE), ("give_back", GIVE_BACK), ("acquire", ACQUIRE), ("release", RELEASE),
            ("heartbeat", HEARTBEAT), ("take_spent", TAKE_SPENT), ("keep_spent", KEEP_SPENT))}
        self._claimed = {}  # kind -> {user id: connections this process counts}
        self._stale = True  # Redis may not hold this process's counts: write them all at the next heartbeat
        self.reachable = True
        self._heartbeat = None
        self._pending = set()

    async def _run(self, name, keys, args):
        try:
            result = await self._scripts[name](keys=keys, args=args)
        except REDIS_DOWN as e:
            raise self._unreachable(e) from e
        if not self.reachable:
            self.reachable = True
            log.info("shared limits reachable again")
        return result

    def _unreachable(self, error):
        self.failures.labels("limits").inc()
        self._stale = True
        if self.reachable:
            self.reachable = False
            log.warning("shared limits unreachable (Redis: %s): each process applies its own until it is back", error)
        return SharedLimitsDown()

    def _in_background(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _quietly(self, name, keys, args):
        try:
            await self._run(name, keys, args)
        except SharedLimitsDown:
            pass  # _stale is set: the next heartbeat writes the counts again

    # --- rate limits -------------------------------------------------------------------------

    async def take(self, buckets, backoffs):
        keys = [PREFIX + "bucket:" + key for key, _, _ in buckets] + [PREFIX + "backoff:" + key for key, *_ in backoffs]
        args = [len(buckets)]
        for _, capacity, rate in buckets:
            args += [capacity, rate]
        for _, free, leak, cap in backoffs:
            args += [free, leak, cap]
        return float(await self._run("take", keys, args))

    async def give_back(self, refunds=(), resets=(), backoff_refunds=()):
        keys = ([PREFIX + "bucket:" + key for key, _, _ in refunds] + [PREFIX + "bucket:" + key for key in resets]
                + [PREFIX + "backoff:" + key for key, *_ in backoff_refunds])
        args = ([f"refund:{capacity}" for _, capacity, _ in refunds] + ["reset"] * len(resets)
                + ["unhit"] * len(backoff_refunds))
        if keys:
            await self._run("give_back", keys, args)

    # --- connections -------------------------------------------------------------------------

    def _hash(self, kind):
        return f"{PREFIX}connections:{kind}:{self.process}"

    async def acquire_connection(self, kind, user_id, cap):
        # Counted here before Redis answers: a rewrite of the counts meanwhile includes it. With
        # Redis away it stays counted, so the rewrite once Redis is back includes it too.
        claimed = self._claimed.setdefault(kind, {})
        claimed[user_id] = claimed.get(user_id, 0) + 1
        try:
            granted = await self._run("acquire", [self._processes], [
                f"{PREFIX}connections:{kind}:", self.process, user_id, cap, HEARTBEAT_TTL])
        except SharedLimitsDown:
            raise  # admitted by the in-process cap: the caller releases it when it closes
        except BaseException:
            self._uncount(kind, user_id)
            raise
        if not granted:
            self._uncount(kind, user_id)
        return bool(granted)

    def release_connection(self, kind, user_id):
        self._uncount(kind, user_id)
        self._in_background(self._quietly("release", [self._hash(kind)], [user_id]))

    def _uncount(self, kind, user_id):
        claimed = self._claimed.get(kind, {})
        if claimed.get(user_id, 0) <= 1:
            claimed.pop(user_id, None)
        else:
            claimed[user_id] -= 1

    async def start(self):
        self._heartbeat = asyncio.ensure_future(self._beat())

    async def stop(self):
        """At shutdown, once the sockets are closed: this process's connections stop counting now."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            await self.client.zrem(self._processes, self.process)
            for kind in self._claimed:
                await self.client.delete(self._hash(kind))
        except REDIS_DOWN:
            pass  # they expire within HEARTBEAT_TTL

    async def _beat(self):
        while True:
            try:
                await self.heartbeat()
            except SharedLimitsDown:
                pass
            except Exception:
                log.exception("shared limits heartbeat failed")  # the next one tries again
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def heartbeat(self):
        """Tells Redis this process lives (its counts keep counting), and writes its counts again
        when Redis may have missed some (it was away, or lost them)."""
        hashes = [self._hash(kind) for kind in self._claimed]
        if self._stale:
            await self._rewrite()
        if not await self._run("heartbeat", [self._processes], [self.process, HEARTBEAT_TTL, *hashes]):
            await self._rewrite()

    async def _rewrite(self):
        # A release still on its way when this runs takes one more off afterwards: that user counts
        # one fewer here until their sockets close (a count never goes below nothing).
        self._stale = False
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for kind, claimed in self._claimed.items():
                    pipe.delete(self._hash(kind))
                    if claimed:
                        pipe.hset(self._hash(kind), mapping=claimed)
                        pipe.expire(self._hash(kind), HEARTBEAT_TTL)
                await pipe.execute()
        except REDIS_DOWN as e:
            raise self._unreachable(e) from e

    # --- frame buckets handed over between sockets --------------------------------------------

    async def take_spent_bucket(self, key, capacity, rate):
        level = await self._run("take_spent", [PREFIX + "spent:" + key], [capacity, rate])
        return None if level is None else float(level)

    def keep_spent_bucket(self, key, tokens, capacity, rate):
        self._in_background(self._quietly("keep_spent", [PREFIX + "spent:" + key],
                                          [tokens, capacity, rate, MAX_SPENT_BUCKETS]))
