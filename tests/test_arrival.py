"""Arrival: checked against the geofence, with GPS accuracy credited up to a cap, in a window."""
import math

import pytest

from tests.event_builders import PARIS, hours_from_now, publish

pytestmark = pytest.mark.gen_test

METERS_PER_DEGREE = 6378100.0 * math.pi / 180  # along a meridian, on MongoDB's sphere


def offset(east_m, north_m, origin=PARIS):
    """A GeoJSON point east_m and north_m meters from origin (a few hundred meters at most)."""
    lng, lat = origin
    return {"type": "Point", "coordinates": [
        lng + east_m / (METERS_PER_DEGREE * math.cos(math.radians(lat))), lat + north_m / METERS_PER_DEGREE]}


def outline(*corners_m):
    ring = [offset(east, north)["coordinates"] for east, north in corners_m]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


# An L-shaped venue: a tall block [-50, 50] x [-50, 150] m and a foot [50, 150] x [-50, 50] m.
# Its bounding box is [-50, 150] x [-50, 150]; the corner (100, 100) is in the box, not the venue.
L_VENUE = outline((-50, -50), (150, -50), (150, 50), (50, 50), (50, 150), (-50, 150))


async def started_event(api, **fields):
    """An event under way, an attendee who RSVPed to it, and that attendee's token."""
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, date=hours_from_now(-0.5), **fields)
    attendee, token = await api.register()
    assert (await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)).status == 200
    return event, attendee, token


async def arrive(api, event, token, location, accuracy_m=None):
    body = {"location": location}
    if accuracy_m is not None:
        body["accuracy_m"] = accuracy_m
    return await api.call("POST", f"/api/v1/events/{event['id']}/arrival", body, token=token)


async def test_an_rsvped_attendee_inside_the_radius_arrives(api, services):
    event, attendee, token = await started_event(api, geofence_radius=100)
    reply = await arrive(api, event, token, offset(0, 60))
    assert reply.status == 200 and reply.data == {"arrived": True, "distance_m": 0}
    shown = (await api.call("GET", f"/api/v1/events/{event['id']}", token=token)).data
    assert shown["has_arrived"] is True and shown["arrival_count"] == 1
    stored = await services.store.events.get(event["id"], attendee["id"])
    assert stored["has_arrived"] is True and stored["arrival_count"] == 1


async def test_outside_the_radius_is_a_422_with_the_distance_to_the_fence(api):
    event, _, token = await started_event(api, geofence_radius=100)
    reply = await arrive(api, event, token, offset(0, 350))
    assert reply.status == 422 and reply.json["code"] == "outside_geofence"
    assert reply.json["distance_m"] == pytest.approx(250, abs=0.2)


async def test_the_radius_is_measured_in_meters_not_degrees(api):
    # 90 m east at 60 degrees north is 0.0016 degrees of longitude: inside a 100 m fence,
    # though 0.0016 degrees of latitude would be 180 m.
    north = [10.0, 60.0]
    event, _, token = await started_event(api, location={"type": "Point", "coordinates": north})
    assert (await arrive(api, event, token, offset(90, 0, origin=north))).status == 200


async def test_reported_accuracy_is_credited_up_to_the_cap(api):
    event, _, token = await started_event(api, geofence_radius=100)
    just_outside = offset(0, 120)  # 20 m outside the fence
    assert (await arrive(api, event, token, just_outside, accuracy_m=10)).status == 422
    assert (await arrive(api, event, token, just_outside, accuracy_m=25)).status == 200


async def test_a_huge_accuracy_does_not_admit_someone_far_away(api):
    event, _, token = await started_event(api, geofence_radius=100)
    # 100 m outside, claiming 5 km of inaccuracy: only the cap (50 m by default) is credited.
    reply = await arrive(api, event, token, offset(0, 200), accuracy_m=5000)
    assert reply.status == 422 and reply.json["distance_m"] == pytest.approx(100, abs=0.2)


