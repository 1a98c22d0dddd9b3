"""Cancellations at a full event with 10,000 waiting: each promotes the first in line and moves
everyone else up one place, which is 9,999 `waitlist_position` notifications to store. The request
must not wait for them (they are written in the background, in batches), and the event loop must
stay responsive meanwhile.

    python -m bench.notify_bench [--waiting 10000] [--cancels 5]

What one run does:
1. seeds a SQLite file through the repositories: 2 × --cancels + 1 users, event L (capacity
   --cancels, its seats taken by users 0.., then --waiting - 1 ids in line and user `last` at the end),
   event R, the reference (the same seats taken by other users, nobody waiting);
2. starts `python server.py` on the file, pinned to one core (`taskset -c 0`; this process, the
   load generator, on the other), BCRYPT_LOG_ROUNDS=4;
3. the seated users of R cancel one after the other (the reference: nobody to promote or tell),
   then those of L; prints each DELETE's latency, then how long until `last` (GET
   /api/v1/notifications) is told its final place (--waiting - --cancels), and the longest
   event-loop stall the server saw.

Target (printed, not asserted): a cancel at L within a few milliseconds of one at R, whatever
--waiting; every place told within seconds; no stall over 20 ms.

Then the members of a big event (--going, 100,000: everyone the server takes) told of an edit and
of a deletion, beside a small one (5 going), the reference. Seeded through the repositories too:
`watcher` (a real user) and --going - 1 ids that sort before every real one, so the watcher is on
the last page of members and is told last. Each of the four steps (edit small, edit big, delete
small, delete big) runs on a fresh server, as the stall metric is the longest since start: prints
the request's latency, how long until the watcher is told, and the longest stall.
"""
import argparse
import datetime
import asyncio
import os
import random
import secrets
import sys
import tempfile
import time

import bcrypt

from bench import seed as seeding
from bench.harness import ROOT, HttpConnection, load_note, measured, pin_generator, sqlite_server, stall_text

sys.path.insert(0, str(ROOT))


