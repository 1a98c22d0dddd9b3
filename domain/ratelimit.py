"""In-process rate limiting: a token bucket per key.

Kept in memory on purpose: a limit that lags by one process behind a load balancer is still a
limit, and a database round trip per login attempt would be an amplifier for the attack it
stops. Buckets are evicted once full again, and the oldest beyond `max_keys`, so memory stays
bounded.
"""
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
