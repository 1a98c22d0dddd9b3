"""The gallery's hold on its storage: started once on first use, closed without breaking uploads."""
import asyncio
import datetime

import pytest

from domain.activities import SUMMARIES
from domain.errors import Forbidden, Unavailable
from domain.gallery import Gallery
from domain.photo_workers import PhotoWorkers
from domain.repositories import EventWindow
from domain.times import utcnow
from tests.photo_uploads import png
from tests.stores import DEFAULT_STORE, discard_store, new_store, open_store

pytestmark = pytest.mark.gen_test


class HeldStorage:
    """A storage whose puts wait until the test lets them finish."""

    def __init__(self):
        self.starts = 0
        self.closed = False
        self.release = asyncio.Event()
        self.puts_waiting = 0
        self.deleted = []

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

    async def delete(self, key):
        self.deleted.append(key)


@pytest.fixture
def store(io_loop):
    store = new_store(DEFAULT_STORE)
    io_loop.run_sync(lambda: open_store(store))
    yield store
    io_loop.run_sync(lambda: discard_store(store))


@pytest.fixture
def photo_workers(io_loop):
    workers = PhotoWorkers(cpu_seconds=10, max_workers=2)
    yield workers
    io_loop.run_sync(workers.close)


async def new_user(store, username, role="attendee"):
    return await store.users.add(username, f"{username}@example.com", role, "$2b$04$" + "x" * 53, utcnow())


def now_window():
    return EventWindow(now=utcnow(), default_duration=datetime.timedelta(hours=3))


async def organizer_and_event(store):
    organizer = await new_user(store, "ana", role="organizer")
    now = utcnow()
    event_id = await store.events.add({
        "title": "Jazz night", "description": "A trio.", "date": now + datetime.timedelta(days=1), "end_date": None,
        "category": "music", "location_address": "1 Quay", "location": {"type": "Point", "coordinates": [2.35, 48.85]},
        "geofence_radius": 100, "geofence": None, "capacity": None, "organizer_id": organizer["id"],
        "created_at": now, "updated_at": now})
    return organizer, event_id


async def until(condition):
    while not condition():
        await asyncio.sleep(0)


async def test_overlapping_first_uploads_start_the_storage_once(store, photo_workers):
    storage = HeldStorage()
    gallery = Gallery(store, storage, photo_workers)
    organizer, event_id = await organizer_and_event(store)

    uploads = [asyncio.ensure_future(gallery.upload(event_id, organizer, png())) for _ in range(3)]
    await until(lambda: storage.puts_waiting == 3)
    storage.release.set()
    await asyncio.gather(*uploads)

    assert storage.starts == 1


async def test_closing_waits_for_the_upload_in_flight_then_refuses_new_ones(store, photo_workers):
    storage = HeldStorage()
    gallery = Gallery(store, storage, photo_workers)
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


async def test_an_rsvp_cancelled_while_the_photo_is_stored_keeps_it_out_of_the_gallery_and_deletes_it(
        store, photo_workers):
    storage = HeldStorage()
    gallery = Gallery(store, storage, photo_workers)
    organizer, event_id = await organizer_and_event(store)
    attendee = await new_user(store, "bo")
    assert await store.follows.follow(organizer["id"], attendee["id"])  # so the feed would show bo's upload
    assert await store.events.take_seat(event_id, attendee["id"], now_window())
    in_flight = asyncio.ensure_future(gallery.upload(event_id, attendee, png()))
    await until(lambda: storage.puts_waiting == 1)

    assert await store.events.release_seat(event_id, attendee["id"], now_window())
    storage.release.set()

    with pytest.raises(Forbidden):
        await in_flight
    assert (await store.events.get(event_id))["photo_count"] == 0
    assert await store.events.photos(event_id, None, 10) == ([], 0)
    assert await store.activities.feed(organizer["id"], list(SUMMARIES), None, 10) == []
    [deleted] = storage.deleted
    assert deleted.startswith(f"events/{event_id}/")


async def test_closing_an_unused_gallery_closes_its_storage_at_once(store, photo_workers):
    storage = HeldStorage()

    await Gallery(store, storage, photo_workers).close()

    assert storage.closed
