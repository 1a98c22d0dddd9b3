"""The takeover check (`python -m storage.check`, storage/mongo/takeover.py) on databases the old
Flask backend left: its collections, field names, ObjectIds and BSON dates, and its indexes.

The checks run on mongomock-motor, and on a real MongoDB too when TEST_MONGO_URI is set (where
the command itself is run against the database as well). The command's usage and connection
errors are run as a child process.
"""
import datetime
import math
import os
import subprocess
import sys

import bson
import pytest
from pymongo import ASCENDING, DESCENDING

from domain.gallery import MAX_PHOTOS_PER_EVENT
from domain.repositories import Events
from storage import check as check_command
from storage.mongo.indexes import PLAN
from storage.mongo.takeover import BLOCKS, HURTS, MAX_FOLLOW_IDS, check, format_report, put_indexes_in_place, take_stock
from tests.repository_fixtures import CREATED, NOW, PARIS, PASSWORD_HASH, point
from tests.mongo_fixtures import store, store_name  # noqa: F401 (fixtures)
from tests.running_server import ROOT, free_port
from tests.stores import TEST_MONGO_URI

pytestmark = pytest.mark.gen_test



def oid(n):
    return bson.ObjectId(f"{0x650000000000000000000000 + n:024x}")


ANA, ANA2, BO, CY, DEE, EVE = (oid(n) for n in range(1, 7))
CONCERT, BROKEN, UNDATED, NOWHERE = (oid(n) for n in range(11, 15))


def old_user(_id, username, email, **fields):
    return {"_id": _id, "username": username, "email": email, "password_hash": PASSWORD_HASH, "role": "attendee",
            "following": [], "followers": [], "created_events": [], "rsvped_events": [], "created_at": CREATED,
            **fields}


def old_event(_id, organizer, **fields):
    return {"_id": _id, "title": "Jazz", "description": "", "date": NOW, "category": "music",
            "location_address": "Paris", "location": point(*PARIS), "geofence_radius": 100,
            "organizer_id": organizer, "rsvps": [], "arrivals": [], "photo_gallery": [], "created_at": CREATED,
            **fields}


async def make_old_indexes(db):
    """The old backend's indexes, as it created them."""
    await db.users.create_index("email", unique=True)
    await db.users.create_index("username", unique=True)
    await db.events.create_index([("location", "2dsphere")])
    await db.events.create_index("organizer_id")
    await db.events.create_index("date")
    await db.messages.create_index([("event_id", ASCENDING), ("timestamp", ASCENDING)])
    await db.activities.create_index([("actor_id", ASCENDING), ("timestamp", DESCENDING)])
    await db.activities.create_index([("timestamp", DESCENDING)])


async def make_clean_old_database(db):
    await db.users.insert_many([old_user(ANA, "ana", "ana@example.com", following=[BO]),
                                old_user(BO, "bo", "bo@example.com", followers=[ANA], created_events=[CONCERT])])
    await db.events.insert_one(old_event(CONCERT, BO, rsvps=[ANA], arrivals=[ANA],
                                         photo_gallery=["https://old.example.com/1.jpg"]))
    await db.messages.insert_one({"event_id": CONCERT, "user_id": ANA, "username": "ana", "text": "hi",
                                  "timestamp": NOW})
    await db.activities.insert_one({"type": "RSVP", "actor_id": ANA, "actor_name": "ana", "event_id": CONCERT,
                                    "summary": "is going", "timestamp": NOW})
    await make_old_indexes(db)


async def snapshot(db):
    """Every collection's documents and indexes."""
    return {name: (await db[name].find().sort("_id").to_list(None), await db[name].index_information())
            for name in sorted(await db.list_collection_names())}


def finding(report, kind, where):
    [found] = [f for f in report.findings if (f.kind, f.where) == (kind, where)]
    return found


def kinds(report):
    return sorted((f.severity, f.kind, f.where) for f in report.findings)


# --- what blocks and what hurts ------------------------------------------------------------------

