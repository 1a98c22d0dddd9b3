"""What stops or hurts this server taking over the old Flask backend's database, found without
writing anything; and, on request, its indexes put in place (`python -m storage.check`).

A finding `blocks` when the server cannot take the database over as it is: a unique or 2dsphere
index of the plan (storage/mongo/indexes.py) cannot be built over the data, or an existing index
makes the build fail. It `hurts` when the server runs but some records misbehave or are lost to
it: ids stored as text, times that are not dates, arrays near the 16 MB document limit, indexes
the server has yet to build.

Every check streams or counts on the server, so that it works on a large database: counts and
samples by query where a query says it, a pass over a projection where the rule is Python's (the
store's key function `identity_key`, GeoJSON validity).
"""
import dataclasses
import math

import pymongo
from pymongo import errors as driver_errors

from domain.gallery import MAX_PHOTOS_PER_EVENT
from domain.identity import identity_key
from domain.repositories import Events
from storage.mongo import MongoStore
from storage.mongo.events import TIME_FIELDS
from storage.mongo.indexes import PLAN, Indexes
from storage.mongo.repository import is_unavailable, refusal

BLOCKS, HURTS = "blocks", "hurts"
SAMPLES = 5
BATCH = 1000

# The fields that hold ids, or arrays of ids: ObjectIds in the old backend's documents, and the
# store looks them up as ObjectIds (storage/mongo/values.py), so an id stored as text refers to
# nothing.
ID_FIELDS = {
    "users": ("_id", "following", "followers", "created_events", "rsvped_events"),
    "events": ("_id", "organizer_id", "rsvps", "arrivals"),
    "messages": ("event_id", "user_id"),
    "activities": ("actor_id", "event_id", "target_user_id"),
}

# Times the store reads as dates (storage/mongo/values.py `aware`, storage/mongo/events.py
# `SERVED`): anything else reads as no time, and an event without a date is not served. An
# event's `date` is required; the others may be absent or null.
DATE_FIELDS = {
    "events": TIME_FIELDS,
    "messages": ("timestamp",),
    "activities": ("timestamp",),
}
REQUIRED_DATES = {("events", "date")}

# An id in a BSON array takes about 20 bytes (a type byte, its position as a decimal key, 12
# bytes), so 400,000 of them are 8 MB: one array holding half of MongoDB's 16 MB document limit.
# Such a user is one doubling away from a document MongoDB refuses to grow, and from then on
# every follow of or by them fails.
MAX_FOLLOW_IDS = 400_000
_FOLLOWS_STOP = "Half the 16 MB document limit in one array: follows stop working once the document reaches it."

# (collection, array, the most it should hold, what happens past it).
ARRAY_LIMITS = (
    ("events", "rsvps", Events.MAX_RSVPS, "The event takes no more RSVPs (the store's bound, kept "
                                          "for the 16 MB document limit)."),
    ("events", "arrivals", Events.MAX_RSVPS, "More arrivals than the store ever records for an event: "
                                             "the document nears the 16 MB limit."),
    ("events", "photo_gallery", MAX_PHOTOS_PER_EVENT, "The gallery takes no more photos."),
    ("users", "following", MAX_FOLLOW_IDS, _FOLLOWS_STOP),
    ("users", "followers", MAX_FOLLOW_IDS, _FOLLOWS_STOP),
)

# The options that make two indexes over the same keys different indexes to MongoDB: creating
# ours where an index with our keys differs in one of them, or has another name, fails with
# IndexOptionsConflict (85) or IndexKeySpecsConflict (86).
IDENTITY_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds", "collation")


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str  # BLOCKS or HURTS
    kind: str      # what was found, in a few words that do not depend on the data
    where: str     # collection.field, or collection.index-name
    subject: str   # what these are, plural, e.g. "events whose date is not a BSON date"
    effect: str    # what they do to the takeover, and what to do about them
    count: int
    samples: tuple = ()
    # The plan's indexes this data stops: --fix-indexes keeps an existing index in their place.
    stops: tuple = ()


