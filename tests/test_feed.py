"""The activity feed through HTTP: whose activities, in which order, and stable pages."""
import asyncio
import datetime
import urllib.parse

import pytest

from domain.activities import RSVP, record_activity
from domain.social import FEED_CURSOR_PATTERN
from domain.times import utcnow
from domain.validation import load_schemas
from tests.event_builders import publish, unknown_id

pytestmark = pytest.mark.gen_test

START = utcnow() - datetime.timedelta(days=1)


async def follow(api, token, user):
    reply = await api.call("POST", f"/api/v1/users/{user['id']}/follow", token=token)
    assert reply.status == 200, reply


async def insert_activity(services, actor, timestamp, kind="RSVP", **fields):
    """Stores an activity of `actor` at `timestamp` through the store (the API makes them only
    at the time of the request); returns its id."""
    return await services.store.activities.add({
        "type": kind, "actor_id": actor["id"], "actor_name": actor["username"], "event_id": unknown_id(),
        "target_user_id": None, "summary": f"{actor['username']} is going to Jazz Night", "timestamp": timestamp,
        **fields})


async def feed(api, token, query=""):
    reply = await api.call("GET", "/api/v1/feed" + query, token=token)
    assert reply.status == 200, reply
    return reply


async def test_the_feed_shows_only_followed_users_activities_newest_first(api, services):
    reader, token = await api.register()
    ana, _ = await api.register()
    bo, _ = await api.register()
    stranger, _ = await api.register()
    await follow(api, token, ana)
    await follow(api, token, bo)
    older = await insert_activity(services, ana, START)
    newer = await insert_activity(services, bo, START + datetime.timedelta(minutes=1))
    await insert_activity(services, stranger, START + datetime.timedelta(minutes=2))
    reply = await feed(api, token)
    services.validator.validate("ActivityPage", reply.data)
    assert [a["id"] for a in reply.data["items"]] == [newer, older]
    assert reply.data["next_cursor"] is None
    # The reader's own follows are activities too, but not in their own feed.
    assert all(a["actor"]["id"] != reader["id"] for a in reply.data["items"])


