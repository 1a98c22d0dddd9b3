"""The room feed when the store fails in the middle of a replay: every replay it had taken
fails (its client gets an `error` frame and may join again), none waits for ever.

The store here stands in for a database that answers the first reads and then fails or hangs;
the feed itself is the product's own."""
import asyncio
import datetime

import pytest

from domain.chat_feed import RoomFeed
from domain.errors import NotFound, StoreUnavailable

pytestmark = pytest.mark.gen_test(timeout=30)

EVENT = "e1"
MESSAGE = {"id": "0000000000000001", "event_id": EVENT, "user_id": "u1", "username": "ann", "text": "hi",
           "timestamp": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc), "client_msg_id": None,
           "kind": "message"}


class _Messages:
    """The room looks empty when the feed first reads it, then holds one message: the replay
    reaches past what the room delivered, and the catch-up read that follows (after nothing)
    fails or never answers."""

    def __init__(self, catch_up):
        self.latest_reads = 0
        self.catch_up = catch_up

    async def latest(self, event_id, count):
        self.latest_reads += 1
        return [] if self.latest_reads == 1 else [MESSAGE]

    async def after(self, event_id, after_id, count):
        if after_id is None:
            return await self.catch_up()
        return []

    async def exists(self, event_id, entry_id):
        return True


class _Store:
    def __init__(self, catch_up):
        self.messages = _Messages(catch_up)


async def _fails():
    raise StoreUnavailable()


async def test_a_replay_whose_catch_up_read_fails_fails_instead_of_waiting():
    feed = RoomFeed(_Store(_fails), deliver=lambda *args: None, following=lambda event_id: False)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(feed.replay(EVENT, None, lambda history: None), 5)


async def test_a_replay_cut_short_by_the_events_deletion_fails_with_event_not_found():
    reading, hanging = asyncio.Event(), asyncio.Event()

    async def hangs():
        reading.set()
        await hanging.wait()

    feed = RoomFeed(_Store(hangs), deliver=lambda *args: None, following=lambda event_id: False)
    replay = asyncio.ensure_future(feed.replay(EVENT, None, lambda history: None))
    await asyncio.wait_for(reading.wait(), 5)
    feed.discard(EVENT)
    with pytest.raises(NotFound):
        await asyncio.wait_for(replay, 5)