@dataclasses.dataclass(frozen=True)
class Report:
    database: str
    data: tuple     # findings in the documents
    indexes: tuple  # findings in the indexes
    actions: tuple = ()  # what --fix-indexes did

    @property
    def findings(self):
        return self.data + self.indexes

    @property
    def blocks(self):
        return any(finding.severity == BLOCKS for finding in self.findings)


class CannotCheck(Exception):
    """The database cannot be checked (not reached, refused, misnamed); the text says why in one line."""


def connect(uri, dbname, timeout_ms):
    """The store the server would open with these settings (the database the URI names, else
    `dbname`), not yet reached."""
    try:
        return MongoStore.connect(uri, dbname, timeout_ms)
    except driver_errors.ConfigurationError as error:
        raise CannotCheck(f"MONGO_URI is not usable: {error}") from None


async def take_stock(db, fix_indexes=False):
    """The report on `db`; with `fix_indexes`, after putting the indexes in place."""
    try:
        await db.command("ping")
        # The checks read whole collections and the index builds take minutes on a large
        # database: more than the per-operation bound of the store's client (MONGO_TIMEOUT_MS),
        # so they run without it, as the server's own builds do (storage/mongo/indexes.py).
        # Server selection keeps its bound: a server lost meanwhile still ends the check.
        with pymongo.timeout(0):
            report = await check(db)
            if fix_indexes:
                report = await put_indexes_in_place(db, report)
        return report
    except driver_errors.PyMongoError as error:
        refused = refusal(error)
        if refused:
            raise CannotCheck(f"{refused}: check the user, password and authSource in MONGO_URI, and that "
                              "the user may read the database (and create indexes, for --fix-indexes)") from None
        if is_unavailable(error):
            # The driver's text goes on with a description of the whole topology: its first
            # part names the server and what failed.
            raise CannotCheck(f"MongoDB not reachable: {str(error).split(', Timeout:')[0]}") from None
        if isinstance(error, driver_errors.ConfigurationError):  # e.g. a mongodb+srv name that does not resolve
            raise CannotCheck(f"MONGO_URI is not usable: {error}") from None
        raise


async def check(db):
    """What in `db` stops or hurts a takeover. Reads only."""
    data = []
    data += await _shared_names(db["users"])
    data += await _users_without_names(db["users"])
    data += await _locations(db["events"])
    data += await _dates(db)
    data += await _text_ids(db)
    data += await _long_arrays(db)
    return Report(db.name, tuple(data), await _index_findings(db))


async def put_indexes_in_place(db, report):
    """What the server does at start, done now: drops the indexes that have our keys but another
    name or other options (unless the data stops their replacement: then the old index is kept
    rather than leaving none), (re)makes the users' key copies and builds the plan.
    Returns `report` with its index findings taken again and what was done."""
    stopped = [index for finding in report.data for index in finding.stops]
    actions = []
    for collection, name, index, differences in _conflicts(await _existing_indexes(db)):
        if index in stopped:
            actions.append(f"kept {collection}.{name}: the data stops its replacement {index.describe()} (see above)")
            continue
        await db[collection].drop_index(name)
        actions.append(f"dropped {collection}.{name}: it differed from {index.describe()} in {'; '.join(differences)}")
    failures = await Indexes(db).build()
    actions.append(f"{len(PLAN) - len(failures)} of the {len(PLAN)} indexes of the plan are in place")
    return dataclasses.replace(report, indexes=await _index_findings(db, failures), actions=tuple(actions))


# --- users' emails and usernames ----------------------------------------------------------------

NAME_FIELDS = ("email", "username")


