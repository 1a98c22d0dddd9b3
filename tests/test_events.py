"""Publishing, reading, changing and deleting events through the API."""
import pytest

from domain.activities import EVENT_CREATED
from domain.gallery import MAX_PHOTOS_PER_EVENT
from domain.times import utcnow
from tests.chat_client import write_history
from tests.event_builders import PARIS, event_body, hours_from_now, publish

pytestmark = pytest.mark.gen_test

SQUARE = {"type": "Polygon", "coordinates": [[
    [2.3512, 48.8560], [2.3532, 48.8560], [2.3532, 48.8572], [2.3512, 48.8572], [2.3512, 48.8560]]]}


async def test_an_organizer_publishes_an_event_and_reads_it_back(api):
    organizer, token = await api.register(role="organizer")
    created = await publish(api, token, capacity=50, geofence_radius=250)
    assert created["organizer"] == {"id": organizer["id"], "username": organizer["username"]}
    assert created["location"] == {"type": "Point", "coordinates": PARIS}
    assert (created["capacity"], created["geofence_radius"]) == (50, 250)
    assert created["geofence"] is None and created["end_date"] is None
    assert (created["rsvp_count"], created["arrival_count"], created["photo_count"]) == (0, 0, 0)
    assert created["is_rsvped"] is False and created["has_arrived"] is False
    assert created["date"].endswith("Z") and created["created_at"] == created["updated_at"]

    reply = await api.call("GET", f"/api/v1/events/{created['id']}", token=token)
    assert reply.status == 200 and reply.data == created


async def test_the_event_is_stored_with_its_organizer_and_place_and_nothing_yet_attached(api, services):
    organizer, token = await api.register(role="organizer")
    created = await publish(api, token)
    stored = await services.store.events.get(created["id"])
    assert stored["organizer_id"] == organizer["id"]
    assert stored["location"] == {"type": "Point", "coordinates": PARIS}
    assert (stored["rsvp_count"], stored["arrival_count"], stored["photo_count"]) == (0, 0, 0)
    assert stored["geofence_radius"] == 100
    assert stored["date"].year >= 2026 and stored["created_at"]


async def test_event_objects_never_show_the_rsvp_and_arrival_arrays(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token)
    await api.call("POST", f"/api/v1/events/{created['id']}/rsvp", token=token)
    for reply in (await api.call("GET", f"/api/v1/events/{created['id']}", token=token),
                  await api.call("GET", "/api/v1/events", token=token)):
        assert "rsvps" not in reply.text and "arrivals" not in reply.text


async def test_publishing_writes_an_event_created_activity(api, services):
    organizer, token = await api.register(role="organizer")
    reader, reader_token = await api.register()
    assert (await api.call("POST", f"/api/v1/users/{organizer['id']}/follow", token=reader_token)).status == 200
    created = await publish(api, token, title="Night market")
    [activity] = await services.store.activities.feed(reader["id"], [EVENT_CREATED], None, 10)
    assert activity["actor_id"] == organizer["id"]
    assert activity["event_id"] == created["id"]
    assert "Night market" in activity["summary"]


async def test_an_attendee_cannot_publish(api):
    _, token = await api.register(role="attendee")
    reply = await api.call("POST", "/api/v1/events", event_body(), token=token)
    assert reply.status == 403 and reply.json["code"] == "role_required"


async def test_publishing_needs_a_token(api):
    reply = await api.call("POST", "/api/v1/events", event_body())
    assert reply.status == 401