async def seed_file(path, waiting, cancels):
    """(line event id, reference event id)."""
    from domain.repositories import EventWindow
    from storage.sqlite import SqliteStore
    store = SqliteStore(path)
    await store.open()
    try:
        password_hash = bcrypt.hashpw(seeding.PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        seeded = seeding.Seeded()
        await seeding.seed_users(store, seeded, 2 * cancels + 2, password_hash)  # the last: the watcher
        ids = [(await store.users.find_by_email(seeding.email_of(i)))["id"] for i in range(2 * cancels + 1)]
        now = seeding.now_ms()
        window = EventWindow(now, datetime.timedelta(hours=3))
        events = []
        for n in range(2):
            fields = seeding.event_fields(n, seeded.organizer_ids[0], random.Random(n), now, seeded.box)
            events.append(await store.events.add({**fields, "capacity": cancels, "waitlist_enabled": True,
                                                  "title": ("Line", "Reference")[n]}))
        line, reference = events
        for i in range(cancels):
            assert await store.events.take_seat(line, ids[i], window) is not None
            assert await store.events.take_seat(reference, ids[cancels + i], window) is not None
        for _ in range(waiting - 1):
            assert await store.events.join_waitlist(line, secrets.token_hex(12), window) is not None
        assert await store.events.join_waitlist(line, ids[-1], window) is not None
        return line, reference
    finally:
        await store.close()


async def seed_members(path, cancels, going):
    """(small event id, big event id): the watcher (user 2 × cancels + 1) going to both, with 4
    others at the small one and going - 1 at the big one, all ids that sort before real ones."""
    from domain.repositories import EventWindow
    from storage.sqlite import SqliteStore
    store = SqliteStore(path)
    await store.open()
    try:
        watcher = (await store.users.find_by_email(seeding.email_of(2 * cancels + 1)))["id"]
        organizer = (await store.users.find_by_email(seeding.email_of(0)))["id"]
        now = seeding.now_ms()
        window = EventWindow(now, datetime.timedelta(hours=3))
        events = []
        for n, (title, others) in enumerate((("Small", 4), ("Big", going - 1))):
            fields = seeding.event_fields(2 + n, organizer, random.Random(2 + n), now, seeding.Seeded().box)
            event_id = await store.events.add({**fields, "capacity": None, "title": title})
            for i in range(others):
                assert await store.events.take_seat(event_id, f"00{n:02x}{i:020x}", window) is not None
            assert await store.events.take_seat(event_id, watcher, window) is not None
            events.append(event_id)
        return tuple(events)
    finally:
        await store.close()


async def tell_members(server, cancels, method, event, body):
    """(the request's latency in ms, seconds until the watcher is told after the answer)."""
    connection = await HttpConnection(server.port).open()
    organizer, watcher = [(await connection.json("POST", "/api/v1/auth/login", {
        "email": seeding.email_of(i), "password": seeding.PASSWORD}))["token"] for i in (0, 2 * cancels + 1)]
    before = len((await connection.json("GET", "/api/v1/notifications?limit=100", token=watcher))["items"])
    started = time.perf_counter()
    status, raw = await connection.request(method, f"/api/v1/events/{event}", body, token=organizer)
    answered = time.perf_counter()
    assert status in (200, 204), (status, raw[:300])
    told_after = None
    while time.perf_counter() - answered < 300:
        page = await connection.json("GET", "/api/v1/notifications?limit=100", token=watcher)
        if len(page["items"]) > before:
            told_after = time.perf_counter() - answered
            break
        await asyncio.sleep(0.05)
    connection.close()
    return (answered - started) * 1000, told_after


async def measure(server, line, reference, cancels, waiting):
    connection = await HttpConnection(server.port).open()
    tokens = [(await connection.json("POST", "/api/v1/auth/login", {
        "email": seeding.email_of(i), "password": seeding.PASSWORD}))["token"] for i in range(2 * cancels + 1)]
    timings = {}
    for name, event, seated in (("reference", reference, tokens[cancels:2 * cancels]),
                                ("line", line, tokens[:cancels])):
        latencies = []
        for token in seated:
            started = time.perf_counter()
            await connection.json("DELETE", f"/api/v1/events/{event}/rsvp", token=token)
            latencies.append((time.perf_counter() - started) * 1000)
        timings[name] = latencies
    cancelled_at = time.perf_counter()
    final_place = waiting - cancels
    told_after = None
    while time.perf_counter() - cancelled_at < 120:
        page = await connection.json("GET", "/api/v1/notifications", token=tokens[-1])
        if page["items"] and page["items"][0]["position"] == final_place:
            told_after = time.perf_counter() - cancelled_at
            break
        await asyncio.sleep(0.05)
    connection.close()
    return timings, told_after


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=10_000, help="users in line at the line event")
    parser.add_argument("--cancels", type=int, default=5, help="seats, each cancelled once")
    parser.add_argument("--going", type=int, default=100_000, help="users going to the big event")
    args = parser.parse_args()
    pin = pin_generator()
    print(load_note())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "notify.sqlite3")
        print(f"seeding a line of {args.waiting:,} ...", flush=True)
        line, reference = asyncio.run(seed_file(path, args.waiting, args.cancels))
        print(f"seeding an event with {args.going:,} going ...", flush=True)
        small, big = asyncio.run(seed_members(path, args.cancels, args.going))
        server = sqlite_server(path, directory, pin)
        (timings, told_after), stall, errors = measured(
            server, measure(server, line, reference, args.cancels, args.waiting))
        members = []
        for name, method, event, body in (("edit small", "PATCH", small, {"title": "Small, edited"}),
                                          ("edit big", "PATCH", big, {"title": "Big, edited"}),
                                          ("delete small", "DELETE", small, None),
                                          ("delete big", "DELETE", big, None)):
            server = sqlite_server(path, directory, pin)
            (latency, told), member_stall, member_errors = measured(
                server, tell_members(server, args.cancels, method, event, body))
            members.append((name, latency, told, member_stall))
            errors += member_errors
    for name in ("reference", "line"):
        cells = ", ".join(f"{ms:.1f}" for ms in timings[name])
        print(f"DELETE rsvp at {name:<9} (ms, in order): {cells}")
    told = "never (within 120 s)" if told_after is None else f"{told_after:.2f} s"
    print(f"the last of {args.waiting:,} in line told its final place {told} after the last cancel answered")
    print(f"longest event-loop stall {stall_text(stall)} (target: under 20 ms)")
    print(f"members told (small: 5 going, the reference; big: {args.going:,} going), each on a fresh server:")
    for name, latency, told, member_stall in members:
        told_text = "never (within 300 s)" if told is None else f"{told:.2f} s"
        print(f"  {name:<12}: answered in {latency:8.1f} ms, the watcher (last page) told {told_text} after; "
              f"longest stall {stall_text(member_stall)}")
    for line_text in errors:
        print(f"server log: {line_text}")


if __name__ == "__main__":
    main()
