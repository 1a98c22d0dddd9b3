"""The gallery's hold on its storage: started once on first use, closed without breaking uploads."""
import asyncio

import pytest

from domain.errors import Forbidden, Unavailable
from domain.gallery import Gallery
from domain.store import ObjectId
from tests.conftest import make_store
from tests.photo_uploads import png

pytestmark = pytest.mark.gen_test


class HeldStorage:
    """A storage whose puts wait until the test lets them finish."""

    def __init__(self):
        self.starts = 0
        self.closed = False
        self.release = asyncio.Event()
        self.puts_waiting = 0

    async def start(self):
        self.starts += 1
        await asyncio.sleep(0)  # a real client takes a moment; overlapping first uploads must not start two

    async def close(self):
        self.closed = True

    async def put(self, key, data, content_type):
        self.puts_waiting += 1
        await self.release.wait()
        if self.closed:
            raise AssertionError("put on a closed storage")
        return f"https://photos.example.com/{key}"


@pytest.fixture
def store():
    store = make_store()
    yield store
    store.close()


async def organizer_and_event(store):
    organizer = {"_id": ObjectId(), "username": "ana"}
    event_id = (await store.events.insert_one({"title": "Jazz night", "organizer_id": organizer["_id"],
                                               "rsvps": [], "photo_gallery": []})).inserted_id
    return organizer, str(event_id)


async def until(condition):
    while not condition():
        await asyncio.sleep(0)


async def test_overlapping_first_uploads_start_the_storage_once(store):
    storage = HeldStorage()
    gallery = Gallery(store, storage)
    organizer, event_id = await organizer_and_event(store)

    uploads = [asyncio.ensure_future(gallery.upload(event_id, organizer, png())) for _ in range(3)]
    await until(lambda: storage.puts_waiting == 3)
    storage.release.set()
    await asyncio.gather(*uploads)

    assert storage.starts == 1


async def test_closing_waits_for_the_upload_in_flight_then_refuses_new_ones(store):
    storage = HeldStorage()
    gallery = Gallery(store, storage)
    organizer, event_id = await organizer_and_event(store)
    in_flight = asyncio.ensure_future(gallery.upload(event_id, organizer, png()))
    await until(lambda: storage.puts_waiting == 1)

    await gallery.close()
    assert not storage.closed
    storage.release.set()
    result = await in_flight

    assert result["url"].startswith("https://photos.example.com/events/")
    assert storage.closed
    with pytest.raises(Unavailable):
        await gallery.upload(event_id, organizer, png())


async def test_an_rsvp_cancelled_while_the_photo_is_stored_keeps_it_out_of_the_gallery(store):
    storage = HeldStorage()
    gallery = Gallery(store, storage)
    organizer, event_id = await organizer_and_event(store)
    attendee = {"_id": ObjectId(), "username": "bo"}
    await store.events.update_one({"_id": ObjectId(event_id)}, {"$push": {"rsvps": attendee["_id"]}})
    in_flight = asyncio.ensure_future(gallery.upload(event_id, attendee, png()))
    await until(lambda: storage.puts_waiting == 1)

    await store.events.update_one({"_id": ObjectId(event_id)}, {"$pull": {"rsvps": attendee["_id"]}})
    storage.release.set()

    with pytest.raises(Forbidden):
        await in_flight
    event = await store.events.find_one({"_id": ObjectId(event_id)})
    assert event["photo_gallery"] == [] and not event.get("photos")
    assert await store.activities.count_documents({}) == 0


async def test_closing_an_unused_gallery_closes_its_storage_at_once(store):
    storage = HeldStorage()

    await Gallery(store, storage).close()

    assert storage.closed