async def test_an_activity_carries_the_contract_fields(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    event_id = unknown_id()
    await record_activity(services.store, RSVP, {"id": ana["id"], "username": ana["username"]},
                          event={"id": event_id, "title": "Jazz Night"})
    item = (await feed(api, token)).data["items"][0]
    assert item["type"] == "RSVP" and item["actor"] == {"id": ana["id"], "username": ana["username"]}
    assert item["event_id"] == event_id and item["target_user_id"] is None
    assert item["summary"] == f"{ana['username']} is going to Jazz Night"
    assert item["timestamp"].endswith("Z")


async def test_follows_by_followed_users_appear_in_the_feed(api, services):
    _, token = await api.register()
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    await follow(api, token, ana)
    await follow(api, ana_token, bo)
    [item] = (await feed(api, token)).data["items"]
    assert item["type"] == "FOLLOW" and item["target_user_id"] == bo["id"] and item["event_id"] is None
    assert item["summary"] == f"{ana['username']} started following {bo['username']}"


async def test_unfollowing_removes_that_users_activities_from_the_feed(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    await insert_activity(services, ana, START)
    await api.call("POST", f"/api/v1/users/{ana['id']}/unfollow", token=token)
    assert (await feed(api, token)).data == {"items": [], "next_cursor": None}


async def test_an_activity_whose_event_was_deleted_still_shows_its_summary(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    gone = unknown_id()  # no such event exists any more
    await insert_activity(services, ana, START, event_id=gone, summary=f"{ana['username']} created Gone Gig",
                          type="EVENT_CREATED")
    [item] = (await feed(api, token)).data["items"]
    assert item["event_id"] == gone and item["summary"].endswith("created Gone Gig")


async def test_an_activity_without_actor_name_or_summary_is_shown_with_what_is_known(api, services):
    # As the old backend's activity documents come back from the MongoDB store.
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    await insert_activity(services, ana, START, kind="PHOTO_UPLOADED", actor_name=None, event_id=None, summary=None)
    reply = await feed(api, token)
    services.validator.validate("ActivityPage", reply.data)
    [item] = reply.data["items"]
    assert item["actor"] == {"id": ana["id"], "username": ana["username"]}
    assert item["summary"] == f"{ana['username']} shared a photo from an event"
    assert item["event_id"] is None and item["target_user_id"] is None


async def test_activities_of_unknown_type_are_left_out(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    shown = await insert_activity(services, ana, START)
    await insert_activity(services, ana, START, kind="LIKED")
    assert [a["id"] for a in (await feed(api, token)).data["items"]] == [shown]


async def test_a_reader_who_follows_nobody_gets_an_empty_feed(api):
    _, token = await api.register()
    assert (await feed(api, token)).data == {"items": [], "next_cursor": None}


async def test_feed_pages_have_no_gaps_or_repeats_while_new_activities_arrive(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    bo, _ = await api.register()
    stranger, _ = await api.register()
    await follow(api, token, ana)
    await follow(api, token, bo)
    expected = []
    for second in range(15):  # groups of three sharing a timestamp, so page edges cut through ties
        moment = START + datetime.timedelta(seconds=second)
        for actor in (ana, bo, ana):
            expected.append((moment, await insert_activity(services, actor, moment)))
        await insert_activity(services, stranger, moment)
    expected_ids = [activity_id for _, activity_id in sorted(expected, reverse=True)]

    seen, cursor, pages = [], None, 0
    while True:
        reply = await feed(api, token, "?limit=10" + (f"&cursor={cursor}" if cursor else ""))
        seen += [a["id"] for a in reply.data["items"]]
        pages += 1
        cursor = reply.data["next_cursor"]
        if cursor is None:
            break
        # New activities land between page fetches, some sharing the time of the page's last item.
        last_time = datetime.datetime.fromisoformat(reply.data["items"][-1]["timestamp"].replace("Z", "+00:00"))
        await insert_activity(services, ana, utcnow())
        await insert_activity(services, bo, last_time)
        await follow(api, (await api.register())[1], ana)  # a FOLLOW by someone the reader does not follow
    assert pages == 5
    assert seen == expected_ids


async def test_a_new_first_page_shows_new_activities_on_top(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    old = await insert_activity(services, ana, START)
    first = await feed(api, token)
    new = await insert_activity(services, ana, utcnow())
    again = await feed(api, token)
    assert [a["id"] for a in first.data["items"]] == [old]
    assert [a["id"] for a in again.data["items"]] == [new, old]


async def test_feed_needs_authentication(api):
    reply = await api.call("GET", "/api/v1/feed")
    assert reply.status == 401


@pytest.mark.parametrize("limit", ["0", "101", "ten", ""])
async def test_a_bad_feed_limit_is_a_400(api, limit):
    _, token = await api.register()
    reply = await api.call("GET", f"/api/v1/feed?limit={limit}", token=token)
    assert reply.status == 400 and reply.json["code"] == "invalid_limit"


@pytest.mark.parametrize("cursor", [
    "", "%%%", "e30", unknown_id(), f"1700000000000_{unknown_id()}", f"-1-{unknown_id()}",
    f"{'9' * 15}-{unknown_id()}", f"1700000000000-{'x' * 24}", f"1700000000000-{unknown_id()}-1"])
@pytest.mark.parametrize("follows_someone", [True, False])
async def test_a_malformed_feed_cursor_is_a_400(api, cursor, follows_someone):
    _, token = await api.register()
    if follows_someone:
        await follow(api, token, (await api.register())[0])
    reply = await api.call("GET", f"/api/v1/feed?cursor={urllib.parse.quote(cursor, safe='%')}", token=token)
    assert reply.status == 400 and reply.json["code"] == "invalid_cursor"


async def test_any_feed_cursor_of_the_documented_shape_gets_a_page(api, services):
    _, token = await api.register()
    ana, _ = await api.register()
    await follow(api, token, ana)
    shown = await insert_activity(services, ana, START)
    latest = await feed(api, token, f"?cursor={'9' * 14}-{'f' * 24}")
    assert [a["id"] for a in latest.data["items"]] == [shown]
    earliest = await feed(api, token, f"?cursor=0-{'0' * 24}")
    assert earliest.data == {"items": [], "next_cursor": None}


def test_the_documented_next_cursor_has_the_shape_the_server_accepts():
    schema = load_schemas()["ActivityPage"]
    assert schema["properties"]["next_cursor"]["pattern"] == FEED_CURSOR_PATTERN


class RecordPause:
    """The activities repository with the next `add_once` (a follow's or an RSVP's activity)
    held before it writes until `release()`: so an undo lands between the fact and its activity
    every time, not by luck."""

    def __init__(self, activities):
        self.activities = activities
        self.reached, self._released = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.activities, name)

    async def add_once(self, activity):
        if not self.reached.is_set():
            self.reached.set()
            await self._released.wait()
        return await self.activities.add_once(activity)

    def release(self):
        self._released.set()


async def undone_while_recorded(api, services, do, undo):
    """Sends `do`, and `undo` (each (method, path, token)) while `do` waits to record its activity."""
    pause = services.store.activities = RecordPause(services.store.activities)
    try:
        doing = asyncio.ensure_future(api.call(*do[:2], token=do[2]))
        await asyncio.wait_for(pause.reached.wait(), 10)
        assert (await api.call(*undo[:2], token=undo[2])).status == 200
    finally:
        pause.release()
        services.store.activities = pause.activities
    assert (await doing).status == 200


async def test_an_unfollow_landing_before_the_follows_activity_is_stored_leaves_none(api, services):
    _, token = await api.register()
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    await follow(api, token, ana)
    path = f"/api/v1/users/{bo['id']}"
    await undone_while_recorded(api, services, ("POST", path + "/follow", ana_token),
                                ("POST", path + "/unfollow", ana_token))
    assert (await feed(api, token)).data["items"] == []


async def test_a_cancel_landing_before_the_rsvps_activity_is_stored_leaves_none(api, services):
    _, token = await api.register()
    organizer, organizer_token = await api.register(role="organizer")
    ana, ana_token = await api.register()
    await follow(api, token, ana)
    event = await publish(api, organizer_token)
    path = f"/api/v1/events/{event['id']}/rsvp"
    await undone_while_recorded(api, services, ("POST", path, ana_token), ("DELETE", path, ana_token))
    assert (await feed(api, token)).data["items"] == []