async def _shared_names(users):
    """Emails and usernames that several users share under `identity_key`, the key of the store's
    unique indexes (email_lower, username_lower): these indexes cannot be built over them.

    Two streaming passes, so that a large collection never sits in memory: the first keeps the
    hashes of the keys only, the second the users whose key's hash came up twice, grouped by the
    key itself (which drops hash collisions)."""
    seen = {field: set() for field in NAME_FIELDS}
    repeated = {field: set() for field in NAME_FIELDS}
    async for field, key, _ in _names(users):
        (repeated[field] if hash(key) in seen[field] else seen[field]).add(hash(key))
    del seen  # before the second pass
    groups = {field: {} for field in NAME_FIELDS}
    if any(repeated.values()):
        async for field, key, user in _names(users):
            if hash(key) in repeated[field]:
                groups[field].setdefault(key, []).append((user["_id"], user[field]))
    findings = []
    for field in NAME_FIELDS:
        shared = sorted((key, members) for key, members in groups[field].items() if len(members) > 1)
        if not shared:
            continue
        stops = [_plan_index("users", f"{field}_lower")]
        # The old backend's exact index too, when some share the very same value.
        if any(len({value for _, value in members}) < len(members) for _, members in shared):
            stops.append(_plan_index("users", field))
        findings.append(Finding(
            BLOCKS, "shared ignoring case", f"users.{field}", f"{field}s several users share, ignoring case",
            f"The unique index {' and '.join(index.describe() for index in stops)} cannot be built (error 11000): "
            f"leave each {field} to one user (merge the accounts, or change the others' {field}s).",
            len(shared),
            tuple(f"{key!r}: " + ", ".join(f"{user_id} {value!r}" for user_id, value in members[:SAMPLES])
                  for key, members in shared[:SAMPLES]),
            tuple(stops)))
    return findings


async def _names(users):
    """(field, key, user) for every email and username that is text, streamed."""
    async for user in users.find({}, {field: 1 for field in NAME_FIELDS}, batch_size=BATCH):
        for field in NAME_FIELDS:
            if isinstance(user.get(field), str):
                yield field, identity_key(user[field]), user


async def _users_without_names(users):
    findings = []
    for field, subject, effect in (
            ("email", "users without an email", "They cannot log in or reset their password."),
            ("username", "users without a username",
             "Responses naming them carry a null username, which the API description does not allow.")):
        found = await _matching(users, {field: {"$not": {"$type": "string"}}})
        if found:
            findings.append(Finding(HURTS, "no text", f"users.{field}", f"{subject} (missing, null or not text)",
                                    effect, *found))
    return findings


# --- events' locations ----------------------------------------------------------------------------

async def _locations(events):
    findings = []
    invalid, legacy = [0, []], [0, []]
    async for event in events.find({"location": {"$ne": None}}, {"location": 1}, batch_size=BATCH):
        location = event["location"]
        if _is_point(location):
            continue
        found = legacy if _is_legacy_pair(location) else invalid
        found[0] += 1
        if len(found[1]) < SAMPLES:
            found[1].append(str(event["_id"]))
    if invalid[0]:
        findings.append(Finding(
            BLOCKS, "invalid location", "events.location",
            "events whose location is not a GeoJSON Point with [longitude, latitude] in range",
            "The 2dsphere index events(location), which nearby search needs, cannot be built (error 16755): "
            "correct their location, or remove it (the server then leaves the event out until it has one).",
            invalid[0], tuple(invalid[1]), (_plan_index("events", "location"),)))
    if legacy[0]:
        findings.append(Finding(
            HURTS, "legacy location", "events.location", "events whose location is a legacy coordinate pair",
            "MongoDB indexes them, but the server reads GeoJSON points only: it leaves these events out (not "
            "listed, not found). Rewrite them as {type: 'Point', coordinates: [longitude, latitude]}.",
            legacy[0], tuple(legacy[1])))
    found = await _matching(events, {"location": None})
    if found:
        findings.append(Finding(HURTS, "no location", "events.location", "events without a location",
                                "The server leaves them out (not listed, not found).", *found))
    return findings


