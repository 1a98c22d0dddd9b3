"""How fast the stores answer the discovery queries behind GET /events: `store.events.find`.

    python -m bench.discovery_bench [--sizes 1000,10000,100000] [--mongomock-max 1000]

No HTTP and no server: each store is seeded through the repositories (bench/seed.py: events
uniform over a 500 x 500 km box around Paris, dated within the coming year) and asked
`Events.find(DiscoveryQuery(...))` directly, in this process, median of RUNS runs, pages of
20. It separates what the store costs from what bench/rest_bench.py measures over HTTP.

Stores: SQLite (a file in a temporary directory) and, as the reference, the MongoDB adapter
over mongomock-motor at sizes up to --mongomock-max (it scans every document in Python, and
seeding it is quadratic: 1,000 events take several seconds, 10,000 would take many minutes).
Queries: by date (first page, and with a category), a text search (`q`, literal,
case-insensitive, over title and description), and nearby searches at 1, 10 and 50 km from
random centres (a different centre each run). mongomock implements no `$geoNear`, which
the MongoDB adapter's nearby search uses: those rows say n/a there.
"""
import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import seed as seeding  # noqa: E402
from domain.discovery import DiscoveryQuery  # noqa: E402

RUNS = 5


def queries(rng, area):
    min_lng, min_lat, max_lng, max_lat = area

    def centre():
        return (rng.uniform(min_lng + 1, max_lng - 1), rng.uniform(min_lat + 0.7, max_lat - 0.7))
    yield "by date, first page", lambda: DiscoveryQuery()
    yield "by date, category", lambda: DiscoveryQuery(category="music")
    yield "text 'event 4242'", lambda: DiscoveryQuery(text="event 4242")
    for km in (1, 10, 50):
        yield f"nearby {km} km", lambda km=km: DiscoveryQuery(near=centre(), radius_m=km * 1000)


async def time_queries(store, rng, area, viewer_id):
    rows = []
    for label, make in queries(rng, area):
        timings, items = [], []
        try:
            for _ in range(RUNS):
                query = make()
                started = time.perf_counter()
                found = await store.events.find(query, viewer_id)
                timings.append(time.perf_counter() - started)
                items.append(len(found))
        except NotImplementedError as error:  # mongomock has no $geoNear
            rows.append((label, None, "mongomock has no $geoNear" if "$geoNear" in str(error) else str(error)[:60],
                         None))
            continue
        rows.append((label, statistics.median(timings) * 1000, max(timings) * 1000, statistics.median(items)))
    return rows


def sqlite_store(directory, size):
    from storage.sqlite import SqliteStore
    return SqliteStore(os.path.join(directory, f"events{size}.sqlite3"))


def mongomock_store(directory, size):
    import mongomock_motor

    from storage.mongo import MongoStore
    return MongoStore(mongomock_motor.AsyncMongoMockClient(tz_aware=True), f"bench{size}")


async def bench(name, make_store, directory, size, hash_text):
    store = make_store(directory, size)
    await store.open()
    try:
        seeded = await seeding.seed(store, max(1, size // 100), size, hash_text)
        print(f"{name} {size:,}: seeded {size:,} events in {seeded.event_seconds:.1f} s", flush=True)
        rows = await time_queries(store, random.Random(size), seeded.box, seeded.organizer_ids[0])
    finally:
        await store.close()
    for label, median_ms, max_ms, items in rows:
        if median_ms is None:
            print(f"{name:<10}{size:>9,}  {label:<22}  n/a: {max_ms}", flush=True)
        else:
            print(f"{name:<10}{size:>9,}  {label:<22}{median_ms:>9.2f}{max_ms:>9.2f}{items:>7.0f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="event counts, comma-separated")
    parser.add_argument("--mongomock-max", type=int, default=1_000, help="largest size for mongomock (0: none)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"Events.find, pages of 20, median and max of {RUNS} runs (ms); items: median page length")
    print(f"{'store':<10}{'events':>9}  {'query':<22}{'median':>9}{'max':>9}{'items':>7}")
    with tempfile.TemporaryDirectory(prefix="discovery_bench_") as directory:
        for size in sizes:
            asyncio.run(bench("sqlite", sqlite_store, directory, size, "not-a-hash"))
            if size <= args.mongomock_max:
                asyncio.run(bench("mongomock", mongomock_store, directory, size, "not-a-hash"))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
