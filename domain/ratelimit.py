"""In-process rate limiting: a token bucket per key, a bounded backoff per key, and a gate that
bounds how much of one kind of work runs at once; and the interface of the limits several
processes share (SharedLimits, implemented with Redis in cluster/limits.py).

Kept in memory on purpose: a database round trip per login attempt would be an amplifier for the
attack it stops. Buckets are evicted once full again, and the oldest beyond `max_keys`, so memory
stays bounded. With several processes the same limits are held in Redis, which answers from memory
and applies each check-and-take atomically; when it cannot be reached the in-process limits apply
again (each process then limits on its own: a limit, not an open door).
"""
import asyncio
import contextlib
import math
import time


class TokenBucketLimiter:
    def __init__(self, capacity, refill_per_second, clock=time.monotonic, max_keys=10_000):
        self.capacity = float(capacity)
        self.rate = float(refill_per_second)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets = {}  # key -> (tokens, updated_at)

    def _level(self, key, now):
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - updated) * self.rate)

    def __len__(self):
        """How many keys are being tracked."""
        return len(self._buckets)

    def retry_after(self, key):
        """Seconds until `key` may act again; 0 when it may act now."""
        tokens = self._level(key, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def hit(self, key):
        """Takes one token; returns 0 when granted, else the seconds to wait."""
        now = self.clock()
        tokens = self._level(key, now)
        if tokens < 1:
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self.max_keys:
            self._evict(now)
        return 0.0

    def level(self, key):
        """The tokens `key` has now."""
        return self._level(key, self.clock())

    def set_level(self, key, tokens):
        """Starts `key` at `tokens` (a bucket handed over from another process)."""
        self._buckets[key] = (min(self.capacity, tokens), self.clock())

    def refund(self, key):
        """Gives back one token taken by `hit` (e.g. for an attempt that turned out fine)."""
        if key in self._buckets:
            tokens, updated = self._buckets[key]
            self._buckets[key] = (min(self.capacity, tokens + 1), updated)

    def reset(self, key):
        self._buckets.pop(key, None)

    def _evict(self, now):
        for key in [k for k in self._buckets if self._level(k, now) >= self.capacity]:
            del self._buckets[key]
        # Under a spray of distinct keys few buckets are full: drop the least recently created
        # down to 90%, so memory stays bounded and this scan runs once per 10% of growth.
        excess = len(self._buckets) - self.max_keys * 9 // 10
        for key in list(self._buckets)[:max(0, excess)]:
            del self._buckets[key]


class Backoff:
    """Per key, a count of attempts that leaks away at `leak_per_second`: while it is below `free`
    attempts pass; at or above, each attempt must wait a delay since the previous one that doubles
    with every attempt over, up to `cap` seconds. The wait is bounded: whoever keeps trying gets a
    turn within `cap` seconds of the last attempt, and once attempts stop the count drains away."""

    def __init__(self, free, leak_per_second, cap, base=1.0, clock=time.monotonic, max_keys=10_000):
        self.free = free
        self.leak = float(leak_per_second)
        self.cap = float(cap)
        self.base = float(base)
        self.clock = clock
        self.max_keys = max_keys
        self._state = {}  # key -> (count, last attempt)

    def __len__(self):
        return len(self._state)

    def _count(self, key, now):
        count, last = self._state.get(key, (0.0, now))
        return max(0.0, count - (now - last) * self.leak), last

    def retry_after(self, key):
        """Seconds until `key` may try again; 0 when it may try now."""
        now = self.clock()
        count, last = self._count(key, now)
        over = count + 1 - self.free  # what this attempt would make it, beyond the free ones
        if over <= 0:
            return 0.0
        delay = min(self.cap, self.base * 2 ** min(math.ceil(over) - 1, 64))
        return max(0.0, last + delay - now)

    def hit(self, key):
        now = self.clock()
        count, _ = self._count(key, now)
        self._state[key] = (count + 1, now)
        if len(self._state) > self.max_keys:
            self._evict(now)

    def refund(self, key):
        """Takes back one attempt counted by `hit` (one that turned out to be the owner's)."""
        if key in self._state:
            count, last = self._state[key]
            self._state[key] = (max(0.0, count - 1), last)

    def _evict(self, now):
        for key in [k for k in self._state if self._count(k, now)[0] == 0]:
            del self._state[key]
        excess = len(self._state) - self.max_keys * 9 // 10
        for key in list(self._state)[:max(0, excess)]:
            del self._state[key]


class RecentKeys:
    """A bounded set that forgets its least recently added keys first."""

    def __init__(self, max_keys=100_000):
        self.max_keys = max_keys
        self._keys = {}

    def __contains__(self, key):
        return key in self._keys

    def __len__(self):
        return len(self._keys)

    def add(self, key):
        self._keys.pop(key, None)
        self._keys[key] = None
        if len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]


class ConcurrencyGate:
    """At most `limit` holders at a time and at most `max_waiting` queued behind them: beyond that
    `enter()` raises Busy, so a flood costs refusals instead of an ever longer queue."""

    class Busy(Exception):
        pass

    def __init__(self, limit, max_waiting):
        self.max_waiting = max_waiting
        self._semaphore = asyncio.Semaphore(limit)
        self._queued = 0

    @contextlib.asynccontextmanager
    async def enter(self):
        if self._semaphore.locked() and self._queued >= self.max_waiting:
            raise self.Busy()
        self._queued += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._queued -= 1
        try:
            yield
        finally:
            self._semaphore.release()


class SharedLimitsDown(Exception):
    """The shared limits cannot be reached now: the caller applies its in-process limits."""


class SharedLimits:
    """Limits held together by several processes. Every method is atomic where it is kept (no
    read-modify-write across processes) and raises SharedLimitsDown when it cannot be reached.

    Token buckets are (key, capacity, refill_per_second), backoffs (key, free, leak_per_second,
    cap), with the meaning of TokenBucketLimiter and Backoff above."""

    reachable = True  # False since a call raised SharedLimitsDown, until one succeeds

    async def take(self, buckets, backoffs):
        """0 after taking one token from every bucket and counting one attempt in every backoff;
        else the seconds to wait, and nothing is taken."""
        raise NotImplementedError

    async def give_back(self, refunds=(), resets=(), backoff_refunds=()):
        """Gives one token back to each bucket in `refunds`, empties the buckets `resets` (keys),
        takes one attempt back from each backoff in `backoff_refunds`."""
        raise NotImplementedError

    async def acquire_connection(self, kind, user_id, cap):
        """True after counting one more `kind` connection of the user, when fewer than `cap` are
        open across the processes; False (nothing counted) otherwise."""
        raise NotImplementedError

    def release_connection(self, kind, user_id):
        """Counts the connection out (without waiting for it to be done)."""
        raise NotImplementedError

    async def take_spent_bucket(self, key, capacity, rate):
        """The level of a bucket handed over by `keep_spent_bucket` (the newest not yet full), refilled
        since, or None when there is none."""
        raise NotImplementedError

    def keep_spent_bucket(self, key, tokens, capacity, rate):
        """Hands a bucket not yet full over to a later `take_spent_bucket`, on any process, until
        it would be full again."""
        raise NotImplementedError
