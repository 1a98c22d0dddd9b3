"""What only the MongoDB adapter (storage/mongo) has to show: it takes over the old backend's
database as it finds it (documents without the fields we added, users without lower-cased
copies), keeps the old field names in what it writes, builds its indexes even when one of them
cannot be, and turns an unreachable server into StoreUnavailable from every method.

The rules every store shares are in tests/test_repositories.py. These run on mongomock-motor,
and on a real MongoDB too when TEST_MONGO_URI is set.
"""
import asyncio
import datetime
import logging
import struct

import bcrypt
import bson
import pytest
from pymongo import _csot as pymongo_csot
from pymongo import errors as pymongo_errors

from domain import repositories
from domain.discovery import DiscoveryQuery
from domain.errors import StoreUnavailable
from handlers.app import build_services
from storage.mongo import MongoStore
from storage.mongo.indexes import NOT_BUILT_YET, PLAN
from storage.mongo.repository import is_unavailable
from tests.repository_fixtures import (CREATED, HOUR, MINUTE, NOW, PARIS, PASSWORD_HASH, activity, draft, event_fields,
                                       point, some_id, window)
from tests.conftest import make_settings
from tests.mongo_fixtures import store, store_name  # noqa: F401 (fixtures)
from tests.running_server import free_port
from tests.stores import TEST_MONGO_URI, discard_store, new_store, open_store

pytestmark = pytest.mark.gen_test

OPENS_BEFORE = 30 * MINUTE


def unreachable_store(timeout_ms):
    return MongoStore.connect(f"mongodb://127.0.0.1:{free_port()}/", "down", timeout_ms)


def second_store_on(store, store_name):
    """Another store on the same database, as another server process opens it. mongomock keeps
    its data in the client: there the second store shares the first one's."""
    if store_name == "mongodb":
        return MongoStore.connect(TEST_MONGO_URI, store.dbname, 3000)
    return MongoStore(store.client, store.dbname)


def oid(text):
    return bson.ObjectId(text)


# --- the index plan ------------------------------------------------------------------------------

async def test_open_builds_the_index_plan(store):
    await open_store(store)

    assert store.problems() == []
    users = await store.db.users.index_information()
    assert all(users[name]["unique"] and users[name]["sparse"] for name in ("email_lower_1", "username_lower_1"))
    assert "location_2dsphere" in await store.db.events.index_information()
    client_msg_id = (await store.db.messages.index_information())["event_id_1_user_id_1_client_msg_id_1"]
    assert client_msg_id["unique"] and client_msg_id["partialFilterExpression"] == {"client_msg_id": {"$exists": True}}
    assert (await store.db.revoked_tokens.index_information())["expires_at_1"]["expireAfterSeconds"] == 0


async def test_an_index_that_cannot_be_built_is_skipped_and_reported_while_the_others_are_built(store, caplog):
    caplog.set_level(logging.INFO, logger="store")
    # Two accounts of the old backend whose emails differ only in case: no unique email index.
    ana, ana2 = (await store.db.users.insert_many([{"email": "Ana@example.com", "username": "ana"},
                                                   {"email": "ana@EXAMPLE.com", "username": "ana2"}])).inserted_ids

    await open_store(store)

    assert "location_2dsphere" in await store.db.events.index_information()
    assert "username_lower_1" in await store.db.users.index_information()
    assert "email_lower_1" not in await store.db.users.index_information()
    reason = (f"the unique index users(email_lower) cannot be built: users share emails ignoring case "
              f"('ana@example.com': {ana}, {ana2}); `python -m storage.check` lists them all")
    assert store.problems() == [reason]  # a required index: /readyz is 503 with it
    assert caplog.text.count(reason) == 1
    # Without the index, registration still refuses the email.
    with pytest.raises(repositories.AlreadyTaken) as taken:
        await store.users.add("cy", "ANA@example.com", "attendee", PASSWORD_HASH, CREATED)
    assert taken.value.field == "email"


async def test_a_missing_index_is_retried_until_built_and_logged_once_meanwhile(store, caplog):
    caplog.set_level(logging.INFO, logger="store")
    ana = (await store.db.users.insert_one({"email": "Ana@example.com", "username": "ana"})).inserted_id
    await store.db.users.insert_one({"email": "ana@example.com", "username": "ana2"})
    store.indexes.rebuild_seconds = 0.01
    await open_store(store)
    await asyncio.sleep(0.1)  # several retries
    assert "email_lower_1" not in await store.db.users.index_information()
    assert caplog.text.count("cannot be built") == 1

    # The operator resolves the duplicate while the server runs: the next retry builds the index.
    await store.db.users.delete_one({"_id": ana})
    for _ in range(200):
        if not store.problems():
            break
        await asyncio.sleep(0.01)
    assert store.problems() == []
    assert (await store.db.users.index_information())["email_lower_1"]["unique"]


async def test_the_old_backends_own_indexes_are_kept_as_it_made_them(store):
    await store.db.users.create_index("email", unique=True)
    await store.db.users.create_index("username", unique=True)
    await store.db.events.create_index([("location", "2dsphere")])

    await open_store(store)

    assert store.problems() == []
    users = await store.db.users.index_information()
    assert users["email_1"]["unique"] and users["username_1"]["unique"]


async def test_an_index_of_an_earlier_release_with_other_options_is_reported_not_replaced(store):
    # Same name and keys, not sparse: MongoDB refuses to build ours over it (codes 85/86).
    await store.db.users.create_index("email_lower", unique=True)

    await open_store(store)

    [problem] = store.problems()
    assert problem.startswith("the index users(email_lower) ")
    assert "sparse" not in (await store.db.users.index_information())["email_lower_1"]


async def test_nearby_without_its_index_is_unavailable_not_a_failure(store):
    # An old database whose 2dsphere index could not be built (an invalid location, error 16755),
    # or was dropped: every nearby search is a 503, and /readyz says why meanwhile.
    await open_store(store)
    await store.db.events.drop_index("location_2dsphere")

    with pytest.raises(StoreUnavailable):
        await store.events.find(DiscoveryQuery(near=PARIS, radius_m=1000))


async def test_key_copies_of_an_earlier_release_are_recomputed_once_with_nfkc_and_case_folding(store):
    # str.lower kept "ß" and fullwidth letters as they are; identity_key folds them.
    straße = (await store.db.users.insert_one({"email": "Straße@example.com", "username": "Ｂo",
                                               "email_lower": "straße@example.com", "username_lower": "ｂo"})).inserted_id
    await open_store(store)

    user = await store.db.users.find_one({"_id": straße})
    assert (user["email_lower"], user["username_lower"], user["keys_version"]) == ("strasse@example.com", "bo", 2)
    assert (await store.users.find_by_email("STRASSE@example.com"))["id"] == str(straße)
    with pytest.raises(repositories.AlreadyTaken):
        await store.users.add("bo", "new@example.com", "attendee", PASSWORD_HASH, CREATED)