def _is_point(location):
    """Whether `location` is what the server reads: a GeoJSON Point of two finite numbers,
    longitude within ±180 and latitude within ±90."""
    return isinstance(location, dict) and location.get("type") == "Point" and _in_range(location.get("coordinates"))


def _is_legacy_pair(location):
    """Whether `location` is a legacy coordinate pair in range, which a 2dsphere index takes too:
    [longitude, latitude], or an embedded document of the two."""
    if isinstance(location, dict) and "type" not in location:
        location = list(location.values())
    return _in_range(location)


def _in_range(coordinates):
    if not isinstance(coordinates, list) or len(coordinates) != 2:
        return False
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in coordinates):
        return False
    longitude, latitude = coordinates
    return -180 <= longitude <= 180 and -90 <= latitude <= 90


# --- dates, ids and arrays --------------------------------------------------------------------------

async def _dates(db):
    findings = []
    for collection, fields in DATE_FIELDS.items():
        for field in fields:
            if (collection, field) in REQUIRED_DATES:
                query, subject = {field: {"$not": {"$type": "date"}}}, "missing or not a BSON date"
                effect = "The server leaves these events out (not listed, not found): store the date as a date."
            else:
                query, subject = {field: {"$ne": None, "$not": {"$type": "date"}}}, "not a BSON date"
                effect = ("The server reads it as no time (null in responses; such activities leave the feed): "
                          "store it as a date.")
            found = await _matching(db[collection], query)
            if found:
                findings.append(Finding(
                    HURTS, "not a date", f"{collection}.{field}", f"{collection} whose {field} is {subject}",
                    effect, *found))
    return findings


async def _text_ids(db):
    findings = []
    for collection, fields in ID_FIELDS.items():
        for field in fields:
            # $type matches an array holding at least one such element, as well as the value itself.
            found = await _matching(db[collection], {field: {"$type": "string"}})
            if found:
                findings.append(Finding(
                    HURTS, "text ids", f"{collection}.{field}", f"{collection} with ids stored as text in {field}",
                    "The server looks ids up as ObjectIds: these refer to nothing. Store them as ObjectIds.",
                    *found))
    return findings


async def _long_arrays(db):
    findings = []
    for collection, field, limit, effect in ARRAY_LIMITS:
        # Position `limit` (counted from 0) exists in arrays longer than `limit`.
        found = await _matching(db[collection], {f"{field}.{limit}": {"$exists": True}})
        if found:
            findings.append(Finding(HURTS, "too long", f"{collection}.{field}",
                                    f"{collection} with more than {limit:,} {field}", effect, *found))
    return findings


async def _matching(collection, query):
    """(count, a few ids) of the documents matching `query`; () when none does."""
    count = await collection.count_documents(query)
    if not count:
        return ()
    matching = collection.find(query, {"_id": 1}).sort("_id", 1).limit(SAMPLES)  # the oldest, usually
    samples = [str(document["_id"]) async for document in matching]
    return count, tuple(samples)


# --- indexes ------------------------------------------------------------------------------------------

def _plan_index(collection, field):
    """The plan's index over `field` alone."""
    return next(index for index in PLAN if index.collection == collection and index.keys[0][0] == field
                and len(index.keys) == 1)


