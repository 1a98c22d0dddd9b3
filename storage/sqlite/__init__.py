"""The embedded store: one SQLite file (or ":memory:" for tests), the default when no MongoDB is
configured. Several server processes on one host may share the file.

The only code that knows sqlite3, its SQL and its error codes: `database` (the connection, its
thread, transactions, errors), `schema` (tables and migrations), one module per group of
repositories, `columns` (how values are stored) and `ids`.
"""
from domain import repositories
from storage.sqlite.accounts import ResetTokens, RevokedTokens, Users
from storage.sqlite.database import Database
from storage.sqlite.events import Events
from storage.sqlite.messages import Messages
from storage.sqlite.notifications import Notifications
from storage.sqlite.social import Activities, Follows

__all__ = ["SqliteStore"]


class SqliteStore(repositories.Store):
    kind = "sqlite"

    def __init__(self, path, busy_timeout_ms=5000):
        """`path`: the database file (its directory is created when missing) or ":memory:".
        `busy_timeout_ms`: how long a call waits for another process's write lock before it
        raises StoreUnavailable."""
        self.path = path
        self._database = Database(path, busy_timeout_ms)
        self.users = Users(self._database)
        self.revoked_tokens = RevokedTokens(self._database)
        self.reset_tokens = ResetTokens(self._database)
        self.events = Events(self._database)
        self.messages = Messages(self._database)
        self.follows = Follows(self._database)
        self.activities = Activities(self._database)
        self.notifications = Notifications(self._database)

    async def open(self):
        """Opens the file and brings its schema up to date. StoreBroken (naming the file) when it
        is not a database, is damaged, cannot be written or comes from a newer server; the file
        is then left exactly as it was. StoreUnavailable when another process holds the file
        locked past the busy timeout: then every call first tries to open it again."""
        await self._database.open()

    async def ping(self):
        await self._database.read(_read_schema)

    def problems(self):
        if self._database.connected:
            return []
        return [f"the database {self.path} is not open: another process held it locked at start"]

    async def close(self):
        await self._database.close()

    def __repr__(self):
        return f"SqliteStore({self.path!r})"


def _read_schema(connection):
    # Reads the file's first page: the file is still there and readable, not only the thread.
    connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