@pytest.mark.settings(arrival_accuracy_cap_m=0)
async def test_a_zero_cap_credits_no_accuracy(api):
    event, _, token = await started_event(api, geofence_radius=100)
    assert (await arrive(api, event, token, offset(0, 101), accuracy_m=30)).status == 422


async def test_a_venue_polygon_replaces_the_radius(api):
    event, _, token = await started_event(api, geofence=L_VENUE, geofence_radius=1000)
    # In the venue's bounding box, and well within the 1 km radius, but outside the L itself.
    corner = await arrive(api, event, token, offset(100, 100))
    assert corner.status == 422 and corner.json["distance_m"] == pytest.approx(50, abs=0.5)
    assert (await arrive(api, event, token, offset(120, 0))).status == 200


async def test_arriving_twice_is_one_arrival(api, services):
    event, _, token = await started_event(api)
    assert (await arrive(api, event, token, offset(0, 0))).status == 200
    again = await arrive(api, event, token, offset(0, 10))
    assert again.status == 200 and again.data["arrived"] is True
    assert (await services.store.events.get(event["id"]))["arrival_count"] == 1


async def test_arrival_without_an_rsvp_is_a_409(api):
    event, _, _ = await started_event(api)
    _, stranger = await api.register()
    reply = await arrive(api, event, stranger, offset(0, 0))
    assert reply.status == 409 and reply.json["code"] == "rsvp_required"


async def test_check_in_opens_an_hour_before_the_start_by_default(api):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    soon = await publish(api, organizer, date=hours_from_now(0.5))
    later = await publish(api, organizer, date=hours_from_now(2))
    for event in (soon, later):
        await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)
    assert (await arrive(api, soon, token, offset(0, 0))).status == 200
    refused = await arrive(api, later, token, offset(0, 0))
    assert refused.status == 409 and refused.json["code"] == "arrival_not_open"


@pytest.mark.settings(arrival_opens_minutes_before=180)
async def test_the_check_in_window_is_configurable(api):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    event = await publish(api, organizer, date=hours_from_now(2))
    await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)
    assert (await arrive(api, event, token, offset(0, 0))).status == 200


async def test_check_in_closes_when_the_event_ends(api):
    _, organizer = await api.register(role="organizer")
    _, token = await api.register()
    event = await publish(api, organizer, date=hours_from_now(-2), end_date=hours_from_now(1))
    await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)
    await api.call("PATCH", f"/api/v1/events/{event['id']}", {"end_date": hours_from_now(-0.1)}, token=organizer)
    reply = await arrive(api, event, token, offset(0, 0))
    assert reply.status == 409 and reply.json["code"] == "event_ended"


@pytest.mark.parametrize("body, path", [
    ({}, "/location"),
    ({"location": {"type": "Point", "coordinates": [200, 0]}}, "/location/coordinates/0"),
    ({"location": {"type": "Point", "coordinates": PARIS}, "accuracy_m": -1}, "/accuracy_m"),
    ({"location": {"type": "Point", "coordinates": PARIS}, "arrived": True}, "/arrived"),
])
async def test_a_bad_arrival_body_is_a_400(api, body, path):
    event, _, token = await started_event(api)
    reply = await api.call("POST", f"/api/v1/events/{event['id']}/arrival", body, token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == path


async def test_arrivals_are_checked_against_the_venue_as_changed(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, date=hours_from_now(-0.5), geofence=L_VENUE)
    tokens = [(await api.register())[1] for _ in range(2)]
    for token in tokens:
        await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)
    assert (await arrive(api, event, tokens[0], offset(100, 100))).status == 422
    square = outline((-50, -50), (150, -50), (150, 150), (-50, 150))
    assert (await api.call("PATCH", f"/api/v1/events/{event['id']}", {"geofence": square},
                           token=organizer)).status == 200
    assert (await arrive(api, event, tokens[1], offset(100, 100))).status == 200