async def _index_findings(db, failures=()):
    """The plan's indexes missing, and the existing ones in their way. `failures`: (index,
    reason) for the builds just attempted, reported with their reason rather than as missing."""
    findings = []
    for index, reason in failures:
        findings.append(Finding(BLOCKS if index.required else HURTS, "not built", index.describe(),
                                "indexes that could not be built", reason, 1))
    existing = await _existing_indexes(db)
    conflicts = _conflicts(existing)
    for collection, name, index, differences in conflicts:
        findings.append(Finding(
            BLOCKS, "conflicting index", f"{collection}.{name}", f"indexes in the way of {index.describe()}",
            f"It differs from ours in {'; '.join(differences)}: building ours fails at every start (error 85 or 86). "
            "`--fix-indexes` replaces it.", 1))
    accounted = [index for index, _ in failures] + [index for _, _, index, _ in conflicts]
    missing = [index.describe() + (" (required)" if index.required else "") for index in PLAN
               if index not in accounted and index.name not in existing[index.collection]]
    if missing:
        findings.append(Finding(
            HURTS, "missing indexes", "indexes", "indexes of the plan not built yet",
            "The server builds them at start, in the background; /readyz answers 503 until the required "
            "ones exist, and queries that need the others scan their collection meanwhile.",
            len(missing), tuple(missing)))
    return tuple(findings)


async def _existing_indexes(db):
    """{collection: {name: spec}} for the collections of the plan ({} for one not there yet)."""
    collections = dict.fromkeys(index.collection for index in PLAN)
    return {collection: await db[collection].index_information() for collection in collections}


def _conflicts(existing):
    """(collection, existing name, plan index, differences) for every existing index in the way of
    a plan index that is not there as planned: one with its keys but another name or other
    options, or with its name but other keys."""
    conflicts = []
    for index in PLAN:
        candidates = [(name, tuple(tuple(key) for key in spec["key"]), spec)
                      for name, spec in existing[index.collection].items()]
        candidates = [(name, keys, spec) for name, keys, spec in candidates if name == index.name or keys == index.keys]
        differences = [(name, _differences(index, name, keys, spec)) for name, keys, spec in candidates]
        # Ours already there: creating it is a no-op, whatever else has its keys.
        if any(not different for _, different in differences):
            continue
        conflicts += [(index.collection, name, index, different) for name, different in differences if different]
    return conflicts


def _differences(index, name, keys, spec):
    """How the existing index (`name`, `keys`, `spec`) differs from the plan's `index`."""
    if keys != index.keys:
        return [f"its keys ({', '.join(f'{field} {direction}' for field, direction in keys)})"]
    differences = [] if name == index.name else [f"its name ({name!r}; ours: {index.name!r})"]
    ours, theirs = _identity(index.options), _identity(spec)
    differences += [f"{option} ({theirs[option]!r}; ours: {ours[option]!r})"
                    for option in IDENTITY_OPTIONS if ours[option] != theirs[option]]
    return differences


def _identity(options):
    identity = {option: options.get(option) for option in IDENTITY_OPTIONS}
    # Absent and false are the same; older shells stored true as 1.
    identity["unique"] = bool(identity["unique"])
    identity["sparse"] = bool(identity["sparse"])
    return identity


# --- the report as text -----------------------------------------------------------------------------

def format_report(report):
    """The report as the operator reads it: a verdict, then each finding with a few samples."""
    blocking = sum(finding.severity == BLOCKS for finding in report.findings)
    hurting = len(report.findings) - blocking
    if blocking:
        verdict = (f"the takeover is blocked: {blocking} finding(s) to resolve first"
                   + (f", and {hurting} that hurt" if hurting else ""))
    elif hurting:
        verdict = f"nothing blocks the takeover; {hurting} finding(s) hurt"
    else:
        verdict = "nothing found: the server can take this database over"
    lines = [f"Database {report.database!r}: {verdict}."]
    if report.actions:
        lines.append("--fix-indexes:")
        lines += [f"  {action}" for action in report.actions]
    for finding in sorted(report.findings, key=lambda finding: finding.severity != BLOCKS):
        lines.append(f"{finding.severity.upper():<6} {finding.where}: {finding.subject} ({finding.count:,}). "
                     f"{finding.effect}")
        lines += [f"         {sample}" for sample in finding.samples]
        if finding.samples and finding.count > len(finding.samples):
            lines.append(f"         and {finding.count - len(finding.samples):,} more")
    return "\n".join(lines)