async def test_a_user_whose_recomputed_key_another_holds_keeps_the_account_under_its_exact_email(store, caplog):
    await open_store(store)  # the unique indexes are in place
    ana = await store.users.add("ana", "ana@example.com", "attendee", PASSWORD_HASH, CREATED)
    # Told apart by an earlier release's str.lower: the fullwidth "ａ".
    other = (await store.db.users.insert_one({"email": "ａna@example.com", "username": "other",
                                              "email_lower": "ａna@example.com", "username_lower": "other"})).inserted_id

    await store.indexes.build()

    user = await store.db.users.find_one({"_id": other})
    assert "email_lower" not in user and user["keys_version"] == 2
    assert (await store.users.find_by_email("ana@example.com"))["id"] == ana["id"]
    assert (await store.users.find_by_email("ａna@example.com"))["id"] == str(other)
    assert f"user {other} shares its email with another user once normalized" in caplog.text


async def test_users_another_writer_inserts_without_lower_cased_copies_are_accepted_and_found(store):
    # The old backend running alongside during a migration writes users as it always did. The
    # unique indexes are sparse: any number of users without the copies may exist.
    await open_store(store)
    await store.db.users.insert_many([{"email": "Old@example.com", "username": "Old", "password_hash": "x"},
                                      {"email": "other@example.com", "username": "other", "password_hash": "x"}])

    assert (await store.users.find_by_email("Old@example.com"))["username"] == "Old"
    with pytest.raises(repositories.AlreadyTaken):
        await store.users.add("new", "Old@example.com", "attendee", PASSWORD_HASH, CREATED)
    with pytest.raises(repositories.AlreadyTaken):
        await store.users.add("Old", "new@example.com", "attendee", PASSWORD_HASH, CREATED)


async def test_a_shared_email_finds_the_user_who_registered_it_exactly_and_a_variant_finds_nobody(store):
    ana, ana2 = (await store.db.users.insert_many([
        {"email": "Ana@example.com", "username": "ana", "password_hash": "x"},
        {"email": "ana@EXAMPLE.com", "username": "ana2", "password_hash": "x"}])).inserted_ids
    bo = (await store.db.users.insert_one({"email": "Bo@example.com", "username": "bo"})).inserted_id
    await open_store(store)

    assert (await store.users.find_by_email("Ana@example.com"))["id"] == str(ana)
    assert (await store.users.find_by_email("ana@EXAMPLE.com"))["id"] == str(ana2)
    # Neither registered it so: logging in, or a reset, would pick an account that may not be theirs.
    assert await store.users.find_by_email("ana@example.com") is None
    # An email no one else shares is found ignoring case, as always.
    assert (await store.users.find_by_email("bo@EXAMPLE.com"))["id"] == str(bo)


async def test_old_documents_of_another_shape_read_as_absent_or_empty_never_as_a_failure(store):
    organizer = oid(some_id(1))
    string_date = (await store.db.events.insert_one({"title": "Text date", "date": "2026-12-24T20:00:00",
                                                     "location": point(*PARIS), "organizer_id": organizer})).inserted_id
    no_location = (await store.db.events.insert_one({"title": "Nowhere", "date": NOW,
                                                     "organizer_id": organizer})).inserted_id
    served = (await store.db.events.insert_one({"title": "Served", "date": NOW, "location": point(*PARIS),
                                                "organizer_id": organizer, "created_at": "yesterday"})).inserted_id
    user = (await store.db.users.insert_one({"email": "ana@example.com", "username": "ana",
                                             "created_at": "2020-01-01"})).inserted_id
    await open_store(store)

    assert await store.events.get(str(string_date)) is None
    assert await store.events.get(str(no_location)) is None
    assert [e["title"] for e in await store.events.find(DiscoveryQuery(organizer_id=str(organizer)))] == ["Served"]
    assert (await store.events.get(str(served)))["created_at"] is None
    assert (await store.users.get(str(user)))["created_at"] is None


async def test_open_returns_before_the_preparation_which_prepared_waits_for(store):
    # Held at the index build, as a first takeover of a large old database is for minutes: the
    # server, which listens once open returns, must not wait for it.
    release = asyncio.Event()
    build_plan = store.indexes._build_plan

    async def slow_build_plan():
        await release.wait()
        return await build_plan()

    store.indexes._build_plan = slow_build_plan
    await store.db.users.insert_one({"username": "Ana", "email": "Ana@Example.com"})

    await store.open()

    assert store.problems() == [NOT_BUILT_YET]
    preparing = asyncio.ensure_future(store.prepared())
    await asyncio.sleep(0.05)
    assert not preparing.done() and store.problems() == [NOT_BUILT_YET]
    assert "email_lower_1" not in await store.db.users.index_information()
    assert (await store.db.users.find_one({}))["email_lower"] == "ana@example.com"  # the backfill ran
    release.set()
    await asyncio.wait_for(preparing, 10)
    assert store.problems() == []
    assert "email_lower_1" in await store.db.users.index_information()


async def test_prepared_completes_though_the_client_never_yields_to_the_loop(store):
    # mongomock-motor's calls finish without giving the loop a turn: awaiting runs the task.
    await store.db.users.insert_one({"username": "Ana", "email": "Ana@Example.com"})
    await store.open()
    assert store.problems() == [NOT_BUILT_YET]

    await asyncio.wait_for(store.prepared(), 10)

    assert store.problems() == []
    assert (await store.users.find_by_email("ana@example.com"))["username"] == "Ana"


async def test_prepared_before_open_is_a_mistake(store):
    with pytest.raises(RuntimeError):
        await store.prepared()


async def test_indexes_are_retried_while_the_database_is_unreachable(caplog):
    store = unreachable_store(timeout_ms=50)
    store.indexes.retry_seconds = 0.01
    try:
        await asyncio.wait_for(store.open(), 0.04)  # at once: well within one selection timeout
        assert store.problems() == [NOT_BUILT_YET]
        for _ in range(400):  # a safety bound only: each attempt takes the 50 ms selection timeout
            if caplog.text.count("database not reachable yet") >= 2:
                break
            await asyncio.sleep(0.05)
        assert caplog.text.count("database not reachable yet") >= 2
        assert store.problems() == [NOT_BUILT_YET]
    finally:
        await store.close()


# --- an unreachable server -------------------------------------------------------------------------

