"""The indexes the old backend had, the ones our queries need, and building them.

Building is idempotent (creating an index that exists is a no-op), so every open builds the
whole plan. One index that cannot be built (a unique index over the old backend's case-variant
duplicates) is logged, skipped and reported by `problems`; the others are still built.
"""
import asyncio
import logging

import pymongo
from pymongo import ASCENDING, DESCENDING
from pymongo import errors as driver_errors

from domain.identity import identity_key
from storage.mongo.repository import is_unavailable, refusal

log = logging.getLogger("store")

NOT_BUILT_YET = "indexes not built yet"

# (collection, keys, options).
PLAN = [
    # Registration's rule "no two users share an email or a username, ignoring case".
    ("users", [("email_lower", ASCENDING)], {"unique": True}),
    ("users", [("username_lower", ASCENDING)], {"unique": True}),
    # Followers lists: users whose `following` holds someone, in _id order.
    ("users", [("following", ASCENDING), ("_id", ASCENDING)], {}),
    # Nearby search ($geoNear needs it).
    ("events", [("location", "2dsphere")], {}),
    ("events", [("organizer_id", ASCENDING)], {}),
    ("events", [("date", ASCENDING), ("_id", ASCENDING)], {}),
    # An organizer's events in date order.
    ("events", [("organizer_id", ASCENDING), ("date", ASCENDING), ("_id", ASCENDING)], {}),
    ("messages", [("event_id", ASCENDING), ("timestamp", ASCENDING)], {}),
    # A room's order, "everything after message X", each batch's id floor, and counts per event.
    ("messages", [("event_id", ASCENDING), ("_id", ASCENDING)], {}),
    # A sender's client_msg_id is stored once per room, also across restarts.
    ("messages", [("event_id", ASCENDING), ("user_id", ASCENDING), ("client_msg_id", ASCENDING)],
     {"unique": True, "partialFilterExpression": {"client_msg_id": {"$exists": True}}}),
    # The feed sorts on (timestamp, _id) under actor_id $in; the old (actor_id, timestamp) is its prefix.
    ("activities", [("actor_id", ASCENDING), ("timestamp", DESCENDING), ("_id", DESCENDING)], {}),
    ("activities", [("timestamp", DESCENDING)], {}),
    # Tokens are forgotten once expired (the TTL monitor runs once a minute).
    ("revoked_tokens", [("expires_at", ASCENDING)], {"expireAfterSeconds": 0}),
    ("reset_tokens", [("expires_at", ASCENDING)], {"expireAfterSeconds": 0}),
    ("reset_tokens", [("user_id", ASCENDING)], {}),
]


def describe(collection, keys):
    return f"{collection}({', '.join(field for field, _ in keys)})"


class Indexes:
    """Prepares the database in the background: backfills the old backend's users, then builds
    the plan, the first attempt at once and then, while the database cannot be reached, every
    `retry_seconds`. Started by the store's open, which returns at once: on a large old
    database this takes a while, and the server listens (answering /readyz with 503) meanwhile."""

    def __init__(self, db, retry_seconds=5.0):
        self.retry_seconds = retry_seconds
        self._db = db
        self._problems = [NOT_BUILT_YET]
        self._preparing = None

    def problems(self):
        return list(self._problems)

    def start(self):
        """Starts the preparation in the background, once; returns at once."""
        if self._preparing is None:
            self._preparing = asyncio.ensure_future(self._prepare())

    async def prepared(self):
        """Returns once the preparation has run (the plan built, or failed for good: `problems`
        says which). Awaiting the task runs it even on a client that never yields to the loop
        (the tests' MongoDB double); it never returns while the database cannot be reached."""
        if self._preparing is None:
            raise RuntimeError("the preparation has not been started: open the store first")
        # Shielded: a caller that stops waiting does not stop the preparation.
        await asyncio.shield(self._preparing)

    async def _prepare(self):
        try:
            while not await self._attempt():
                await asyncio.sleep(self.retry_seconds)
        except Exception as error:  # a bug: say so in the log and in /readyz rather than nowhere
            log.exception("preparing the database failed")
            self._problems = [f"indexes could not be built: {error!r}"]

    async def _attempt(self):
        try:
            await self._backfill_lower_cased_names()
            failed = await self._build_plan()
        except driver_errors.PyMongoError as error:
            refused = refusal(error)
            if refused:
                # Wrong credentials: serve (503s, /readyz says why) and keep trying, since the
                # operator may fix the user on the server side; logged once, not every retry.
                if self._problems != [refused]:
                    log.error("%s: check the user, password and authSource in MONGO_URI and the "
                              "user's roles; retrying every %.0f s", refused, self.retry_seconds)
                self._problems = [refused]
                return False
            if is_unavailable(error):
                log.warning("database not reachable yet (%s); retrying in %.0f s",
                            type(error).__name__, self.retry_seconds)
                return False
            # The backfill failed: serve anyway, and say why.
            log.error("could not create indexes: %s", error)
            self._problems = [f"indexes could not be built: {error}"]
            return True
        log.info("database indexes are in place%s", f", but for {len(failed)} (see above)" if failed else "")
        self._problems = [f"the index {name} could not be built (see the log)" for name in failed]
        return True

    async def _build_plan(self):
        """Creates every index it can; returns the descriptions of those it could not."""
        failed = []
        for collection, keys, options in PLAN:
            try:
                # Outside the client's operation timeout (timeoutMS, MongoStore.connect): a build
                # over a large old collection takes minutes, more than any request's bound, and
                # cut off it would start over at every retry and never finish. No request waits
                # for it (it runs in the background; /readyz says "not built yet" meanwhile).
                # pymongo.timeout(0), not timeout(None): PyMongo applies the client's timeoutMS
                # whenever no timeout is set in the context (pymongo/_csot.py, `apply`), and None
                # is "not set", whereas 0 is "no timeout" (MongoClient's timeoutMS: "0 or None
                # means no timeout"). Server selection keeps serverSelectionTimeoutMS, so an
                # unreachable server still fails the attempt, which is retried. Motor runs the
                # call on its thread pool in a copy of this context, so the setting reaches it.
                with pymongo.timeout(0):
                    await self._db[collection].create_index(keys, **options)
            except driver_errors.PyMongoError as error:
                if is_unavailable(error):
                    raise
                failed.append(describe(collection, keys))
                log.error("could not create the index %s on %s: %s", keys, collection, error)
        return failed

    async def _backfill_lower_cased_names(self):
        # Users the old backend wrote have no lower-cased copies, which the unique indexes and
        # find_by_email need. Lowered by Python's str.lower, as Users.add lowers: MongoDB's
        # $toLower folds ASCII letters only.
        users = self._db["users"]
        missing = {"$or": [{"email_lower": {"$exists": False}}, {"username_lower": {"$exists": False}}]}
        async for user in users.find(missing, {"email": 1, "username": 1}):
            await users.update_one({"_id": user["_id"]}, {"$set": {
                "email_lower": identity_key(str(user.get("email", ""))),
                "username_lower": identity_key(str(user.get("username", "")))}})

    async def close(self):
        """Stops a preparation still running (it starts again at the next open)."""
        if self._preparing is not None:
            self._preparing.cancel()
            await asyncio.gather(self._preparing, return_exceptions=True)
            self._preparing = None
