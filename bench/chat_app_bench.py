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
3. memory: 10,000 (or --idle-connections) idle authenticated connections, joined, in rooms of
   10: server RSS growth per connection (users and events are created before the baseline is
   taken). The clients are bench/crowd.py's processes; the servers' open files limit is raised
   to hold them all where this process may raise its hard limit (root with CAP_SYS_RESOURCE),
   else the run is capped at what the hard limit holds, and says so;
4. storm: 20,000 (--storm-clients) clients of rooms of 10 connecting at the same moment, each
   sending join_chat as soon as it is upgraded, as after a restart: time until the last has its
   recent_messages, refusals and resets, the server's CPU-seconds;
5. login: a room at half its maximum rate, chat p99 alone and during a burst of 20 logins
   (bcrypt at the default cost, 12).

    python -m bench.chat_app_bench [--part fanout|storage|idle|storm|login|all] [--idle-connections N]
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
import resource
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
from bench.crowd import Crowd

PYTHON = shlex.quote(sys.executable)
APP = f"{PYTHON} -m bench.chat_app_server --port {{port}}"
APP_SLOW_STORE = f"{APP} --store-delay-ms 2"
APP_REAL_BCRYPT = f"{APP} --bcrypt-rounds 12"
LOGIN_BURST = 20
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
            max_rate = busy_max_rate(load, server)
            half_rate = load.run_rate(server, max(1.0, max_rate.published_per_s / 2))
        finally:
            load.close()
        return ServerResult(name, max_rate, half_rate, setup_s)
    finally:
        server.stop()


def open_files_for(count):
    """Raises this process's open files limit, which the servers inherit, to hold `count`
    connections if it may (root with CAP_SYS_RESOURCE, within fs.nr_open); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1_000
    if wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (ValueError, OSError):
            return hard
    return max(wanted, hard)


def settle(server, limit_s=60.0):
    """Waits until the server stops computing (announcements, deferred writes)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = server.cpu_seconds()
        time.sleep(SETTLE_S)
        if server.cpu_seconds() - before < SETTLE_S / 10:
            return


