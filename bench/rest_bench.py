"""REST API throughput and latency at 100,000 events and 100,000 users: SQLite against mongomock.

    python -m bench.rest_bench [--events 100000] [--users 100000] [--bcrypt-rounds 12]
                               [--seconds 5] [--connections 8] [--reference-size 1000]
                               [--reference-seed-seconds 60] [--no-reference]

What one run does:
1. times one bcrypt hash (and one check) at the server's cost (`--bcrypt-rounds`, default 12 as
   in settings.yaml), here in the load generator: every seeded user gets that one hash;
2. seeds a SQLite file DIRECTLY through the repositories (`SqliteStore(path)`, `store.open()`,
   `store.users.add`, `store.events.add`; bench/seed.py): --users users (one in 100 an
   organizer), --events events spread uniformly over a 500 x 500 km box around Paris, dated
   within the coming year. Prints how fast the repositories insert (one call, so one
   transaction, per record: about 75 s for 100,000 of each on this machine);
3. first on a small file (--small, 1,000 users): starts `python server.py` on it and measures
   registration and login, to compare with the same at full size;
4. starts `python server.py` on the full file, pinned to one core (`taskset -c 0`; this
   process, an asyncio keep-alive HTTP client, runs on the other), logging at INFO as
   settings.yaml has it (one access line per request), and measures, closed loop, --seconds
   each after a second of warm-up, with the tokens of 8 seeded users who logged in:
     GET /healthz                                 the reference: no database, no auth
     GET /api/v1/events/<random id>  (with a token)   target >= 40% of healthz's rate
     GET /api/v1/users/me                               target >= 50% of healthz's rate
     GET /api/v1/events?lat=&lng=&radius_km=10&limit=20  at 1 connection: target p50 <= 20 ms,
                                                         p99 <= 50 ms; then at --connections
     GET /api/v1/events?q=event%20<n>&limit=20          (extra) a text search, at 1 connection
     POST /api/v1/auth/register, POST /api/v1/auth/login  one connection, --auth-requests each,
                                                         ms per request beside one bcrypt hash
   then reads the longest event-loop stall from /metrics (`event_loop_stall_max_seconds`);
5. the reference: the same requests against bench/mongomock_server.py (`server.serve` on
   mongomock-motor), which seeds its in-memory store through the same repositories before it
   listens, at --reference-size users and events (default 1,000: mongomock checks unique
   indexes and answers queries by scanning every document in Python, so seeding it is
   quadratic: about 25 s for 1,000 of each, over a minute for 2,000), and stops seeding after
   --reference-seed-seconds; the size it reached is printed. Each row runs --seconds, longer if
   needed to answer 5 requests, never past --reference-cap-seconds. mongomock implements no
   `$geoNear`, which the MongoDB adapter's nearby search uses: those rows are 500s there.

Figures only; targets are printed beside them, never asserted.
"""
import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bcrypt  # noqa: E402

from bench import seed as seeding  # noqa: E402
from bench.harness import (PYTHON, HttpConnection, ServerFailed, ServerProcess, load_note,  # noqa: E402
                           pin_generator, run_load, stall_text)

NEARBY_RADIUS_KM = 10
MIN_REQUESTS = 5  # a row goes on past --seconds (up to its cap) until this many were answered
TOKENS = 8  # seeded users logged in for the authenticated rows, one per connection
# LOG_LEVEL as settings.yaml has it: one access log line per request. The registrations row
# registers --auth-requests users from one address: more than a person's limit per address.
SERVER_ENVIRONMENT = {"LOG_LEVEL": "INFO", "REGISTRATIONS_PER_ADDRESS": 1_000_000}


# --- bcrypt and seeding ------------------------------------------------------------------------

def time_bcrypt(rounds):
    """(a hash of the seeded users' password, median seconds of one hash, of one check)."""
    password = seeding.PASSWORD.encode()
    hashes, hash_s, check_s = [], [], []
    for _ in range(3):
        started = time.perf_counter()
        hashes.append(bcrypt.hashpw(password, bcrypt.gensalt(rounds)))
        hash_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        bcrypt.checkpw(password, hashes[-1])
        check_s.append(time.perf_counter() - started)
    return hashes[0].decode(), statistics.median(hash_s), statistics.median(check_s)


