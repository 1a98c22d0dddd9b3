"""Entry point: python server.py [--port N] [--settings PATH]

Under systemd (Type=notify) it reports READY=1 once it listens and knows how the database is
doing, WATCHDOG=1 while the event loop turns, and STOPPING=1 when a SIGTERM starts the shutdown.
"""
import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from domain.errors import StoreBroken, StoreUnavailable
from domain.settings import WILDCARD_ADDRESSES, SettingsError, load_settings
from domain.systemd import SystemdNotifier, watchdog_interval
from handlers.app import build_services, make_app
from handlers.connections import RESERVED_DESCRIPTORS, make_http_server, raise_open_files_limit
from handlers.logs import configure_logging
from storage import make_store

log = logging.getLogger("server")


# How often the loop-stall ticker wakes; a stall shorter than this may go unnoticed.
STALL_TICK_SECONDS = 0.005


class CannotStart(Exception):
    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Event backend: REST API and live chat.")
    parser.add_argument("--settings", default="settings.yaml", help="settings file (default settings.yaml)")
    parser.add_argument("--port", type=int, help="TCP port (default: the port setting, 5000)")
    parser.add_argument("--address", help="interface to listen on (default: the address setting; 127.0.0.1 "
                                          "in development, production must name it)")
    return parser.parse_args(argv)


async def serve(settings, notifier, store=None):
    """Serves until SIGTERM or SIGINT. `store`: an unopened store to use instead of the one the
    settings name (benchmarks use this to compare stores)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)

    store = store or make_store(settings)
    try:
        await store.open()
    except StoreBroken as e:
        raise CannotStart(str(e), exit_code=2) from None
    except StoreUnavailable:
        pass  # MongoDB not up yet: serve 503s while the store keeps trying
    services = build_services(settings, store=store)
    warn_about_development_settings(settings, store)
    app = make_app(services)
    for hook in services.startup_hooks:
        await hook()
    # Everything built so far lives as long as the process: frozen, the collector never walks it
    # again. Unfrozen, a full collection walked it whenever request garbage (a 5,000-position
    # polygon is 5,000 lists) piled up: 60 ms of the event loop at a time.
    gc.collect()
    gc.freeze()
    server = make_http_server(app, settings)
    before, limit = raise_open_files_limit()
    log.info("open files limit %d%s: room for about %d connections at once", limit,
             f" (raised from {before})" if limit != before else "", limit - RESERVED_DESCRIPTORS)
    try:
        server.listen(settings.port, settings.address, backlog=settings.listen_backlog)
    except OSError as e:
        await store.close()
        raise CannotStart(f"cannot listen on {settings.address}:{settings.port}: {e.strerror}") from None
    log.info("listening on %s:%d", settings.address, settings.port)

    database = await database_state(store)
    notifier.ready(f"listening on {settings.address}:{settings.port}; {database}")
    watchdog = start_watchdog(notifier)
    stalls = asyncio.ensure_future(watch_loop_stalls(services.metrics.loop_stall_max))

    await stop_requested.wait()
    server.stop()
    notifier.stopping("shutting down: finishing requests in flight")
    log.info("shutting down: no new connections; %d requests in flight, waiting up to %.0f s",
             services.inflight, settings.shutdown_grace_seconds)
    await shut_down(server, services, settings.shutdown_grace_seconds)
    if watchdog:
        watchdog.cancel()
    stalls.cancel()
    await store.close()
    log.info("stopped")


def warn_about_development_settings(settings, store):
    if store.kind == "sqlite":
        log.info("MONGO_URI is not set: keeping data in the SQLite file %s", settings.sqlite_path)
    if settings.generated_secrets:
        log.warning("SECRET_KEY/JWT_SECRET_KEY not set: generated random ones for this process; "
                    "tokens stop working when it restarts")
    if (settings.address in WILDCARD_ADDRESSES and not settings.metrics_token
            and not settings.metrics_allowed_addresses):
        log.warning("listening on every interface (%s) with /metrics open to every address: set METRICS_TOKEN "
                    "or METRICS_ALLOWED_ADDRESSES", settings.address)
    if settings.env == "production" and settings.mail_backend == "console":
        log.warning("MAIL_BACKEND=console in production: emails are not delivered and their bodies "
                    "are kept out of the log; set MAIL_BACKEND=smtp")


async def database_state(store):
    """Ready means serving: with the database down requests answer 503 and the index task retries,
    which beats systemd restarting us in a loop until the database is back."""
    try:
        await store.ping()
        return "database answering"
    except StoreUnavailable:
        return "database not answering yet, retrying"


def start_watchdog(notifier):
    interval = watchdog_interval(os.environ)
    if not notifier.enabled or interval is None:
        return None
    return asyncio.ensure_future(feed_watchdog(notifier, interval))


async def feed_watchdog(notifier, interval):
    # Sent from the event loop on purpose: a loop stuck on blocking work stops the pings and
    # systemd restarts the process.
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


async def watch_loop_stalls(gauge):
    """Keeps in `gauge` the longest time the loop came back late to this ticker: about the
    longest any one callback held the loop (the budget is 20 ms)."""
    loop = asyncio.get_running_loop()
    longest = 0.0
    while True:
        due = loop.time() + STALL_TICK_SECONDS
        await asyncio.sleep(STALL_TICK_SECONDS)
        late = loop.time() - due
        if late > longest:
            longest = late
            gauge.set(longest)


async def shut_down(server, services, grace_seconds):
    """Within the grace period: shutdown hooks (the chat closes its sockets with 1001), requests
    in flight, then background work such as emails and the photo storage client; whatever is
    left is cut off."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    await within(deadline, run_shutdown_hooks(services.shutdown_hooks), "shutdown hooks")
    while services.inflight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    # A photo still decoding now is past the grace period: its worker is killed, not waited for.
    await services.photo_workers.close()
    if services.inflight:
        log.warning("%d requests still in flight after %.0f s: closing their connections",
                    services.inflight, grace_seconds)
    await within(deadline, services.accounts.drain(), "background work (emails)")
    # After the requests in flight, so an upload still being re-encoded is stored, not refused.
    await within(max(deadline, loop.time() + 2), services.gallery.close(), "photo storage")
    await server.close_all_connections()
    if services.redis is not None:
        await services.redis.aclose()


async def run_shutdown_hooks(hooks):
    for hook in hooks:
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))


async def within(deadline, awaitable, what):
    try:
        async with asyncio.timeout_at(deadline):
            await awaitable
    except TimeoutError:
        log.warning("%s not finished within the shutdown grace period", what)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args.settings, port=args.port, address=args.address)
    except SettingsError as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    notifier = SystemdNotifier.from_environment()
    try:
        asyncio.run(serve(settings, notifier))
    except CannotStart as e:
        log.error("%s", e)
        return e.exit_code
    finally:
        notifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
