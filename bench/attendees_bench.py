"""The organizer's CSV export of a big event: how long the whole download takes, and the longest
the server's event loop is held meanwhile (the budget is 20 ms per callback).

    python -m bench.attendees_bench [--attendees 100000]

What one run does:
1. seeds the store through the repositories (bench/seed.py's users, with one precomputed bcrypt
   hash): --attendees + 1 users, one event of u000000 (an organizer) without a capacity, an RSVP
   of every other user, and every tenth of them checked in (by the organizer, every other one);
   SQLite into a file before the server starts, mongomock inside bench/mongomock_server.py;
2. starts the server as users start it (`python server.py`, pinned to one core when there are
   two); the organizer logs in;
3. the reference, in the same run: 20 requests for a JSON page of 100 attendees, then the longest
   event-loop stall the server has seen (login, bcrypt in its executor, and those pages);
4. the export: GET /api/v1/events/<id>/attendees.csv, read to the end; its time, rows and bytes,
   then the longest stall again. Every row is counted, so a short export shows.
"""
import argparse
import asyncio
import datetime
import os
import socket
import sys
import tempfile
import time

import bcrypt

from bench import seed as seeding
from bench.harness import PYTHON, ROOT, HttpConnection, ServerProcess, load_note, pin_generator, stall_text

sys.path.insert(0, str(ROOT))

JSON_PAGES = 20


async def seed_file(path, attendees):
    """Seeds the SQLite file; returns the event's id."""
    from storage.sqlite import SqliteStore
    store = SqliteStore(path)
    await store.open()
    try:
        return await seed_store(store, attendees)
    finally:
        await store.close()


async def seed_store(store, attendees):
    from domain.repositories import EventWindow
    password_hash = bcrypt.hashpw(seeding.PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    seeded = seeding.Seeded()
    await seeding.seed_users(store, seeded, attendees + 1, password_hash)
    organizer = seeded.organizer_ids[0]
    now = seeding.now_ms()
    event_id = await store.events.add({
        "title": "Stadium night", "description": "", "date": now + datetime.timedelta(minutes=10), "end_date": None,
        "category": "music", "location_address": "Paris", "location": {"type": "Point", "coordinates": list(seeding.CENTRE)},
        "geofence_radius": 100, "geofence": None, "capacity": None, "organizer_id": organizer,
        "created_at": now, "updated_at": now, "waitlist_enabled": True})
    window = EventWindow(now, datetime.timedelta(hours=12))
    opens = datetime.timedelta(hours=1)
    for first in range(1, attendees + 1, seeding.BATCH):
        batch = range(first, min(attendees + 1, first + seeding.BATCH))
        users = [(await store.users.find_by_email(seeding.email_of(i)))["id"] for i in batch]
        await asyncio.gather(*(store.events.take_seat(event_id, user, window) for user in users))
        await asyncio.gather(*(store.events.record_arrival(event_id, user, window, opens,
                                                           checked_in_by=organizer if i % 20 == 0 else None)
                               for i, user in zip(batch, users) if i % 10 == 0))
    return event_id


def download(port, path, token):
    """(seconds, status, body bytes) of one GET read to its end on a fresh connection."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    seconds = time.perf_counter() - started
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return seconds, int(head.split(b" ", 2)[1]), _dechunked(body) if b"chunked" in head.lower() else body


def _dechunked(body):
    out, at = [], 0
    while True:
        line_end = body.index(b"\r\n", at)
        size = int(body[at:line_end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[line_end + 2:line_end + 2 + size])
        at = line_end + 2 + size + 2


async def reference(port, event_id):
    connection = await HttpConnection(port).open()
    token = (await connection.json("POST", "/api/v1/auth/login", {
        "email": seeding.email_of(0), "password": seeding.PASSWORD}))["token"]
    started = time.perf_counter()
    for _ in range(JSON_PAGES):
        page = await connection.json("GET", f"/api/v1/events/{event_id}/attendees?limit=100", token=token)
        assert len(page["items"]) == 100
    per_page = (time.perf_counter() - started) / JSON_PAGES
    connection.close()
    return token, per_page


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attendees", type=int, default=100_000)
    args = parser.parse_args()
    pin = pin_generator()
    print(load_note())
    with tempfile.TemporaryDirectory() as directory:
        environment = {"BCRYPT_LOG_ROUNDS": 4, "LOG_LEVEL": "WARNING", "MEDIA_ROOT": os.path.join(directory, "media")}
        print(f"seeding {args.attendees:,} attendees ...", flush=True)
        path = os.path.join(directory, "attendees.sqlite3")
        event_id = asyncio.run(seed_file(path, args.attendees))
        server = ServerProcess("sqlite", [PYTHON, "server.py"], {**environment, "SQLITE_PATH": path}, directory, pin)
        try:
            token, per_page = asyncio.run(reference(server.port, event_id))
            stall_before = server.metric()
            seconds, status, body = download(server.port, f"/api/v1/events/{event_id}/attendees.csv", token)
            stall_after = server.metric()
            errors = server.error_lines()
        finally:
            server.stop()
    rows = body.count(b"\n") - 1
    print(f"\nreference: a JSON page of 100 attendees {per_page * 1000:.1f} ms; longest loop stall so far "
          f"{stall_text(stall_before)}")
    print(f"CSV export: status {status}, {rows:,} rows ({'all' if rows == args.attendees else 'SHORT'}), "
          f"{len(body) / 1e6:.1f} MB in {seconds:.2f} s; longest loop stall after it {stall_text(stall_after)}")
    print("target: no stall above 20 ms")
    for line in errors:
        print(f"server log: {line}")


if __name__ == "__main__":
    main()
