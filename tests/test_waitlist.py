"""The waitlist of full events, through the API, on every store: joining it, leaving it, promotion
when a seat frees (a cancellation, a raised capacity), the refusals, and 50 concurrent joins and
cancels whose counts always add up."""
import asyncio

import pytest
import tornado.httpclient

from domain import repositories
from domain.activities import RSVP, RSVP_PROMOTED
from tests.chat_client import eventually
from tests.conftest import Api
from tests.event_builders import event_body, publish
from tests.stores import STORE_NAMES

pytestmark = pytest.mark.gen_test(timeout=60)


@pytest.fixture(params=STORE_NAMES)
def store_name(request):
    return request.param


@pytest.fixture
def crowd(base_url, io_loop):
    """A client with a connection per request, so that 50 requests race at once."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
    yield Api(client, base_url)
    client.close()


def path(event, suffix=""):
    return f"/api/v1/events/{event['id']}{suffix}"


async def join(api, event, token):
    return await api.call("POST", path(event, "/rsvp"), token=token)


async def leave(api, event, token):
    return await api.call("DELETE", path(event, "/rsvp"), token=token)


async def seen_by(api, event, token):
    reply = await api.call("GET", path(event), token=token)
    assert reply.status == 200, reply
    return reply.data


async def people(api, n):
    return [await api.register() for _ in range(n)]


async def full_event(api, capacity=1, **fields):
    """A published event whose `capacity` seats are taken; (event, organizer token)."""
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=capacity, **fields)
    for _, token in await people(api, capacity):
        assert (await join(api, event, token)).data["status"] == "going"
    return event, organizer


async def going_activities(api, token):
    reply = await api.call("GET", "/api/v1/feed?limit=100", token=token)
    return [item for item in reply.data["items"] if item["type"] in (RSVP, RSVP_PROMOTED)]


async def test_an_rsvp_to_a_full_event_joins_its_waitlist_with_a_place_in_line(api):
    event, organizer = await full_event(api)
    (_, first), (_, second) = await people(api, 2)

    replies = [await join(api, event, first), await join(api, event, second)]

    assert [reply.status for reply in replies] == [200, 200]
    assert replies[0].json["message"] == "You are on the waitlist."
    assert replies[1].data == {"rsvped": False, "rsvp_count": 1, "status": "waitlisted", "position": 2,
                               "waitlist_count": 2}
    shown = await seen_by(api, event, first)
    assert (shown["waitlist"], shown["waitlist_position"], shown["waitlist_count"]) == (True, 1, 2)
    assert (shown["is_rsvped"], shown["rsvp_count"]) == (False, 1)
    assert (await seen_by(api, event, organizer))["waitlist_position"] is None
    stats = (await api.call("GET", path(event, "/stats"), token=organizer)).data
    assert (stats["rsvp_count"], stats["waitlist_count"]) == (1, 2)
    listed = (await api.call("GET", "/api/v1/organizer/events", token=organizer)).data["items"]
    assert listed[0]["stats"]["waitlist_count"] == 2 and listed[0]["waitlist_count"] == 2


async def test_joining_again_answers_the_same_standing_and_changes_nothing(api):
    """A client retrying over a slow network gets its standing, never a second place or an error."""
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=1)
    (_, seated), (_, waiting) = await people(api, 2)
    first_seat, first_place = await join(api, event, seated), await join(api, event, waiting)

    again = await asyncio.gather(join(api, event, seated), join(api, event, waiting), join(api, event, waiting))

    assert {reply.status for reply in again} == {200}
    assert [reply.data for reply in again] == [{**first_seat.data, "waitlist_count": 1}, first_place.data,
                                               first_place.data]
    assert first_place.data["position"] == 1 and first_seat.data["status"] == "going"
    shown = await seen_by(api, event, waiting)
    assert (shown["rsvp_count"], shown["waitlist_count"]) == (1, 1)


async def test_a_cancellation_gives_the_seat_to_the_first_in_line(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=1, title="Book club")
    (seated_user, seated), (first_user, first), (_, second) = await people(api, 3)
    await join(api, event, seated)
    await join(api, event, first)
    await join(api, event, second)
    _, watcher = await api.register_follower([first_user, seated_user])

    cancelled = await leave(api, event, seated)

    assert cancelled.status == 200 and cancelled.json["message"] == "You are not going."
    assert cancelled.data == {"rsvped": False, "rsvp_count": 1, "status": "not_going", "position": None,
                              "waitlist_count": 1}
    promoted = await seen_by(api, event, first)
    assert (promoted["is_rsvped"], promoted["waitlist_position"]) == (True, None)
    assert (await seen_by(api, event, second))["waitlist_position"] == 1
    assert (await join(api, event, first)).data["status"] == "going"
    # What an RSVP gets: the promoted user's "going" activity, and the one who left has none.
    activities = await going_activities(api, watcher)
    assert [(item["type"], item["actor"]["id"]) for item in activities] == [(RSVP_PROMOTED, first_user["id"])]
    assert "Book club" in activities[0]["summary"] and "waitlist" in activities[0]["summary"]
    # Promoted and then gone: the activity goes with the seat, and the next in line moves up.
    await leave(api, event, first)
    assert await going_activities(api, watcher) == []
    assert (await seen_by(api, event, second))["is_rsvped"] is True


async def test_a_raised_capacity_promotes_as_many_as_it_adds_seats(api):
    event, organizer = await full_event(api)
    line = await people(api, 3)
    for _, token in line:
        await join(api, event, token)
    _, watcher = await api.register_follower([user for user, _ in line])

    reply = await api.call("PATCH", path(event), {"capacity": 3}, token=organizer)

    assert reply.status == 200 and (reply.data["rsvp_count"], reply.data["waitlist_count"]) == (3, 1)
    standings = [await seen_by(api, event, token) for _, token in line]
    assert [(shown["is_rsvped"], shown["waitlist_position"]) for shown in standings] == \
        [(True, None), (True, None), (False, 1)]
    # What an RSVP gets, after the answer (a raise may promote thousands): an activity each.
    promoted = sorted((RSVP_PROMOTED, user["id"]) for user, _ in line[:2])
    assert await eventually(lambda: _promotions_shown(api, watcher, promoted)) == promoted
    # A capacity of null is the most the server takes: everyone waiting gets a seat.
    reply = await api.call("PUT", path(event), {"capacity": None}, token=organizer)
    assert (reply.data["rsvp_count"], reply.data["waitlist_count"], reply.data["waitlist"]) == (4, 0, False)


async def _promotions_shown(api, watcher, expected):
    shown = sorted((item["type"], item["actor"]["id"]) for item in await going_activities(api, watcher))
    return shown if shown == expected else None


async def test_a_promoted_user_who_cancels_while_announced_keeps_no_going_activity(api, services):
    """A raise's promotions are recorded after the answer; a promoted user who cancels meanwhile
    is shown as not going, in the feed too: the record re-checks the seat."""
    event, organizer = await full_event(api)
    line = await people(api, 2)
    for _, token in line:
        await join(api, event, token)
    _, watcher = await api.register_follower([user for user, _ in line])

    raised, left = await asyncio.gather(api.call("PATCH", path(event), {"capacity": 3}, token=organizer),
                                        leave(api, event, line[0][1]))

    assert (raised.status, left.status, left.data["status"]) == (200, 200, "not_going")
    await services.events.background.drain()
    # Either way the second in line got a seat; the first has none, and no "going" activity.
    assert [(item["type"], item["actor"]["id"]) for item in await going_activities(api, watcher)] == \
        [(RSVP_PROMOTED, line[1][0]["id"])]
    assert (await seen_by(api, event, line[0][1]))["is_rsvped"] is False
    assert (await seen_by(api, event, line[1][1]))["is_rsvped"] is True


async def test_leaving_the_waitlist_moves_those_behind_up_and_is_idempotent(api):
    event, _ = await full_event(api)
    line = await people(api, 3)
    for _, token in line:
        await join(api, event, token)

    left = await leave(api, event, line[1][1])

    assert left.status == 200 and left.data["status"] == "not_going" and left.data["waitlist_count"] == 2
    assert [(await seen_by(api, event, token))["waitlist_position"] for _, token in line] == [1, None, 2]
    again = await leave(api, event, line[1][1])
    assert again.status == 200 and again.data["status"] == "not_going"
    # Joining again is joining at the end.
    assert (await join(api, event, line[1][1])).data["position"] == 3


async def test_an_event_with_its_waitlist_off_refuses_with_409_and_keeps_those_waiting(api):
    event, organizer = await full_event(api)
    (_, waiting), (_, latecomer) = await people(api, 2)
    await join(api, event, waiting)

    reply = await api.call("PATCH", path(event), {"waitlist": False}, token=organizer)

    assert reply.status == 200 and reply.data["waitlist"] is False
    refused = await join(api, event, latecomer)
    assert refused.status == 409 and refused.json["code"] == "event_full"
    assert (await seen_by(api, event, waiting))["waitlist_position"] == 1
    assert (await api.call("PATCH", path(event), {"waitlist": True}, token=organizer)).data["waitlist"] is True
    assert (await join(api, event, latecomer)).data["position"] == 2


async def test_a_waitlist_on_an_event_without_a_capacity_is_a_400(api):
    _, organizer = await api.register(role="organizer")

    created = await api.call("POST", "/api/v1/events", event_body(waitlist=True), token=organizer)

    assert created.status == 400 and created.json["code"] == "waitlist_needs_capacity"
    assert created.json["errors"] == [{"path": "/waitlist", "message": "needs a capacity"}]
    event = await publish(api, organizer)
    assert event["waitlist"] is False
    for body in ({"waitlist": True}, {"capacity": None, "waitlist": True}):
        reply = await api.call("PATCH", path(event), body, token=organizer)
        assert reply.status == 400 and reply.json["code"] == "waitlist_needs_capacity", body
    with_capacity = await api.call("PATCH", path(event), {"capacity": 5, "waitlist": True}, token=organizer)
    assert with_capacity.status == 200 and with_capacity.data["waitlist"] is True
    # Clearing the capacity of an event with a waitlist is fine: it then has none.
    cleared = await api.call("PATCH", path(event), {"capacity": None}, token=organizer)
    assert cleared.status == 200 and cleared.data["waitlist"] is False
    off = await api.call("POST", "/api/v1/events", event_body(waitlist=False), token=organizer)
    assert off.status == 201 and off.data["waitlist"] is False


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_a_waitlist_that_is_not_a_boolean_is_a_400(api, value):
    _, organizer = await api.register(role="organizer")
    reply = await api.call("POST", "/api/v1/events", event_body(capacity=5, waitlist=value), token=organizer)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/waitlist"


async def test_a_full_waitlist_is_a_409(api, monkeypatch):
    monkeypatch.setattr(repositories.Events, "MAX_WAITLIST", 1)  # rather than 10,000 registrations
    event, _ = await full_event(api)
    (_, waiting), (_, latecomer) = await people(api, 2)
    assert (await join(api, event, waiting)).data["position"] == 1

    refused = await join(api, event, latecomer)

    assert refused.status == 409 and refused.json["code"] == "waitlist_full"


async def test_a_waiting_user_cannot_check_in(api):
    event, _ = await full_event(api)
    _, waiting = (await people(api, 1))[0]
    await join(api, event, waiting)

    arrival = await api.call("POST", path(event, "/arrival"), {"location": event["location"]}, token=waiting)

    assert arrival.status == 409 and arrival.json["code"] == "rsvp_required"


async def test_fifty_concurrent_joins_and_cancels_always_add_up(api, crowd):
    """50 users join a 10-seat event at once while a third of them cancel as soon as they are
    in: never more going than seats, nobody both going and waiting, the line numbered 1..n with
    nobody waiting while a seat is free, going + waiting = joined - left, and exactly one
    "going" activity for each user going (none promoted twice, none lost)."""
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=10)
    crowd_users = await people(api, 50)
    _, watcher = await api.register_follower([user for user, _ in crowd_users])

    async def join_then_maybe_leave(n, token):
        joined = await join(crowd, event, token)
        left = await leave(crowd, event, token) if n % 3 == 0 else None
        return joined, left

    results = await asyncio.gather(*(join_then_maybe_leave(n, token) for n, (_, token) in enumerate(crowd_users)))

    assert {reply.status for reply, _ in results} == {200}
    assert {left.status for _, left in results if left is not None} == {200}
    standings = {user["id"]: await seen_by(api, event, token) for user, token in crowd_users}
    going = {user_id for user_id, shown in standings.items() if shown["is_rsvped"]}
    places = sorted(shown["waitlist_position"] for shown in standings.values() if shown["waitlist_position"])
    stats = (await api.call("GET", path(event, "/stats"), token=organizer)).data
    left_count = sum(left is not None for _, left in results)
    assert len(going) == stats["rsvp_count"] <= 10
    assert places == list(range(1, stats["waitlist_count"] + 1))
    assert not any(shown["is_rsvped"] and shown["waitlist_position"] for shown in standings.values())
    assert len(going) + len(places) == 50 - left_count
    assert not places or len(going) == 10
    activities = await going_activities(api, watcher)
    assert sorted(item["actor"]["id"] for item in activities) == sorted(going)


async def test_a_fetched_event_sent_back_keeps_its_waitlist_as_shown(api):
    _, organizer = await api.register(role="organizer")
    open_event = await publish(api, organizer)
    assert open_event["waitlist"] is False  # no capacity: no line, its flag on all the same

    with_seats = await api.call("PUT", path(open_event), {**open_event, "capacity": 2}, token=organizer)
    assert with_seats.status == 200 and with_seats.data["waitlist"] is True, with_seats

    cleared = await api.call("PUT", path(open_event), {**with_seats.data, "capacity": None}, token=organizer)
    assert cleared.status == 200 and cleared.data["waitlist"] is False, cleared