async def test_what_blocks_and_hurts_a_takeover_is_reported_with_counts_and_ids(store, store_name):
    db = store.db
    await db.users.insert_many([
        old_user(ANA, "ana", "Ana@example.com"),
        old_user(ANA2, "ANA", "ana@EXAMPLE.com"),  # both differ from ana's only in case
        old_user(BO, "bo", "bo@example.com", following=[str(ANA)], followers=[ANA]),
        {k: v for k, v in old_user(CY, "cy", None).items() if k != "email"},  # no email at all
        old_user(DEE, None, 42),  # neither is text
        old_user(str(EVE), "eve", "eve@example.com"),  # an id as text
    ])
    await db.events.insert_many([
        old_event(CONCERT, ANA, organizer_id=str(ANA), rsvps=[BO, str(ANA)]),
        old_event(BROKEN, ANA, location={"type": "Point", "coordinates": [200.0, 48.8]}),
        old_event(UNDATED, ANA, date="2024-05-01T18:00:00Z", end_date="2024-05-01T21:00:00Z"),
        {k: v for k, v in old_event(NOWHERE, ANA).items() if k != "location"},
    ])
    message = (await db.messages.insert_one({"event_id": str(CONCERT), "user_id": BO, "username": "bo",
                                             "text": "hi", "timestamp": NOW})).inserted_id
    activity = (await db.activities.insert_one({"type": "RSVP", "actor_id": str(BO), "event_id": CONCERT,
                                                "timestamp": NOW})).inserted_id
    # The old exact email index, under a name of its own: ours (email_1) cannot be created beside it.
    await db.users.create_index("email", unique=True, name="email_unique")

    report = await check(db)

    assert kinds(report) == sorted([
        (BLOCKS, "shared ignoring case", "users.email"),
        (BLOCKS, "shared ignoring case", "users.username"),
        (HURTS, "no text", "users.email"),
        (HURTS, "no text", "users.username"),
        (BLOCKS, "invalid location", "events.location"),
        (HURTS, "no location", "events.location"),
        (HURTS, "not a date", "events.date"),
        (HURTS, "not a date", "events.end_date"),
        (HURTS, "text ids", "users._id"),
        (HURTS, "text ids", "users.following"),
        (HURTS, "text ids", "events.organizer_id"),
        (HURTS, "text ids", "events.rsvps"),
        (HURTS, "text ids", "messages.event_id"),
        (HURTS, "text ids", "activities.actor_id"),
        (BLOCKS, "conflicting index", "users.email_unique"),
        (HURTS, "missing indexes", "indexes"),
    ])
    emails = finding(report, "shared ignoring case", "users.email")
    assert emails.count == 1
    assert emails.samples == (f"'ana@example.com': {ANA} 'Ana@example.com', {ANA2} 'ana@EXAMPLE.com'",)
    assert [index.describe() for index in emails.stops] == ["users(email_lower)"]  # the exact values differ
    usernames = finding(report, "shared ignoring case", "users.username")
    assert (usernames.count, usernames.samples) == (1, (f"'ana': {ANA} 'ana', {ANA2} 'ANA'",))
    for kind, where, count, ids in [
            ("no text", "users.email", 2, {CY, DEE}),
            ("no text", "users.username", 1, {DEE}),
            ("invalid location", "events.location", 1, {BROKEN}),
            ("no location", "events.location", 1, {NOWHERE}),
            ("not a date", "events.date", 1, {UNDATED}),
            ("not a date", "events.end_date", 1, {UNDATED}),
            ("text ids", "users._id", 1, {EVE}),
            ("text ids", "users.following", 1, {BO}),
            ("text ids", "events.organizer_id", 1, {CONCERT}),
            ("text ids", "events.rsvps", 1, {CONCERT}),
            ("text ids", "messages.event_id", 1, {message}),
            ("text ids", "activities.actor_id", 1, {activity})]:
        found = finding(report, kind, where)
        assert (found.count, set(found.samples)) == (count, {str(i) for i in ids}), (kind, where)
    conflict = finding(report, "conflicting index", "users.email_unique")
    assert "its name ('email_unique'; ours: 'email_1')" in conflict.effect
    assert report.blocks and check_command.exit_status(report) == 1

    text = format_report(report)
    assert text.startswith(
        f"Database {db.name!r}: the takeover is blocked: 4 finding(s) to resolve first, and 12 that hurt.")
    assert "BLOCKS users.email: emails several users share, ignoring case (1). The unique index users(email_lower) " \
           "cannot be built (error 11000)" in text
    assert f"         'ana@example.com': {ANA} 'Ana@example.com', {ANA2} 'ana@EXAMPLE.com'" in text
    assert "HURTS  events.date: events whose date is missing or not a BSON date (1)." in text
    if store_name == "mongodb":
        assert run_check("--uri", TEST_MONGO_URI, "--db", db.name).returncode == 1


