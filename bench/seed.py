"""Seeds a store through its repositories (`domain/repositories.py`), as the benchmarks need it:
users with one precomputed bcrypt hash, events spread over a 500 km box around Paris, dated in
the coming year. Used by bench/rest_bench.py (straight into the SQLite file, before the server
starts) and bench/mongomock_server.py (into its in-memory store, before it serves).

Every record goes through `store.users.add` / `store.events.add`, one call each (the
repositories have no bulk insert); `BATCH` calls are awaited together so that the store's
thread (or driver) always has the next one queued.
"""
import asyncio
import datetime
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field

PASSWORD = "bench password"  # every seeded user's password
ORGANIZER_EVERY = 100  # user i is an organizer when i % ORGANIZER_EVERY == 0; the rest attend
BATCH = 500
CENTRE = (2.3522, 48.8566)  # Paris (lng, lat)
HALF_SIDE_KM = 250.0  # events fall in a 500 x 500 km box around CENTRE
CATEGORIES = ("music", "tech", "sport", "art", "food", "family", "outdoors", "talks")
KM_PER_DEGREE = math.pi * 6371.0088 / 180


def box(centre=CENTRE, half_side_km=HALF_SIDE_KM):
    """(min_lng, min_lat, max_lng, max_lat) of the square around `centre`."""
    lng, lat = centre
    dlat = half_side_km / KM_PER_DEGREE
    dlng = half_side_km / (KM_PER_DEGREE * math.cos(math.radians(lat)))
    return (lng - dlng, lat - dlat, lng + dlng, lat + dlat)


def email_of(i):
    return f"u{i:06d}@bench.example"


def username_of(i):
    return f"u{i:06d}"


@dataclass
class Seeded:
    users: int = 0
    organizer_ids: list = field(default_factory=list)
    event_ids: list = field(default_factory=list)
    user_seconds: float = 0.0
    event_seconds: float = 0.0
    box: tuple = field(default_factory=box)

    def save(self, path):
        with open(path, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls(**json.load(f))


def now_ms():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def event_fields(i, organizer_id, rng, now, area):
    min_lng, min_lat, max_lng, max_lat = area
    date = now + datetime.timedelta(minutes=rng.randrange(60, 365 * 24 * 60))
    return {
        "title": f"Bench event {i}",
        "description": f"Event number {i}, seeded for the REST benchmark. " * 2,
        "date": date,
        "end_date": date + datetime.timedelta(hours=rng.randrange(2, 7)) if rng.random() < 0.5 else None,
        "category": rng.choice(CATEGORIES),
        "location_address": f"{i} Bench Street",
        "location": {"type": "Point", "coordinates": [rng.uniform(min_lng, max_lng), rng.uniform(min_lat, max_lat)]},
        "geofence_radius": 100,
        "geofence": None,
        "capacity": rng.randrange(20, 500) if rng.random() < 0.3 else None,
        "organizer_id": organizer_id,
        "created_at": now,
        "updated_at": now,
    }


async def seed_users(store, seeded, count, password_hash):
    """Adds users number seeded.users .. count-1."""
    started = time.perf_counter()
    now = now_ms()
    while seeded.users < count:
        first, last = seeded.users, min(count, seeded.users + BATCH)
        records = await asyncio.gather(*(
            store.users.add(username_of(i), email_of(i), "organizer" if i % ORGANIZER_EVERY == 0 else "attendee",
                            password_hash, now)
            for i in range(first, last)))
        seeded.organizer_ids += [r["id"] for i, r in zip(range(first, last), records) if i % ORGANIZER_EVERY == 0]
        seeded.users = last
    seeded.user_seconds += time.perf_counter() - started


async def seed_events(store, seeded, count, rng):
    """Adds events until there are `count`, organized by the seeded organizers in turn."""
    started = time.perf_counter()
    now = now_ms()
    while len(seeded.event_ids) < count:
        first, last = len(seeded.event_ids), min(count, len(seeded.event_ids) + BATCH)
        organizers = seeded.organizer_ids
        seeded.event_ids += await asyncio.gather(*(
            store.events.add(event_fields(i, organizers[i % len(organizers)], rng, now, seeded.box))
            for i in range(first, last)))
    seeded.event_seconds += time.perf_counter() - started


async def seed(store, users, events, password_hash, rng_seed=20260101, deadline_s=None, chunk=None,
               progress=None):
    """Seeds an opened store with `users` users and `events` events. With `deadline_s`, users
    and events are added alternately in chunks (both grow together) and seeding stops at the
    first chunk boundary past the deadline: `Seeded` says how far it got."""
    rng = random.Random(rng_seed)
    seeded = Seeded()
    started = time.monotonic()
    chunk = chunk or max(users, events, 1)
    while seeded.users < users or len(seeded.event_ids) < events:
        await seed_users(store, seeded, min(users, seeded.users + chunk), password_hash)
        await seed_events(store, seeded, min(events, len(seeded.event_ids) + chunk), rng)
        if progress:
            progress(seeded)
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            break
    return seeded
