"""The indexes the old backend had, the ones our queries need, and building them.

Building is idempotent (creating an index that exists with the same options is a no-op), so
every attempt builds the whole plan. An index that cannot be built is logged and skipped, the
others are still built, and the attempt is retried every `rebuild_seconds` until every index is
there: the operator resolves what stopped it (`python -m storage.check` says what) while the
server runs. While a required index is missing, `problems` names it and why, and /readyz is 503.
"""
import asyncio
import dataclasses
import logging

import pymongo
from pymongo import ASCENDING, DESCENDING
from pymongo import errors as driver_errors

from domain import repositories
from domain.identity import identity_key
from storage.mongo.repository import is_unavailable, refusal

log = logging.getLogger("store")

NOT_BUILT_YET = "indexes not built yet"

# Server error codes an index build ends with because of what is already in the database.
DUPLICATE_KEY = 11000
INDEX_OPTIONS_CONFLICT, INDEX_KEY_SPECS_CONFLICT = 85, 86
CANNOT_EXTRACT_GEO_KEYS = 16755
BAD_VALUE = 2


@dataclasses.dataclass(frozen=True)
class Index:
    collection: str
    keys: tuple
    options: dict = dataclasses.field(default_factory=dict)
    # Serving without it breaks a rule (uniqueness) or a route (nearby search): while it is
    # missing the store reports a problem and /readyz is 503. The others only cost speed.
    required: bool = False

    @property
    def name(self):
        """The name MongoDB gives an index created without one: the keys and directions joined."""
        return "_".join(f"{field}_{direction}" for field, direction in self.keys)

    def describe(self):
        return f"{self.collection}({', '.join(field for field, _ in self.keys)})"