USER, EVENT, MESSAGE = some_id(1), some_id(2), some_id(3)
EVERY_METHOD = {
    ("users", "add"): lambda s: s.users.add("ana", "ana@example.com", "attendee", PASSWORD_HASH, CREATED),
    ("users", "get"): lambda s: s.users.get(USER),
    ("users", "find_by_email"): lambda s: s.users.find_by_email("ana@example.com"),
    ("users", "taken"): lambda s: s.users.taken("ana@example.com", "ana"),
    ("users", "set_password"): lambda s: s.users.set_password(USER, PASSWORD_HASH, NOW),
    ("users", "usernames"): lambda s: s.users.usernames([USER]),
    ("revoked_tokens", "revoke"): lambda s: s.revoked_tokens.revoke("jti", USER, NOW),
    ("revoked_tokens", "is_revoked"): lambda s: s.revoked_tokens.is_revoked("jti"),
    ("reset_tokens", "add"): lambda s: s.reset_tokens.add("digest", USER, NOW),
    ("reset_tokens", "take"): lambda s: s.reset_tokens.take("digest", NOW),
    ("reset_tokens", "drop_all"): lambda s: s.reset_tokens.drop_all(USER),
    ("reset_tokens", "count"): lambda s: s.reset_tokens.count(USER),
    ("events", "add"): lambda s: s.events.add(event_fields(USER)),
    ("events", "get"): lambda s: s.events.get(EVENT, USER),
    ("events", "find"): lambda s: s.events.find(DiscoveryQuery(), USER),
    ("events", "update"): lambda s: s.events.update(EVENT, USER, {"title": "New"}, {}),
    ("events", "delete"): lambda s: s.events.delete(EVENT, USER),
    ("events", "take_seat"): lambda s: s.events.take_seat(EVENT, USER, window()),
    ("events", "release_seat"): lambda s: s.events.release_seat(EVENT, USER, window()),
    ("events", "join_waitlist"): lambda s: s.events.join_waitlist(EVENT, USER, window()),
    ("events", "leave_waitlist"): lambda s: s.events.leave_waitlist(EVENT, USER),
    ("events", "record_arrival"): lambda s: s.events.record_arrival(EVENT, USER, window(), OPENS_BEFORE),
    ("events", "attendees"): lambda s: s.events.attendees(EVENT, None, None, 10),
    ("events", "is_member"): lambda s: s.events.is_member(EVENT, USER),
    ("events", "add_photo"): lambda s: s.events.add_photo(EVENT, "https://photos.example.com/1.jpg", USER, NOW, 10),
    ("events", "photos"): lambda s: s.events.photos(EVENT, None, 10),
    ("events", "attending"): lambda s: s.events.attending(USER, NOW, 10),
    ("users", "set_calendar_key"): lambda s: s.users.set_calendar_key(USER, "digest"),
    ("users", "find_by_calendar_key"): lambda s: s.users.find_by_calendar_key("digest"),
    ("messages", "append"): lambda s: s.messages.append(EVENT, [draft(USER, "hello", "c1")]),
    ("messages", "exists"): lambda s: s.messages.exists(EVENT, MESSAGE),
    ("messages", "latest"): lambda s: s.messages.latest(EVENT, 10),
    ("messages", "after"): lambda s: s.messages.after(EVENT, MESSAGE, 10),
    ("messages", "before"): lambda s: s.messages.before(EVENT, None, 10),
    ("messages", "counts"): lambda s: s.messages.counts([EVENT]),
    ("messages", "change"): lambda s: s.messages.change(EVENT, [{"kind": "delete", "message_id": MESSAGE,
                                                                  "user_id": USER, "text": None,
                                                                  "timestamp": NOW}]),
    ("messages", "mark_read"): lambda s: s.messages.mark_read(EVENT, USER, MESSAGE),
    ("messages", "chats"): lambda s: s.messages.chats(USER, 10, 100),
    ("messages", "moderate"): lambda s: s.messages.moderate(EVENT, "remove", USER, USER, NOW),
    ("messages", "standing"): lambda s: s.messages.standing(EVENT, USER, NOW),
    ("messages", "actions"): lambda s: s.messages.actions(EVENT, None, 10),
    ("follows", "follow"): lambda s: s.follows.follow(USER, some_id(9)),
    ("follows", "unfollow"): lambda s: s.follows.unfollow(USER, some_id(9)),
    ("follows", "is_following"): lambda s: s.follows.is_following(USER, some_id(9)),
    ("follows", "followers"): lambda s: s.follows.followers(USER, None, 10),
    ("follows", "following"): lambda s: s.follows.following(USER, None, 10),
    ("activities", "add"): lambda s: s.activities.add(activity(USER, NOW)),
    ("activities", "feed"): lambda s: s.activities.feed(USER, ["RSVP"], None, 10),
    ("activities", "add_once"): lambda s: s.activities.add_once(activity(USER, NOW, type="RSVP", event_id=EVENT)),
    ("activities", "withdraw"): lambda s: s.activities.withdraw("RSVP", USER, event_id=EVENT),
    ("notifications", "add"): lambda s: s.notifications.add([{"user_id": USER, "type": "rsvp_promoted",
                                                             "event_id": EVENT, "data": {}, "key": None,
                                                             "created_at": NOW}]),
    ("notifications", "page"): lambda s: s.notifications.page(USER, None, 10),
    ("notifications", "unread_count"): lambda s: s.notifications.unread_count(USER),
    ("notifications", "mark_read"): lambda s: s.notifications.mark_read(USER, MESSAGE),
    ("notifications", "told"): lambda s: s.notifications.told("waitlist_position:" + EVENT),
}


def every_abstract_method():
    """(repository, method) of every method a Store's repositories must implement."""
    return {(name, method) for name, interface in repositories.Store.__annotations__.items()
            for method in interface.__abstractmethods__}


async def test_an_unreachable_server_makes_every_method_and_ping_raise_store_unavailable():
    assert set(EVERY_METHOD) == every_abstract_method()
    store = unreachable_store(timeout_ms=300)
    try:
        results = await asyncio.gather(*(call(store) for call in EVERY_METHOD.values()), store.ping(),
                                       return_exceptions=True)
    finally:
        await store.close()

    wrong = {name: result for name, result in zip([*EVERY_METHOD, "ping"], results)
             if not isinstance(result, StoreUnavailable)}
    assert wrong == {}


# --- the old backend's documents ---------------------------------------------------------------------

async def test_events_of_the_old_backend_are_read_with_their_arrays_counted(store):
    organizer, going, arrived, newcomer = (oid(some_id(n)) for n in (1, 2, 3, 4))
    old = (await store.db.events.insert_one({
        "title": "Old jazz", "description": "From the old backend", "date": NOW, "category": "music",
        "location_address": "Paris", "location": point(*PARIS), "geofence_radius": 100,
        "organizer_id": organizer, "rsvps": [going, arrived], "arrivals": [arrived],
        "photo_gallery": ["https://old.example.com/1.jpg"], "created_at": CREATED})).inserted_id
    bare = (await store.db.events.insert_one({"title": "Bare", "date": NOW, "location": point(*PARIS),
                                              "organizer_id": organizer})).inserted_id
    await open_store(store)

    event = await store.events.get(str(old), str(arrived))
    assert (event["rsvp_count"], event["arrival_count"], event["photo_count"]) == (2, 1, 1)
    assert (event["is_rsvped"], event["has_arrived"]) == (True, True)
    assert (event["end_date"], event["capacity"], event["geofence"], event["updated_at"]) == (None, None, None, None)
    assert event["organizer_id"] == str(organizer)
    assert await store.events.photos(str(old), None, 10) == (
        [{"url": "https://old.example.com/1.jpg", "uploaded_by": None, "uploaded_at": None}], 0)
    assert [e["title"] for e in await store.events.find(DiscoveryQuery(organizer_id=str(organizer)))] == [
        "Old jazz", "Bare"]

    taken = await store.events.take_seat(str(old), str(newcomer), window())
    assert taken["rsvp_count"] == 3
    assert (await store.db.events.find_one({"_id": old}))["rsvp_count"] == 3
    await store.events.add_photo(str(old), "https://photos.example.com/2.jpg", str(newcomer), NOW, 10)
    photos, start = await store.events.photos(str(old), None, 10)
    assert ([p["uploaded_by"] for p in photos], start) == ([str(newcomer), None], 0)
    assert await store.events.photos(str(old), 1, 10) == (
        [{"url": "https://old.example.com/1.jpg", "uploaded_by": None, "uploaded_at": None}], 0)
    bare_event = await store.events.get(str(bare))
    assert (bare_event["rsvp_count"], bare_event["photo_count"], bare_event["description"]) == (0, 0, None)
    assert (await store.events.take_seat(str(bare), str(newcomer), window()))["rsvp_count"] == 1


