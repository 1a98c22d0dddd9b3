"""The application itself as a chat benchmark server (bench/chat_app_bench.py starts it).

    python -m bench.chat_app_server --port 8003 [--store sqlite|mongomock] [--store-delay-ms 2]
                                    [--sqlite-path FILE]

It is `server.serve`, as `python server.py` runs it, with these differences, each for the
benchmark's sake:
- the store: SQLite (the default store) in a file of a temporary directory that goes away
  with the process, or `--store mongomock` (the MongoDB adapter over mongomock-motor, the old
  default);
- the per-connection rate limit raised out of the way, as the load generator's few publishers
  send far faster than a person; bcrypt at cost 4 (`--bcrypt-rounds`) and no limit of
  registrations per address, so that registering thousands of members from one client is quick;
  log level WARNING (no access log line per handshake);
- pings every 300 s rather than 30, since the load generator does not answer them; a 2 s
  shutdown grace period;
- `--store-delay-ms`: every `messages.append` (one per batch of chat messages) first waits that
  long, as a database across a network would;
- `--sqlite-path`: that SQLite file instead of the temporary one, for several processes sharing it
  (bench/cluster_chat_bench.py; REDIS_URL and JWT_SECRET_KEY come from the environment as usual).
"""
import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import server  # noqa: E402
from bench.bare_broadcast_server import raise_open_file_limit  # noqa: E402
from domain.settings import load_settings  # noqa: E402
from domain.systemd import SystemdNotifier  # noqa: E402
from handlers.logs import configure_logging  # noqa: E402


class DelayedAppend:
    """The messages repository, each `append` taking `delay` seconds longer."""

    def __init__(self, messages, delay):
        self._messages, self._delay = messages, delay

    def __getattr__(self, name):
        return getattr(self._messages, name)

    async def append(self, event_id, drafts):
        await asyncio.sleep(self._delay)
        return await self._messages.append(event_id, drafts)


def make_store(kind, path):
    if kind == "mongomock":
        import mongomock_motor

        from storage.mongo import MongoStore
        return MongoStore(mongomock_motor.AsyncMongoMockClient(tz_aware=True), "bench")
    from storage.sqlite import SqliteStore
    return SqliteStore(path)


async def serve(args, directory):
    settings = load_settings(
        ROOT / "settings.yaml", environ=os.environ, port=args.port, address=args.address, mongo_uri="",
        sqlite_path=args.sqlite_path or os.path.join(directory, "events.sqlite3"), bcrypt_rounds=args.bcrypt_rounds,
        log_level="WARNING",
        chat_messages_per_second=1e6, chat_burst=10**6, chat_ping_interval_seconds=300,
        # Every client of the bench is on loopback: it opens 200 handshakes at a time and registers
        # every user from one address.
        max_connections_per_address=10**6, registrations_per_address=10**9, shutdown_grace_seconds=2)
    configure_logging(settings.log_level)
    store = make_store(args.store, settings.sqlite_path)
    if args.store_delay_ms:
        store.messages = DelayedAppend(store.messages, args.store_delay_ms / 1000)
    await server.serve(settings, SystemdNotifier.from_environment(), store=store)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--store", choices=["sqlite", "mongomock"], default="sqlite")
    parser.add_argument("--store-delay-ms", type=float, default=0.0)
    parser.add_argument("--bcrypt-rounds", type=int, default=4, help="4 registers thousands quickly; 12 is the default")
    parser.add_argument("--sqlite-path", default="")
    args = parser.parse_args()
    raise_open_file_limit()
    with tempfile.TemporaryDirectory(prefix="chat_app_server_") as directory:
        try:
            asyncio.run(serve(args, directory))
        except server.CannotStart as e:
            print(f"cannot start: {e}", file=sys.stderr)
            return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
