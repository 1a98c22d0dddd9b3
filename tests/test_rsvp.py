"""RSVP: idempotent, within capacity under concurrency, refused once the event is over (the
waitlist of full events: tests/test_waitlist.py)."""
import asyncio

import pytest
import tornado.httpclient

from domain import repositories
from domain.activities import RSVP
from tests.conftest import Api
from tests.event_builders import PARIS, event_body, hours_from_now, publish

pytestmark = pytest.mark.gen_test

GOING_ALONE = {"rsvped": True, "rsvp_count": 1, "status": "going", "position": None, "waitlist_count": 0}


@pytest.fixture
def crowd(base_url, io_loop):
    """A client with a connection per request of the test: the default client keeps ten
    connections, which would let no more than ten requests race at once."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
    yield Api(client, base_url)
    client.close()


async def rsvp(api, event, token):
    return await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)


async def stored_as_seen_by(services, event, user):
    """The stored event as `user` sees it: rsvp_count, and is_rsvped for that user."""
    return await services.store.events.get(event["id"], user["id"])


async def test_an_rsvp_is_counted_and_shown_to_the_caller(api, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer)
    reply = await rsvp(api, event, token)
    assert reply.status == 200 and reply.data == GOING_ALONE
    shown = (await api.call("GET", f"/api/v1/events/{event['id']}", token=token)).data
    assert shown["is_rsvped"] is True and shown["rsvp_count"] == 1
    assert (await api.call("GET", f"/api/v1/events/{event['id']}", token=organizer)).data["is_rsvped"] is False
    stored = await stored_as_seen_by(services, event, attendee)
    assert stored["is_rsvped"] is True and stored["rsvp_count"] == 1


async def test_rsvping_twice_is_one_rsvp_and_one_activity(api, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer, title="Book club")
    watcher, _ = await api.register_follower([attendee])
    first, second = await rsvp(api, event, token), await rsvp(api, event, token)
    assert first.data == second.data == GOING_ALONE
    stored = await stored_as_seen_by(services, event, attendee)
    assert stored["is_rsvped"] is True and stored["rsvp_count"] == 1
    activities = await services.store.activities.feed(watcher["id"], [RSVP], None, 10)
    assert len(activities) == 1
    assert activities[0]["actor_id"] == attendee["id"]
    assert activities[0]["event_id"] == event["id"] and "Book club" in activities[0]["summary"]


async def test_cancelling_takes_the_rsvp_back_and_is_idempotent(api, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer)
    await rsvp(api, event, token)
    for _ in range(2):
        reply = await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=token)
        assert reply.status == 200 and reply.data == {
            "rsvped": False, "rsvp_count": 0, "status": "not_going", "position": None, "waitlist_count": 0}
    stored = await stored_as_seen_by(services, event, attendee)
    assert stored["is_rsvped"] is False and stored["rsvp_count"] == 0


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


async def test_an_event_without_a_capacity_is_full_at_the_largest_size_the_server_supports(api, monkeypatch):
    monkeypatch.setattr(repositories.Events, "MAX_RSVPS", 2)  # rather than 100,000 registrations
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)
    tokens = [(await api.register())[1] for _ in range(3)]

    replies = [await rsvp(api, event, token) for token in tokens]

    assert [reply.status for reply in replies] == [200, 200, 409]
    assert replies[2].json["code"] == "event_full"


async def test_a_capacity_above_the_largest_size_the_server_supports_is_refused(api):
    _, organizer = await api.register(role="organizer")
    reply = await api.call("POST", "/api/v1/events", event_body(capacity=repositories.Events.MAX_RSVPS + 1),
                           token=organizer)
    assert reply.status == 400 and [error["path"] for error in reply.json["errors"]] == ["/capacity"]
    assert (await api.call("POST", "/api/v1/events", event_body(capacity=repositories.Events.MAX_RSVPS),
                           token=organizer)).status == 201


async def test_a_full_event_without_a_waitlist_refuses_more_rsvps_with_409(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=2, waitlist=False)
    tokens = [(await api.register())[1] for _ in range(3)]
    assert [(await rsvp(api, event, token)).status for token in tokens] == [200, 200, 409]
    refused = await rsvp(api, event, tokens[2])
    assert refused.json["code"] == "event_full"
    # Someone already in is still answered as in.
    assert (await rsvp(api, event, tokens[0])).status == 200
    await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=tokens[0])
    assert (await rsvp(api, event, tokens[2])).status == 200


async def test_fifty_concurrent_rsvps_fill_a_capacity_of_ten_exactly_without_a_waitlist(api, crowd, services):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=10, waitlist=False)
    attendees = [await api.register() for _ in range(50)]
    watcher, _ = await api.register_follower([user for user, _ in attendees])

    replies = await asyncio.gather(*(rsvp(crowd, event, token) for _, token in attendees))

    statuses = [reply.status for reply in replies]
    assert statuses.count(200) == 10 and statuses.count(409) == 40
    assert {reply.json["code"] for reply in replies if reply.status == 409} == {"event_full"}
    winners = {user["id"] for (user, _), reply in zip(attendees, replies) if reply.status == 200}
    rsvped = {user["id"] for user, _ in attendees if (await stored_as_seen_by(services, event, user))["is_rsvped"]}
    assert rsvped == winners
    assert (await services.store.events.get(event["id"]))["rsvp_count"] == 10
    activities = await services.store.activities.feed(watcher["id"], [RSVP], None, 100)
    assert sorted(activity["actor_id"] for activity in activities) == sorted(winners)


async def test_concurrent_rsvps_by_one_user_count_once(api, crowd, services):
    _, organizer = await api.register(role="organizer")
    attendee, token = await api.register()
    event = await publish(api, organizer, capacity=5)
    replies = await asyncio.gather(*(rsvp(crowd, event, token) for _ in range(10)))
    assert {reply.status for reply in replies} == {200}
    stored = await stored_as_seen_by(services, event, attendee)
    assert stored["is_rsvped"] is True and stored["rsvp_count"] == 1


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


async def test_rsvp_needs_a_token(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)
    assert (await rsvp(api, event, None)).status == 401