async def test_an_old_event_without_a_stored_count_is_full_by_its_array(store):
    full = (await store.db.events.insert_one({
        "title": "Full", "date": NOW, "organizer_id": oid(some_id(1)), "capacity": 2,
        "rsvps": [oid(some_id(2)), oid(some_id(3))]})).inserted_id
    await open_store(store)

    assert await store.events.take_seat(str(full), some_id(4), window()) is None
    assert await store.events.update(str(full), some_id(1), {"capacity": 1}, {}) is None
    assert await store.events.update(str(full), some_id(1), {"capacity": 2}, {}) == []


async def test_a_user_of_the_old_backend_without_lower_cased_copies_is_found_after_open(store):
    ana = (await store.db.users.insert_one({
        "username": "Ana", "email": "Ana@Example.com", "password_hash": PASSWORD_HASH, "created_at": CREATED,
        "following": [], "followers": []})).inserted_id

    await open_store(store)

    user = await store.users.find_by_email("ANA@example.COM")
    assert user["id"] == str(ana) and user["email"] == "Ana@Example.com"
    assert (user["role"], user["tokens_valid_after"], user["followers_count"]) == (None, None, 0)
    stored = await store.db.users.find_one({"_id": ana})
    assert (stored["email_lower"], stored["username_lower"]) == ("ana@example.com", "ana")
    with pytest.raises(repositories.AlreadyTaken) as taken:
        await store.users.add("ANA", "someone@example.com", "attendee", PASSWORD_HASH, CREATED)
    assert taken.value.field == "username"


async def test_messages_of_the_old_backend_without_a_timestamp_take_their_ids_time(store):
    event, user = oid(some_id(1)), oid(some_id(2))
    written = datetime.datetime(2024, 3, 1, 12, 0, 5, tzinfo=datetime.timezone.utc)
    old_id = bson.ObjectId.from_datetime(written)
    await store.db.messages.insert_one({"_id": old_id, "event_id": event, "user_id": user, "username": "ana",
                                        "text": "from the old backend"})
    await open_store(store)

    [message] = await store.messages.latest(str(event), 10)

    assert message == {"id": str(old_id), "event_id": str(event), "user_id": str(user), "username": "ana",
                       "text": "from the old backend", "timestamp": written, "client_msg_id": None,
                       "kind": "message", "edited_at": None, "deleted_at": None}
    assert message["timestamp"].utcoffset() == datetime.timedelta(0)


async def test_activities_of_the_old_backend_are_read_with_what_they_have(store):
    reader, actor = oid(some_id(1)), oid(some_id(2))
    await store.db.users.insert_many([{"_id": reader, "username": "ana", "following": [actor]},
                                      {"_id": actor, "username": "bo", "followers": [reader]}])
    legacy = (await store.db.activities.insert_one(
        {"actor_id": actor, "type": "RSVP", "timestamp": NOW})).inserted_id
    await store.db.activities.insert_many([
        {"actor_id": actor, "type": "RSVP", "actor_name": "bo"},  # no time: it cannot be placed in the order
        {"actor_id": actor, "type": "LIKED", "timestamp": NOW},  # a type the feed does not ask for
    ])
    await open_store(store)

    assert await store.activities.feed(str(reader), ["RSVP"], None, 10) == [{
        "id": str(legacy), "type": "RSVP", "actor_id": str(actor), "actor_name": None, "event_id": None,
        "target_user_id": None, "summary": None, "timestamp": NOW}]


@pytest.mark.parametrize("arrays", [{}, {"following": None, "followers": None}], ids=["absent", "null"])
async def test_users_of_the_old_backend_without_follow_arrays_follow_and_are_followed(store, arrays):
    ana, bo = (oid(some_id(n)) for n in (1, 2))
    await store.db.users.insert_many([
        {"_id": ana, "username": "ana", "email": "ana@example.com", "password_hash": PASSWORD_HASH,
         "created_at": CREATED, **arrays},
        {"_id": bo, "username": "bo", "email": "bo@example.com", "password_hash": PASSWORD_HASH,
         "created_at": CREATED, **arrays}])
    await open_store(store)
    assert (await store.users.get(str(ana)))["following_count"] == 0
    assert await store.follows.followers(str(bo), None, 10) == []
    assert await store.follows.following(str(ana), None, 10) == []

    assert await store.follows.follow(str(ana), str(bo)) is True

    assert await store.follows.is_following(str(ana), str(bo)) is True
    assert await store.follows.is_following(str(bo), str(ana)) is False
    a, b = await store.users.get(str(ana)), await store.users.get(str(bo))
    assert (a["following_count"], a["followers_count"], b["following_count"], b["followers_count"]) == (1, 0, 0, 1)
    assert [u["id"] for u in await store.follows.followers(str(bo), None, 10)] == [str(ana)]
    assert [u["id"] for u in await store.follows.following(str(ana), None, 10)] == [str(bo)]
    assert await store.follows.follow(str(bo), str(ana)) is True
    stored = {d["_id"]: d async for d in store.db.users.find({})}
    assert (stored[ana]["following"], stored[ana]["followers"]) == ([bo], [bo])
    assert (stored[bo]["following"], stored[bo]["followers"]) == ([ana], [ana])

    assert await store.follows.unfollow(str(ana), str(bo)) is True

    assert await store.follows.is_following(str(ana), str(bo)) is False
    assert await store.follows.followers(str(bo), None, 10) == []
    assert [u["id"] for u in await store.follows.following(str(bo), None, 10)] == [str(ana)]
    b = await store.users.get(str(bo))
    assert (b["following_count"], b["followers_count"]) == (1, 0)
    stored = {d["_id"]: d async for d in store.db.users.find({})}
    assert (stored[ana]["following"], stored[ana]["followers"]) == ([], [bo])
    assert (stored[bo]["following"], stored[bo]["followers"]) == ([ana], [])


# The old backend's arrays, null or absent: every write to one of them (storage/mongo/arrays.py).
# mongomock refuses $addToSet and $push on a null field, as MongoDB does; a $pull on null it
# leaves null, where MongoDB refuses it ("Cannot apply $pull to a non-array value"), so the
# removals are held to their result: an empty array.
OLD_SHAPES = pytest.mark.parametrize("shape", ["null", "absent"])
USER_ARRAYS = ("following", "followers", "created_events", "rsvped_events")
EVENT_ARRAYS = ("rsvps", "arrivals", "photo_gallery", "photos")


def old_arrays(shape, fields):
    return {field: None for field in fields} if shape == "null" else {}


async def insert_old_user(db, n, shape):
    user = oid(some_id(n))
    await db.users.insert_one({"_id": user, "username": f"old{n}", "email": f"old{n}@example.com",
                               "password_hash": PASSWORD_HASH, "created_at": CREATED,
                               **old_arrays(shape, USER_ARRAYS)})
    return user


async def insert_old_event(db, organizer, shape, **arrays):
    """An event of the old backend at NOW, its arrays null (or absent) unless given."""
    return (await db.events.insert_one({
        "title": "Old", "date": NOW, "category": "music", "location_address": "Paris",
        "location": point(*PARIS), "geofence_radius": 100, "organizer_id": organizer, "created_at": CREATED,
        **old_arrays(shape, EVENT_ARRAYS), **arrays})).inserted_id


