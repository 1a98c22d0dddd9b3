"""server.py on mongomock-motor: the reference the storage benchmarks compare SQLite with.

    python -m bench.mongomock_server --port 8004 [--settings settings.yaml]
        [--seed-users N --seed-events N --seed-seconds S --seed-out seeded.json --password-hash-file F]

Everything is `server.serve` as `python server.py` runs it (settings from the file and the
environment, the same logging, shutdown and /metrics), except the store: the MongoDB adapter
(`storage.mongo.MongoStore`) over `mongomock_motor.AsyncMongoMockClient`, the in-memory test
double of MongoDB the server used by default before SQLite. It is kept in memory, so a
benchmark that needs data seeds it here, through the repositories (bench/seed.py), before the
server listens: `--seed-out` receives what was seeded (ids, how many; JSON), and with
`--seed-seconds` seeding stops at that time, wherever it got to.

mongomock answers queries by scanning documents in Python on the event loop; this launcher does
nothing to help it (no index shortcuts), so it measures what the old default store cost.
"""
import argparse
import asyncio
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mongomock_motor  # noqa: E402

import server  # noqa: E402
from bench.seed import seed  # noqa: E402
from domain.settings import SettingsError, load_settings  # noqa: E402
from domain.systemd import SystemdNotifier  # noqa: E402
from handlers.logs import configure_logging  # noqa: E402


def mongomock_store():
    from storage.mongo import MongoStore
    return MongoStore(mongomock_motor.AsyncMongoMockClient(tz_aware=True), "bench")


async def run(settings, args):
    store = mongomock_store()
    if args.seed_users or args.seed_events:
        await store.open()
        password_hash = pathlib.Path(args.password_hash_file).read_text().strip()
        seeded = await seed(store, args.seed_users, args.seed_events, password_hash,
                            deadline_s=args.seed_seconds, chunk=args.seed_chunk)
        seeded.save(args.seed_out)
    await server.serve(settings, SystemdNotifier.from_environment(), store=store)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=str(ROOT / "settings.yaml"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--address")
    parser.add_argument("--seed-users", type=int, default=0)
    parser.add_argument("--seed-events", type=int, default=0)
    parser.add_argument("--seed-seconds", type=float, help="stop seeding after this long")
    parser.add_argument("--seed-chunk", type=int, default=1000, help="users, then events, this many at a time")
    parser.add_argument("--seed-out", help="where to write what was seeded (JSON)")
    parser.add_argument("--password-hash-file", help="the bcrypt hash every seeded user gets")
    args = parser.parse_args()
    try:
        settings = load_settings(args.settings, port=args.port, address=args.address)
    except SettingsError as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings, args))
    except server.CannotStart as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