async def seed_sqlite(path, users, events, password_hash):
    from storage.sqlite import SqliteStore
    store = SqliteStore(path)
    await store.open()
    try:
        return await seeding.seed(store, users, events, password_hash)
    finally:
        await store.close()


def seed_file(path, users, events, password_hash):
    seeded = asyncio.run(seed_sqlite(path, users, events, password_hash))
    size = sum(os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix))
    print(f"   seeded {seeded.users:,} users in {seeded.user_seconds:.1f} s "
          f"({seeded.users / max(1e-9, seeded.user_seconds):,.0f}/s) and {len(seeded.event_ids):,} events in "
          f"{seeded.event_seconds:.1f} s ({len(seeded.event_ids) / max(1e-9, seeded.event_seconds):,.0f}/s) "
          f"through the repositories; file {size / 2**20:.0f} MiB", flush=True)
    return seeded


# --- the measured requests -----------------------------------------------------------------------

class Workload:
    """Builds the requests of each row from what was seeded."""

    def __init__(self, seeded, tokens, rng):
        self.seeded, self.tokens, self.rng = seeded, tokens, rng
        self.run = uuid.uuid4().hex[:6]
        min_lng, min_lat, max_lng, max_lat = seeded.box
        # Centres at least the radius inside the box, so every search sees the same density.
        margin_lat = NEARBY_RADIUS_KM / seeding.KM_PER_DEGREE
        margin_lng = margin_lat * (max_lng - min_lng) / (max_lat - min_lat)
        self.centres = (min_lng + margin_lng, min_lat + margin_lat, max_lng - margin_lng, max_lat - margin_lat)

    def token(self, n):
        return self.tokens[n % len(self.tokens)]

    def healthz(self, n):
        return "GET", "/healthz", None, None

    def event(self, n):
        return "GET", f"/api/v1/events/{self.rng.choice(self.seeded.event_ids)}", None, self.token(n)

    def me(self, n):
        return "GET", "/api/v1/users/me", None, self.token(n)

    def nearby(self, n):
        min_lng, min_lat, max_lng, max_lat = self.centres
        lat, lng = self.rng.uniform(min_lat, max_lat), self.rng.uniform(min_lng, max_lng)
        return ("GET", f"/api/v1/events?lat={lat:.5f}&lng={lng:.5f}&radius_km={NEARBY_RADIUS_KM}&limit=20",
                None, self.token(n))

    def text_search(self, n):
        return "GET", f"/api/v1/events?q=event%20{self.rng.randrange(10_000)}&limit=20", None, self.token(n)

    def register(self, n):
        name = f"r{self.run}n{n}"
        return ("POST", "/api/v1/auth/register",
                {"username": name, "email": f"{name}@bench.example", "password": seeding.PASSWORD}, None)

    def login(self, n):
        return ("POST", "/api/v1/auth/login",
                {"email": seeding.email_of(self.rng.randrange(self.seeded.users)), "password": seeding.PASSWORD}, None)


async def log_in(port, seeded, count, rng):
    http = await HttpConnection(port).open()
    tokens = []
    try:
        for _ in range(count):
            user = rng.randrange(seeded.users)
            data = await http.json("POST", "/api/v1/auth/login",
                                   {"email": seeding.email_of(user), "password": seeding.PASSWORD})
            tokens.append(data["token"])
    finally:
        http.close()
    return tokens


async def auth_rows(server, work, requests, cap_s):
    """Registration and login, one connection, `requests` each (after one of each unmeasured)."""
    rows = []
    for label, make in (("register", work.register), ("login", work.login)):
        http = await HttpConnection(server.port).open()
        await http.request(*make(10**9))
        http.close()
        rows.append(await run_load(label, server.port, make, 1, 0, warmup_s=0, server=server,
                                   min_requests=requests, max_requests=requests, cap_s=cap_s,
                                   request_timeout_s=cap_s))
    return rows


async def measure(server, seeded, args, cap_s, with_auth=True):
    """Every row against one server, in order; healthz first (the reference of the ratios)."""
    rng = random.Random(7)
    tokens = await log_in(server.port, seeded, TOKENS, rng)
    work = Workload(seeded, tokens, rng)
    connections = args.connections
    rows = []
    plan = [("healthz", work.healthz, connections), ("event by id", work.event, connections),
            ("users/me", work.me, connections), ("nearby 10 km", work.nearby, 1),
            ("nearby 10 km", work.nearby, connections), ("search q=", work.text_search, 1)]
    for label, make, conns in plan:
        rows.append(await run_load(label, server.port, make, conns, args.seconds, warmup_s=1.0, server=server,
                                   min_requests=MIN_REQUESTS, cap_s=cap_s, request_timeout_s=cap_s))
        print(f"   {label:<14} x{conns}: {rows[-1].per_second:,.0f}/s", flush=True)
    if with_auth:
        rows += await auth_rows(server, work, args.auth_requests, cap_s)
    return rows