async def stored_user(store, user):
    return await store.db.users.find_one({"_id": user})


async def stored_event(store, event):
    return await store.db.events.find_one({"_id": event})


@OLD_SHAPES
async def test_an_old_organizer_without_created_events_adds_an_event(store, shape):
    organizer = await insert_old_user(store.db, 1, shape)
    await open_store(store)

    event_id = await store.events.add(event_fields(str(organizer)))

    assert (await stored_user(store, organizer))["created_events"] == [oid(event_id)]
    assert (await store.events.get(event_id))["organizer_id"] == str(organizer)


@OLD_SHAPES
async def test_a_seat_is_taken_on_an_old_event_by_an_old_user_without_arrays(store, shape):
    organizer, attendee = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    event = await insert_old_event(store.db, organizer, shape)
    await open_store(store)

    taken = await store.events.take_seat(str(event), str(attendee), window())

    assert (taken["rsvp_count"], taken["is_rsvped"]) == (1, True)
    assert (await stored_event(store, event))["rsvps"] == [attendee]
    assert (await stored_user(store, attendee))["rsvped_events"] == [event]


@OLD_SHAPES
async def test_a_seat_is_released_on_an_old_event_by_an_old_user_without_arrays(store, shape):
    organizer, attendee = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    event = await insert_old_event(store.db, organizer, shape, rsvps=[attendee])
    await open_store(store)

    released = await store.events.release_seat(str(event), str(attendee), window())

    assert (released["rsvp_count"], released["is_rsvped"]) == (0, False)
    stored = await stored_event(store, event)
    assert (stored["rsvps"], stored["arrivals"]) == ([], [])
    assert (await stored_user(store, attendee))["rsvped_events"] == []


@OLD_SHAPES
async def test_an_old_event_takes_a_waitlist_and_promotes_into_the_old_backends_lists(store, shape):
    organizer, seated = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    waiting = await insert_old_user(store.db, 3, shape)
    event = await insert_old_event(store.db, organizer, shape, rsvps=[seated], capacity=1,
                                   **({"waitlist": None} if shape == "null" else {}))
    await open_store(store)

    joined = await store.events.join_waitlist(str(event), str(waiting), window())

    assert (joined["waitlist_enabled"], joined["waitlist_position"], joined["waitlist_count"]) == (True, 1, 1)
    assert (await stored_event(store, event))["waitlist"] == [{"user_id": waiting, "at": NOW}]
    released = await store.events.release_seat(str(event), str(seated), window())
    assert released["promoted"] == [str(waiting)]
    stored = await stored_event(store, event)
    assert (stored["rsvps"], stored["waitlist"], stored["rsvp_count"]) == ([waiting], [], 1)
    assert (await stored_user(store, waiting))["rsvped_events"] == [event]
    assert (await stored_user(store, seated))["rsvped_events"] == []


@OLD_SHAPES
async def test_an_arrival_is_recorded_on_an_old_event_without_arrivals(store, shape):
    organizer, attendee = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    event = await insert_old_event(store.db, organizer, shape, rsvps=[attendee])
    await open_store(store)

    assert await store.events.record_arrival(str(event), str(attendee), window(), OPENS_BEFORE) is True
    assert await store.events.record_arrival(str(event), str(attendee), window(), OPENS_BEFORE) is False

    assert (await stored_event(store, event))["arrivals"] == [attendee]
    assert (await store.events.get(str(event), str(attendee)))["has_arrived"] is True


@OLD_SHAPES
async def test_an_old_events_attendees_are_listed_and_checked_in_by_hand_beside_the_old_arrivals(store, shape):
    organizer, attendee = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    walker = await insert_old_user(store.db, 3, shape)
    event = await insert_old_event(store.db, organizer, shape, rsvps=[attendee, walker])
    await open_store(store)

    assert [(a["user_id"], a["status"], a["joined_at"]) for a in await store.events.attendees(str(event), None, None, 10)] \
        == [(str(attendee), "going", None), (str(walker), "going", None)]
    assert await store.events.record_arrival(str(event), str(attendee), window(), OPENS_BEFORE,
                                             checked_in_by=str(organizer)) is True
    assert await store.events.record_arrival(str(event), str(walker), window(), OPENS_BEFORE) is True

    stored = await stored_event(store, event)
    # The old backend still reads every arrival from `arrivals`.
    assert stored["arrivals"] == [attendee, walker]
    assert stored["organizer_check_ins"] == [{"user_id": attendee, "by": organizer, "at": NOW}]
    shown = await store.events.attendees(str(event), "arrived", None, 10)
    assert [(a["user_id"], a["check_in"]) for a in shown] == [
        (str(attendee), {"method": "organizer", "by": str(organizer), "at": NOW}),
        (str(walker), {"method": "geofence", "by": None, "at": None})]


@OLD_SHAPES
async def test_a_photo_is_added_to_an_old_event_without_a_gallery(store, shape):
    organizer = await insert_old_user(store.db, 1, shape)
    event = await insert_old_event(store.db, organizer, shape)
    await open_store(store)
    url = "https://photos.example.com/1.jpg"

    added = await store.events.add_photo(str(event), url, str(organizer), NOW, 1)

    assert added["photo_count"] == 1
    stored = await stored_event(store, event)
    assert stored["photo_gallery"] == [url]
    assert stored["photos"] == [{"url": url, "uploaded_by": organizer, "uploaded_at": NOW}]
    assert await store.events.photos(str(event), None, 10) == (
        [{"url": url, "uploaded_by": str(organizer), "uploaded_at": NOW}], 0)
    assert await store.events.add_photo(str(event), "https://photos.example.com/2.jpg", str(organizer), NOW, 1) is None


@OLD_SHAPES
async def test_an_old_event_is_deleted_from_old_users_without_arrays(store, shape):
    organizer, attendee = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    event = await insert_old_event(store.db, organizer, shape, rsvps=[attendee])
    await open_store(store)

    assert await store.events.delete(str(event), str(organizer)) is True

    assert await stored_event(store, event) is None
    assert (await stored_user(store, organizer))["created_events"] == []
    assert (await stored_user(store, attendee))["rsvped_events"] == []


OLD_GALLERY = ["https://old.example.com/1.jpg", "https://old.example.com/2.jpg"]


async def insert_event_with_an_old_gallery(db):
    """An event as the old backend left it: photo URLs in `photo_gallery`, no `photos` entries."""
    return str((await db.events.insert_one({
        "title": "Old gallery", "date": NOW, "category": "music", "location_address": "Paris",
        "location": point(*PARIS), "geofence_radius": 100, "organizer_id": oid(some_id(1)),
        "rsvps": [], "arrivals": [], "photo_gallery": OLD_GALLERY, "created_at": CREATED})).inserted_id)


async def test_photos_the_old_backend_added_are_listed_newest_first_without_uploader(store):
    event_id = await insert_event_with_an_old_gallery(store.db)
    await open_store(store)

    assert (await store.events.get(event_id))["photo_count"] == 2
    assert await store.events.photos(event_id, None, 10) == (
        [{"url": url, "uploaded_by": None, "uploaded_at": None} for url in reversed(OLD_GALLERY)], 0)


