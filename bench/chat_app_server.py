"""The application itself as a benchmark server: real handshake, real chat, in-memory store.

    python -m bench.chat_app_server --port 8003 [--store-delay-ms 2]

Differences from `server.py`, each for the benchmark's sake:
- the in-memory store, without its indexes, and with `_id` lookups answered from its
  dictionary: mongomock scans every stored document for every query, and checks a unique
  index by scanning every document on each insert, which would measure mongomock rather than
  the chat (MongoDB does both in an index). Storing is as in production: one `insert_many`
  per batch, before anything is broadcast;
- the per-connection rate limit raised out of the way, as the load generator's few publishers
  send far faster than a person;
- pings every 300 s rather than 30, since the load generator does not answer them (the
  ping task each connection carries is there all the same);
- `--store-delay-ms`: every write to the messages collection first waits that long, as a
  database across a network would.
"""
import argparse
import asyncio
import inspect
import os
import signal
from pathlib import Path

import tornado.httpserver

from mongomock import filtering
from mongomock.collection import Collection

from bench.bare_broadcast_server import raise_open_file_limit
from domain.settings import load_settings
from handlers.app import build_services, make_app
from handlers.logs import configure_logging

ROOT = Path(__file__).resolve().parent.parent


class DelayedWrites:
    """A collection whose inserts and updates each take `delay` seconds longer."""

    def __init__(self, collection, delay):
        self._collection, self._delay = collection, delay

    def __getattr__(self, name):
        attribute = getattr(self._collection, name)
        if not name.startswith(("insert", "update", "delete")) or not inspect.iscoroutinefunction(attribute):
            return attribute

        async def delayed(*args, **kwargs):
            await asyncio.sleep(self._delay)
            return await attribute(*args, **kwargs)
        return delayed


def look_up_ids_directly():
    """Queries naming one plain `_id` read that document instead of scanning the collection;
    the whole filter still applies to it, so the answers are the same."""
    scan = Collection._iter_documents

    def iter_documents(self, query):
        key = query.get("_id") if isinstance(query, dict) else None
        if key is None or isinstance(key, dict):
            return scan(self, query)
        document = self._store[key] if key in self._store else None
        return iter([document] if document is not None and filtering.filter_applies(query, document) else [])
    Collection._iter_documents = iter_documents


async def serve(port, address, store_delay_s):
    settings = load_settings(
        ROOT / "settings.yaml", environ=os.environ, port=port, address=address, mongo_uri="",
        bcrypt_rounds=4, log_level="WARNING", chat_messages_per_second=1e6, chat_burst=10**6,
        chat_ping_interval_seconds=300)
    configure_logging(settings.log_level)
    services = build_services(settings)
    if store_delay_s:
        services.store.messages = DelayedWrites(services.store.messages, store_delay_s)
    server = tornado.httpserver.HTTPServer(make_app(services))
    server.listen(port, address, backlog=1024)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    server.stop()
    await services.chat.shutdown(timeout=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--store-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    raise_open_file_limit()
    look_up_ids_directly()
    asyncio.run(serve(args.port, args.address, args.store_delay_ms / 1000))


if __name__ == "__main__":
    main()
