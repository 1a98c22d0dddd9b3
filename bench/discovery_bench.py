"""How fast GET /events answers on the in-memory store: discovery.find_events, filters and all.

bench/geo_bench.py times geo.find_nearest alone; this times the whole domain function, where
the in-memory driver (mongomock) scans and copies documents in Python and dominates.
Run from the repository root: python bench/discovery_bench.py
"""
import asyncio
import datetime
import pathlib
import random
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from domain import discovery  # noqa: E402
from domain.store import ObjectId, Store  # noqa: E402

PARIS = (2.3522, 48.8566)
RUNS = 3


def random_events(count, rng):
    """Events over ~220 km square around Paris, dated over two years, with a few RSVPs each."""
    start = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    return [{
        "title": f"event {i}", "description": "", "category": rng.choice(["music", "tech", "sport"]),
        "date": start + datetime.timedelta(minutes=rng.randrange(1_000_000)),
        "location": {"type": "Point",
                     "coordinates": [PARIS[0] + rng.uniform(-1.5, 1.5), PARIS[1] + rng.uniform(-1.0, 1.0)]},
        "organizer_id": ObjectId(), "rsvps": [ObjectId() for _ in range(rng.randrange(10))],
        "arrivals": [], "photo_gallery": [], "geofence_radius": 100,
    } for i in range(count)]


async def median_ms(store, query, viewer):
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        page = await discovery.find_events(store, query, viewer)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000, len(page.items)


async def main():
    rng = random.Random(20260101)
    viewer = ObjectId()
    queries = [("by date, first page", discovery.DiscoveryQuery()),
               ("by date, category", discovery.DiscoveryQuery(category="music"))] + [
        (f"nearby {km} km", discovery.DiscoveryQuery(near=PARIS, radius_m=km * 1000)) for km in (1, 10, 50)]
    print(f"discovery.find_events on the in-memory store, pages of 20, median of {RUNS} runs")
    print(f"{'events':>8}  {'query':<20} {'time':>9} {'items':>6}")
    for count in (10_000, 100_000):
        store = Store.connect("", "bench", 1000)
        await store.events.insert_many(random_events(count, rng))
        for label, query in queries:
            ms, items = await median_ms(store, query, viewer)
            print(f"{count:>8,}  {label:<20} {ms:>6.0f} ms {items:>6}")
        store.close()


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