class TestOldGalleryOverHttp:
    """The same gallery as the app renders it, with the app built on a mongomock store."""

    @pytest.fixture
    def services(self, io_loop):
        store = new_store("mongomock")
        io_loop.run_sync(lambda: open_store(store))
        services = build_services(make_settings(), store=store)
        yield services
        io_loop.run_sync(lambda: discard_store(store))

    async def test_photos_the_old_backend_added_are_served_with_null_uploader_and_time(self, api, services):
        event_id = await insert_event_with_an_old_gallery(services.store.db)
        _, token = await api.register()

        reply = await api.call("GET", f"/api/v1/events/{event_id}/photos", token=token)

        assert reply.status == 200, reply
        assert reply.data == {"items": [{"url": url, "uploaded_by": None, "uploaded_at": None}
                                        for url in reversed(OLD_GALLERY)], "next_cursor": None}
        assert (await api.call("GET", f"/api/v1/events/{event_id}", token=token)).data["photo_count"] == 2


# --- what the adapter writes ----------------------------------------------------------------------------

async def test_stored_documents_keep_the_old_backends_field_names(store):
    await open_store(store)
    organizer = await store.users.add("Ana", "Ana@example.com", "organizer", PASSWORD_HASH, CREATED)
    attendee = await store.users.add("bo", "bo@example.com", "attendee", PASSWORD_HASH, CREATED)
    organizer_oid, attendee_oid = oid(organizer["id"]), oid(attendee["id"])
    await store.follows.follow(attendee["id"], organizer["id"])
    event_id = await store.events.add(event_fields(organizer["id"]))
    event_oid = oid(event_id)
    await store.events.take_seat(event_id, attendee["id"], window())
    await store.events.record_arrival(event_id, attendee["id"], window(), OPENS_BEFORE)
    await store.events.add_photo(event_id, "https://photos.example.com/1.jpg", attendee["id"], NOW, 10)
    await store.messages.append(event_id, [draft(attendee["id"], "hello")])
    await store.activities.add(activity(attendee["id"], NOW, type="RSVP", event_id=event_id))
    await store.revoked_tokens.revoke("the-jti", attendee["id"], NOW + 60 * MINUTE)
    await store.reset_tokens.add("the-digest", attendee["id"], NOW + 60 * MINUTE)

    ana = await store.db.users.find_one({"_id": organizer_oid})
    assert (ana["email_lower"], ana["username_lower"]) == ("ana@example.com", "ana")
    assert (ana["followers"], ana["following"], ana["created_events"]) == ([attendee_oid], [], [event_oid])
    bo = await store.db.users.find_one({"_id": attendee_oid})
    assert (bo["following"], bo["rsvped_events"]) == ([organizer_oid], [event_oid])
    event = await store.db.events.find_one({"_id": event_oid})
    assert event["organizer_id"] == organizer_oid
    assert (event["rsvps"], event["arrivals"], event["rsvp_count"]) == ([attendee_oid], [attendee_oid], 1)
    assert event["photo_gallery"] == ["https://photos.example.com/1.jpg"]
    assert event["photos"] == [{"url": "https://photos.example.com/1.jpg", "uploaded_by": attendee_oid,
                                "uploaded_at": NOW}]
    message = await store.db.messages.find_one({"event_id": event_oid})
    assert message["user_id"] == attendee_oid and "client_msg_id" not in message
    assert (await store.db.activities.find_one({}))["actor_id"] == attendee_oid
    assert await store.db.revoked_tokens.find_one({"_id": "the-jti"}, {"_id": 0, "user_id": 1}) == {
        "user_id": attendee_oid}
    assert (await store.db.reset_tokens.find_one({"_id": "the-digest"}))["user_id"] == attendee_oid

    await store.events.release_seat(event_id, attendee["id"], window())
    event = await store.db.events.find_one({"_id": event_oid})
    assert (event["rsvps"], event["arrivals"], event["rsvp_count"]) == ([], [], 0)
    assert (await store.db.users.find_one({"_id": attendee_oid}))["rsvped_events"] == []

    await store.events.take_seat(event_id, attendee["id"], window())
    assert await store.events.delete(event_id, organizer["id"]) is True
    assert (await store.db.users.find_one({"_id": organizer_oid}))["created_events"] == []
    assert (await store.db.users.find_one({"_id": attendee_oid}))["rsvped_events"] == []
    assert await store.db.messages.count_documents({"event_id": event_oid}) == 0


async def test_an_id_in_upper_case_is_not_an_id(store):
    await open_store(store)
    user = await store.users.add("ana", "ana@example.com", "attendee", PASSWORD_HASH, CREATED)

    assert await store.users.get(user["id"].upper()) is None
    assert await store.users.get(user["id"]) is not None


# --- chat ids -----------------------------------------------------------------------------------------

