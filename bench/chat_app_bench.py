"""The real chat endpoint in the fan-out benchmark, beside the bare Tornado reference.

One run, with bench/chat_bench.py's load generator (this process, pinned to its own core, its
CPU printed beside the server's), measures:

1. fan-out: N = 100 and N = 1,000 members in one room, and 100 rooms of 10, for the bare
   Tornado broadcast server (no auth, no storage, `write_message` to each member) and for the
   application (bench/chat_app_server.py, on its default store, SQLite in a temporary file):
   members registered, RSVPed and authenticated by token, every message stored before it is
   broadcast;
2. storage: one busy room (20 members, all publishing, up to 64 messages in flight) for the
   bare server, the application, and the application with every write of messages to the
   store (one `messages.append` per batch) slowed by 2 ms;
3. memory: 10,000 idle authenticated connections, joined, in rooms of 10: server RSS growth
   per connection (users and events are created before the baseline is taken).

    python -m bench.chat_app_bench [--part fanout|storage|idle|all] [--idle-connections N]
                                   [--scenario room1000 ...] [--reference DIR]

`--reference DIR`: the fan-out tables also measure the application in DIR, another checkout of
this repository (e.g. `git worktree add DIR main`), first, as the baseline of the comparison line:
a change's cost beside today's figure, in the same run on the same machine.

Figures only, no assertions.
"""
import argparse
import http.client
import json
import os
import shlex
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from bench import chat_bench
from bench.bare_broadcast_server import raise_open_file_limit
from bench.chat_bench import (DEFAULT_SERVERS, GENERATOR_CPU, IDLE_ROOM_SIZE, SCENARIOS, SERVER_CPU, SETTLE_S,
                              LoadGenerator, Scenario, ServerProcess, ServerResult, bench_server,
                              demo_roster, print_fanout_table)

PYTHON = shlex.quote(sys.executable)
APP = f"{PYTHON} -m bench.chat_app_server --port {{port}}"
APP_SLOW_STORE = f"{APP} --store-delay-ms 2"
BUSY_ROOM = Scenario("busy_room", rooms=1, members=20, publishers_per_room=20)
BUSY_WINDOW = 64  # messages in flight in the busy room: enough for batches to form
REGISTRATION_THREADS = 4

_connections = threading.local()


def call(port, method, path, body=None, token=None):
    """One JSON request to the application; returns the envelope's data."""
    connection = getattr(_connections, "by_port", {}).get(port)
    if connection is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        _connections.by_port = {**getattr(_connections, "by_port", {}), port: connection}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    connection.request(method, path, json.dumps(body if body is not None else {}), headers)
    response = connection.getresponse()
    reply = json.loads(response.read())
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {reply}")
    return reply["data"]


def register(port, username, role="attendee"):
    data = call(port, "POST", "/api/v1/auth/register", {
        "username": username, "email": f"{username}@bench.example", "password": "bench password",
        "role": role})
    return data["token"]


def app_roster(port, rooms, members):
    """Per room an event, its organizer (the first member) and members - 1 RSVPed attendees;
    returns each member's chat URL with its token."""
    run = uuid.uuid4().hex[:6]
    date = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat(timespec="seconds").replace("+00:00", "Z")

    def open_room(room):
        token = register(port, f"o{run}r{room}", role="organizer")
        event = call(port, "POST", "/api/v1/events", {
            "title": f"Bench room {room}", "date": date, "category": "bench",
            "location_address": "Loopback", "location": {"type": "Point", "coordinates": [2.35, 48.85]}},
            token=token)
        return event["id"], token

    def attendee(args):
        room, member, event_id = args
        token = register(port, f"a{run}r{room}m{member}")
        call(port, "POST", f"/api/v1/events/{event_id}/rsvp", token=token)
        return token

    with ThreadPoolExecutor(REGISTRATION_THREADS) as pool:
        opened = list(pool.map(open_room, range(rooms)))
        jobs = [(room, member, opened[room][0]) for room in range(rooms) for member in range(1, members)]
        tokens = iter(pool.map(attendee, jobs))
    urls = []
    for event_id, organizer_token in opened:
        room_tokens = [organizer_token] + [next(tokens) for _ in range(members - 1)]
        urls.append([f"ws://127.0.0.1:{port}/ws/chat/{event_id}?token={token}" for token in room_tokens])
    return urls


