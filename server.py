"""Entry point: python server.py [--port N] [--settings PATH]"""
import argparse
import asyncio
import logging
import signal
import sys

import tornado.httpserver

from domain.settings import SettingsError, load_settings
from handlers.app import build_services, make_app
from handlers.logs import configure_logging

log = logging.getLogger("server")


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Event backend: REST API and live chat.")
    parser.add_argument("--settings", default="settings.yaml", help="settings file (default settings.yaml)")
    parser.add_argument("--port", type=int, help="TCP port (default: the port setting, 5000)")
    parser.add_argument("--address", help="interface to listen on (default: the address setting)")
    return parser.parse_args(argv)


async def serve(settings):
    services = build_services(settings)
    store = services.store
    if store.in_memory:
        log.warning("MONGO_URI is not set: using the in-memory store; data will not survive a restart")
    if settings.generated_secrets:
        log.warning("SECRET_KEY/JWT_SECRET_KEY not set: generated random ones for this process; "
                    "tokens stop working when it restarts")
    app = make_app(services)
    largest_body = max(settings.max_body_bytes, settings.photo_max_bytes) + 64 * 1024
    server = tornado.httpserver.HTTPServer(app, max_body_size=largest_body, idle_connection_timeout=120)
    server.listen(settings.port, settings.address)
    indexes = asyncio.ensure_future(store.keep_indexes_until_ready())
    log.info("listening on %s:%d", settings.address, settings.port)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()

    log.info("shutting down: no new connections; waiting up to %.0f s for requests in flight",
             settings.shutdown_grace_seconds)
    server.stop()
    deadline = loop.time() + settings.shutdown_grace_seconds
    while services.inflight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await services.accounts.drain()
    await server.close_all_connections()
    indexes.cancel()
    store.close()
    log.info("stopped")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args.settings, port=args.port, address=args.address)
    except SettingsError as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