PLAN = (
    # Registration's rule "no two users share an email or a username, ignoring case". Sparse:
    # a user without the key copy is not in the index, so any number of them may exist
    # (users another writer inserts, such as the old backend during a migration; without it,
    # MongoDB indexes the missing field as null and refuses every such user after the first).
    # Sparse rather than a partialFilterExpression: the same for a field that is a string or
    # absent (Users.add and the backfill never write null), and the tests' MongoDB double honours
    # it when building the index too.
    Index("users", (("email_lower", ASCENDING),), {"unique": True, "sparse": True}, required=True),
    Index("users", (("username_lower", ASCENDING),), {"unique": True, "sparse": True}, required=True),
    # The old backend's, kept as it made them: exact emails and usernames (see Users' `_named`).
    Index("users", (("email", ASCENDING),), {"unique": True}),
    Index("users", (("username", ASCENDING),), {"unique": True}),
    # Followers lists: users whose `following` holds someone, in _id order.
    Index("users", (("following", ASCENDING), ("_id", ASCENDING))),
    # A calendar feed's user from its key's digest (sparse: users without a key stay out).
    Index("users", (("calendar_key", ASCENDING),), {"unique": True, "sparse": True}),
    # Nearby search: $geoNear fails without it.
    Index("events", (("location", "2dsphere"),), required=True),
    Index("events", (("organizer_id", ASCENDING),)),
    Index("events", (("date", ASCENDING), ("_id", ASCENDING))),
    # An organizer's events in date order.
    Index("events", (("organizer_id", ASCENDING), ("date", ASCENDING), ("_id", ASCENDING))),
    Index("messages", (("event_id", ASCENDING), ("timestamp", ASCENDING))),
    # A room's order, "everything after message X", each batch's id floor, and counts per event.
    Index("messages", (("event_id", ASCENDING), ("_id", ASCENDING))),
    # A sender's client_msg_id is stored once per room, also across restarts: the chat's
    # "at most once" rests on it.
    Index("messages", (("event_id", ASCENDING), ("user_id", ASCENDING), ("client_msg_id", ASCENDING)),
          {"unique": True, "partialFilterExpression": {"client_msg_id": {"$exists": True}}}, required=True),
    # A message's edits and deletions (Messages.change: the earlier change a retry repeats);
    # sparse: messages have no target_id.
    Index("messages", (("event_id", ASCENDING), ("target_id", ASCENDING), ("_id", ASCENDING)), {"sparse": True}),
    # A user's mute in an event's chat, one per (event, user); each goes once its `until` has
    # passed (TTL, expireAfterSeconds 0: "expire at a specific clock time" in MongoDB's manual).
    Index("chat_mutes", (("event_id", ASCENDING), ("user_id", ASCENDING)), {"unique": True}, required=True),
    Index("chat_mutes", (("until", ASCENDING),), {"expireAfterSeconds": 0}),
    Index("chat_removals", (("event_id", ASCENDING), ("user_id", ASCENDING)), {"unique": True}, required=True),
    # An event's moderation log, newest first.
    Index("chat_moderation", (("event_id", ASCENDING), ("_id", ASCENDING))),
    # One read marker per user and event: the upsert of two first markers at once stores one.
    Index("chat_reads", (("event_id", ASCENDING), ("user_id", ASCENDING)), {"unique": True}, required=True),
    # The feed sorts on (timestamp, _id) under actor_id $in; the old (actor_id, timestamp) is its prefix.
    Index("activities", (("actor_id", ASCENDING), ("timestamp", DESCENDING), ("_id", DESCENDING))),
    Index("activities", (("timestamp", DESCENDING),)),
    # An activity recorded once per subject (Activities.add_once): the decision between concurrent
    # calls. The old backend's activities have no key and stay out of it (sparse, as above).
    Index("activities", (("once_key", ASCENDING),), {"unique": True, "sparse": True}, required=True),
    # A subject's activities, old ones included, found without scanning all of the actor's
    # (add_once, withdraw): a user following 100,000 people has as many.
    Index("activities", (("actor_id", ASCENDING), ("type", ASCENDING), ("event_id", ASCENDING),
                         ("target_user_id", ASCENDING))),
    # Tokens are forgotten once expired (the TTL monitor runs once a minute).
    Index("revoked_tokens", (("expires_at", ASCENDING),), {"expireAfterSeconds": 0}),
    Index("reset_tokens", (("expires_at", ASCENDING),), {"expireAfterSeconds": 0}),
    Index("reset_tokens", (("user_id", ASCENDING),)),
    # A user's notifications newest first, their unread count, and one per key (Notifications.add);
    # the key is absent on unkeyed ones, which stay out of the unique index. Forgotten after the
    # retention period (repositories.Notifications.RETENTION) by the TTL monitor.
    Index("notifications", (("user_id", ASCENDING), ("_id", DESCENDING))),
    Index("notifications", (("user_id", ASCENDING), ("read", ASCENDING))),
    Index("notifications", (("key", ASCENDING), ("user_id", ASCENDING)),
          {"unique": True, "partialFilterExpression": {"key": {"$exists": True}}}, required=True),
    Index("notifications", (("created_at", ASCENDING),),
          {"expireAfterSeconds": int(repositories.Notifications.RETENTION.total_seconds())}),
)


# How the users' key copies (email_lower, username_lower: the names are the first release's) were
# computed: 2 is domain.identity.identity_key, NFKC and case folding (MongoDB's $toLower folds
# ASCII letters only, hence Python). Users without it have copies of an earlier release's
# str.lower, or none (the old backend's): the preparation recomputes theirs.
KEYS_VERSION = 2


async def shared_values(collection, field, samples=5):
    """Up to `samples` values of `field` that several documents share, each with a few of their
    ids: what stops a unique index over `field`."""
    pipeline = [
        {"$match": {field: {"$exists": True}}},
        {"$group": {"_id": f"${field}", "ids": {"$push": "$_id"}, "count": {"$sum": 1}}},
        {"$match": {"count": {"$gt": 1}}},
        {"$sort": {"_id": 1}},
        {"$limit": samples},
    ]
    return await collection.aggregate(pipeline, allowDiskUse=True).to_list(None)


