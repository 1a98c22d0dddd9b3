"""The one module that knows the database driver.

Everything else uses the collections handed out here through the common async collection API
(find_one, insert_one, update_one, find_one_and_update, find(...).to_list, ...), which motor,
PyMongo's async client and mongomock-motor share; switching drivers touches this file only.
Driver exceptions are re-exported under our own names for the same reason.
"""
import asyncio
import logging

import bson
import pymongo
from pymongo import errors as driver_errors

log = logging.getLogger("store")

ASCENDING, DESCENDING = pymongo.ASCENDING, pymongo.DESCENDING
ReturnDocument = pymongo.ReturnDocument
ObjectId = bson.ObjectId
DuplicateKeyError = driver_errors.DuplicateKeyError
BulkWriteError = driver_errors.BulkWriteError
# The driver errors that mean "the database cannot be reached right now" (503, retry later).
UNAVAILABLE_ERRORS = (driver_errors.ConnectionFailure, driver_errors.ServerSelectionTimeoutError,
                      driver_errors.NetworkTimeout, driver_errors.AutoReconnect,
                      driver_errors.ExecutionTimeout)


def parse_id(text):
    """An ObjectId from its 24-hex string, or None for anything else (callers answer 404)."""
    if isinstance(text, str) and len(text) == 24 and bson.ObjectId.is_valid(text):
        return bson.ObjectId(text)
    return None


class Store:
    """The database and its collections. `in_memory` stores cannot evaluate geo operators."""

    COLLECTIONS = ("users", "events", "messages", "activities", "revoked_tokens", "reset_tokens")

    def __init__(self, client, dbname, in_memory):
        self.client = client
        self.db = client[dbname]
        self.in_memory = in_memory
        for name in self.COLLECTIONS:
            setattr(self, name, self.db[name])
        self.indexes_ready = False

    @classmethod
    def connect(cls, uri, dbname, timeout_ms=5000):
        """Returns at once: the driver connects lazily, so the server starts while MongoDB is down."""
        if not uri:
            import mongomock_motor
            return cls(mongomock_motor.AsyncMongoMockClient(), dbname, in_memory=True)
        import motor.motor_asyncio
        client = motor.motor_asyncio.AsyncIOMotorClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True)
        database = client.get_default_database(default=dbname)
        return cls(client, database.name, in_memory=False)

    async def ping(self):
        if self.in_memory:
            return True
        await self.db.command("ping")
        return True

    def _index_plan(self):
        """(collection, keys, options) of the old backend's indexes, the normalized unique keys,
        and TTL expiry for tokens."""
        users, events = self.users, self.events
        return [
            (users, "email_lower", {"unique": True}),
            (users, "username_lower", {"unique": True}),
            (events, [("location", "2dsphere")], {}),
            (events, "organizer_id", {}),
            (events, [("date", ASCENDING), ("_id", ASCENDING)], {}),
            # An organizer's events in date order, as GET /organizer/events pages them.
            (events, [("organizer_id", ASCENDING), ("date", ASCENDING), ("_id", ASCENDING)], {}),
            (self.messages, [("event_id", ASCENDING), ("timestamp", ASCENDING)], {}),
            # Chat: a room's order and "everything after message X" are _id order within the event;
            # a sender's client_msg_id is stored once per room, also across restarts.
            (self.messages, [("event_id", ASCENDING), ("_id", ASCENDING)], {}),
            (self.messages, [("event_id", ASCENDING), ("user_id", ASCENDING), ("client_msg_id", ASCENDING)],
             {"unique": True, "partialFilterExpression": {"client_msg_id": {"$exists": True}}}),
            # Followers lists: users whose `following` holds someone, in _id order.
            (users, [("following", ASCENDING), ("_id", ASCENDING)], {}),
            # The feed sorts on (timestamp, _id) under actor_id $in; the old (actor_id, timestamp) is its prefix.
            (self.activities, [("actor_id", ASCENDING), ("timestamp", DESCENDING), ("_id", DESCENDING)], {}),
            (self.activities, [("timestamp", DESCENDING)], {}),
            (self.revoked_tokens, "expires_at", {"expireAfterSeconds": 0}),
            (self.reset_tokens, "expires_at", {"expireAfterSeconds": 0}),
        ]

    async def ensure_indexes(self):
        """Creates every index it can. One that cannot be built (e.g. a unique index over the old
        backend's case-variant duplicates) is logged and skipped: the others, the 2dsphere index
        that nearby search needs among them, are still created. An unreachable database raises.
        Returns how many could not be built."""
        await self._backfill_normalized_names()
        failed = 0
        for collection, keys, options in self._index_plan():
            try:
                await collection.create_index(keys, **options)
            except UNAVAILABLE_ERRORS:
                raise
            except driver_errors.PyMongoError as e:
                failed += 1
                log.error("could not create the index %s on %s: %s", keys, collection.name, e)
        self.indexes_ready = True
        return failed

    async def _backfill_normalized_names(self):
        # Users written by the old backend have no lower-cased copies; unique indexes need them.
        async for user in self.users.find({"email_lower": {"$exists": False}}, {"email": 1, "username": 1}):
            await self.users.update_one({"_id": user["_id"]}, {"$set": {
                "email_lower": str(user.get("email", "")).lower(),
                "username_lower": str(user.get("username", "")).lower()}})

    async def keep_indexes_until_ready(self, retry_seconds=5.0):
        """Creates the indexes as soon as the database answers; the server serves meanwhile."""
        while not self.indexes_ready:
            try:
                failed = await self.ensure_indexes()
                log.info("database indexes are in place%s", f", but for {failed} (see above)" if failed else "")
            except UNAVAILABLE_ERRORS as e:
                log.warning("database not reachable yet (%s); retrying in %.0f s", type(e).__name__, retry_seconds)
                await asyncio.sleep(retry_seconds)
            except driver_errors.PyMongoError as e:
                # The backfill of normalized names failed: serve anyway, say why.
                log.error("could not create indexes: %s", e)
                return

    def close(self):
        self.client.close()