# The stored record's names (organizer_id, rsvps, ...) are no field of the API: a 400 anywhere. The
# ones an event is shown with (rsvp_count, created_at) are a 400 on create, and ignored on PUT and
# PATCH: test_an_event_sent_back_as_fetched_changes_nothing_read_only.
@pytest.mark.parametrize("field, value", [
    ("organizer_id", "5f0c2d1e9b1e8a3d4c5b6a79"),
    ("rsvps", ["5f0c2d1e9b1e8a3d4c5b6a79"]),
    ("arrivals", []),
    ("photo_gallery", ["https://evil.example.com/x.jpg"]),
    ("_id", "5f0c2d1e9b1e8a3d4c5b6a79"),
])
async def test_server_owned_fields_in_a_body_are_refused(api, field, value):
    _, token = await api.register(role="organizer")
    reply = await api.call("POST", "/api/v1/events", event_body(**{field: value}), token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == f"/{field}"
    created = await publish(api, token)
    reply = await api.call("PATCH", f"/api/v1/events/{created['id']}", {field: value}, token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == f"/{field}"


@pytest.mark.parametrize("fields, path", [
    ({"date": "2026-12-01T18:30:00"}, "/date"),                     # no offset
    ({"date": "next friday"}, "/date"),
    ({"end_date": "2020-01-01T00:00:00Z"}, "/end_date"),            # before the start
    ({"location": {"type": "Point", "coordinates": [181, 10]}}, "/location/coordinates/0"),
    ({"location": {"type": "Point", "coordinates": [10, -90.5]}}, "/location/coordinates/1"),
    ({"location": {"type": "Point", "coordinates": [10]}}, "/location/coordinates"),
    ({"geofence_radius": 5}, "/geofence_radius"),
    ({"geofence_radius": 5001}, "/geofence_radius"),
    ({"capacity": 0}, "/capacity"),
    ({"title": "   "}, "/title"),
    ({"title": ...}, "/title"),                                     # missing
])
async def test_invalid_event_fields_are_a_400_naming_the_field(api, fields, path):
    _, token = await api.register(role="organizer")
    reply = await api.call("POST", "/api/v1/events", event_body(**fields), token=token)
    assert reply.status == 400, reply
    assert reply.json["errors"][0]["path"] == path


async def test_a_not_a_number_coordinate_is_refused(api):
    _, token = await api.register(role="organizer")
    raw = ('{"title": "x", "date": "2030-01-01T00:00:00Z", "category": "c", "location_address": "a",'
           ' "location": {"type": "Point", "coordinates": [NaN, 1]}}')
    reply = await api.call("POST", "/api/v1/events", raw=raw, token=token,
                           headers={"Content-Type": "application/json"})
    assert reply.status == 400


async def test_a_venue_polygon_is_kept_when_it_contains_the_location(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token, geofence=SQUARE)
    assert created["geofence"] == SQUARE


async def test_a_venue_polygon_that_does_not_contain_the_location_is_refused(api):
    _, token = await api.register(role="organizer")
    elsewhere = {"type": "Polygon", "coordinates": [[[3, 48], [3.1, 48], [3.1, 48.1], [3, 48], ]]}
    reply = await api.call("POST", "/api/v1/events", event_body(geofence=elsewhere), token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/geofence"


async def test_a_self_intersecting_venue_polygon_is_refused(api):
    _, token = await api.register(role="organizer")
    bowtie = {"type": "Polygon", "coordinates": [[
        [2.3512, 48.8560], [2.3532, 48.8572], [2.3532, 48.8560], [2.3512, 48.8572], [2.3512, 48.8560]]]}
    reply = await api.call("POST", "/api/v1/events", event_body(geofence=bowtie), token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"].startswith("/geofence")


async def test_the_organizer_changes_any_subset_of_fields_with_put_or_patch(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token)
    end = hours_from_now(50)
    patched = await api.call("PATCH", f"/api/v1/events/{created['id']}",
                             {"title": "Rooftop jazz, extended", "end_date": end, "capacity": 80}, token=token)
    assert patched.status == 200
    assert (patched.data["title"], patched.data["capacity"]) == ("Rooftop jazz, extended", 80)
    assert patched.data["description"] == created["description"]
    assert patched.data["updated_at"] >= created["updated_at"]
    put = await api.call("PUT", f"/api/v1/events/{created['id']}", {"capacity": None, "end_date": None}, token=token)
    assert put.status == 200 and put.data["capacity"] is None and put.data["end_date"] is None


async def test_an_event_sent_back_as_fetched_changes_nothing_read_only(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token, capacity=10, geofence=SQUARE)
    _, attendee = await api.register()
    assert (await api.call("POST", f"/api/v1/events/{created['id']}/rsvp", token=attendee)).status == 200
    path = f"/api/v1/events/{created['id']}"
    fetched = (await api.call("GET", path, token=token)).data
    put = await api.call("PUT", path, {**fetched, "title": "Rooftop jazz, moved"}, token=token)
    assert put.status == 200, put
    assert put.data == {**fetched, "title": "Rooftop jazz, moved", "updated_at": put.data["updated_at"],
                        "sequence": fetched["sequence"] + 1}
    # As the other lists show it too: nearest first with distance_m, the organizer's own with stats.
    nearby = (await api.call("GET", f"/api/v1/events?lat={PARIS[1]}&lng={PARIS[0]}", token=token)).data["items"][0]
    own = (await api.call("GET", "/api/v1/organizer/events", token=token)).data["items"][0]
    for sent in (nearby, own):
        reply = await api.call("PATCH", path, sent, token=token)
        assert reply.status == 200 and reply.data["rsvp_count"] == 1, reply


async def test_read_only_fields_are_ignored_whatever_their_values(api):
    organizer, token = await api.register(role="organizer")
    created = await publish(api, token, capacity=10)
    path = f"/api/v1/events/{created['id']}"
    other, _ = await api.register(role="organizer")
    forged = {"id": "0" * 24, "organizer": {"id": other["id"], "username": other["username"]}, "rsvp_count": 10,
              "arrival_count": "many", "photo_count": -1, "is_rsvped": True, "has_arrived": None,
              "created_at": "1999-01-01T00:00:00Z", "updated_at": [], "distance_m": {"$gt": 0}, "stats": 7,
              "cancelled_at": "1999-01-01T00:00:00Z", "sequence": -5}
    reply = await api.call("PUT", path, {**forged, "capacity": 5}, token=token)
    assert reply.status == 200, reply
    shown = (await api.call("GET", path, token=token)).data
    assert shown == {**created, "capacity": 5, "updated_at": shown["updated_at"], "sequence": 1}
    assert shown["organizer"]["id"] == organizer["id"]
    # Read-only fields alone change nothing, and are told so.
    reply = await api.call("PATCH", path, forged, token=token)
    assert reply.status == 400 and reply.json["errors"] == [
        {"path": "/", "message": "must have at least 1 field besides the read-only ones"}]


async def test_a_field_the_api_does_not_know_is_still_a_400_next_to_read_only_ones(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token)
    path = f"/api/v1/events/{created['id']}"
    for method in ("PUT", "PATCH"):
        reply = await api.call(method, path, {**created, "organizer_id": "0" * 24}, token=token)
        assert reply.status == 400 and reply.json["errors"] == [{"path": "/organizer_id", "message": "unknown field"}]
    assert (await api.call("GET", path, token=token)).data == created


async def test_a_change_is_checked_against_the_stored_fields(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token, geofence=SQUARE, end_date=hours_from_now(50))
    moved = await api.call("PATCH", f"/api/v1/events/{created['id']}",
                           {"location": {"type": "Point", "coordinates": [2.40, 48.86]}}, token=token)
    assert moved.status == 400 and moved.json["errors"][0]["path"] == "/geofence"
    late = await api.call("PATCH", f"/api/v1/events/{created['id']}", {"date": hours_from_now(60)}, token=token)
    assert late.status == 400 and late.json["errors"][0]["path"] == "/end_date"


async def test_capacity_cannot_go_below_the_rsvps_taken(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token)
    for _ in range(3):
        _, attendee = await api.register()
        await api.call("POST", f"/api/v1/events/{created['id']}/rsvp", token=attendee)
    reply = await api.call("PATCH", f"/api/v1/events/{created['id']}", {"capacity": 2}, token=token)
    assert reply.status == 409 and reply.json["code"] == "capacity_below_rsvps"
    reply = await api.call("PATCH", f"/api/v1/events/{created['id']}", {"capacity": 3}, token=token)
    assert reply.status == 200 and reply.data["capacity"] == 3


async def test_another_organizer_cannot_change_or_delete_the_event(api):
    _, owner = await api.register(role="organizer")
    _, other = await api.register(role="organizer")
    created = await publish(api, owner)
    for method, body in (("PUT", {"title": "Mine now"}), ("PATCH", {"title": "Mine now"}), ("DELETE", None)):
        reply = await api.call(method, f"/api/v1/events/{created['id']}", body, token=other)
        assert reply.status == 403 and reply.json["code"] == "not_event_organizer", (method, reply)
    assert (await api.call("GET", f"/api/v1/events/{created['id']}", token=owner)).data["title"] == created["title"]


async def test_an_attendee_cannot_change_or_delete_an_event(api):
    _, owner = await api.register(role="organizer")
    _, attendee = await api.register(role="attendee")
    created = await publish(api, owner)
    for method, body in (("PUT", {"title": "x"}), ("PATCH", {"title": "x"}), ("DELETE", None)):
        reply = await api.call(method, f"/api/v1/events/{created['id']}", body, token=attendee)
        assert reply.status == 403, (method, reply)


@pytest.mark.parametrize("event_id", ["not-an-id", "123", "5f0c2d1e9b1e8a3d4c5b6a7", "zzzzzzzzzzzzzzzzzzzzzzzz",
                                      "5f0c2d1e9b1e8a3d4c5b6a79"])
async def test_malformed_and_unknown_event_ids_are_a_404(api, event_id):
    _, token = await api.register(role="organizer")
    for method, suffix, body in (("GET", "", None), ("PATCH", "", {"title": "x"}), ("DELETE", "", None),
                                 ("POST", "/rsvp", None), ("DELETE", "/rsvp", None), ("GET", "/stats", None),
                                 ("POST", "/arrival", {"location": {"type": "Point", "coordinates": PARIS}})):
        reply = await api.call(method, f"/api/v1/events/{event_id}{suffix}", body, token=token)
        assert reply.status == 404 and reply.json["code"] in ("event_not_found", "not_found"), (method, suffix, reply)


async def test_deleting_an_event_removes_it_with_its_messages_and_rsvps(api, services):
    _, token = await api.register(role="organizer")
    attendee, attendee_token = await api.register()
    doomed, kept = await publish(api, token), await publish(api, token)
    for event in (doomed, kept):
        await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=attendee_token)
    await write_history(services.store, doomed["id"], attendee, ["hi"])
    await write_history(services.store, kept["id"], attendee, ["hello"])
    closed = []
    services.events.deleted_listeners.append(closed.append)

    reply = await api.call("DELETE", f"/api/v1/events/{doomed['id']}", token=token)
    assert reply.status == 200
    assert (await api.call("GET", f"/api/v1/events/{doomed['id']}", token=token)).status == 404
    assert closed == [doomed["id"]]
    assert await services.store.messages.latest(doomed["id"], 10) == []
    assert [m["text"] for m in await services.store.messages.latest(kept["id"], 10)] == ["hello"]
    assert await services.store.events.is_member(doomed["id"], attendee["id"]) is None
    assert await services.store.events.is_member(kept["id"], attendee["id"]) is True
    mine = await api.call("GET", "/api/v1/organizer/events", token=token)
    assert [item["id"] for item in mine.data["items"]] == [kept["id"]]
    assert (await api.call("DELETE", f"/api/v1/events/{doomed['id']}", token=token)).status == 404


async def test_a_failing_deletion_listener_does_not_stop_the_deletion(api, services):
    _, token = await api.register(role="organizer")
    created = await publish(api, token)

    def broken(event_id):
        raise RuntimeError("chat is down")

    heard = []
    services.events.deleted_listeners[:] = [broken, heard.append]
    assert (await api.call("DELETE", f"/api/v1/events/{created['id']}", token=token)).status == 200
    assert heard == [created["id"]]


async def test_an_event_stored_without_an_update_time_shows_its_creation_time(api, services):
    # As the old backend's events come back from the MongoDB store: it never wrote updated_at.
    organizer, token = await api.register(role="organizer")
    created_at = services.events.clock()
    event_id = await services.store.events.add({
        "title": "Old one", "description": "", "date": created_at, "end_date": None, "category": "talk",
        "location_address": "Somewhere", "location": {"type": "Point", "coordinates": PARIS},
        "geofence_radius": 100, "geofence": None, "capacity": None, "organizer_id": organizer["id"],
        "created_at": created_at, "updated_at": None})
    reply = await api.call("GET", f"/api/v1/events/{event_id}", token=token)
    assert reply.status == 200
    shown = reply.data
    assert shown["updated_at"] == shown["created_at"]
    assert shown["end_date"] is None and shown["capacity"] is None and shown["geofence"] is None


async def test_stats_count_rsvps_arrivals_photos_and_messages(api, services):
    organizer, token = await api.register(role="organizer")
    created = await publish(api, token, date=hours_from_now(0.5))
    arriving = []
    for n in range(4):
        _, attendee = await api.register()
        await api.call("POST", f"/api/v1/events/{created['id']}/rsvp", token=attendee)
        if n == 0:
            arriving.append(attendee)
    reply = await api.call("POST", f"/api/v1/events/{created['id']}/arrival",
                           {"location": {"type": "Point", "coordinates": PARIS}}, token=arriving[0])
    assert reply.status == 200, reply
    await write_history(services.store, created["id"], organizer, [str(n) for n in range(5)])
    assert await services.store.events.add_photo(created["id"], "https://x/1.jpg", organizer["id"], utcnow(),
                                                 MAX_PHOTOS_PER_EVENT)
    async def online(event_ids):
        return {event: 2 if event == created["id"] else 0 for event in event_ids}
    services.events.online_counter = online

    reply = await api.call("GET", f"/api/v1/events/{created['id']}/stats", token=token)
    assert reply.status == 200
    assert reply.data == {"rsvp_count": 4, "arrival_count": 1, "arrival_rate": 0.25, "photo_count": 1,
                          "waitlist_count": 0, "message_count": 5, "online_count": 2}


async def test_stats_of_an_event_without_rsvps_have_a_zero_rate(api):
    _, token = await api.register(role="organizer")
    created = await publish(api, token)
    reply = await api.call("GET", f"/api/v1/events/{created['id']}/stats", token=token)
    assert reply.data["arrival_rate"] == 0 and reply.data["online_count"] == 0


async def test_the_organizer_view_lists_only_the_callers_events_with_stats(api, services):
    organizer, token = await api.register(role="organizer")
    _, other = await api.register(role="organizer")
    mine = [await publish(api, token, title=f"Mine {n}", date=hours_from_now(10 + n)) for n in range(3)]
    await publish(api, other, title="Not mine")
    await write_history(services.store, mine[1]["id"], organizer, ["hi"])

    first = await api.call("GET", "/api/v1/organizer/events?limit=2", token=token)
    assert first.status == 200
    second = await api.call("GET", f"/api/v1/organizer/events?limit=2&cursor={first.data['next_cursor']}", token=token)
    items = first.data["items"] + second.data["items"]
    assert [item["title"] for item in items] == ["Mine 0", "Mine 1", "Mine 2"]
    assert second.data["next_cursor"] is None
    assert [item["stats"]["message_count"] for item in items] == [0, 1, 0]
    assert set(items[0]["stats"]) == {"rsvp_count", "arrival_count", "arrival_rate", "photo_count",
                                      "waitlist_count", "message_count", "online_count"}


async def test_the_organizer_view_is_for_organizers_only(api):
    _, token = await api.register(role="attendee")
    reply = await api.call("GET", "/api/v1/organizer/events", token=token)
    assert reply.status == 403


async def test_the_organizer_view_refuses_a_bad_limit(api):
    _, token = await api.register(role="organizer")
    reply = await api.call("GET", "/api/v1/organizer/events?limit=0", token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "limit"


async def test_answers_match_their_documented_schemas(api, services):
    _, token = await api.register(role="organizer")
    _, attendee = await api.register()
    event = await publish(api, token, date=hours_from_now(0.5), geofence=SQUARE, capacity=10)
    base = f"/api/v1/events/{event['id']}"
    check = services.validator.validate
    check("Event", event)
    check("RsvpStatus", (await api.call("POST", f"{base}/rsvp", token=attendee)).data)
    check("ArrivalResult", (await api.call("POST", f"{base}/arrival",
                                           {"location": {"type": "Point", "coordinates": PARIS}}, token=attendee)).data)
    check("EventStats", (await api.call("GET", f"{base}/stats", token=token)).data)
    check("EventPage", (await api.call("GET", "/api/v1/events?limit=1", token=token)).data)
    nearby = (await api.call("GET", f"/api/v1/events?lat={PARIS[1]}&lng={PARIS[0]}", token=token)).data
    check("EventPage", nearby)
    assert "distance_m" in nearby["items"][0]
    check("EventWithStatsPage", (await api.call("GET", "/api/v1/organizer/events", token=token)).data)
    check("RsvpStatus", (await api.call("DELETE", f"{base}/rsvp", token=attendee)).data)