# --- the servers -------------------------------------------------------------------------------

def server_environment(args):
    return {**SERVER_ENVIRONMENT, "BCRYPT_LOG_ROUNDS": args.bcrypt_rounds}


def run_server(name, argv, environment, directory, pin, work, ready_timeout_s=60):
    """Starts a server, runs `work(server)` (a coroutine function), reads the loop stall, stops it.
    Returns (work's result, stall seconds or None, server RSS MiB), or None if it did not start."""
    try:
        server = ServerProcess(name, argv, environment, directory, pin, ready_timeout_s=ready_timeout_s)
    except ServerFailed as error:
        print(f"   {name}: the server did not start: {error}")
        return None
    try:
        print(f"   {name}: ready after {server.ready_after_s:.1f} s", flush=True)
        result = asyncio.run(work(server))
        stall, rss = server.metric(), server.rss_mib()
        for line in server.error_lines():
            print(f"   {name} server log: {line}")
    finally:
        server.stop()
    print(f"   {name}: longest event-loop stall {stall_text(stall)}", flush=True)
    return result, stall, rss


def print_rows(title, rows, stall, rss, hash_s, check_s):
    print(f"\n== {title}")
    print(f"{'request':<16}{'conns':>6}{'req/s':>9}{'vs healthz':>11}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>8}"
          f"{'srv CPU':>8}{'gen CPU':>8}  target")
    healthz = rows[0].per_second if rows and rows[0].label == "healthz" else None
    targets = {"event by id": ("rate", 0.40), "users/me": ("rate", 0.50)}
    for row in rows:
        ratio = row.per_second / healthz if healthz else None
        target = ""
        kind = targets.get(row.label)
        if kind and ratio is not None:
            target = f">= {kind[1]:.0%} of healthz: {'met' if ratio >= kind[1] else 'MISSED'}"
        elif row.label.startswith("nearby") and row.connections == 1:
            met = row.percentile_ms(0.5) <= 20 and row.percentile_ms(0.99) <= 50
            target = f"p50 <= 20, p99 <= 50 ms: {'met' if met else 'MISSED'}"
        elif row.label == "register" and hash_s:
            target = f"p50 = {row.percentile_ms(0.5) / (hash_s * 1000):.2f} x one bcrypt hash"
        elif row.label == "login" and check_s:
            target = f"p50 = {row.percentile_ms(0.5) / (check_s * 1000):.2f} x one bcrypt check"
        ratio_text = f"{ratio:.0%}" if ratio is not None else "-"
        # Over less than half a second the CPU clock's ticks (10 ms) make the share meaningless.
        cpu = (f"{row.server_cpu:>8.0%}{row.generator_cpu:>8.0%}" if row.seconds >= 0.5 else f"{'-':>8}{'-':>8}")
        print(f"{row.label:<16}{row.connections:>6}{row.per_second:>9,.0f}{ratio_text:>11}"
              f"{row.percentile_ms(0.5):>9.2f}{row.percentile_ms(0.99):>9.2f}{row.errors:>8}"
              f"{cpu}  {target}")
        if row.failures:
            print(f"{'':<16}  ({len(row.failures)} connections failed: {row.failures[0]})")
        if row.errors:
            print(f"{'':<16}  (statuses {row.statuses})")
    print(f"longest event-loop stall: {stall_text(stall)}; server RSS at the end {rss:.0f} MiB; "
          "CPU: share of one core over the measured seconds (near 100%: that side is the bottleneck)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000, help="users in the small file (0: skip it)")
    parser.add_argument("--bcrypt-rounds", type=int, default=12, help="the server's cost (BCRYPT_LOG_ROUNDS)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--auth-requests", type=int, default=20, help="registrations and logins measured")
    parser.add_argument("--reference-size", type=int, default=1_000, help="users and events in mongomock")
    parser.add_argument("--reference-seed-seconds", type=float, default=60,
                        help="mongomock stops seeding after this long (in chunks of 250)")
    parser.add_argument("--reference-cap-seconds", type=float, default=60,
                        help="longest a reference row (or one of its requests) may take")
    parser.add_argument("--no-reference", action="store_true", help="skip the mongomock-motor reference")
    args = parser.parse_args()

    pin = pin_generator()
    print("server pinned to CPU 0 (taskset), load generator to CPU 1" if pin else "server and generator not pinned")
    print(f"before: {load_note()}", flush=True)
    password_hash, hash_s, check_s = time_bcrypt(args.bcrypt_rounds)
    print(f"one bcrypt hash at cost {args.bcrypt_rounds}: {hash_s * 1000:.1f} ms, one check {check_s * 1000:.1f} ms "
          f"(load generator's core)")
    environment = server_environment(args)
    sqlite_auth = {}
    results = []
    with tempfile.TemporaryDirectory(prefix="rest_bench_") as directory:
        if args.small:
            print(f"-- sqlite, {args.small:,} users: seeding, then registration and login", flush=True)
            path = os.path.join(directory, "small.sqlite3")
            small = seed_file(path, args.small, 0, password_hash)

            async def small_work(server):
                work = Workload(small, [], random.Random(3))
                return await auth_rows(server, work, args.auth_requests, 300)
            done = run_server("sqlite-small", [PYTHON, "server.py"], {**environment, "SQLITE_PATH": path},
                              directory, pin, small_work)
            if done:
                sqlite_auth[args.small] = done[0]

        print(f"-- sqlite, {args.users:,} users and {args.events:,} events: seeding", flush=True)
        path = os.path.join(directory, "events.sqlite3")
        seeded = seed_file(path, args.users, args.events, password_hash)

        async def work(server):
            return await measure(server, seeded, args, cap_s=300)
        done = run_server("sqlite", [PYTHON, "server.py"], {**environment, "SQLITE_PATH": path}, directory, pin, work)
        if done:
            results.append((f"sqlite, {seeded.users:,} users, {len(seeded.event_ids):,} events", *done))
            sqlite_auth[seeded.users] = [row for row in done[0] if row.label in ("register", "login")]

        if not args.no_reference:
            size = args.reference_size
            print(f"-- mongomock, {size:,} users and {size:,} events: seeded by the launcher "
                  f"(at most {args.reference_seed_seconds:.0f} s)", flush=True)
            hash_file, seed_out = os.path.join(directory, "hash"), os.path.join(directory, "seeded.json")
            with open(hash_file, "w") as f:
                f.write(password_hash)
            argv = [PYTHON, "-m", "bench.mongomock_server", "--seed-users", str(size), "--seed-events", str(size),
                    "--seed-seconds", str(args.reference_seed_seconds), "--seed-chunk", "250", "--seed-out", seed_out,
                    "--password-hash-file", hash_file]
            reference = {}

            async def reference_work(server):
                reference["seeded"] = seeding.Seeded.load(seed_out)
                return await measure(server, reference["seeded"], args, cap_s=args.reference_cap_seconds)
            done = run_server("mongomock", argv, environment, directory, pin, reference_work,
                              ready_timeout_s=args.reference_seed_seconds * 3 + 120)
            if done:
                ref = reference["seeded"]
                print(f"   mongomock seeded {ref.users:,} users in {ref.user_seconds:.1f} s and "
                      f"{len(ref.event_ids):,} events in {ref.event_seconds:.1f} s")
                results.append((f"mongomock (reference), {ref.users:,} users, {len(ref.event_ids):,} events", *done))

    for title, rows, stall, rss in results:
        print_rows(title, rows, stall, rss, hash_s, check_s)
    if sqlite_auth:
        print(f"\n== sqlite registration and login by users stored (one connection; one bcrypt hash "
              f"{hash_s * 1000:.1f} ms, one check {check_s * 1000:.1f} ms)")
        print(f"{'users':>9}{'register p50':>14}{'register p99':>14}{'login p50':>11}{'login p99':>11}")
        for users, rows in sorted(sqlite_auth.items()):
            by = {row.label: row for row in rows}
            print(f"{users:>9,}" + "".join(
                f"{by[label].percentile_ms(fraction):>{width}.1f}"
                for label, width in (("register", 14), ("login", 11)) for fraction in (0.5, 0.99)))


if __name__ == "__main__":
    main()