async def test_users_sharing_an_email_exactly_stop_the_old_exact_index_too(store):
    await store.db.users.insert_many([old_user(ANA, "ana", "ana@example.com"),
                                      old_user(ANA2, "ana2", "ana@example.com"),
                                      old_user(BO, "bo", "bo@example.com"),
                                      old_user(CY, "cy", "BO@example.com")])

    report = await check(store.db)

    emails = finding(report, "shared ignoring case", "users.email")
    assert emails.count == 2
    assert [index.describe() for index in emails.stops] == ["users(email_lower)", "users(email)"]
    assert emails.samples == (f"'ana@example.com': {ANA} 'ana@example.com', {ANA2} 'ana@example.com'",
                              f"'bo@example.com': {BO} 'bo@example.com', {CY} 'BO@example.com'")


async def test_case_variants_are_found_by_the_stores_key_not_by_ascii_folding(store):
    # MongoDB's $toLower folds ASCII only; the unique index holds domain.identity.identity_key's
    # copies, which fold other scripts' cases and compatibility forms too.
    await store.db.users.insert_many([old_user(ANA, "émile", "Émile@example.com"),
                                      old_user(BO, "ÉMILE", "émile@example.com"),
                                      old_user(CY, "cy", "ｃｙ@example.com"), old_user(DEE, "dee", "CY@example.com")])

    report = await check(store.db)

    assert finding(report, "shared ignoring case", "users.email").samples == (
        f"'cy@example.com': {CY} 'ｃｙ@example.com', {DEE} 'CY@example.com'",
        f"'émile@example.com': {ANA} 'Émile@example.com', {BO} 'émile@example.com'")
    assert finding(report, "shared ignoring case", "users.username").count == 1


@pytest.mark.parametrize("location", [
    {"type": "Point", "coordinates": [48.8566, 200.0]},  # latitude out of range
    {"type": "Point", "coordinates": [-180.5, 10]},
    {"type": "Point", "coordinates": ["2.35", "48.85"]},
    {"type": "Point", "coordinates": [2.35]},
    {"type": "Point", "coordinates": [2.35, 48.85, 35.0]},
    {"type": "Point", "coordinates": [math.nan, 48.85]},
    {"type": "Point", "coordinates": [True, 48.85]},
    {"type": "Point"},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
    {"coordinates": [2.35, 48.85]},
    [200.0, 48.85],
    {"lng": 2.35},
    "Paris",
    {},
], ids=repr)
async def test_a_location_that_is_not_a_geojson_point_in_range_blocks(store, location):
    await store.db.events.insert_many([old_event(CONCERT, ANA), old_event(BROKEN, ANA, location=location),
                                       old_event(UNDATED, ANA, location=point(-180, -90))])

    report = await check(store.db)

    locations = finding(report, "invalid location", "events.location")
    assert (locations.severity, locations.count, locations.samples) == (BLOCKS, 1, (str(BROKEN),))
    assert [index.describe() for index in locations.stops] == ["events(location)"]


@pytest.mark.parametrize("location", [[2.35, 48.85], {"lng": 2.35, "lat": 48.85}], ids=repr)
async def test_a_legacy_coordinate_pair_hurts_only(store, location):
    # MongoDB's 2dsphere index takes it; the server, reading GeoJSON, does not.
    await store.db.events.insert_many([old_event(CONCERT, ANA), old_event(BROKEN, ANA, location=location)])

    report = await check(store.db)

    assert kinds(report) == [(HURTS, "legacy location", "events.location"), (HURTS, "missing indexes", "indexes")]
    assert finding(report, "legacy location", "events.location").samples == (str(BROKEN),)