async def test_message_ids_stay_above_a_stored_id_from_a_clock_ahead_also_in_another_store(store, store_name):
    event = oid(some_id(1))
    await store.db.events.insert_one({"_id": event, "title": "chat"})  # append needs its event
    ahead = bson.ObjectId.from_datetime(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
    await store.db.messages.insert_one({"_id": ahead, "event_id": event, "user_id": oid(some_id(2)),
                                        "username": "ana", "text": "from a clock ahead", "timestamp": NOW})
    await open_store(store)

    first = await store.messages.append(str(event), [draft(some_id(2), "a"), draft(some_id(2), "b")])
    twin = second_store_on(store, store_name)
    [(from_twin, _)] = await twin.messages.append(str(event), [draft(some_id(3), "c")])
    if store_name == "mongodb":
        await twin.close()
    [(last, _)] = await store.messages.append(str(event), [draft(some_id(2), "d")])

    ids = [str(ahead), *(record["id"] for record, _ in first), from_twin["id"], last["id"]]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [m["text"] for m in await store.messages.latest(str(event), 10)] == [
        "from a clock ahead", "a", "b", "c", "d"]


async def test_a_draft_the_database_refuses_is_none_and_the_others_are_stored(store):
    event = oid(some_id(1))
    await store.db.events.insert_one({"_id": event, "title": "chat"})  # append needs its event
    # A stored id ahead of the clock makes the batch's ids its successors; one of them is taken
    # (by a message of another event), so the database refuses that draft alone.
    ahead = bson.ObjectId.from_datetime(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
    after_ahead = [bson.ObjectId((int.from_bytes(ahead.binary, "big") + n).to_bytes(12, "big")) for n in (1, 2, 3)]
    await store.db.messages.insert_many([
        {"_id": ahead, "event_id": event, "user_id": oid(some_id(2)), "text": "ahead", "timestamp": NOW},
        {"_id": after_ahead[1], "event_id": oid(some_id(9)), "user_id": oid(some_id(2)), "text": "taken",
         "timestamp": NOW}])
    await open_store(store)

    results = await store.messages.append(str(event), [draft(some_id(2), "a", "c1"), draft(some_id(2), "b", "c2"),
                                                       draft(some_id(2), "c", "c3")])

    assert results[1] is None
    assert [(record["id"], record["text"], repeated) for record, repeated in (results[0], results[2])] == [
        (str(after_ahead[0]), "a", False), (str(after_ahead[2]), "c", False)]
    assert [m["text"] for m in await store.messages.latest(str(event), 10)] == ["ahead", "a", "c"]


async def test_a_draft_refused_by_a_validator_is_none_and_the_others_are_stored(store, store_name, caplog):
    if store_name == "mongomock":
        pytest.skip("mongomock has no collection validators; the test above refuses a draft on it by its _id")
    await store.db.create_collection("messages", validator={"text": {"$ne": "refused"}})
    await open_store(store)

    results = await store.messages.append(some_id(1), [draft(some_id(2), "a"), draft(some_id(2), "refused"),
                                                       draft(some_id(2), "c")])

    assert results[1] is None and [record["text"] for record, _ in (results[0], results[2])] == ["a", "c"]
    assert "the database refused a chat message (code 121)" in caplog.text


# --- operation timeouts and refused credentials, at the driver's wire -----------------------------

class FakeMongoServer:
    """Just enough of a MongoDB server on the wire for the real driver: it answers the handshake
    and monitoring's hello as a writable primary, then either refuses authentication as MongoDB
    does for a wrong password (`refuse_credentials`: code 18, AuthenticationFailed) or never
    answers any other command, as a stalled primary or a query that runs forever.

    With `builds_indexes`, it answers the index preparation instead: finds find nothing, and
    createIndexes is recorded and succeeds, except that a standalone (`set_name` None) refuses
    a commitQuorum as MongoDB does (SERVER-39532: BadValue, "Standalones can't specify
    commitQuorum"); a replica set member says its set's name in hello."""

    def __init__(self, refuse_credentials=False, builds_indexes=False, set_name=None):
        self.refuse_credentials = refuse_credentials
        self.builds_indexes = builds_indexes
        self.set_name = set_name
        self.create_indexes = []
        self.port = None
        self._server = None
        self._writers = []
        self._tasks = []

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader, writer):
        self._writers.append(writer)
        self._tasks.append(asyncio.current_task())
        try:
            while True:
                length, request_id, _, opcode = struct.unpack("<iiii", await reader.readexactly(16))
                body = await reader.readexactly(length - 16)
                if opcode == 2004:  # OP_QUERY: the first hello of a connection
                    start = body.index(b"\0", 4) + 1 + 8
                else:  # OP_MSG: flag bits, then the section of kind 0
                    start = 5
                size = int.from_bytes(body[start:start + 4], "little")
                command = bson.decode(body[start:start + size])
                reply = self._reply(command)
                if reply is None:
                    await asyncio.Event().wait()  # stalled: never answers
                payload = bson.encode(reply)
                if opcode == 2004:
                    message = struct.pack("<iqii", 0, 0, 0, 1) + payload
                    writer.write(struct.pack("<iiii", 16 + len(message), 1, request_id, 1) + message)
                else:
                    message = struct.pack("<i", 0) + b"\0" + payload
                    writer.write(struct.pack("<iiii", 16 + len(message), 1, request_id, 2013) + message)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass

    def _reply(self, command):
        name = next(iter(command)).lower()
        if name in ("hello", "ismaster"):
            reply = {"ismaster": True, "isWritablePrimary": True, "helloOk": True, "maxWireVersion": 21,
                     "minWireVersion": 0, "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48000000,
                     "maxWriteBatchSize": 100000, "localTime": datetime.datetime.now(datetime.timezone.utc),
                     "connectionId": 1, "ok": 1.0}
            if "saslSupportedMechs" in command:
                reply["saslSupportedMechs"] = ["SCRAM-SHA-256"]
            if self.set_name:
                reply.update(setName=self.set_name, hosts=[f"127.0.0.1:{self.port}"], me=f"127.0.0.1:{self.port}")
            return reply
        if self.refuse_credentials and name in ("saslstart", "authenticate"):
            return {"ok": 0.0, "errmsg": "Authentication failed.", "code": 18, "codeName": "AuthenticationFailed"}
        if self.builds_indexes and name == "find":
            return {"cursor": {"id": 0, "ns": f"{command['$db']}.{command['find']}", "firstBatch": []}, "ok": 1.0}
        if self.builds_indexes and name == "createindexes":
            self.create_indexes.append(command)
            if self.set_name is None and "commitQuorum" in command:
                return {"ok": 0.0, "errmsg": "Standalones can't specify commitQuorum", "code": 2, "codeName": "BadValue"}
            return {"ok": 1.0, "numIndexesBefore": 1, "numIndexesAfter": 2}
        return None


async def prepared_on(server, dbname):
    store = MongoStore.connect(f"mongodb://127.0.0.1:{server.port}/?directConnection=true", dbname, 2000)
    try:
        await store.open()
        await asyncio.wait_for(store.prepared(), 20)
        return store.problems()
    finally:
        await store.close()


async def test_on_a_replica_set_indexes_commit_once_a_majority_has_built_them():
    # Not the default quorum of every voting member, which waits as long as any one is down.
    async with FakeMongoServer(builds_indexes=True, set_name="rs0") as server:
        assert await prepared_on(server, "replicated") == []
    assert len(server.create_indexes) == len(PLAN)
    assert {command.get("commitQuorum") for command in server.create_indexes} == {"majority"}


async def test_on_a_standalone_indexes_are_built_without_a_commit_quorum():
    async with FakeMongoServer(builds_indexes=True) as server:
        assert await prepared_on(server, "standalone") == []
    # Refused once, then every index is built without one.
    assert [command.get("commitQuorum") for command in server.create_indexes] == ["majority"] + [None] * len(PLAN)


async def test_a_stalled_primary_makes_every_method_and_ping_raise_store_unavailable_within_the_bound():
    async with FakeMongoServer() as server:
        store = MongoStore.connect(f"mongodb://127.0.0.1:{server.port}/?directConnection=true", "stalled", 300)
        try:
            started = asyncio.get_running_loop().time()
            results = await asyncio.wait_for(asyncio.gather(
                *(call(store) for call in EVERY_METHOD.values()), store.ping(), return_exceptions=True), 20)
            elapsed = asyncio.get_running_loop().time() - started
        finally:
            await store.close()

    wrong = {name: result for name, result in zip([*EVERY_METHOD, "ping"], results)
             if not isinstance(result, StoreUnavailable)}
    assert wrong == {}
    # Each failed on the driver's timeout, not on an unreachable server.
    assert all(result.__cause__.timeout for result in results)
    assert elapsed < 10


@pytest.mark.gen_test(timeout=30)
async def test_wrong_credentials_are_a_503_a_reason_in_problems_and_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="store")
    async with FakeMongoServer(refuse_credentials=True) as server:
        store = MongoStore.connect(
            f"mongodb://ana:wrong@127.0.0.1:{server.port}/?directConnection=true", "refused", 2000)
        store.indexes.retry_seconds = 0.01
        attempts = []
        attempt = store.indexes._attempt

        async def counted_attempt():
            attempts.append(1)
            return await attempt()

        store.indexes._attempt = counted_attempt
        try:
            await store.open()  # returns, the server goes on serving
            for _ in range(400):
                if len(attempts) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert len(attempts) >= 3  # still retrying: the operator may fix the user
            assert store.problems() == ["the database refused the credentials (code 18)"]
            assert caplog.text.count("the database refused the credentials (code 18): check the user") == 1
            with pytest.raises(StoreUnavailable) as ping:
                await store.ping()  # /readyz: 503
            assert ping.value.__cause__.code == 18
            with pytest.raises(StoreUnavailable):
                await store.users.find_by_email("ana@example.com")  # a request: 503
        finally:
            await store.close()


