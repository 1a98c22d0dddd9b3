"""Follow/unfollow and RSVP/cancel rounds at a user with a long history: what recording a
follow's or an RSVP's activity once, and withdrawing it when undone, costs as activities pile up.

    python -m bench.feed_bench [--follows 20000] [--seconds 5]

What one run does:
1. seeds a SQLite file through the repositories (bench/seed.py's users and events, then
   `store.follows.follow` and `store.activities.add_once` as the server records a follow):
   --follows + 3 users and one event; `heavy` follows --follows of them, so it has that many
   activities; `fresh` follows nobody and has none;
2. starts `python server.py` on the file, pinned to one core (`taskset -c 0`; this process,
   the load generator, runs on the other), BCRYPT_LOG_ROUNDS=4, logging at INFO as settings.yaml
   has it; `fresh` and `heavy` log in;
3. closed loop, one connection, --seconds each after a second of warm-up:
     POST /api/v1/users/<target>/follow and .../unfollow alternately (a user neither follows)
     POST /api/v1/events/<id>/rsvp and DELETE .../rsvp alternately
   first as `fresh` (the reference, in the same run), then as `heavy`; prints requests/s, p50
   and p99 of each, and the longest event-loop stall the server saw.

Target (printed, not asserted): `heavy` within 20% of `fresh`: a round's cost does not grow with
the actor's history (SQLite finds the subject by the index activities_by_subject, migration 4).
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

ROUNDS = ("follow/unfollow", "rsvp/cancel")


async def seed_file(path, follows):
    """(target id, event id): users u000000.. (u000000 `heavy`, u000001 `fresh`, u000002 the
    target of the follow rounds), one event, and heavy's follows with their activities."""
    from domain.activities import FOLLOW, SUMMARIES
    from storage.sqlite import SqliteStore
    store = SqliteStore(path)
    await store.open()
    try:
        password_hash = bcrypt.hashpw(seeding.PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        seeded = seeding.Seeded()
        await seeding.seed_users(store, seeded, follows + 3, password_hash)
        await seeding.seed_events(store, seeded, 1, random.Random(1))
        users = {}
        for i in range(follows + 3):
            users[i] = (await store.users.find_by_email(seeding.email_of(i)))["id"]
        heavy = users[0]
        now = seeding.now_ms()
        for first in range(3, follows + 3, seeding.BATCH):
            batch = range(first, min(follows + 3, first + seeding.BATCH))
            await asyncio.gather(*(store.follows.follow(heavy, users[i]) for i in batch))
            await asyncio.gather(*(store.activities.add_once({
                "type": FOLLOW, "actor_id": heavy, "actor_name": seeding.username_of(0), "event_id": None,
                "target_user_id": users[i], "timestamp": now - datetime.timedelta(seconds=i),
                "summary": SUMMARIES[FOLLOW].format(actor="u000000", target=seeding.username_of(i))})
                for i in batch))
        return users[2], seeded.event_ids[0]
    finally:
        await store.close()


def alternating(first, second, token):
    def make(n):
        method, path = first if n % 2 == 0 else second
        return method, path, None, token
    return make


async def measure(server, target, event_id, seconds):
    connection = await HttpConnection(server.port).open()
    tokens = {}
    for name, i in (("fresh", 1), ("heavy", 0)):
        tokens[name] = (await connection.json("POST", "/api/v1/auth/login", {
            "email": seeding.email_of(i), "password": seeding.PASSWORD}))["token"]
    connection.close()
    user, rsvp = f"/api/v1/users/{target}", f"/api/v1/events/{event_id}/rsvp"
    rounds = {"follow/unfollow": (("POST", user + "/follow"), ("POST", user + "/unfollow")),
              "rsvp/cancel": (("POST", rsvp), ("DELETE", rsvp))}
    rows = {}
    for name in ("fresh", "heavy"):
        for label in ROUNDS:
            first, second = rounds[label]
            rows[name, label] = await run_load(f"{label} {name}", server.port, alternating(first, second, tokens[name]),
                                               1, seconds, warmup_s=1.0, server=server)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--follows", type=int, default=20_000, help="activities (follows) of the heavy user")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    args = parser.parse_args()
    pin = pin_generator()
    print(load_note())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "feed.sqlite3")
        print(f"seeding {args.follows:,} follows with their activities ...", flush=True)
        target, event_id = asyncio.run(seed_file(path, args.follows))
        server = sqlite_server(path, directory, pin)
        rows, stall, errors = measured(server, measure(server, target, event_id, args.seconds))
    print(f"\nrequests/s at one connection (each request one half of a round); heavy has {args.follows:,} activities")
    print(f"{'':<18}{'fresh (reference)':>32}{'heavy':>32}{'heavy / fresh':>15}")
    for label in ROUNDS:
        fresh, heavy = rows["fresh", label], rows["heavy", label]
        cells = [f"{row.per_second:,.0f}/s, p50 {row.percentile_ms(0.5):.1f} ms, p99 {row.percentile_ms(0.99):.1f} ms"
                 for row in (fresh, heavy)]
        ratio = heavy.per_second / fresh.per_second if fresh.per_second else float("nan")
        errors_note = "" if not (fresh.errors or heavy.errors) else f"  ({fresh.errors + heavy.errors} non-2xx)"
        print(f"{label:<18}{cells[0]:>32}{cells[1]:>32}{ratio:>15.2f}{errors_note}")
    print(f"target: heavy within 20% of fresh; longest event-loop stall {stall_text(stall)}")
    for line in errors:
        print(f"server log: {line}")


if __name__ == "__main__":
    main()