class Indexes:
    """Prepares the database in the background: backfills the old backend's users, then builds
    the plan; the first attempt at once, then every `retry_seconds` while the database cannot be
    reached, and every `rebuild_seconds` while an index is missing. Started by the store's open,
    which returns at once: on a large old database this takes a while, and the server listens
    (answering /readyz with 503) meanwhile."""

    def __init__(self, db, retry_seconds=5.0, rebuild_seconds=60.0):
        self.retry_seconds = retry_seconds
        self.rebuild_seconds = rebuild_seconds
        self._db = db
        self._problems = [NOT_BUILT_YET]
        self._logged = None
        self._commit_quorum = "majority"
        self._preparing = None
        self._attempted = asyncio.Event()

    def problems(self):
        return list(self._problems)

    def start(self):
        """Starts the preparation in the background, once; returns at once."""
        if self._preparing is None:
            self._preparing = asyncio.ensure_future(self._prepare())

    async def prepared(self):
        """Returns once the preparation has reached the database and made its first attempt
        (`problems` says what it could not build; it goes on retrying that in the background).
        Never returns while the database cannot be reached."""
        if self._preparing is None:
            raise RuntimeError("the preparation has not been started: open the store first")
        # Shielded: a caller that stops waiting does not stop the preparation. Waiting on the
        # task too ends the wait should the preparation stop on a bug.
        attempted = asyncio.ensure_future(self._attempted.wait())
        try:
            await asyncio.wait([asyncio.shield(self._preparing), attempted], return_when=asyncio.FIRST_COMPLETED)
        finally:
            attempted.cancel()

    async def _prepare(self):
        try:
            while True:
                reached, complete = await self._attempt()
                if reached:
                    self._attempted.set()
                if complete:
                    return
                await asyncio.sleep(self.rebuild_seconds if reached else self.retry_seconds)
        except Exception as error:  # a bug: say so in the log and in /readyz rather than nowhere
            log.exception("preparing the database failed")
            self._problems = [f"indexes could not be built: {error!r}"]

    async def _attempt(self):
        """One pass: (whether the database answered, whether every index is in place)."""
        try:
            failures = await self.build()
        except driver_errors.PyMongoError as error:
            refused = refusal(error)
            if refused:
                # Wrong credentials: serve (503s, /readyz says why) and keep trying, since the
                # operator may fix the user on the server side.
                self._problems = [refused]
                self._report([refused], f"{refused}: check the user, password and authSource in MONGO_URI "
                                        f"and the user's roles; retrying every {self.retry_seconds:.0f} s")
                return False, False
            if is_unavailable(error):
                log.warning("database not reachable yet (%s); retrying in %.0f s",
                            type(error).__name__, self.retry_seconds)
                return False, False
            # The backfill failed on something in the data: say why, and retry later.
            self._problems = [f"the users could not be prepared: {error}"]
            self._report(self._problems, f"could not prepare the users: {error}")
            return True, False
        self._problems = [reason for index, reason in failures if index.required]
        if failures:
            self._report([reason for _, reason in failures],
                         "database indexes are in place but for these, retried every "
                         f"{self.rebuild_seconds:.0f} s: " + "; ".join(reason for _, reason in failures))
        else:
            log.info("database indexes are in place")
        return True, not failures

    def _report(self, reasons, message):
        """Logs `message` when the reasons differ from the last ones logged, not at every retry."""
        if reasons != self._logged:
            log.error("%s", message)
            self._logged = reasons

    async def build(self):
        """One pass of what the server does at start: (re)makes the users' key copies, then
        creates every index of the plan it can. Returns (index, reason) for those it could
        not. Also `python -m storage.check --fix-indexes`."""
        await self._backfill_key_copies()
        return await self._build_plan()

    async def _build_plan(self):
        """Creates every index it can; returns (index, reason) for those it could not."""
        failures = []
        for index in PLAN:
            try:
                await self._create(index)
            except driver_errors.OperationFailure as error:
                if is_unavailable(error):
                    raise
                failures.append((index, await self._reason(index, error)))
        return failures

    async def _create(self, index):
        collection = self._db[index.collection]
        model = pymongo.IndexModel(list(index.keys), **index.options)
        # On a replica set, MongoDB (4.4+) commits an index build once the members of its commit
        # quorum have built it; the default quorum, every voting data-bearing member, makes the
        # build wait as long as any one of them is down. A majority commits as soon as the set
        # itself could elect a primary, and the member that was down builds the index when it
        # catches up. (A command option: create_index would put it in the index's own options.)
        quorum = {"commitQuorum": self._commit_quorum} if self._commit_quorum else {}
        # Outside the client's operation timeout (timeoutMS, MongoStore.connect): a build over a
        # large old collection takes minutes, more than any request's bound, and cut off it would
        # start over at every retry and never finish. No request waits for it (it runs in the
        # background; /readyz says "not built yet" meanwhile). pymongo.timeout(0), not
        # timeout(None): PyMongo applies the client's timeoutMS whenever no timeout is set in the
        # context (pymongo/_csot.py, `apply`), and None is "not set", whereas 0 is "no timeout"
        # (MongoClient's timeoutMS: "0 or None means no timeout"). Server selection keeps
        # serverSelectionTimeoutMS, so an unreachable server still fails the attempt, which is
        # retried. Motor runs the call on its thread pool in a copy of this context.
        with pymongo.timeout(0):
            try:
                await collection.create_indexes([model], **quorum)
            except driver_errors.OperationFailure as error:
                if error.code != BAD_VALUE or not quorum:
                    raise
                # A standalone server refuses any commitQuorum (SERVER-39532) with BadValue, and
                # has no other members to wait for: build without it from now on. Any other bad
                # value fails again below, and is reported.
                self._commit_quorum = None
                await collection.create_indexes([model])

    async def _reason(self, index, error):
        """What stops `index`, for /readyz and the log: what to do about it, where it is known."""
        if error.code == DUPLICATE_KEY:
            field = index.keys[0][0]
            shared = await shared_values(self._db[index.collection], field)
            examples = "; ".join(f"{group['_id']!r}: {', '.join(map(str, group['ids'][:3]))}" for group in shared)
            return (f"the unique index {index.describe()} cannot be built: users share "
                    f"{field.removesuffix('_lower')}s ignoring case ({examples}); "
                    f"`python -m storage.check` lists them all")
        if error.code in (INDEX_OPTIONS_CONFLICT, INDEX_KEY_SPECS_CONFLICT):
            return (f"the index {index.describe()} cannot be built: an index on the same keys exists with "
                    f"another name or other options; `python -m storage.check --fix-indexes` replaces it")
        if error.code == CANNOT_EXTRACT_GEO_KEYS:
            return (f"the index {index.describe()} cannot be built: some events' location is not a valid "
                    f"GeoJSON point; `python -m storage.check` lists them")
        return f"the index {index.describe()} could not be built: {error}"

    async def _backfill_key_copies(self):
        # Users the old backend wrote have no key copies, which the unique indexes and
        # find_by_email need, and an earlier release's copies are str.lower's: both are (re)made
        # once, the oldest users first, and marked with KEYS_VERSION. A user whose email or
        # username is not a string gets no copy for it: they stay out of the index (it is
        # sparse), and storage.check reports them. Finding the users without the mark scans the
        # collection: once at each start, and once a minute while an index is missing.
        users = self._db["users"]
        stale = {"keys_version": {"$ne": KEYS_VERSION}}
        async for user in users.find(stale, {"email": 1, "username": 1}).sort("_id", 1):
            for field in ("email", "username"):
                if isinstance(user.get(field), str):
                    await self._copy(users, user["_id"], field, user[field])
            await users.update_one({"_id": user["_id"]}, {"$set": {"keys_version": KEYS_VERSION}})

    async def _copy(self, users, user_id, field, value):
        try:
            await users.update_one({"_id": user_id}, {"$set": {f"{field}_lower": identity_key(value)}})
        except driver_errors.DuplicateKeyError:
            # Another user holds that key under the unique index: a case-variant duplicate that
            # another writer (the old backend during a migration) added since the index was
            # built, or two users an earlier release's str.lower told apart (fullwidth "ａna" and
            # "ana"). This one is left without the copy: it is found by its exact value only
            # (Users' `_named`), and the rule holds for everyone else.
            await users.update_one({"_id": user_id}, {"$unset": {f"{field}_lower": ""}})
            log.warning("user %s shares its %s with another user once normalized: left without a key copy; "
                        "it logs in with exactly the %s it registered, and `python -m storage.check` lists "
                        "such users", user_id, field, field)

    async def close(self):
        """Stops a preparation still running (it starts again at the next open)."""
        if self._preparing is not None:
            self._preparing.cancel()
            await asyncio.gather(self._preparing, return_exceptions=True)
            self._preparing = None
