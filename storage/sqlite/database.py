"""The store's one SQLite connection, on a thread of its own.

Every statement runs on that thread, never on the event loop. A repository call is one hop
there: `read` or `write` runs one synchronous function, which makes all of the call's
statements inside one transaction, and hands back plain records. One hop per call rather than
per statement is what lets the chat store thousands of messages a second: a hop costs tens of
microseconds, a statement a few.

Writes begin with `BEGIN IMMEDIATE`, which takes the file's write lock before the first read,
so a rule checked and applied by several statements is atomic across processes sharing the file
too; a process waits up to `busy_timeout_ms` for another's write to finish.
"""
import asyncio
import concurrent.futures
import functools
import logging
import os
import re
import sqlite3

from domain.errors import StoreBroken, StoreUnavailable
from storage.sqlite import search
from storage.sqlite.schema import SchemaTooNew, migrate

log = logging.getLogger("store")

MEMORY = ":memory:"

# Result codes meaning the database cannot serve this call now, for a reason no caller can
# change (a lock held past the busy timeout, a full disk, an I/O error). Any other sqlite3 error
# (a constraint, a syntax error, misuse) is a bug and propagates as it is.
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOTADB,
})
# At open, only these are worth retrying; any other failure means the file can never serve.
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _primary_code(error):
    # Extended codes (SQLITE_IOERR_WRITE, ...) carry their primary code in the low byte.
    return (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF


@functools.lru_cache(maxsize=256)
def _literal_pattern(text):
    return re.compile(re.escape(text), re.IGNORECASE)


def contains_text(text, field):
    """SQL `contains_text(text, field)`: whether `field` holds `text` literally, ignoring case,
    as MongoDB's escaped regex with the `i` option finds it. SQLite's own lower() and LIKE fold
    ASCII letters only. The text index (see `search`) narrows the rows it is called on; what
    it answers alone decides which match."""
    return field is not None and _literal_pattern(text).search(field) is not None


class Database:
    """Opens the file, runs calls on its thread as transactions, translates its errors."""

    def __init__(self, path, busy_timeout_ms):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._thread = None
        self._connection = None  # touched on the thread only

    async def open(self):
        """Raises StoreBroken when the file can never serve as it is. Raises StoreUnavailable
        while another process holds it locked past the busy timeout; each call then tries to
        open it again first, so the store serves as soon as the lock is released."""
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._connect)
        except StoreBroken:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    @property
    def connected(self):
        return self._connection is not None

    async def read(self, work, *args):
        """work(connection, *args) in a read transaction (one snapshot of the file), on the thread."""
        return await self._hop(self._in_transaction, "BEGIN", work, args)

    async def write(self, work, *args):
        """work(connection, *args) in a write transaction: committed if it returns, rolled back
        if it raises, and StoreUnavailable (having changed nothing) if the database failed."""
        return await self._hop(self._in_transaction, "BEGIN IMMEDIATE", work, args)

    async def close(self):
        """Closes the connection after the calls already queued; later calls raise StoreUnavailable."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        await asyncio.get_running_loop().run_in_executor(thread, self._disconnect)
        thread.shutdown(wait=False)

    async def _hop(self, function, *args):
        if self._thread is None:
            raise StoreUnavailable()
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    # --- on the thread ---------------------------------------------------------------------

    def _connect(self):
        if self._connection is not None:
            return
        if self.path != MEMORY:
            self._make_directory()
        try:
            # isolation_level=None: no implicit transactions, `_in_transaction` says where they
            # begin. check_same_thread stays on: only this thread may touch the connection.
            connection = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreBroken(self._cannot_open(error)) from None
        try:
            self._prepare(connection)
        except BaseException as error:
            connection.close()
            if isinstance(error, sqlite3.Error) and _primary_code(error) in _BUSY_CODES:
                log.warning("the database %s is locked by another process: %s", self.path, error)
                raise StoreUnavailable() from None
            if isinstance(error, (sqlite3.Error, SchemaTooNew)):
                raise StoreBroken(self._cannot_open(error)) from None
            raise
        self._connection = connection

    def _make_directory(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError:
            raise StoreBroken(self._cannot_open(f"{directory} is not a directory")) from None
        except OSError as error:
            raise StoreBroken(self._cannot_open(f"{error.strerror} ({error.filename})")) from None

    def _prepare(self, connection):
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        # Read-only and first: a file that is not a database, or a damaged one, is refused before
        # anything below writes to it (switching to WAL rewrites the header). quick_check reads
        # every page but skips comparing indexes with their tables, the slow part of
        # integrity_check. It answers "ok", or its first finding after a "*** in database" line.
        verdict = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
        if verdict != "ok":
            finding = next((line for line in verdict.splitlines() if not line.startswith("***")), verdict)
            raise sqlite3.DatabaseError(f"the file is damaged: {finding}")
        # WAL: readers (in this and other processes) never wait for the writer, and a commit
        # appends to one file instead of rewriting pages in place.
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL syncs the WAL at checkpoints, not at each commit. A committed transaction is in
        # the WAL in the OS page cache, so it survives the process being killed (kill -9, a
        # crash); only an OS crash or a power loss can lose the last commits before a sync.
        # FULL would fsync the WAL at every commit: about 450 commits a second on the test
        # machine's disk against 20,000 with NORMAL.
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.create_function("contains_text", 2, contains_text, deterministic=True)
        # Before migrating: the text index's triggers and its rebuild call it.
        connection.create_function("search_key", 1, search.search_key, deterministic=True)
        migrate(connection)

    def _cannot_open(self, error):
        return f"cannot open the database {self.path}: {error}"

    def _in_transaction(self, begin, work, args):
        if self._connection is None:
            self._connect_again()
        connection = self._connection
        try:
            connection.execute(begin)
            result = work(connection, *args)
            connection.execute("COMMIT")
            return result
        except BaseException as error:
            self._roll_back(connection)
            if isinstance(error, sqlite3.Error) and _primary_code(error) in _UNAVAILABLE_CODES:
                log.warning("the database %s failed a call: %s", self.path, error)
                raise StoreUnavailable() from error
            raise

    def _connect_again(self):
        # open() found the file locked; a file that turned out broken since is a 503 here,
        # as the server is already serving.
        try:
            self._connect()
        except StoreBroken as error:
            log.error("%s", error)
            raise StoreUnavailable() from None

    def _roll_back(self, connection):
        # Some errors (a full disk, an I/O error) end the transaction themselves.
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rolling back a failed transaction on %s failed", self.path)

    def _disconnect(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def sql_limit(limit):
    """A list method's `limit` (None: all) as a LIMIT value; SQLite reads -1 as no limit."""
    return -1 if limit is None else limit


class Repository:
    """One of the store's repositories: its calls go through `database`."""

    def __init__(self, database):
        self._database = database
