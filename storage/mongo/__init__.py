"""The MongoDB store: the production database, and the old Flask backend's database as it is.

The only code that knows motor, PyMongo, the query language and the server's error codes:
`repository` (the one translation of "cannot serve now" errors, applied to every public
method), `values` (ids and times at the edge), `arrays` (the old backend's arrays, null or
absent in its documents), `indexes` (the backfill and the plan, prepared in the background),
one module per group of repositories. Collections and field names are the old backend's, so
the store takes its database over as it finds it.
"""
import motor.motor_asyncio

from domain import repositories
from storage.mongo.accounts import ResetTokens, RevokedTokens, Users
from storage.mongo.events import Events
from storage.mongo.indexes import Indexes
from storage.mongo.messages import Messages
from storage.mongo.notifications import Notifications
from storage.mongo.repository import translating_unavailable
from storage.mongo.social import Activities, Follows

__all__ = ["MongoStore"]


class MongoStore(repositories.Store):
    kind = "mongodb"

    def __init__(self, client, dbname):
        """`client`: a motor AsyncIOMotorClient, or anything with its API (the tests' MongoDB
        test double: tests/stores.py)."""
        self.client = client
        self.dbname = dbname
        # For adapter-specific tests and tools only; the domain goes through the repositories.
        self.db = client[dbname]
        self.indexes = Indexes(self.db)
        self.users = Users(self.db)
        self.revoked_tokens = RevokedTokens(self.db)
        self.reset_tokens = ResetTokens(self.db)
        self.events = Events(self.db)
        self.messages = Messages(self.db)
        self.follows = Follows(self.db)
        self.activities = Activities(self.db)
        self.notifications = Notifications(self.db)

    @classmethod
    def connect(cls, uri, dbname, timeout_ms=5000):
        """Returns at once: the driver connects lazily, so the server starts while MongoDB is down.
        The database is the one the URI names, else `dbname`.

        `timeout_ms` bounds every operation as well as server selection: timeoutMS is PyMongo's
        client-side operation timeout (4.2+, "CSOT"), one deadline per operation covering server
        selection, the connection checkout, the round trips and the server's work (the driver
        sends maxTimeMS from what is left). A stalled primary or a slow query then fails the call
        with a timeout error, which storage/mongo/repository.py turns into StoreUnavailable (503),
        instead of holding the request forever: without it, PyMongo's socketTimeoutMS defaults to
        no timeout. The index builds are exempt (storage/mongo/indexes.py)."""
        client = motor.motor_asyncio.AsyncIOMotorClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, timeoutMS=timeout_ms,
            tz_aware=True)
        return cls(client, client.get_default_database(default=dbname).name)

    async def open(self):
        """Starts preparing the database (backfilling the old backend's users, building the
        indexes; retried while it cannot be reached) in the background and returns at once, so
        that the server listens even while a first takeover indexes a large old database.
        Until the preparation has run, `problems` says "indexes not built yet" and /readyz is 503."""
        self.indexes.start()

    async def prepared(self):
        """Returns once the preparation `open` started has run: for tests and tools that need
        the indexes and the backfill before they go on. Never returns while the database
        cannot be reached."""
        await self.indexes.prepared()

    @translating_unavailable
    async def ping(self):
        await self.db.command("ping")

    def problems(self):
        return self.indexes.problems()

    async def close(self):
        await self.indexes.close()
        self.client.close()

    @translating_unavailable
    async def drop_database(self):
        """Deletes the whole database: for tests on a real server."""
        await self.client.drop_database(self.dbname)

    def __repr__(self):
        return f"MongoStore({self.dbname!r})"