async def test_arrays_past_the_stores_bounds_hurt(store):
    ids = [oid(100)]
    await store.db.events.insert_many([
        old_event(CONCERT, ANA, rsvps=ids * (Events.MAX_RSVPS + 1),
                  photo_gallery=["https://old.example.com/1.jpg"] * MAX_PHOTOS_PER_EVENT),
        old_event(BROKEN, ANA, photo_gallery=["https://old.example.com/1.jpg"] * (MAX_PHOTOS_PER_EVENT + 1))])
    await store.db.users.insert_one(old_user(ANA, "ana", "ana@example.com", followers=ids * (MAX_FOLLOW_IDS + 1)))

    report = await check(store.db)

    rsvps = finding(report, "too long", "events.rsvps")
    assert (rsvps.severity, rsvps.count, rsvps.samples) == (HURTS, 1, (str(CONCERT),))
    assert rsvps.subject == "events with more than 100,000 rsvps"
    assert finding(report, "too long", "events.photo_gallery").samples == (str(BROKEN),)
    assert finding(report, "too long", "users.followers").samples == (str(ANA),)
    assert not report.blocks


async def test_a_finding_shows_a_few_samples_and_how_many_more(store):
    await store.db.messages.insert_many([{"_id": oid(100 + n), "event_id": str(CONCERT), "user_id": ANA,
                                          "text": "hi", "timestamp": NOW} for n in range(7)])

    text = format_report(await check(store.db))

    assert "HURTS  messages.event_id: messages with ids stored as text in event_id (7)." in text
    assert "\n".join(f"         {oid(100 + n)}" for n in range(5)) + "\n         and 2 more" in text


# --- a clean old database --------------------------------------------------------------------------

async def test_a_clean_old_database_passes_and_the_check_writes_nothing(store):
    await make_clean_old_database(store.db)
    before = await snapshot(store.db)

    report = await take_stock(store.db)

    assert await snapshot(store.db) == before
    assert not report.blocks and check_command.exit_status(report) == 0
    [missing] = report.findings
    assert (missing.severity, missing.kind) == (HURTS, "missing indexes")
    old = {"users(email)", "users(username)", "events(location)", "events(organizer_id)",
           "messages(event_id, timestamp)", "activities(timestamp)"}
    assert missing.samples == tuple(index.describe() + (" (required)" if index.required else "")
                                    for index in PLAN if index.describe() not in old)
    assert "users(email_lower) (required)" in missing.samples
    assert format_report(report).startswith(
        f"Database {store.db.name!r}: nothing blocks the takeover; 1 finding(s) hurt.")


async def test_a_database_the_server_has_prepared_has_nothing_to_report(store):
    await make_clean_old_database(store.db)
    await store.open()
    await store.prepared()

    report = await check(store.db)

    assert report.findings == ()
    assert format_report(report) == (
        f"Database {store.db.name!r}: nothing found: the server can take this database over.")


async def test_an_index_beside_ours_on_the_same_keys_is_not_in_the_way(store):
    # MongoDB keeps several indexes on one key pattern when their collations differ: ours, being
    # there, is not created again.
    await make_clean_old_database(store.db)
    await store.db.users.create_index("email", name="email_in_french", collation={"locale": "fr"})

    report = await check(store.db)

    assert kinds(report) == [(HURTS, "missing indexes", "indexes")]


# --- --fix-indexes -------------------------------------------------------------------------------------

async def test_fix_indexes_builds_the_missing_indexes_and_replaces_one_in_the_way(store):
    await make_clean_old_database(store.db)
    await store.db.users.drop_index("email_1")
    await store.db.users.create_index("email", unique=True, name="email_unique")
    await store.db.revoked_tokens.create_index("expires_at", expireAfterSeconds=3600)
    await store.db.reset_tokens.create_index("token", name="user_id_1")  # our name, other keys

    report = await take_stock(store.db, fix_indexes=True)

    assert report.findings == () and not report.blocks
    assert report.actions == (
        "dropped users.email_unique: it differed from users(email) in its name ('email_unique'; ours: 'email_1')",
        "dropped revoked_tokens.expires_at_1: it differed from revoked_tokens(expires_at) in "
        "expireAfterSeconds (3600; ours: 0)",
        "dropped reset_tokens.user_id_1: it differed from reset_tokens(user_id) in its keys (token 1)",
        f"{len(PLAN)} of the {len(PLAN)} indexes of the plan are in place")
    for index in PLAN:
        spec = (await store.db[index.collection].index_information())[index.name]
        assert all(spec.get(option) == value for option, value in index.options.items()), index
    assert "email_unique" not in await store.db.users.index_information()
    assert (await store.db.users.find_one({"_id": ANA}))["email_lower"] == "ana@example.com"  # the backfill ran
    assert "--fix-indexes:" in format_report(report)


