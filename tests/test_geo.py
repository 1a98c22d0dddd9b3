import math
import random

import pytest
import shapely

from domain.errors import InvalidInput
from domain.geo import (
    EARTH_RADIUS_M,
    Geofence,
    bounding_boxes,
    distance_m,
    find_nearest,
    in_boxes,
    parse_polygon,
    polygon_contains_point,
)

PARIS = (2.3522, 48.8566)
LONDON = (-0.1276, 51.5072)


def destination(lng, lat, bearing_deg, meters):
    """The point `meters` from (lng, lat) along the great circle starting at bearing_deg."""
    phi, lam = math.radians(lat), math.radians(lng)
    angle, bearing = meters / EARTH_RADIUS_M, math.radians(bearing_deg)
    phi2 = math.asin(
        math.sin(phi) * math.cos(angle) + math.cos(phi) * math.sin(angle) * math.cos(bearing)
    )
    lam2 = lam + math.atan2(
        math.sin(bearing) * math.sin(angle) * math.cos(phi),
        math.cos(angle) - math.sin(phi) * math.sin(phi2),
    )
    lng2 = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return lng2, math.degrees(phi2)


def central_angle_by_vectors(lng1, lat1, lng2, lat2):
    """An independent formula (atan2 of |cross| and dot of unit vectors) to check against."""
    def unit(lng, lat):
        phi, lam = math.radians(lat), math.radians(lng)
        return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))

    a, b = unit(lng1, lat1), unit(lng2, lat2)
    cross = (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
    dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    return math.atan2(math.hypot(*cross), dot)


def event(event_id, lng, lat):
    return {"id": event_id, "location": {"type": "Point", "coordinates": [lng, lat]}}


def ids(hits):
    return [doc["id"] for _, doc in hits]


def local_offset(origin, east_m, north_m):
    """A point east_m/north_m from origin, exact enough for venue-sized test shapes."""
    lng, lat = origin
    deg_per_m = 180.0 / (math.pi * EARTH_RADIUS_M)
    return [lng + east_m * deg_per_m / math.cos(math.radians(lat)), lat + north_m * deg_per_m]


def polygon_from_meters(origin, corners_m):
    ring = [local_offset(origin, east, north) for east, north in corners_m]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


# distance_m

def test_paris_to_london_is_about_343_5_km():
    assert distance_m(*PARIS, *LONDON) == pytest.approx(343_500, rel=0.005)


def test_distance_is_symmetric_and_zero_for_the_same_point():
    assert distance_m(*PARIS, *LONDON) == distance_m(*LONDON, *PARIS)
    assert distance_m(*PARIS, *PARIS) == 0.0


def test_distance_to_the_antipode_is_half_the_circumference():
    half_circumference = math.pi * EARTH_RADIUS_M
    assert distance_m(10.0, 20.0, -170.0, -20.0) == pytest.approx(half_circumference, rel=1e-15)


@pytest.mark.parametrize("offset_deg", [1e-9, 1e-6, 1e-3])
def test_distance_stays_accurate_just_short_of_the_antipode(offset_deg):
    points = (0.0, 0.0, 180.0 - offset_deg, offset_deg)
    expected = central_angle_by_vectors(*points) * EARTH_RADIUS_M
    assert distance_m(*points) == pytest.approx(expected, abs=1e-6)
    assert distance_m(*points) < math.pi * EARTH_RADIUS_M


def test_distance_across_the_north_pole_goes_over_it():
    # Both points are 0.0001 degrees from the pole, on opposite meridians.
    expected = math.radians(0.0002) * EARTH_RADIUS_M
    assert distance_m(0.0, 89.9999, 180.0, 89.9999) == pytest.approx(expected, rel=1e-9)


# bounding_boxes / in_boxes

def test_bounding_box_is_one_box_away_from_the_antimeridian_and_poles():
    boxes = bounding_boxes(*PARIS, 10_000)
    assert len(boxes) == 1
    assert in_boxes(boxes, *PARIS)
    assert not in_boxes(boxes, *LONDON)


def test_bounding_box_splits_in_two_across_the_antimeridian():
    boxes = bounding_boxes(179.9, 0.0, 50_000)
    assert len(boxes) == 2
    assert in_boxes(boxes, -179.9, 0.0)
    assert in_boxes(boxes, 180.0, 0.0)
    assert not in_boxes(boxes, 0.0, 0.0)


def test_bounding_box_takes_every_longitude_when_the_radius_covers_a_pole():
    [box] = bounding_boxes(0.0, 89.95, 20_000)
    assert box == (-180.0, pytest.approx(89.77, abs=0.01), 180.0, 90.0)
    assert bounding_boxes(0.0, -89.95, 20_000)[0][1] == -90.0


# find_nearest

def test_nearby_events_come_nearest_first_and_far_ones_are_left_out():
    docs = [
        event("far", *LONDON),
        event("3km", *destination(*PARIS, 45, 3_000)),
        event("1km", *destination(*PARIS, 200, 1_000)),
        event("2km", *destination(*PARIS, 300, 2_000)),
    ]
    hits = find_nearest(docs, *PARIS, 10_000)
    assert ids(hits) == ["1km", "2km", "3km"]
    assert [round(d) for d, _ in hits] == [1_000, 2_000, 3_000]


def test_the_limit_keeps_the_nearest():
    docs = [event(str(km), *destination(*PARIS, 90, km * 1_000)) for km in (5, 1, 4, 2, 3)]
    assert ids(find_nearest(docs, *PARIS, 10_000, limit=2)) == ["1", "2"]


def test_events_at_the_same_distance_are_ordered_by_id():
    east = destination(*PARIS, 90, 500)
    docs = [event("d", *east), event("c", *PARIS), event("b", *east), event("a", *PARIS)]
    assert ids(find_nearest(docs, *PARIS, 1_000)) == ["a", "c", "b", "d"]


@pytest.mark.parametrize("bearing", [0, 45, 90, 135, 180, 225, 270, 315])
def test_an_event_just_inside_the_radius_is_found_and_one_just_outside_is_not(bearing):
    docs = [
        event("inside", *destination(*PARIS, bearing, 9_999.99)),
        event("outside", *destination(*PARIS, bearing, 10_000.01)),
    ]
    assert ids(find_nearest(docs, *PARIS, 10_000)) == ["inside"]


def test_a_query_near_longitude_180_finds_events_on_the_other_side():
    docs = [event("west", -179.9, 0.0), event("on_the_line", 180.0, 0.0), event("home", 0.0, 0.0)]
    hits = find_nearest(docs, 179.9, 0.0, 30_000)
    assert ids(hits) == ["on_the_line", "west"]
    assert hits[1][0] == pytest.approx(math.radians(0.2) * EARTH_RADIUS_M)


def test_a_query_near_the_north_pole_finds_events_at_every_longitude_over_it():
    docs = [
        event("across_the_pole", 180.0, 89.95),
        event("side", 90.0, 89.95),
        event("too_far_south", 0.0, 89.7),
    ]
    assert ids(find_nearest(docs, 0.0, 89.95, 20_000)) == ["side", "across_the_pole"]


def test_events_without_a_location_are_skipped():
    assert find_nearest([{"id": "x"}, event("y", *PARIS)], *PARIS, 100) == [
        (0.0, event("y", *PARIS))
    ]


@pytest.mark.parametrize(
    "center",
    [PARIS, (179.99, 10.0), (-179.99, -60.0), (0.0, 89.9), (45.0, -89.0), (0.0, 0.0)],
)
def test_the_prefilter_never_drops_a_point_within_the_radius(center):
    # Points a hair inside the circle all around it: the box edges are where a prefilter fails.
    radius = 25_000
    docs = [
        event(f"{bearing}", *destination(*center, bearing, radius * (1 - 1e-9)))
        for bearing in range(0, 360, 3)
    ]
    rng = random.Random(7)
    docs += [
        event(f"r{i}", *destination(*center, rng.uniform(0, 360), rng.uniform(0, 3 * radius)))
        for i in range(300)
    ]
    expected = {
        doc["id"] for doc in docs
        if distance_m(*center, *doc["location"]["coordinates"]) <= radius
    }
    assert set(ids(find_nearest(docs, *center, radius))) == expected
    assert len(expected) >= 120


# Geofence

VENUE = PARIS
# An L-shaped venue, 100 m on each long side and 40 m wide; the event's pin is in the corner.
L_SHAPE_M = [(-20, -20), (80, -20), (80, 20), (20, 20), (20, 80), (-20, 80)]


def test_a_circle_fence_admits_inside_and_measures_the_overshoot_outside():
    fence = Geofence.for_event({"type": "Point", "coordinates": list(VENUE)}, 100, None)
    assert fence.admits(*destination(*VENUE, 30, 99), None, 50) == (True, 0.0)
    arrived, distance = fence.admits(*destination(*VENUE, 30, 150), None, 50)
    assert not arrived
    assert distance == pytest.approx(50, abs=1e-6)


def test_accuracy_admits_a_point_that_close_outside_but_no_further_than_the_cap():
    fence = Geofence.for_event({"type": "Point", "coordinates": list(VENUE)}, 100, None)
    outside_by_30 = destination(*VENUE, 120, 130)
    assert fence.admits(*outside_by_30, 40, 50)[0]
    assert not fence.admits(*outside_by_30, 20, 50)[0]
    assert not fence.admits(*outside_by_30, 1_000, 25)[0]
    assert not fence.admits(*outside_by_30, None, 50)[0]


def test_a_polygon_fence_refuses_a_point_in_the_notch_of_an_l_shaped_venue():
    location = {"type": "Point", "coordinates": list(VENUE)}
    fence = Geofence.for_event(location, 5_000, polygon_from_meters(VENUE, L_SHAPE_M))
    in_the_notch = local_offset(VENUE, 60, 50)  # inside the bounding box, not in the L
    arrived, distance = fence.admits(*in_the_notch, 10, 50)
    assert not arrived
    # The nearest part of the L is the inner edge of its horizontal arm, at north = 20 m.
    assert distance == pytest.approx(30, abs=0.05)


def test_a_polygon_fence_admits_points_anywhere_in_either_arm():
    location = {"type": "Point", "coordinates": list(VENUE)}
    fence = Geofence.for_event(location, 100, polygon_from_meters(VENUE, L_SHAPE_M))
    assert fence.admits(*local_offset(VENUE, 70, 0), None, 50) == (True, 0.0)
    assert fence.admits(*local_offset(VENUE, 0, 70), None, 50) == (True, 0.0)
    assert fence.admits(*local_offset(VENUE, 79.9, -19.9), None, 50) == (True, 0.0)


def test_a_polygon_fence_measures_distance_outside_in_meters():
    location = {"type": "Point", "coordinates": list(VENUE)}
    fence = Geofence.for_event(location, 100, polygon_from_meters(VENUE, L_SHAPE_M))
    assert fence.distance_outside_m(*local_offset(VENUE, 30, -45)) == pytest.approx(25, abs=0.05)
    arrived, distance = fence.admits(*local_offset(VENUE, 30, -45), 30, 50)
    assert arrived
    assert distance == pytest.approx(25, abs=0.05)


def test_a_polygon_fence_straddling_the_antimeridian_works_in_meters():
    center = (180.0, -16.5)
    square = polygon_from_meters(center, [(-50, -50), (50, -50), (50, 50), (-50, 50)])
    # Write the eastern half on the other side of the line, as a client near Fiji would.
    for position in square["coordinates"][0]:
        if position[0] > 180.0:
            position[0] -= 360.0
    fence = Geofence.for_event({"type": "Point", "coordinates": list(center)}, 100, square)
    assert fence.distance_outside_m(-179.9999, -16.5) == 0.0
    assert fence.distance_outside_m(179.9997, -16.5) == 0.0
    # 0.001 degrees of longitude east of the line; the square's east edge is 50 m east of it.
    beyond_east_edge = math.radians(0.001) * EARTH_RADIUS_M * math.cos(math.radians(16.5)) - 50
    assert fence.distance_outside_m(-179.999, -16.5) == pytest.approx(beyond_east_edge, abs=0.05)


def test_polygon_contains_point_checks_the_event_location_against_its_venue():
    venue = polygon_from_meters(VENUE, L_SHAPE_M)
    assert polygon_contains_point(venue, {"type": "Point", "coordinates": list(VENUE)})
    notch = local_offset(VENUE, 60, 50)
    assert not polygon_contains_point(venue, {"type": "Point", "coordinates": notch})


# parse_polygon

def test_a_valid_polygon_with_a_hole_parses():
    outline = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    hole = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    polygon = parse_polygon({"type": "Polygon", "coordinates": [outline, hole]})
    assert isinstance(polygon, shapely.Polygon)
    assert polygon.area == 96


def errors_of(geojson):
    with pytest.raises(InvalidInput) as raised:
        parse_polygon(geojson)
    return raised.value.extra["errors"]


def test_a_self_intersecting_bowtie_is_invalid_input():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    [error] = errors_of(bowtie)
    assert error["path"] == "/geofence/coordinates"
    assert "Self-intersection" in error["message"]


def test_an_unclosed_ring_is_invalid_input():
    [error] = errors_of({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]})
    assert error["path"] == "/geofence/coordinates/0"
    assert "not closed" in error["message"]


