"""RSVP: idempotent, within capacity under concurrency, refused once the event is over."""
import asyncio
import inspect

import pytest
import tornado.httpclient

from domain.store import ObjectId
from tests.conftest import Api
from tests.event_builders import PARIS, hours_from_now, publish

pytestmark = pytest.mark.gen_test

ROUND_TRIP_SECONDS = 0.001


class InterleavingCollection:
    """A collection whose calls take about a millisecond each way, as a round trip to a
    database does. The in-memory driver otherwise answers without ever giving up the event
    loop, so concurrent requests would run one after another and a read-then-write race
    could never show."""

    def __init__(self, collection):
        self._collection = collection

    def __getattr__(self, name):
        attribute = getattr(self._collection, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def interleaved(*args, **kwargs):
            await asyncio.sleep(ROUND_TRIP_SECONDS)
            result = await attribute(*args, **kwargs)
            await asyncio.sleep(ROUND_TRIP_SECONDS)
            return result
        return interleaved


@pytest.fixture
def interleaving(services):
    store = services.store
    if store.in_memory:
        for name in store.COLLECTIONS:
            setattr(store, name, InterleavingCollection(getattr(store, name)))
    return store


@pytest.fixture
def crowd(base_url, io_loop):
    """A client with a connection per request of the test: the default client keeps ten
    connections, which would let no more than ten requests race at once."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
    yield Api(client, base_url)
    client.close()


async def rsvp(api, event, token):
    return await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)


async def test_an_rsvp_is_counted_and_shown_to_the_caller(api, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer)
    reply = await rsvp(api, event, token)
    assert reply.status == 200 and reply.data == {"rsvped": True, "rsvp_count": 1}
    shown = (await api.call("GET", f"/api/v1/events/{event['id']}", token=token)).data
    assert shown["is_rsvped"] is True and shown["rsvp_count"] == 1
    assert (await api.call("GET", f"/api/v1/events/{event['id']}", token=organizer)).data["is_rsvped"] is False
    user = await services.store.users.find_one({"_id": ObjectId(attendee["id"])})
    assert user["rsvped_events"] == [ObjectId(event["id"])]


async def test_rsvping_twice_is_one_rsvp_and_one_activity(api, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer, title="Book club")
    first, second = await rsvp(api, event, token), await rsvp(api, event, token)
    assert first.data == second.data == {"rsvped": True, "rsvp_count": 1}
    stored = await services.store.events.find_one({"_id": ObjectId(event["id"])})
    assert stored["rsvps"] == [ObjectId(attendee["id"])] and stored["rsvp_count"] == 1
    activities = await services.store.activities.find({"type": "RSVP"}).to_list(None)
    assert len(activities) == 1
    assert activities[0]["actor_id"] == ObjectId(attendee["id"])
    assert activities[0]["event_id"] == ObjectId(event["id"]) and "Book club" in activities[0]["summary"]


async def test_cancelling_takes_the_rsvp_back_and_is_idempotent(api, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer)
    await rsvp(api, event, token)
    for _ in range(2):
        reply = await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=token)
        assert reply.status == 200 and reply.data == {"rsvped": False, "rsvp_count": 0}
    stored = await services.store.events.find_one({"_id": ObjectId(event["id"])})
    assert stored["rsvps"] == [] and stored["rsvp_count"] == 0
    user = await services.store.users.find_one({"_id": ObjectId(attendee["id"])})
    assert user["rsvped_events"] == []


async def test_cancelling_also_takes_back_the_arrival(api, services):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    event = await publish(api, organizer, date=hours_from_now(0))
    await rsvp(api, event, token)
    arrival = await api.call("POST", f"/api/v1/events/{event['id']}/arrival",
                             {"location": {"type": "Point", "coordinates": PARIS}}, token=token)
    assert arrival.status == 200
    await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=token)
    stats = (await api.call("GET", f"/api/v1/events/{event['id']}/stats", token=token)).data
    assert (stats["rsvp_count"], stats["arrival_count"]) == (0, 0)


async def test_a_full_event_refuses_more_rsvps_with_409(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=2)
    tokens = [(await api.register())[1] for _ in range(3)]
    assert [(await rsvp(api, event, token)).status for token in tokens] == [200, 200, 409]
    refused = await rsvp(api, event, tokens[2])
    assert refused.json["code"] == "event_full"
    # Someone already in is still answered as in.
    assert (await rsvp(api, event, tokens[0])).status == 200
    await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=tokens[0])
    assert (await rsvp(api, event, tokens[2])).status == 200


async def test_fifty_concurrent_rsvps_fill_a_capacity_of_ten_exactly(api, crowd, services, interleaving):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=10)
    attendees = [await api.register() for _ in range(50)]

    replies = await asyncio.gather(*(rsvp(crowd, event, token) for _, token in attendees))

    statuses = [reply.status for reply in replies]
    assert statuses.count(200) == 10 and statuses.count(409) == 40
    assert {reply.json["code"] for reply in replies if reply.status == 409} == {"event_full"}
    winners = {ObjectId(user["id"]) for (user, _), reply in zip(attendees, replies) if reply.status == 200}
    stored = await services.store.events.find_one({"_id": ObjectId(event["id"])})
    assert set(stored["rsvps"]) == winners and len(stored["rsvps"]) == 10 and stored["rsvp_count"] == 10
    rsvped = await services.store.users.find({"rsvped_events": ObjectId(event["id"])}, {"_id": 1}).to_list(None)
    assert {user["_id"] for user in rsvped} == winners
    assert await services.store.activities.count_documents({"type": "RSVP"}) == 10


async def test_concurrent_rsvps_by_one_user_count_once(api, crowd, services, interleaving):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    event = await publish(api, organizer, capacity=5)
    replies = await asyncio.gather(*(rsvp(crowd, event, token) for _ in range(10)))
    assert {reply.status for reply in replies} == {200}
    stored = await services.store.events.find_one({"_id": ObjectId(event["id"])})
    assert len(stored["rsvps"]) == 1 and stored["rsvp_count"] == 1


async def test_an_event_that_is_over_refuses_rsvps_and_cancellations(api):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    event = await publish(api, organizer, date=hours_from_now(-3), end_date=hours_from_now(1))
    assert (await rsvp(api, event, token)).status == 200
    await api.call("PATCH", f"/api/v1/events/{event['id']}", {"end_date": hours_from_now(-1)}, token=organizer)
    _, latecomer = await api.register()
    refused = await rsvp(api, event, latecomer)
    assert refused.status == 409 and refused.json["code"] == "event_ended"
    cancel = await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=token)
    assert cancel.status == 409 and cancel.json["code"] == "event_ended"


@pytest.mark.settings(default_event_hours=2)
async def test_an_event_without_an_end_is_over_default_event_hours_after_its_start(api):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    running = await publish(api, organizer, date=hours_from_now(-1.5))
    over = await publish(api, organizer, date=hours_from_now(-2.5))
    assert (await rsvp(api, running, token)).status == 200
    assert (await rsvp(api, over, token)).status == 409


async def test_an_old_backend_event_without_rsvp_count_keeps_its_capacity(api, services):
    organizer, organizer_token = await api.register(role="organizer")
    earlier = [ObjectId(), ObjectId()]
    legacy = await services.store.events.insert_one({
        "title": "Old one", "description": "", "date": services.events.clock(), "category": "talk",
        "location_address": "Somewhere", "location": {"type": "Point", "coordinates": PARIS},
        "organizer_id": ObjectId(organizer["id"]), "rsvps": earlier, "arrivals": [], "photo_gallery": [],
        "geofence_radius": 100, "created_at": services.events.clock()})
    event = {"id": str(legacy.inserted_id)}
    # Capacity 3 with two RSVPs already in the array: one more fits.
    reply = await api.call("PATCH", f"/api/v1/events/{event['id']}", {"capacity": 3}, token=organizer_token)
    assert reply.status == 200 and reply.data["rsvp_count"] == 2
    _, first = await api.register()
    _, second = await api.register()
    assert (await rsvp(api, event, first)).data == {"rsvped": True, "rsvp_count": 3}
    assert (await rsvp(api, event, second)).status == 409
    stored = await services.store.events.find_one({"_id": legacy.inserted_id})
    assert stored["rsvp_count"] == 3 == len(stored["rsvps"])


async def test_rsvp_needs_a_token(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)
    assert (await rsvp(api, event, None)).status == 401
