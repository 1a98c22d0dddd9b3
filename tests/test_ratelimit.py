"""The in-process token bucket: its rule, and memory that stays bounded under a key spray."""
from domain.ratelimit import TokenBucketLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_bucket_refuses_past_its_capacity_and_refills_with_time():
    clock = Clock()
    limiter = TokenBucketLimiter(2, 1.0, clock=clock)
    assert limiter.hit("k") == 0 and limiter.hit("k") == 0
    assert limiter.hit("k") == 1.0
    clock.now = 1.0
    assert limiter.hit("k") == 0


def test_a_refund_gives_one_token_back():
    limiter = TokenBucketLimiter(1, 0.001, clock=Clock())
    limiter.hit("k")
    limiter.refund("k")
    assert limiter.retry_after("k") == 0


def test_a_spray_of_distinct_keys_keeps_memory_bounded():
    limiter = TokenBucketLimiter(5, 0.001, clock=Clock(), max_keys=1000)
    for n in range(20_000):
        limiter.hit(f"attacker-{n}")
        assert len(limiter) <= 1000
