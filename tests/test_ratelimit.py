"""The in-process limiters: the token bucket, the bounded backoff, the concurrency gate; their
rules, and memory that stays bounded under a key spray."""
import asyncio

import pytest

from domain.ratelimit import Backoff, ConcurrencyGate, RecentKeys, TokenBucketLimiter


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


def test_a_backoff_lets_the_free_attempts_pass_then_doubles_the_wait_up_to_its_cap():
    clock = Clock()
    backoff = Backoff(3, 0.0, cap=5, clock=clock)
    for _ in range(3):
        assert backoff.retry_after("k") == 0
        backoff.hit("k")
    waits = []
    for _ in range(5):
        waits.append(backoff.retry_after("k"))
        clock.now += waits[-1]
        backoff.hit("k")
    assert waits == [1, 2, 4, 5, 5]  # bounded: whoever keeps trying gets a turn within the cap


def test_a_backoff_drains_once_attempts_stop():
    clock = Clock()
    backoff = Backoff(2, 1.0, cap=60, clock=clock)
    for _ in range(4):
        backoff.hit("k")
    assert backoff.retry_after("k") > 0
    clock.now = 3.0
    assert backoff.retry_after("k") == 0


def test_a_backoff_keeps_memory_bounded_under_a_key_spray():
    backoff = Backoff(5, 0.001, cap=60, clock=Clock(), max_keys=1000)
    for n in range(20_000):
        backoff.hit(f"attacker-{n}")
        assert len(backoff) <= 1000


def test_recent_keys_forget_the_oldest_beyond_their_size():
    recent = RecentKeys(max_keys=2)
    for key in ("a", "b", "a", "c"):
        recent.add(key)
    assert "a" in recent and "c" in recent and "b" not in recent


@pytest.mark.gen_test
async def test_a_gate_admits_its_limit_queues_the_next_and_refuses_beyond():
    gate = ConcurrencyGate(1, max_waiting=1)
    release, order = asyncio.Event(), []

    async def holder(name):
        async with gate.enter():
            order.append(name)
            await release.wait()

    first = asyncio.ensure_future(holder("first"))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(holder("queued"))
    await asyncio.sleep(0)
    with pytest.raises(ConcurrencyGate.Busy):
        async with gate.enter():
            pass
    release.set()
    await asyncio.gather(first, queued)
    assert order == ["first", "queued"]
    async with gate.enter():  # free again
        pass
