"""Calendar files and feeds: what writing iCalendar text costs the server, and that a full feed
(domain/calendar.py FEED_LIMIT entries, written off the event loop) does not hold up the JSON
requests served beside it.

    python -m bench.calendar_bench [--seconds 5]

What one run does:
1. seeds a SQLite file through the repositories: a few users, FEED_LIMIT + 50 events (bench/seed.py),
   user u000001 going to all of them (`take_seat`), with a known calendar key;
2. starts `python server.py` on the file, pinned to one core (`taskset -c 0`; this process, the
   load generator, runs on the other), BCRYPT_LOG_ROUNDS=4, logging at INFO;
3. closed loop, one connection each, --seconds per row after a second of warm-up:
     GET /api/v1/events/<id>              (the event as JSON: the reference)
     GET /api/v1/events/<id>/event.ics    (the same event as a calendar file)
     GET /api/v1/users/me/calendar.ics    (the full feed, FEED_LIMIT entries)
     GET /api/v1/events/<id> again, while another connection polls the feed non-stop
   and prints requests/s, p50 and p99 of each, and the longest event-loop stall the server saw.

Targets (printed, not asserted): event.ics within 2x the JSON read; the JSON read's p99 beside a
feed being written stays under 2x its p99 alone plus 20 ms (the loop's budget); no stall > 20 ms.
"""
import argparse
import asyncio
import datetime
import os
import random
import sys
import tempfile

import bcrypt

from bench import seed as seeding
from bench.harness import (ROOT, HttpConnection, load_note, measured, pin_generator, run_load, sqlite_server,
                           stall_text)

sys.path.insert(0, str(ROOT))

KEY = "bench-calendar-key-0123456789abcdef"


async def seed_file(path):
    """The id of one seeded event; u000001 goes to all of them and has the calendar key KEY."""
    from domain.calendar import FEED_LIMIT, key_digest
    from domain.repositories import EventWindow
    from storage.sqlite import SqliteStore
    store = SqliteStore(path)
    await store.open()
    try:
        password_hash = bcrypt.hashpw(seeding.PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        seeded = seeding.Seeded()
        await seeding.seed_users(store, seeded, seeding.ORGANIZER_EVERY + 2, password_hash)
        await seeding.seed_events(store, seeded, FEED_LIMIT + 50, random.Random(1))
        user = await store.users.find_by_email(seeding.email_of(1))
        window = EventWindow(seeding.now_ms(), datetime.timedelta(hours=12))
        for event_id in seeded.event_ids:
            await store.events.take_seat(event_id, user["id"], window)
        await store.users.set_calendar_key(user["id"], key_digest(KEY))
        return seeded.event_ids[0]
    finally:
        await store.close()


def repeating(path, token=None):
    return lambda n: ("GET", path, None, token)


async def measure(server, event_id, seconds):
    connection = await HttpConnection(server.port).open()
    token = (await connection.json("POST", "/api/v1/auth/login", {
        "email": seeding.email_of(1), "password": seeding.PASSWORD}))["token"]
    connection.close()
    event, ics, feed = f"/api/v1/events/{event_id}", f"/api/v1/events/{event_id}/event.ics", \
        f"/api/v1/users/me/calendar.ics?key={KEY}"
    rows = {}
    rows["event JSON (reference)"] = await run_load("json", server.port, repeating(event, token), 1, seconds,
                                                    server=server)
    rows["event.ics"] = await run_load("ics", server.port, repeating(ics, token), 1, seconds, server=server)
    rows["feed (full)"] = await run_load("feed", server.port, repeating(feed), 1, seconds, server=server)
    beside, _ = await asyncio.gather(
        run_load("json beside feed", server.port, repeating(event, token), 1, seconds, server=server),
        run_load("feed beside json", server.port, repeating(feed), 1, seconds + 1.5, server=server))
    rows["event JSON beside a feed"] = beside
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    args = parser.parse_args()
    pin = pin_generator()
    print(load_note())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "calendar.sqlite3")
        print("seeding ...", flush=True)
        event_id = asyncio.run(seed_file(path))
        server = sqlite_server(path, directory, pin)
        rows, stall, errors = measured(server, measure(server, event_id, args.seconds))
    print(f"\n{'one connection each':<28}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for label, row in rows.items():
        print(f"{label:<28}{row.per_second:>12,.0f}{row.percentile_ms(0.5):>10.1f}{row.percentile_ms(0.99):>10.1f}"
              f"{row.errors:>8}")
    print(f"targets: event.ics within 2x the JSON read; JSON p99 beside a feed < 2x alone + 20 ms; "
          f"longest event-loop stall {stall_text(stall)} (budget 20 ms)")
    for line in errors:
        print(f"server log: {line}")


if __name__ == "__main__":
    main()