async def test_fix_indexes_reports_the_unique_index_duplicates_stop(store):
    await make_clean_old_database(store.db)
    await store.db.users.insert_one(old_user(CY, "cy", "ANA@example.com"))

    report = await put_indexes_in_place(store.db, await check(store.db))

    assert report.blocks
    assert kinds(report) == [(BLOCKS, "not built", "users(email_lower)"),
                             (BLOCKS, "shared ignoring case", "users.email")]
    reason = finding(report, "not built", "users(email_lower)").effect
    assert reason.startswith("the unique index users(email_lower) cannot be built")
    assert str(ANA) in reason and str(CY) in reason
    assert report.actions == (f"{len(PLAN) - 1} of the {len(PLAN)} indexes of the plan are in place",)
    assert "email_lower_1" not in await store.db.users.index_information()


async def test_fix_indexes_keeps_an_index_in_the_way_of_one_the_data_stops(store):
    # Dropping it would leave no index at all on email_lower until the duplicates are resolved.
    await make_clean_old_database(store.db)
    await store.db.users.insert_one(old_user(CY, "cy", "ANA@example.com", email_lower="ana@example.com"))
    await store.db.users.create_index("email_lower")  # the name of ours, without unique and sparse

    report = await put_indexes_in_place(store.db, await check(store.db))

    assert report.actions[0] == (
        "kept users.email_lower_1: the data stops its replacement users(email_lower) (see above)")
    assert "unique" not in (await store.db.users.index_information())["email_lower_1"]
    assert (BLOCKS, "conflicting index", "users.email_lower_1") in kinds(report)
    assert report.blocks


async def test_fix_indexes_builds_the_rest_when_a_new_old_user_shares_an_email(store):
    # The unique index exists (a first start), and then the old backend added a case variant.
    await make_clean_old_database(store.db)
    await store.open()
    await store.prepared()
    await store.db.users.insert_one(old_user(CY, "cy", "ANA@example.com"))

    report = await put_indexes_in_place(store.db, await check(store.db))

    assert report.actions == (f"{len(PLAN)} of the {len(PLAN)} indexes of the plan are in place",)
    # Left without the copy, as the server leaves it: found by its exact email only.
    assert "email_lower" not in await store.db.users.find_one({"_id": CY})
    assert (await store.users.find_by_email("ANA@example.com"))["id"] == str(CY)
    assert finding(report, "shared ignoring case", "users.email").samples == (
        f"'ana@example.com': {ANA} 'ana@example.com', {CY} 'ANA@example.com'",)
    assert report.blocks


# --- the command's own errors ---------------------------------------------------------------------------

def run_check(*args, **environment):
    env = {name: value for name, value in os.environ.items() if not name.startswith("MONGO_")}
    return subprocess.run([sys.executable, "-m", "storage.check", *args], cwd=ROOT, env={**env, **environment},
                          capture_output=True, text=True, timeout=60)


def test_without_mongo_uri_the_command_says_so_in_one_line():
    done = run_check()

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "storage.check: MONGO_URI is not set (nor --uri): name the MongoDB database to check\n"


def test_an_unreachable_server_is_one_line_within_the_timeout():
    started = datetime.datetime.now()
    done = run_check("--timeout-ms", "300", MONGO_URI=f"mongodb://127.0.0.1:{free_port()}/")

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("storage.check: MongoDB not reachable: 127.0.0.1:")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert datetime.datetime.now() - started < datetime.timedelta(seconds=20)


@pytest.mark.parametrize("args, error", [
    (["--bogus"], "storage.check: unrecognized arguments: --bogus\n"),
    (["--timeout-ms", "0"],
     "storage.check: argument --timeout-ms: '0' is not a number of milliseconds greater than 0\n"),
    (["--uri", "http://db.example.com/"],
     "storage.check: MONGO_URI is not usable: "
     "Invalid URI scheme: URI must begin with 'mongodb://' or 'mongodb+srv://'\n"),
    (["--settings", "missing.yaml"], "storage.check: settings file missing.yaml: No such file or directory\n"),
])
def test_usage_errors_are_one_line_and_status_2(args, error):
    done = run_check(*args)

    assert (done.returncode, done.stdout, done.stderr) == (2, "", error)