def test_a_ring_with_too_few_positions_is_invalid_input():
    [error] = errors_of({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]})
    assert error["path"] == "/geofence/coordinates/0"
    assert "at least 4 positions" in error["message"]


def ring_with(position):
    return {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], position, [0, 0]]]}


@pytest.mark.parametrize(
    "geojson, path",
    [
        ([[0, 0]], "/geofence"),
        ({"type": "Point", "coordinates": [0, 0]}, "/geofence/type"),
        ({"type": "Polygon", "coordinates": []}, "/geofence/coordinates"),
        ({"type": "Polygon", "coordinates": [[0, 0]]}, "/geofence/coordinates/0"),
        (ring_with([1, 91]), "/geofence/coordinates/0/2"),
        (ring_with([181, 1]), "/geofence/coordinates/0/2"),
        (ring_with([1, True]), "/geofence/coordinates/0/2"),
        (ring_with([1, 1, 1]), "/geofence/coordinates/0/2"),
        (ring_with("x"), "/geofence/coordinates/0/2"),
    ],
)
def test_malformed_polygons_are_invalid_input_pointing_at_the_bad_part(geojson, path):
    assert [error["path"] for error in errors_of(geojson)] == [path]


def test_a_hole_outside_the_outline_is_invalid_input():
    outline = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    hole = [[5, 5], [6, 5], [6, 6], [5, 5]]
    [error] = errors_of({"type": "Polygon", "coordinates": [outline, hole]})
    assert "Hole lies outside shell" in error["message"]


def test_an_event_with_an_invalid_geofence_cannot_build_its_fence():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    with pytest.raises(InvalidInput):
        Geofence.for_event({"type": "Point", "coordinates": [0.5, 0.2]}, 100, bowtie)