@pytest.mark.parametrize("code", [18, 13])
async def test_a_refusal_at_run_time_is_store_unavailable_and_ping_too(store, store_name, code):
    if store_name != "mongomock":
        pytest.skip("fault injection at the driver boundary: mongomock only")
    await open_store(store)

    def refuse(*args, **kwargs):
        raise pymongo_errors.OperationFailure("refused", code=code)

    store.db.command = refuse
    repositories_ = (store.users, store.revoked_tokens, store.reset_tokens, store.events, store.messages,
                     store.follows, store.activities, store.notifications)
    collections = [value for repository in repositories_ for value in vars(repository).values()
                   if hasattr(value, "find_one")]
    assert collections
    for collection in collections:
        for name in ("find", "find_one", "aggregate", "insert_one", "insert_many", "update_one", "update_many",
                     "replace_one", "delete_one", "delete_many", "find_one_and_update", "find_one_and_delete",
                     "count_documents", "bulk_write"):
            setattr(collection, name, refuse)
    results = await asyncio.gather(*(call(store) for call in EVERY_METHOD.values()), store.ping(),
                                   return_exceptions=True)

    wrong = {name: result for name, result in zip([*EVERY_METHOD, "ping"], results)
             if not isinstance(result, StoreUnavailable)}
    assert wrong == {}


async def test_index_builds_run_outside_the_operation_timeout_and_other_calls_within_it(store, store_name):
    if store_name != "mongomock":
        pytest.skip("observes the driver's timeout context on mongomock's calls")
    seen = {}
    users = store.users._users
    create_indexes, find_one = users.create_indexes, users.find_one
    database = store.indexes._db

    class Database:  # the indexes' database, handing out the recording users collection
        def __getitem__(self, name):
            return users if name == "users" else database[name]

    store.indexes._db = Database()

    async def recording_create_indexes(*args, **kwargs):
        seen["create_indexes"] = pymongo_csot.get_timeout()
        return await create_indexes(*args, **kwargs)

    async def recording_find_one(*args, **kwargs):
        seen["find_one"] = pymongo_csot.get_timeout()
        return await find_one(*args, **kwargs)

    users.create_indexes, users.find_one = recording_create_indexes, recording_find_one
    await open_store(store)
    await store.users.add("ana", "ana@example.com", "attendee", PASSWORD_HASH, CREATED)

    # 0: no timeout, the client's timeoutMS not applied; None: the client's timeoutMS applies.
    assert seen == {"create_indexes": 0, "find_one": None}


def test_connect_bounds_every_operation_by_the_timeout():
    store = MongoStore.connect("mongodb://127.0.0.1:1/", "bounded", 1234)
    try:
        assert store.client.delegate.options.timeout == 1.234
    finally:
        store.client.close()


@pytest.mark.parametrize("error", [
    pymongo_errors.NetworkTimeout("timed out"),
    pymongo_errors.ExecutionTimeout("operation exceeded time limit", code=50),
    pymongo_errors.WTimeoutError("waiting for replication timed out", code=64),
    pymongo_errors.WriteConcernError("waiting for replication timed out", code=50),
    pymongo_errors.BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 50, "errmsg": "timeout"}]}),
    pymongo_errors.WaitQueueTimeoutError("pool"),
    pymongo_errors.OperationFailure("Authentication failed.", code=18),
    pymongo_errors.OperationFailure("not authorized", code=13),
], ids=lambda error: type(error).__name__)
def test_timeouts_and_refusals_are_unavailable(error):
    assert is_unavailable(error)


def test_other_driver_errors_are_bugs_not_unavailable():
    assert not is_unavailable(pymongo_errors.OperationFailure("bad query", code=2))
    assert not is_unavailable(pymongo_errors.BulkWriteError({"writeErrors": [{"code": 11000}]}))


class TestTakingOverCaseVariantDuplicatesOverHttp:
    """Two accounts of the old backend whose emails differ only in case, as the app serves them
    until the operator resolves them (`python -m storage.check` lists them)."""

    PASSWORDS = {"Ana@example.com": "first-password", "ana@EXAMPLE.com": "second-password"}

    @pytest.fixture
    def services(self, io_loop):
        store = new_store("mongomock")
        users = [{"email": email, "username": f"ana{n}", "role": "attendee", "created_at": CREATED,
                  "password_hash": bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}
                 for n, (email, password) in enumerate(self.PASSWORDS.items())]
        io_loop.run_sync(lambda: store.db.users.insert_many(users))
        io_loop.run_sync(lambda: open_store(store))
        services = build_services(make_settings(), store=store)
        yield services
        io_loop.run_sync(lambda: discard_store(store))

    async def login(self, api, email, password):
        return await api.call("POST", "/api/v1/auth/login", {"email": email, "password": password})

    async def test_readiness_says_why_and_each_owner_logs_in_with_the_email_as_registered(self, api):
        ready = await api.call("GET", "/readyz")
        assert ready.status == 503 and ready.json["code"] == "database_not_ready"
        assert "the unique index users(email_lower) cannot be built: users share emails ignoring case" in \
            ready.json["message"]

        for n, (email, password) in enumerate(self.PASSWORDS.items()):
            reply = await self.login(api, email, password)
            assert reply.status == 200, reply
            assert reply.data["user"]["username"] == f"ana{n}"
        # The shared address in another case names neither account: no one is logged in to the
        # other's, whichever password is tried.
        for password in self.PASSWORDS.values():
            assert (await self.login(api, "ana@example.com", password)).status == 401
        registered = await api.call("POST", "/api/v1/auth/register", {
            "username": "newcomer", "email": "ANA@example.com", "password": "a-long-password", "role": "attendee"})
        assert registered.status == 409 and registered.json["code"] == "email_taken"


@OLD_SHAPES
async def test_an_old_event_reads_as_live_at_sequence_0_and_is_cancelled_and_listed_as_ours(store, shape):
    organizer, attendee = await insert_old_user(store.db, 1, shape), await insert_old_user(store.db, 2, shape)
    event = await insert_old_event(store.db, organizer, shape, rsvps=[attendee],
                                   **({"cancelled_at": None, "sequence": None} if shape == "null" else {}))
    # The old backend records an RSVP on both sides: the event's `rsvps`, the user's `rsvped_events`.
    await store.db["users"].update_one({"_id": attendee}, {"$set": {"rsvped_events": [event]}})
    await open_store(store)

    record = await store.events.get(str(event), str(attendee))
    assert (record["cancelled_at"], record["sequence"]) == (None, 0)
    assert [e["id"] for e in await store.events.find(DiscoveryQuery())] == [str(event)]
    assert [e["id"] for e in await store.events.attending(str(attendee), NOW - HOUR, 10)] == [str(event)]
    assert await store.events.update(str(event), str(organizer), {"cancelled_at": NOW}, {}) == []
    record = await store.events.get(str(event), str(attendee))
    assert (record["cancelled_at"], record["sequence"]) == (NOW, 1)
    assert await store.events.find(DiscoveryQuery()) == []
    assert [e["id"] for e in await store.events.attending(str(attendee), NOW - HOUR, 10)] == [str(event)]