def bench_idle(name, command, roster, connections, pin):
    """RSS growth per idle connection, once open and once joined; rosters are made first. Beyond
    what the server's open files limit holds (less 200 for its own files), the run is capped."""
    limit = open_files_for(connections)
    if connections > limit - 200:
        connections = (limit - 200) // IDLE_ROOM_SIZE * IDLE_ROOM_SIZE
        print(f"({name}: capped at {connections} connections: the open files limit, {limit}, could not be raised)")
    server = ServerProcess(name, command, pin)
    crowd = None
    try:
        urls = roster(server.port, connections // IDLE_ROOM_SIZE, IDLE_ROOM_SIZE)
        crowd = Crowd(urls)
        settle(server)
        baseline = server.rss_bytes()
        started = time.monotonic()
        opened_figures = crowd.run("open", at_once=False, join=False)
        settle(server)
        opened = server.rss_bytes()
        figures = crowd.run("join")
        settle(server)
        joined = server.rss_bytes()
        count = figures["opened"]
        print(f"{name:<10}{count:>8}{figures['joined']:>8}{limit:>8}{baseline / 2**20:>14.1f}"
              f"{(opened - baseline) / count / 1024:>16.1f}{(joined - baseline) / count / 1024:>18.1f}"
              f"{opened_figures['refused'] + opened_figures['reset']:>8}{time.monotonic() - started:>10.1f}")
    finally:
        if crowd is not None:
            crowd.close()
        server.stop()


def bench_storm(clients, pin):
    """Every client connects and joins at the same moment, as after a restart."""
    limit = open_files_for(clients)
    print(f"(server open files limit {limit})")
    server = ServerProcess("app", APP, pin)
    crowd = None
    try:
        urls = app_roster(server.port, clients // IDLE_ROOM_SIZE, IDLE_ROOM_SIZE)
        crowd = Crowd(urls)
        settle(server)
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        figures = crowd.run("open", at_once=True, join=True)
        cpu = server.cpu_seconds() - cpu_before
        last = figures["last_joined"] - started if figures["joined"] else float("nan")
        print(f"{clients:>8}{figures['opened']:>8}{figures['joined']:>8}{figures['refused']:>9}{figures['reset']:>7}"
              f"{figures['connect_failed']:>9}{figures['lost']:>6}"
              f"{last:>16.1f}{cpu:>10.1f}{cpu / max(1, figures['joined']) * 1000:>12.2f}")
    finally:
        if crowd is not None:
            crowd.close()
        server.stop()


def busy_max_rate(load, server):
    """The busy room's maximum rate: chat_bench keeps WINDOW messages in flight per room, too few
    for a busy room, so BUSY_WINDOW meanwhile."""
    chat_bench.WINDOW, saved = BUSY_WINDOW, chat_bench.WINDOW
    try:
        return load.run_max_rate(server)
    finally:
        chat_bench.WINDOW = saved


def bench_login_burst(pin):
    """The busy room at half its maximum rate, alone, then with LOGIN_BURST logins at once
    (bcrypt at cost 12) fired in the measured window. The server may use every core, as in
    production: pinned to one, its bcrypt threads would share the event loop's."""
    if pin:
        os.sched_setaffinity(0, range(os.cpu_count()))  # inherited by the server
    try:
        server = ServerProcess("app", APP_REAL_BCRYPT, False)
    finally:
        if pin:
            os.sched_setaffinity(0, {GENERATOR_CPU})
    try:
        load = LoadGenerator(app_roster(server.port, BUSY_ROOM.rooms, BUSY_ROOM.members))
        run = uuid.uuid4().hex[:6]
        with ThreadPoolExecutor(REGISTRATION_THREADS) as pool:
            list(pool.map(lambda n: register(server.port, f"l{run}n{n}"), range(LOGIN_BURST)))
        load.choose_publishers(BUSY_ROOM.publishers_per_room)
        load.join_all(server)
        try:
            max_rate = busy_max_rate(load, server)
            half = max(1.0, max_rate.published_per_s / 2)
            alone = load.run_rate(server, half)
            logins = []

            def login(n):
                started = time.monotonic()
                call(server.port, "POST", "/api/v1/auth/login",
                     {"email": f"l{run}n{n}@bench.example", "password": "bench password"})
                return time.monotonic() - started

            def burst():
                time.sleep(chat_bench.WARMUP_S + 0.5)  # inside the measured window
                with ThreadPoolExecutor(LOGIN_BURST) as pool:
                    logins.extend(pool.map(login, range(LOGIN_BURST)))
            burster = threading.Thread(target=burst)
            burster.start()
            during = load.run_rate(server, half)
            burster.join()
        finally:
            load.close()
    finally:
        server.stop()
    print(f"max rate {max_rate.published_per_s:.0f} msg/s; half rate {half:.0f} msg/s")
    print(f"{'run':<14}{'pub msg/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU':>9}")
    for label, result in (("alone", alone), (f"+{LOGIN_BURST} logins", during)):
        print(f"{label:<14}{result.published_per_s:>10.0f}{result.percentile_ms(0.5):>9.2f}"
              f"{result.percentile_ms(0.99):>9.2f}{result.server_cpu:>9.0%}")
    print(f"p99 with the burst / alone: {during.percentile_ms(0.99) / alone.percentile_ms(0.99):.2f}x; "
          f"logins took {min(logins):.2f} to {max(logins):.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "fanout", "storage", "idle", "storm", "login"], default="all")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--scenario", choices=list(SCENARIOS), action="append",
                        help="fan-out scenarios to run (repeatable; default: all)")
    parser.add_argument("--reference", metavar="DIR", help="another checkout whose application is measured too")
    parser.add_argument("--idle-servers", default="bare,app", help="of bare and app, comma-separated")
    parser.add_argument("--storm-clients", type=int, default=20_000)
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
        print(f"{'server':<10}{'conns':>8}{'joined':>8}{'nofile':>8}{'base RSS MiB':>14}{'KiB/conn open':>16}"
              f"{'KiB/conn joined':>18}{'refused':>8}{'setup s':>10}")
        for server in (bare, app):
            if server[0] in args.idle_servers.split(","):
                bench_idle(*server, args.idle_connections, pin)
        sys.stdout.flush()
    if args.part in ("all", "storm"):
        print(f"\n== storm: {args.storm_clients} clients in rooms of {IDLE_ROOM_SIZE} connect and join at once")
        print(f"{'clients':>8}{'opened':>8}{'joined':>8}{'refused':>9}{'reset':>7}{'no conn':>9}{'lost':>6}"
              f"{'last joined s':>16}"
              f"{'srv CPU-s':>10}{'CPU ms/cl':>12}")
        bench_storm(args.storm_clients, pin)
        sys.stdout.flush()
    if args.part in ("all", "login"):
        print(f"\n== login burst: {BUSY_ROOM.members} members in one room at half its maximum rate, "
              f"{LOGIN_BURST} logins at once (bcrypt cost 12)")
        bench_login_burst(pin)


if __name__ == "__main__":
    main()
