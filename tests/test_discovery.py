"""Finding events: filters, date order, nearby search nearest first, and cursor pages."""
import urllib.parse

import pytest

from tests.event_builders import PARIS, hours_from_now, publish

pytestmark = pytest.mark.gen_test

LONDON = [-0.1278, 51.5074]
METERS_PER_DEGREE = 6378100.0 * 3.141592653589793 / 180  # along a meridian, on MongoDB's sphere


def point(lng, lat):
    return {"type": "Point", "coordinates": [lng, lat]}


async def find(api, token, **params):
    reply = await api.call("GET", "/api/v1/events?" + urllib.parse.urlencode(params), token=token)
    assert reply.status == 200, reply
    return reply.data


async def every_page(api, token, between_pages=None, **params):
    """Titles of every page in turn; between_pages() runs after each page but the last."""
    titles, cursor = [], None
    while True:
        page = await find(api, token, **params, **({"cursor": cursor} if cursor else {}))
        titles += [item["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return titles
        if between_pages:
            await between_pages()


@pytest.fixture
def organizer(io_loop, api):
    return io_loop.run_sync(lambda: api.register(role="organizer"))


async def test_without_a_centre_events_come_by_date(api, organizer):
    _, token = organizer
    for title, hours in (("third", 30), ("first", 10), ("second", 20)):
        await publish(api, token, title=title, date=hours_from_now(hours))
    page = await find(api, token)
    assert [item["title"] for item in page["items"]] == ["first", "second", "third"]
    assert page["next_cursor"] is None
    assert all("distance_m" not in item for item in page["items"])


async def test_filters_by_category_time_and_organizer(api, organizer):
    _, token = organizer
    other, other_token = await api.register(role="organizer")
    await publish(api, token, title="jazz soon", category="music", date=hours_from_now(5))
    await publish(api, token, title="jazz later", category="music", date=hours_from_now(50))
    await publish(api, token, title="talk", category="tech", date=hours_from_now(6))
    await publish(api, other_token, title="other's jazz", category="music", date=hours_from_now(7))

    music = await find(api, token, category="music")
    assert [item["title"] for item in music["items"]] == ["jazz soon", "other's jazz", "jazz later"]
    window = await find(api, token, **{"from": hours_from_now(5.5), "to": hours_from_now(10)})
    assert [item["title"] for item in window["items"]] == ["talk", "other's jazz"]
    theirs = await find(api, token, organizer_id=other["id"])
    assert [item["title"] for item in theirs["items"]] == ["other's jazz"]


async def test_text_search_is_case_insensitive_in_title_and_description(api, organizer):
    _, token = organizer
    await publish(api, token, title="Rooftop JAZZ", description="")
    await publish(api, token, title="Quiz night", description="Bring your jazz trivia")
    await publish(api, token, title="Poetry", description="")
    found = await find(api, token, q="jazz")
    assert sorted(item["title"] for item in found["items"]) == ["Quiz night", "Rooftop JAZZ"]


async def test_text_search_matches_regex_characters_literally(api, organizer):
    _, token = organizer
    await publish(api, token, title="C++ (advanced)")
    await publish(api, token, title="Cobol")
    assert [item["title"] for item in (await find(api, token, q="c++ ("))["items"]] == ["C++ (advanced)"]
    assert (await find(api, token, q=".*"))["items"] == []
    assert (await find(api, token, q="(?i)["))["items"] == []


async def test_nearby_results_are_within_the_radius_nearest_first_with_distances(api, organizer):
    _, token = organizer
    for title, north_km in (("far", 9), ("near", 1), ("outside", 11), ("middle", 4)):
        await publish(api, token, title=title, location=point(PARIS[0], PARIS[1] + north_km * 1000 / METERS_PER_DEGREE))
    found = await find(api, token, lat=PARIS[1], lng=PARIS[0])  # radius 10 km by default
    assert [item["title"] for item in found["items"]] == ["near", "middle", "far"]
    assert [item["distance_m"] for item in found["items"]] == pytest.approx([1000, 4000, 9000], abs=0.1)


async def test_the_paris_london_distance_is_the_great_circle_one(api, organizer):
    _, token = organizer
    await publish(api, token, title="Paris")
    found = await find(api, token, lat=LONDON[1], lng=LONDON[0], radius_km=500)
    assert [item["title"] for item in found["items"]] == ["Paris"]
    assert found["items"][0]["distance_m"] == pytest.approx(343_500, rel=0.005)


async def test_the_radius_boundary_is_exact_to_the_meter(api, organizer):
    _, token = organizer
    for title, north_m in (("just inside", 2_999), ("just outside", 3_001)):
        await publish(api, token, title=title, location=point(PARIS[0], PARIS[1] + north_m / METERS_PER_DEGREE))
    found = await find(api, token, lat=PARIS[1], lng=PARIS[0], radius_km=3)
    assert [item["title"] for item in found["items"]] == ["just inside"]


async def test_a_search_straddling_longitude_180_finds_both_sides(api, organizer):
    _, token = organizer
    await publish(api, token, title="west of the line", location=point(179.95, -16.5))
    await publish(api, token, title="east of the line", location=point(-179.9, -16.5))
    await publish(api, token, title="far west", location=point(178.0, -16.5))
    found = await find(api, token, lat=-16.5, lng=179.99, radius_km=50)
    assert [item["title"] for item in found["items"]] == ["west of the line", "east of the line"]
    assert found["items"][1]["distance_m"] == pytest.approx(11_700, rel=0.01)


async def test_a_search_near_the_pole_reaches_across_it(api, organizer):
    _, token = organizer
    await publish(api, token, title="across the pole", location=point(180.0, 89.9))
    await publish(api, token, title="same meridian", location=point(0.0, 89.7))
    found = await find(api, token, lat=89.9, lng=0.0, radius_km=30)
    assert [item["title"] for item in found["items"]] == ["across the pole", "same meridian"]
    assert found["items"][0]["distance_m"] == pytest.approx(0.2 * METERS_PER_DEGREE, abs=0.1)


async def test_nearby_search_applies_the_other_filters_too(api, organizer):
    _, token = organizer
    await publish(api, token, title="music here", category="music")
    await publish(api, token, title="tech here", category="tech")
    await publish(api, token, title="music past", category="music", date=hours_from_now(-48))
    found = await find(api, token, lat=PARIS[1], lng=PARIS[0], category="music", **{"from": hours_from_now(0)})
    assert [item["title"] for item in found["items"]] == ["music here"]


async def test_list_items_show_the_callers_rsvp(api, organizer):
    _, token = organizer
    _, attendee = await api.register()
    going = await publish(api, token, title="going", date=hours_from_now(10))
    await publish(api, token, title="not going", date=hours_from_now(20))
    await api.call("POST", f"/api/v1/events/{going['id']}/rsvp", token=attendee)
    found = await find(api, attendee)
    assert [(item["title"], item["is_rsvped"], item["rsvp_count"]) for item in found["items"]] == [
        ("going", True, 1), ("not going", False, 0)]


async def test_date_pages_neither_repeat_nor_skip_while_events_are_added(api, organizer):
    _, token = organizer
    for n in range(7):
        await publish(api, token, title=f"e{n}", date=hours_from_now(10 + n))
    added = iter(range(100))

    async def add_before_and_after():
        n = next(added)
        await publish(api, token, title=f"early{n}", date=hours_from_now(1 + n / 100))
        await publish(api, token, title=f"late{n}", date=hours_from_now(100 + n))

    titles = await every_page(api, token, add_before_and_after, limit=3)
    assert len(titles) == len(set(titles))
    assert [t for t in titles if t.startswith("e")] == [f"e{n}" for n in range(7)]
    assert not any(t.startswith("early") for t in titles)
    assert [t for t in titles if t.startswith("late")] == ["late0", "late1"]


async def test_events_at_the_same_time_page_in_id_order(api, organizer):
    _, token = organizer
    same_time = hours_from_now(24)
    ids = [(await publish(api, token, title=f"t{n}", date=same_time))["id"] for n in range(5)]
    titles = await every_page(api, token, limit=2)
    assert titles == [f"t{n}" for n in sorted(range(5), key=lambda n: ids[n])]


async def test_nearby_pages_neither_repeat_nor_skip_while_events_are_added(api, organizer):
    _, token = organizer
    for n in range(7):
        await publish(api, token, title=f"e{n}", location=point(PARIS[0], PARIS[1] + (n + 1) * 0.005))
    added = iter(range(100))

    async def add_nearer_and_farther():
        n = next(added)
        await publish(api, token, title=f"nearer{n}", location=point(PARIS[0], PARIS[1] + 0.0001 * (n + 1)))
        await publish(api, token, title=f"farther{n}", location=point(PARIS[0], PARIS[1] + 0.05 + 0.001 * n))

    titles = await every_page(api, token, add_nearer_and_farther, lat=PARIS[1], lng=PARIS[0], limit=3)
    assert len(titles) == len(set(titles))
    assert [t for t in titles if t.startswith("e")] == [f"e{n}" for n in range(7)]
    assert not any(t.startswith("nearer") for t in titles)
    assert [t for t in titles if t.startswith("farther")] == ["farther0", "farther1"]


async def test_events_at_the_same_distance_page_without_loss(api, organizer):
    _, token = organizer
    for n in range(5):
        await publish(api, token, title=f"same spot {n}")
    titles = await every_page(api, token, lat=PARIS[1] + 0.01, lng=PARIS[0], limit=2)
    assert sorted(titles) == [f"same spot {n}" for n in range(5)]


@pytest.mark.parametrize("params, path", [
    ({"lat": "abc", "lng": "2"}, "lat"),
    ({"lat": "nan", "lng": "2"}, "lat"),
    ({"lat": "91", "lng": "2"}, "lat"),
    ({"lat": "48", "lng": "-180.5"}, "lng"),
    ({"lat": "48"}, "lng"),
    ({"lng": "2"}, "lat"),
    ({"lat": "48", "lng": "2", "radius_km": "-1"}, "radius_km"),
    ({"lat": "48", "lng": "2", "radius_km": "0"}, "radius_km"),
    ({"lat": "48", "lng": "2", "radius_km": "501"}, "radius_km"),
    ({"radius_km": "5"}, "radius_km"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"from": "2026-12-01T18:30:00"}, "from"),
    ({"to": "tomorrow"}, "to"),
    ({"organizer_id": "nobody"}, "organizer_id"),
    ({"q": "x" * 101}, "q"),
    ({"category": ""}, "category"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "12-5f0c2d1e9b1e8a3d4c5b6a7"}, "cursor"),
])
async def test_bad_filter_values_are_a_400_naming_the_parameter(api, organizer, params, path):
    _, token = organizer
    reply = await api.call("GET", "/api/v1/events?" + urllib.parse.urlencode(params), token=token)
    assert reply.status == 400, reply
    assert path in [error["path"] for error in reply.json["errors"]]


