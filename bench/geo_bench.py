"""How fast the pure geometry is (domain/geo.py): the exact nearby search over a list, and
geofence checks. No store: bench/discovery_bench.py times the stores' own nearby searches.

`find_nearest` is the reference the stores' nearby searches are held to in the tests; this
shows what its bounding-box prefilter saves over measuring every event.

Run from the repository root: python bench/geo_bench.py
"""

import math
import pathlib
import random
import statistics
import sys
import time

import shapely

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from domain.geo import (  # noqa: E402
    EARTH_RADIUS_M,
    Geofence,
    LocalProjection,
    distance_m,
    find_nearest,
    parse_polygon,
)

PARIS = (2.3522, 48.8566)
RUNS = 5


def random_events(count, rng):
    """Events spread over a region about 220 km square around Paris, as a city-scale app sees."""
    lng, lat = PARIS
    return [
        {
            "id": f"{i:024x}",
            "location": {
                "type": "Point",
                "coordinates": [lng + rng.uniform(-1.5, 1.5), lat + rng.uniform(-1.0, 1.0)],
            },
        }
        for i in range(count)
    ]


def every_doc_by_haversine(docs, lng, lat, radius_m):
    """The same search without the bounding-box prefilter, to show what the prefilter saves."""
    found = []
    for doc in docs:
        doc_lng, doc_lat = doc["location"]["coordinates"]
        distance = distance_m(lng, lat, doc_lng, doc_lat)
        if distance <= radius_m:
            found.append((distance, doc))
    found.sort(key=lambda hit: (hit[0], hit[1]["id"]))
    return found


def median_ms(fn, *args):
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = fn(*args)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000, result


def bench_find_nearest(rng):
    print("find_nearest: events uniform over ~220 x 220 km, query at the centre, "
          f"median of {RUNS} runs")
    print(f"{'events':>8} {'radius':>7} {'matches':>8} {'find_nearest':>13} {'no prefilter':>13}")
    for count in (10_000, 100_000):
        docs = random_events(count, rng)
        for radius_m in (10_000, 50_000):
            ms, hits = median_ms(find_nearest, docs, *PARIS, radius_m)
            brute_ms, brute = median_ms(every_doc_by_haversine, docs, *PARIS, radius_m)
            assert [doc["id"] for _, doc in hits] == [doc["id"] for _, doc in brute]
            print(f"{count:>8,} {radius_m // 1000:>4} km {len(hits):>8,} "
                  f"{ms:>10.1f} ms {brute_ms:>10.1f} ms")


def venue_outline(center, corners):
    """A concave, star-shaped venue about 300 m across with the given number of corners."""
    lng, lat = center
    deg_per_m = 180.0 / (math.pi * EARTH_RADIUS_M)
    ring = []
    for i in range(corners):
        angle = 2 * math.pi * i / corners
        reach = 150.0 if i % 2 == 0 else 90.0
        ring.append([
            lng + reach * math.sin(angle) * deg_per_m / math.cos(math.radians(lat)),
            lat + reach * math.cos(angle) * deg_per_m,
        ])
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def checks_per_second(check, inputs):
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for first, second in inputs:
            check(first, second)
        timings.append(time.perf_counter() - start)
    return len(inputs) / statistics.median(timings)


def unprepared_fence_check(projection, venue):
    """PolygonGeofence.distance_outside_m step for step, on an unprepared polygon. (Beware
    shapely.intersects_xy: it prepares its argument in place.)"""
    def check(lng, lat):
        point = shapely.Point(projection.xy(lng, lat))
        if venue.intersects(point):
            return 0.0
        return float(venue.distance(point))
    return check


def split_by(fence, points):
    inside = [point for point in points if fence.distance_outside_m(*point) == 0.0]
    outside = [point for point in points if fence.distance_outside_m(*point) > 0.0]
    return inside, outside


def bench_geofence(rng):
    location = {"type": "Point", "coordinates": list(PARIS)}
    projection = LocalProjection(*PARIS)
    points = [
        (PARIS[0] + rng.uniform(-0.003, 0.003), PARIS[1] + rng.uniform(-0.002, 0.002))
        for _ in range(20_000)
    ]
    circle = Geofence.for_event(location, 150, None)
    rows = [("circle 150 m: haversine - radius (admits)",
             lambda lng, lat: circle.admits(lng, lat, 10, 50), split_by(circle, points))]
    for corners in (64, 1024):
        outline = venue_outline(PARIS, corners)
        fence = Geofence.for_event(location, 150, outline)
        venue = projection.polygon(parse_polygon(outline))
        unprepared = unprepared_fence_check(projection, venue)
        assert all(fence.distance_outside_m(*p) == unprepared(*p) for p in points[:1_000])
        # A copy: shapely.Polygon(venue) would hand back venue itself.
        prepared_venue = shapely.from_wkb(venue.wkb)
        shapely.prepare(prepared_venue)
        assert not shapely.is_prepared(venue)
        inside, outside = split_by(fence, points)
        inside_m, outside_m = (
            [(shapely.Point(projection.xy(*point)), None) for point in subset]
            for subset in (inside, outside)
        )
        rows += [
            (f"{corners}-corner venue, prepared (PolygonGeofence.admits)",
             lambda lng, lat, fence=fence: fence.admits(lng, lat, 10, 50), (inside, outside)),
            (f"{corners}-corner venue, unprepared, same steps", unprepared, (inside, outside)),
            ("  containment alone, prepared, Point given",
             lambda point, _, venue=prepared_venue: venue.intersects(point), (inside_m, outside_m)),
            ("  containment alone, unprepared, Point given",
             lambda point, _, venue=venue: venue.intersects(point), (inside_m, outside_m)),
        ]
    rows.append(("projection alone (LocalProjection.xy)", projection.xy, (points, points)))

    print(f"\nGeofence checks per second on {len(points):,} random points within ~250 m of the "
          f"event (star-shaped concave venues ~300 m across), median of {RUNS} runs")
    print(f"{'check':<56} {'inside':>11} {'outside':>11}")
    for label, check, (inside, outside) in rows:
        print(f"{label:<56} {checks_per_second(check, inside):>11,.0f} "
              f"{checks_per_second(check, outside):>11,.0f}")


def main():
    rng = random.Random(20260101)
    started = time.perf_counter()
    bench_find_nearest(rng)
    bench_geofence(rng)
    print(f"\n(total {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
