"""`python -m storage.check`: reports what in an existing MongoDB database (the old Flask
backend's) stops or hurts a takeover by this server, changing nothing; `--fix-indexes` then puts
the indexes in place as the server does at start. The checks are storage/mongo/takeover.py's.

Exit status: 0 when nothing blocks the takeover, 1 when something does, 2 when the database
could not be checked (usage, settings, connection), with one line saying why.
"""
import argparse
import asyncio
import sys

from domain.settings import SettingsError, load_settings
from storage.mongo import takeover

CLEAR, BLOCKED, CANNOT_CHECK = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, as for every other reason the check cannot run: no usage block.
        self.exit(CANNOT_CHECK, f"storage.check: {message}\n")


def _arguments(argv):
    parser = _Parser(prog="python -m storage.check",
                     description="Check an existing MongoDB database (the old backend's) before this server "
                                 "takes it over. Writes nothing unless --fix-indexes is given.")
    parser.add_argument("--settings", default="settings.yaml", help="settings file (default settings.yaml)")
    parser.add_argument("--uri", help="MongoDB connection string (default MONGO_URI)")
    parser.add_argument("--db", help="database name when the URI names none (default MONGO_DBNAME)")
    parser.add_argument("--timeout-ms", type=_milliseconds,
                        help="how long to wait for the server (default MONGO_TIMEOUT_MS)")
    parser.add_argument("--fix-indexes", action="store_true",
                        help="write what the server writes at start: drop the indexes in the way of ours, "
                             "backfill the users' lower-cased email and username, build the indexes")
    return parser.parse_args(argv)


def _milliseconds(text):
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds greater than 0")
    return int(text)


def main(argv=None):
    args = _arguments(argv)
    try:
        # Only the database settings matter here: read as in development, so that the check runs
        # without the production secrets the server itself requires.
        settings = load_settings(args.settings, env="development")
    except SettingsError as error:
        return _cannot_check(str(error))
    uri = args.uri or settings.mongo_uri
    if not uri:
        return _cannot_check("MONGO_URI is not set (nor --uri): name the MongoDB database to check")
    try:
        report = asyncio.run(_take_stock(uri, args.db or settings.mongo_dbname,
                                         args.timeout_ms or settings.mongo_timeout_ms, args.fix_indexes))
    except takeover.CannotCheck as error:
        return _cannot_check(str(error))
    print(takeover.format_report(report))
    return exit_status(report)


def exit_status(report):
    return BLOCKED if report.blocks else CLEAR


async def _take_stock(uri, dbname, timeout_ms, fix_indexes):
    store = takeover.connect(uri, dbname, timeout_ms)
    try:
        return await takeover.take_stock(store.db, fix_indexes)
    finally:
        await store.close()


def _cannot_check(reason):
    print(f"storage.check: {reason}", file=sys.stderr)
    return CANNOT_CHECK


if __name__ == "__main__":
    sys.exit(main())
