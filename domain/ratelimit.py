"""In-process rate limiting: a token bucket per key.

Kept in memory on purpose: a limit that lags by one process behind a load balancer is still a
limit, and a database round trip per login attempt would be an amplifier for the attack it
stops. Buckets are evicted once full again, so memory stays bounded by the active keys.
"""
import time


class TokenBucketLimiter:
    def __init__(self, capacity, refill_per_second, clock=time.monotonic):
        self.capacity = float(capacity)
        self.rate = float(refill_per_second)
        self.clock = clock
        self._buckets = {}  # key -> (tokens, updated_at)

    def _level(self, key, now):
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - updated) * self.rate)

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
        if len(self._buckets) > 10_000:
            self._evict_full(now)
        return 0.0

    def refund(self, key):
        """Gives back one token taken by `hit` (e.g. for an attempt that turned out fine)."""
        if key in self._buckets:
            tokens, updated = self._buckets[key]
            self._buckets[key] = (min(self.capacity, tokens + 1), updated)

    def reset(self, key):
        self._buckets.pop(key, None)

    def _evict_full(self, now):
        for key in [k for k in self._buckets if self._level(k, now) >= self.capacity]:
            del self._buckets[key]