def bench_busy_room(name, command, roster, pin):
    """The busy room at the highest rate the server keeps up with, then at half of it."""
    server = ServerProcess(name, command, pin)
    try:
        started = time.monotonic()
        load = LoadGenerator(roster(server.port, BUSY_ROOM.rooms, BUSY_ROOM.members))
        load.choose_publishers(BUSY_ROOM.publishers_per_room)
        load.join_all(server)
        setup_s = time.monotonic() - started
        try:
            # chat_bench keeps WINDOW messages in flight per room, too few for a busy room.
            chat_bench.WINDOW, saved = BUSY_WINDOW, chat_bench.WINDOW
            try:
                max_rate = load.run_max_rate(server)
            finally:
                chat_bench.WINDOW = saved
            half_rate = load.run_rate(server, max(1.0, max_rate.published_per_s / 2))
        finally:
            load.close()
        return ServerResult(name, max_rate, half_rate, setup_s)
    finally:
        server.stop()


def bench_idle(name, command, roster, connections, pin):
    """RSS growth per idle connection, once open and once joined; rosters are made first."""
    server = ServerProcess(name, command, pin)
    try:
        urls = roster(server.port, connections // IDLE_ROOM_SIZE, IDLE_ROOM_SIZE)
        time.sleep(SETTLE_S)
        baseline = server.rss_bytes()
        started = time.monotonic()
        load = LoadGenerator(urls)
        load.settle(server)
        opened = server.rss_bytes()
        load.join_all(server)
        joined = server.rss_bytes()
        count = len(load.clients)
        print(f"{name:<10}{count:>8}{baseline / 2**20:>14.1f}{(opened - baseline) / count / 1024:>16.1f}"
              f"{(joined - baseline) / count / 1024:>18.1f}{load.counters.lost:>6}"
              f"{time.monotonic() - started:>10.1f}")
        load.close()
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "fanout", "storage", "idle"], default="all")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--scenario", choices=list(SCENARIOS), action="append",
                        help="fan-out scenarios to run (repeatable; default: all)")
    parser.add_argument("--reference", metavar="DIR", help="another checkout whose application is measured too")
    args = parser.parse_args()
    limit = raise_open_file_limit()
    pin = (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    print(f"server on CPU {SERVER_CPU}, load generator on CPU {GENERATOR_CPU}" if pin else "one CPU, shared")
    print(f"open files limit {limit}; CPU columns: share of one core during the measured window")
    bare = ("bare", DEFAULT_SERVERS["bare"], demo_roster)
    app = ("app", APP, app_roster)
    app_slow_store = ("app+2ms", APP_SLOW_STORE, app_roster)

    if args.part in ("all", "fanout"):
        # The checkout's own server script, which puts its checkout first on sys.path.
        reference = (("app@ref", f"{PYTHON} {shlex.quote(os.path.join(args.reference, 'bench', 'chat_app_server.py'))}"
                      " --port {port}", app_roster),) if args.reference else ()
        servers = (*reference, app) if reference else (bare, app)
        for name in args.scenario or SCENARIOS:
            scenario = SCENARIOS[name]
            print_fanout_table(scenario, [bench_server(name, command, scenario, roster, pin)
                                          for name, command, roster in servers])
            sys.stdout.flush()
    if args.part in ("all", "storage"):
        print_fanout_table(BUSY_ROOM, [bench_busy_room(*server, pin) for server in (bare, app, app_slow_store)])
        print("app+2ms: every messages.append (one per stored batch) waits 2 ms first; pub msg/s is messages "
              "stored and broadcast per second")
        sys.stdout.flush()
    if args.part in ("all", "idle"):
        print(f"\n== idle: {args.idle_connections} authenticated connections in rooms of {IDLE_ROOM_SIZE}")
        print(f"{'server':<10}{'conns':>8}{'base RSS MiB':>14}{'KiB/conn open':>16}{'KiB/conn joined':>18}"
              f"{'lost':>6}{'setup s':>10}")
        for server in (bare, app):
            bench_idle(*server, args.idle_connections, pin)


if __name__ == "__main__":
    main()