async def test_every_bad_parameter_is_reported_at_once(api, organizer):
    _, token = organizer
    reply = await api.call("GET", "/api/v1/events?lat=abc&lng=2&limit=0", token=token)
    assert {error["path"] for error in reply.json["errors"]} == {"lat", "limit"}


async def test_a_window_that_ends_before_it_starts_is_empty(api, organizer):
    _, token = organizer
    await publish(api, token, date=hours_from_now(10))
    found = await find(api, token, **{"from": hours_from_now(20), "to": hours_from_now(1)})
    assert found == {"items": [], "next_cursor": None}


async def test_any_cursor_of_the_documented_shape_is_a_position(api, organizer):
    _, token = organizer
    for n in range(3):
        await publish(api, token, title=f"e{n}", date=hours_from_now(10 + n))
    nearby = await find(api, token, lat=PARIS[1], lng=PARIS[0], limit=1)
    by_date = await find(api, token, limit=1)
    # A cursor of one order still reads as a position in the other: a number and an id.
    assert len((await find(api, token, cursor=nearby["next_cursor"]))["items"]) == 3
    assert (await find(api, token, lat=PARIS[1], lng=PARIS[0], cursor=by_date["next_cursor"]))["items"] == []
    everything_after = f"-99999999999999999999-{'0' * 24}"
    assert [item["title"] for item in (await find(api, token, cursor=everything_after))["items"]] == ["e0", "e1", "e2"]
    assert (await find(api, token, cursor=f"99999999999999999999-{'f' * 24}"))["items"] == []
    assert (await find(api, token, lat=PARIS[1], lng=PARIS[0], cursor=f"1e-05-{'0' * 24}"))["items"] == []


async def test_discovery_needs_a_token(api):
    assert (await api.call("GET", "/api/v1/events")).status == 401


async def test_a_time_offset_whose_plus_was_not_url_encoded_is_understood(api, organizer):
    _, token = organizer
    await publish(api, token, title="at eight", date="2030-06-01T20:00:00+02:00")
    found = await api.call("GET", "/api/v1/events?from=2030-06-01T19:59:00+02:00", token=token)
    assert found.status == 200 and [item["title"] for item in found.data["items"]] == ["at eight"]

