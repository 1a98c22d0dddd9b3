"""The contract of domain/repositories.py, held against every store (tests/stores.py): the same
calls on the same fixtures must give the same answers on SQLite, on mongomock and on a real
MongoDB. Each test names the rule it checks; the rule's wording is the docstring it comes from.

Where a store cannot show a rule (mongomock cannot share its data with a second client), the test
is skipped on it with the reason, never weakened for the others. mongomock's $geoNear comes from
tests/mongomock_extensions.py.
"""
import asyncio
import datetime
import re

import pytest

from domain.discovery import BY_DATE, BY_DISTANCE, Cursor, DiscoveryQuery
from domain.geo import distance_m
from domain.errors import Conflict, NotFound
from domain.repositories import AlreadyTaken, Events
from domain.times import EPOCH, UTC
from tests.repository_fixtures import (
    CREATED, DEFAULT_DURATION, FAR_FUTURE, HOUR, LONDON, MILLISECOND, MINUTE, NOW, PARIS,
    PARIS_NEIGHBOURHOOD, PASSWORD_HASH, activity, destination, draft, event_fields, point,
    some_id, square_around, window,
)
from tests.stores import STORE_NAMES, TEST_MONGO_URI, discard_store, new_store, open_store

pytestmark = pytest.mark.gen_test(timeout=30)

ID = re.compile(r"[0-9a-f]{24}")
USER_KEYS = ("id", "username", "email", "role", "password_hash", "created_at", "tokens_valid_after",
             "followers_count", "following_count")
EVENT_KEYS = ("id", *Events.FIELDS, "sequence", "rsvp_count", "arrival_count", "photo_count", "waitlist_count",
              "is_rsvped",
              "has_arrived", "waitlist_position")
MESSAGE_KEYS = ("id", "event_id", "user_id", "username", "text", "timestamp", "client_msg_id")
ACTIVITY_KEYS = ("id", "type", "actor_id", "actor_name", "event_id", "target_user_id", "summary", "timestamp")
PHOTO_KEYS = ("url", "uploaded_by", "uploaded_at")

ORGANIZER = some_id(1)
OTHER_ORGANIZER = some_id(2)
ATTENDEE = some_id(3)
STRANGER = some_id(4)
OPENS_BEFORE = 30 * MINUTE


@pytest.fixture(params=STORE_NAMES)
def store_name(request):
    return request.param


@pytest.fixture
def store(store_name, io_loop, tmp_path):
    store = new_store(store_name, str(tmp_path))
    io_loop.run_sync(lambda: open_store(store))
    yield store
    io_loop.run_sync(lambda: discard_store(store))


@pytest.fixture
def twin(store_name, store, io_loop, tmp_path):
    """A second store on the first one's database, as another process sharing it opens it."""
    if store_name == "mongomock":
        pytest.skip("each mongomock client keeps its own data: no second store can share the first one's")
    twin = new_store("sqlite", str(tmp_path)) if store_name == "sqlite" else second_mongo_store(store)
    io_loop.run_sync(twin.open)
    yield twin
    io_loop.run_sync(twin.close)


def second_mongo_store(store):
    from storage.mongo import MongoStore
    return MongoStore.connect(TEST_MONGO_URI, store.dbname, 3000)


# --- shapes ----------------------------------------------------------------------------------------

def assert_id(value):
    assert isinstance(value, str) and ID.fullmatch(value), f"not a 24-hex id: {value!r}"


def assert_time(value):
    assert isinstance(value, datetime.datetime), f"not a datetime: {value!r}"
    assert value.utcoffset() == datetime.timedelta(0), f"not aware UTC: {value!r}"
    assert value.microsecond % 1000 == 0, f"finer than the millisecond: {value!r}"


def assert_has_keys(record, keys):
    missing = [key for key in keys if key not in record]
    assert not missing, f"missing {missing} in {record!r}"


def ids_of(records):
    return [record["id"] for record in records]


def titles_of(records):
    return [record["title"] for record in records]


# --- building records ---------------------------------------------------------------------------------

async def add_user(store, username, email=None, role="attendee"):
    return await store.users.add(username, email or f"{username}@example.com", role, PASSWORD_HASH, CREATED)


async def add_event(store, organizer_id=ORGANIZER, **fields):
    return await store.events.add(event_fields(organizer_id, **fields))


async def add_events(store, titles, **fields):
    """{title: id} of events added in the order given."""
    return {title: await add_event(store, title=title, **fields) for title in titles}


async def rsvped(store, event_id, *user_ids, now=NOW):
    for user_id in user_ids:
        assert await store.events.take_seat(event_id, user_id, window(now)) is not None


async def find(store, viewer_id=None, **query):
    return await store.events.find(DiscoveryQuery(**query), viewer_id)


def date_cursor(event):
    return Cursor.after(BY_DATE, event)


def distance_cursor(event):
    return Cursor.after(BY_DISTANCE, event)


async def every_page(store, limit, **query):
    """Every event of the query, page by page of `limit`, each page resumed by the cursor of the
    last event of the previous one."""
    found, cursor = [], None
    while True:
        page = await find(store, limit=limit, cursor=cursor, **query)
        assert len(page) <= limit + 1
        found += page[:limit]
        if len(page) <= limit:
            return found
        last = page[limit - 1]
        cursor = distance_cursor(last) if query.get("near") else date_cursor(last)


# --- the store --------------------------------------------------------------------------------------------

async def test_an_open_store_answers_a_ping_and_reports_no_problems(store):
    await store.ping()
    assert store.problems() == []
    assert store.kind in ("sqlite", "mongodb")


async def test_close_lets_the_calls_already_made_finish(store_name, tmp_path):
    store = new_store(store_name, str(tmp_path))
    await store.open()
    event_id = await add_event(store)
    pending = [asyncio.ensure_future(append(store, event_id, draft(ATTENDEE, f"m{n}"))) for n in range(20)]
    await asyncio.sleep(0)  # every call has been made

    await store.close()

    results = await asyncio.gather(*pending)
    assert [duplicate for [(_, duplicate)] in results] == [False] * 20
    if store_name == "mongomock":
        return  # a closed mongomock client's data cannot be read by any other
    again = new_store(store_name, str(tmp_path)) if store_name == "sqlite" else second_mongo_store(store)
    await again.open()
    try:
        assert len(await again.messages.latest(event_id, 100)) == 20
    finally:
        await discard_store(again)


# --- users ---------------------------------------------------------------------------------------------------

async def test_users_add_returns_the_whole_new_record(store):
    user = await store.users.add("ana", "Ana@Example.com", "organizer", PASSWORD_HASH, CREATED)

    assert_has_keys(user, USER_KEYS)
    assert_id(user["id"])
    assert_time(user["created_at"])
    assert {key: user[key] for key in USER_KEYS} == {
        "id": user["id"], "username": "ana", "email": "Ana@Example.com", "role": "organizer",
        "password_hash": PASSWORD_HASH, "created_at": CREATED, "tokens_valid_after": None,
        "followers_count": 0, "following_count": 0}


async def test_users_get_returns_the_record_that_add_returned(store):
    user = await add_user(store, "ana")

    assert await store.users.get(user["id"]) == user


@pytest.mark.parametrize("unknown", [some_id(99), "not an id", "", "0" * 23, "g" * 24])
async def test_users_get_finds_nothing_for_an_unknown_or_malformed_id(store, unknown):
    await add_user(store, "ana")

    assert await store.users.get(unknown) is None


async def test_user_ids_are_distinct_and_sort_like_creation_time(store):
    users = [await add_user(store, f"user{n}") for n in range(6)]

    assert ids_of(users) == sorted(ids_of(users))
    assert len(set(ids_of(users))) == 6


@pytest.mark.parametrize("registered, again, field", [
    (("ana", "Ana@Example.com"), ("other", "aNA@exAMPLE.COM"), "email"),
    (("Zoë", "zoe@example.com"), ("ZOË", "other@example.com"), "username"),
    (("elise", "Élise@Example.com"), ("elise2", "élise@example.com"), "email"),  # case beyond ASCII
    (("Straße", "one@example.com"), ("STRASSE", "two@example.com"), "username"),  # case folding
], ids=["email in another case", "username in another case", "email beyond ascii", "username folded"])
async def test_users_add_refuses_a_name_taken_in_another_case(store, registered, again, field):
    await add_user(store, *registered)

    with pytest.raises(AlreadyTaken) as refused:
        await add_user(store, *again)
    assert refused.value.field == field


@pytest.mark.parametrize("variant", ["\u212aate@example.com", "ｋａｔｅ@example.com", "KATE@EXAMPLE.COM"])
async def test_users_add_compares_emails_by_nfkc_and_case_folding(store, variant):
    # The Kelvin sign and fullwidth letters are "k" and "kate" once normalized.
    await add_user(store, "kate", "kate@example.com")

    with pytest.raises(AlreadyTaken) as refused:
        await add_user(store, "other", variant)
    assert refused.value.field == "email"
    assert (await store.users.find_by_email(variant))["username"] == "kate"


async def test_taken_names_the_field_another_user_has_email_first(store):
    await add_user(store, "ana", "ana@example.com")

    assert await store.users.taken("ANA@example.com", "ANA") == "email"
    assert await store.users.taken("ｎｅｗ@example.com", "ＡＮＡ") == "username"
    assert await store.users.taken("new@example.com", "new") is None


async def test_users_add_reports_the_email_first_when_both_are_taken(store):
    await add_user(store, "ana", "ana@example.com")

    with pytest.raises(AlreadyTaken) as refused:
        await add_user(store, "ANA", "ANA@example.com")
    assert refused.value.field == "email"


async def test_a_refused_user_is_not_stored(store):
    await add_user(store, "ana", "ana@example.com")

    with pytest.raises(AlreadyTaken):
        await add_user(store, "Ana", "new@example.com")
    assert await store.users.find_by_email("new@example.com") is None
    # The refused registration left its email free.
    assert (await add_user(store, "bo", "new@example.com"))["username"] == "bo"


async def test_find_by_email_ignores_case(store):
    user = await add_user(store, "ana", "Ana@Example.com")

    assert await store.users.find_by_email("ana@example.com") == user
    assert await store.users.find_by_email("ANA@EXAMPLE.COM") == user


@pytest.mark.parametrize("email", ["nobody@example.com", "a.b@example.co", "axb@example.com", "%@example.com",
                                   "a_b@example.com", "a.b@example.com.", ".*", ""])
async def test_find_by_email_matches_the_whole_address_literally(store, email):
    await add_user(store, "ab", "a.b@example.com")

    assert await store.users.find_by_email(email) is None


async def test_set_password_replaces_the_hash_and_sets_tokens_valid_after(store):
    user = await add_user(store, "ana")
    reset_at = NOW + 1234 * MILLISECOND

    assert await store.users.set_password(user["id"], "$2b$04$new", reset_at) is True

    changed = await store.users.get(user["id"])
    assert changed == {**user, "password_hash": "$2b$04$new", "tokens_valid_after": reset_at}
    assert_time(changed["tokens_valid_after"])


async def test_set_password_of_an_unknown_user_is_false(store):
    assert await store.users.set_password(some_id(99), "$2b$04$new", NOW) is False


async def test_usernames_maps_the_ids_that_exist(store):
    ana = await add_user(store, "ana")
    bo = await add_user(store, "bo")

    assert await store.users.usernames([ana["id"], some_id(99), bo["id"], "junk"]) == {
        ana["id"]: "ana", bo["id"]: "bo"}
    assert await store.users.usernames([]) == {}


async def test_concurrent_adds_with_case_variant_emails_store_exactly_one(store):
    emails = ["sam@example.com", "SAM@example.com", "Sam@Example.com", "sAm@EXAMPLE.com", "SAM@EXAMPLE.COM",
              "saM@example.coM", "sam@EXAMPLE.com", "Sam@example.com", "sAM@example.com", "SaM@ExAmPlE.cOm"]

    results = await asyncio.gather(*(add_user(store, f"sam{n}", email) for n, email in enumerate(emails)),
                                   return_exceptions=True)

    added = [result for result in results if isinstance(result, dict)]
    refused = [result for result in results if isinstance(result, AlreadyTaken)]
    assert len(added) == 1, results
    assert len(refused) == 9 and {error.field for error in refused} == {"email"}, results
    assert await store.users.find_by_email("sam@example.com") == added[0]


async def test_concurrent_adds_with_case_variant_usernames_store_exactly_one(store):
    names = ["sam", "SAM", "Sam", "sAm", "saM", "SAm", "sAM", "SaM"]

    results = await asyncio.gather(*(add_user(store, name, f"sam{n}@example.com") for n, name in enumerate(names)),
                                   return_exceptions=True)

    added = [result for result in results if isinstance(result, dict)]
    refused = [result for result in results if isinstance(result, AlreadyTaken)]
    assert len(added) == 1, results
    assert len(refused) == 7 and {error.field for error in refused} == {"username"}, results


# --- revoked tokens ---------------------------------------------------------------------------------------

async def test_a_revoked_token_is_revoked_and_no_other(store):
    await store.revoked_tokens.revoke("jti-1", some_id(1), FAR_FUTURE)

    assert await store.revoked_tokens.is_revoked("jti-1") is True
    assert await store.revoked_tokens.is_revoked("jti-2") is False
    assert await store.revoked_tokens.is_revoked("JTI-1") is False


async def test_a_revocation_past_its_expiry_no_longer_counts(store):
    # is_revoked takes no `now`: "has not expired" is judged by the clock, so the expiry is long past.
    await store.revoked_tokens.revoke("jti-old", some_id(1), datetime.datetime(2020, 1, 1, tzinfo=UTC))

    assert await store.revoked_tokens.is_revoked("jti-old") is False


async def test_revoking_a_token_twice_is_harmless(store):
    await store.revoked_tokens.revoke("jti-1", some_id(1), FAR_FUTURE)
    await store.revoked_tokens.revoke("jti-1", some_id(1), FAR_FUTURE)

    assert await store.revoked_tokens.is_revoked("jti-1") is True


# --- reset tokens ------------------------------------------------------------------------------------------

async def test_reset_token_take_returns_its_user_once(store):
    await store.reset_tokens.add("digest-1", some_id(1), NOW + HOUR)

    assert await store.reset_tokens.take("digest-1", NOW) == some_id(1)
    assert await store.reset_tokens.take("digest-1", NOW) is None
    assert await store.reset_tokens.count(some_id(1)) == 0


@pytest.mark.parametrize("expires_at", [NOW, NOW - MILLISECOND, NOW - HOUR])
async def test_reset_token_take_refuses_a_token_that_does_not_expire_after_now(store, expires_at):
    await store.reset_tokens.add("digest-1", some_id(1), expires_at)

    assert await store.reset_tokens.take("digest-1", NOW) is None


async def test_reset_token_take_accepts_a_token_expiring_a_millisecond_after_now(store):
    await store.reset_tokens.add("digest-1", some_id(1), NOW + MILLISECOND)

    assert await store.reset_tokens.take("digest-1", NOW) == some_id(1)


async def test_reset_token_take_of_an_unknown_digest_is_none(store):
    await store.reset_tokens.add("digest-1", some_id(1), NOW + HOUR)

    assert await store.reset_tokens.take("digest-2", NOW) is None
    assert await store.reset_tokens.count(some_id(1)) == 1


async def test_reset_tokens_are_counted_per_user(store):
    for n in range(3):
        await store.reset_tokens.add(f"a{n}", some_id(1), NOW + HOUR)
    await store.reset_tokens.add("b", some_id(2), NOW + HOUR)

    assert await store.reset_tokens.count(some_id(1)) == 3
    assert await store.reset_tokens.count(some_id(2)) == 1
    assert await store.reset_tokens.count(some_id(3)) == 0


async def test_drop_all_deletes_every_reset_token_of_the_user_and_no_other(store):
    for n in range(3):
        await store.reset_tokens.add(f"a{n}", some_id(1), NOW + HOUR)
    await store.reset_tokens.add("b", some_id(2), NOW + HOUR)

    await store.reset_tokens.drop_all(some_id(1))

    assert await store.reset_tokens.count(some_id(1)) == 0
    assert await store.reset_tokens.take("a0", NOW) is None
    assert await store.reset_tokens.take("b", NOW) == some_id(2)


async def test_concurrent_takes_of_one_reset_token_give_its_user_once(store):
    await store.reset_tokens.add("digest-1", some_id(1), NOW + HOUR)

    taken = await asyncio.gather(*(store.reset_tokens.take("digest-1", NOW) for _ in range(10)))

    assert sorted(taken, key=str) == [some_id(1)] + [None] * 9


# --- events: storing and reading ------------------------------------------------------------------------

async def test_events_add_returns_an_id_and_get_returns_every_field(store):
    fields = event_fields(ORGANIZER)

    event_id = await store.events.add(fields)

    assert_id(event_id)
    event = await store.events.get(event_id)
    assert_has_keys(event, EVENT_KEYS)
    assert {key: event[key] for key in EVENT_KEYS} == {
        "id": event_id, **fields, "sequence": 0, "rsvp_count": 0, "arrival_count": 0, "photo_count": 0,
        "waitlist_count": 0, "is_rsvped": False, "has_arrived": False, "waitlist_position": None}
    for key in ("date", "created_at", "updated_at"):
        assert_time(event[key])
    assert "distance_m" not in event


async def test_events_keep_an_end_date_a_capacity_and_a_geofence_polygon(store):
    fields = event_fields(ORGANIZER, end_date=NOW + 2 * HOUR + 7 * MILLISECOND, capacity=30,
                          geofence_radius=75.5, geofence=square_around(*PARIS), category="tech",
                          location=point(-73.985656, 40.748433), description="")

    event = await store.events.get(await store.events.add(fields))

    assert {key: event[key] for key in Events.FIELDS} == fields
    assert_time(event["end_date"])


async def test_events_keep_dates_at_the_ends_of_the_calendar(store):
    first = datetime.datetime(1, 1, 1, tzinfo=UTC)
    last = datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

    early = await store.events.get(await add_event(store, date=first))
    late = await store.events.get(await add_event(store, date=last, end_date=last))

    assert early["date"] == first
    assert (late["date"], late["end_date"]) == (last, last)


@pytest.mark.parametrize("unknown", [some_id(99), "not an id", "", "0" * 23])
async def test_events_get_finds_nothing_for_an_unknown_or_malformed_id(store, unknown):
    await add_event(store)

    assert await store.events.get(unknown) is None


async def test_event_ids_are_distinct_and_sort_like_creation_time(store):
    event_ids = [await add_event(store) for _ in range(6)]

    assert event_ids == sorted(event_ids) and len(set(event_ids)) == 6


async def test_events_get_shows_whether_the_viewer_rsvped_and_arrived(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE, STRANGER)
    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE)

    as_attendee = await store.events.get(event_id, ATTENDEE)
    as_stranger = await store.events.get(event_id, STRANGER)
    anonymous = await store.events.get(event_id)
    assert (as_attendee["is_rsvped"], as_attendee["has_arrived"]) == (True, True)
    assert (as_stranger["is_rsvped"], as_stranger["has_arrived"]) == (True, False)
    assert (anonymous["is_rsvped"], anonymous["has_arrived"]) == (False, False)
    assert (anonymous["rsvp_count"], anonymous["arrival_count"]) == (2, 1)


# --- events: finding by date --------------------------------------------------------------------------------

async def test_find_orders_events_by_date_then_id(store):
    late = await add_event(store, title="late", date=NOW + 3 * HOUR)
    tie_1 = await add_event(store, title="tie 1", date=NOW + HOUR)
    early = await add_event(store, title="early", date=NOW - HOUR)
    tie_2 = await add_event(store, title="tie 2", date=NOW + HOUR)

    found = await find(store)

    assert ids_of(found) == [early, *sorted([tie_1, tie_2]), late]
    assert_has_keys(found[0], EVENT_KEYS)
    assert all("distance_m" not in event for event in found)


async def test_find_returns_up_to_limit_plus_one_events(store):
    for n in range(6):
        await add_event(store, title=f"e{n}", date=NOW + n * HOUR)

    assert titles_of(await find(store, limit=3)) == ["e0", "e1", "e2", "e3"]
    assert titles_of(await find(store, limit=5)) == ["e0", "e1", "e2", "e3", "e4", "e5"]
    assert len(await find(store, limit=10)) == 6


async def test_find_of_an_empty_store_is_an_empty_list(store):
    assert await find(store) == []


async def test_find_with_a_cursor_resumes_strictly_after_its_date_and_id(store):
    before = await add_event(store, title="before", date=NOW - HOUR)
    same_time = sorted([await add_event(store, date=NOW) for _ in range(3)])
    after = await add_event(store, title="after", date=NOW + MILLISECOND)
    marker = (NOW - EPOCH) // MILLISECOND

    assert ids_of(await find(store, cursor=Cursor(marker, same_time[0]))) == [*same_time[1:], after]
    assert ids_of(await find(store, cursor=Cursor(marker, same_time[2]))) == [after]
    assert ids_of(await find(store, cursor=Cursor(marker - 1, "f" * 24))) == [*same_time, after]
    assert ids_of(await find(store, cursor=Cursor(marker, "0" * 24))) == [*same_time, after]
    assert before not in ids_of(await find(store, cursor=Cursor(marker - 1, "0" * 24)))


async def test_find_pages_by_cursor_neither_repeat_nor_skip_events(store):
    event_ids = [await add_event(store, date=NOW + (n // 3) * HOUR) for n in range(10)]
    expected = sorted(event_ids, key=lambda event_id: (event_ids.index(event_id) // 3, event_id))

    for limit in (1, 2, 3, 4):
        assert ids_of(await every_page(store, limit)) == expected


async def test_find_takes_cursors_beyond_the_ends_of_the_calendar(store):
    event_ids = [await add_event(store, date=NOW + n * HOUR) for n in range(3)]

    assert ids_of(await find(store, cursor=Cursor(-1e20, "0" * 24))) == event_ids
    assert await find(store, cursor=Cursor(1e20, "0" * 24)) == []


async def test_find_filters_by_category(store):
    await add_events(store, ["jazz"], category="music")
    await add_events(store, ["python"], category="tech")

    assert titles_of(await find(store, category="tech")) == ["python"]
    assert await find(store, category="Tech") == []


async def test_find_filters_by_a_date_range_including_both_ends(store):
    for n in range(5):
        await add_event(store, title=f"h{n}", date=NOW + n * HOUR)

    assert titles_of(await find(store, date_from=NOW + HOUR, date_to=NOW + 3 * HOUR)) == ["h1", "h2", "h3"]
    assert titles_of(await find(store, date_from=NOW + 3 * HOUR)) == ["h3", "h4"]
    assert titles_of(await find(store, date_to=NOW + HOUR - MILLISECOND)) == ["h0"]
    assert await find(store, date_from=NOW + 3 * HOUR, date_to=NOW + HOUR) == []


async def test_find_filters_by_organizer(store):
    await add_events(store, ["mine"], organizer_id=ORGANIZER)
    await add_events(store, ["theirs"], organizer_id=OTHER_ORGANIZER)

    assert titles_of(await find(store, organizer_id=OTHER_ORGANIZER)) == ["theirs"]
    assert await find(store, organizer_id=some_id(99)) == []


async def test_find_text_ignores_case_in_title_and_description(store):
    await add_event(store, title="JAZZ night", description="Quartet.", date=NOW)
    await add_event(store, title="Sunset", description="a little jazz on the roof", date=NOW + HOUR)
    await add_event(store, title="Café crème", description="", date=NOW + 2 * HOUR)
    await add_event(store, title="Python meetup", description="talks", date=NOW + 3 * HOUR)

    assert titles_of(await find(store, text="jazz")) == ["JAZZ night", "Sunset"]
    assert titles_of(await find(store, text="JAZZ")) == ["JAZZ night", "Sunset"]
    assert titles_of(await find(store, text="CAFÉ")) == ["Café crème"]
    assert titles_of(await find(store, text="N MEET")) == ["Python meetup"]


@pytest.mark.parametrize("text, matches", [
    ("a.b", ["a.b party"]),
    ("100%", ["100% vinyl"]),
    ("a_b", ["a_b club"]),
    ("c++ (", ["C++ (advanced)"]),
    (".*", []),
    ("(?i)[", []),
    ("%", ["100% vinyl"]),
    ("_", ["a_b club"]),
    ("\\", []),
    ("^C", []),
])
async def test_find_text_is_found_literally_never_as_a_pattern(store, text, matches):
    for title in ("a.b party", "axb party", "100% vinyl", "100 dollars", "a_b club", "axb club", "C++ (advanced)",
                  "Cobol"):
        await add_event(store, title=title, description="")

    assert sorted(titles_of(await find(store, text=text))) == sorted(matches)


async def test_find_combines_every_filter(store):
    await add_event(store, title="jazz here", category="music", date=NOW)
    await add_event(store, title="jazz elsewhere", category="music", date=NOW, organizer_id=OTHER_ORGANIZER)
    await add_event(store, title="jazz talk", category="tech", date=NOW)
    await add_event(store, title="jazz later", category="music", date=NOW + 5 * HOUR)
    await add_event(store, title="rock here", category="music", date=NOW)

    found = await find(store, category="music", date_from=NOW, date_to=NOW + HOUR, organizer_id=ORGANIZER,
                       text="jazz")
    assert titles_of(found) == ["jazz here"]


async def test_find_shows_whether_the_viewer_rsvped(store):
    going = await add_event(store, title="going", date=NOW)
    await add_event(store, title="not going", date=NOW + HOUR)
    await rsvped(store, going, ATTENDEE)

    found = await find(store, viewer_id=ATTENDEE)
    assert [(e["title"], e["is_rsvped"], e["rsvp_count"]) for e in found] == [
        ("going", True, 1), ("not going", False, 0)]


# --- events: nearby --------------------------------------------------------------------------------------------

async def add_places(store, places, centre=PARIS, **fields):
    """{title: (id, location)} of events at (bearing, meters) from the centre."""
    added = {}
    for title, (bearing, meters) in places.items():
        location = destination(*centre, bearing, meters)
        added[title] = (await add_event(store, title=title, location=point(*location), **fields), location)
    return added


def expected_nearby(added, centre, radius_m):
    """(title, distance) of the added events within the radius, by (distance, id): what
    domain.geo says every store must answer."""
    hits = sorted((distance_m(*centre, *location), event_id, title) for title, (event_id, location) in added.items())
    return [(title, distance) for distance, _, title in hits if distance <= radius_m]


def assert_nearby(found, expected):
    assert titles_of(found) == [title for title, _ in expected]
    assert [event["distance_m"] for event in found] == pytest.approx([d for _, d in expected], rel=1e-6, abs=1e-6)
    assert all(isinstance(event["distance_m"], float) for event in found)


async def test_nearby_finds_the_events_within_the_radius_nearest_first_with_their_distances(store):
    added = await add_places(store, PARIS_NEIGHBOURHOOD)

    found = await find(store, near=PARIS, radius_m=10_000, limit=50)

    assert_nearby(found, expected_nearby(added, PARIS, 10_000))
    assert len(found) == 8
    assert_has_keys(found[0], (*EVENT_KEYS, "distance_m"))


async def test_nearby_events_at_one_venue_come_in_id_order(store):
    added = await add_places(store, PARIS_NEIGHBOURHOOD)

    found = await find(store, near=PARIS, radius_m=1_000)

    assert titles_of(found) == ["louvre", *sorted(["chatelet a", "chatelet b"], key=lambda t: added[t][0])]
    assert found[1]["distance_m"] == found[2]["distance_m"]


async def test_nearby_pages_by_cursor_neither_repeat_nor_skip_events(store):
    added = await add_places(store, PARIS_NEIGHBOURHOOD)
    expected = [title for title, _ in expected_nearby(added, PARIS, 20_000)]

    for limit in (1, 2, 3):
        assert titles_of(await every_page(store, limit, near=PARIS, radius_m=20_000)) == expected


async def test_nearby_cursor_resumes_exactly_between_events_at_the_same_distance(store):
    venue = destination(*PARIS, 30, 2_500)
    same_spot = sorted([await add_event(store, location=point(*venue)) for _ in range(5)])
    farther = await add_event(store, location=point(*destination(*PARIS, 30, 2_600)))

    first = await find(store, near=PARIS, limit=2)
    assert ids_of(first) == same_spot[:3]

    resumed = await find(store, near=PARIS, limit=2, cursor=distance_cursor(first[1]))
    assert ids_of(resumed) == same_spot[2:5]
    resumed = await find(store, near=PARIS, limit=2, cursor=distance_cursor(resumed[1]))
    assert ids_of(resumed) == [same_spot[4], farther]
    assert ids_of(await every_page(store, 2, near=PARIS)) == [*same_spot, farther]


async def test_nearby_search_applies_the_other_filters(store):
    near = destination(*PARIS, 0, 500)
    await add_event(store, title="jazz here", location=point(*near))
    await add_event(store, title="jazz talk", category="tech", location=point(*near))
    await add_event(store, title="jazz past", date=NOW - 48 * HOUR, location=point(*near))
    await add_event(store, title="jazz theirs", organizer_id=OTHER_ORGANIZER, location=point(*near))
    await add_event(store, title="rock here", location=point(*near))
    await add_event(store, title="jazz far", location=point(*LONDON))

    found = await find(store, near=PARIS, radius_m=5_000, category="music", date_from=NOW - HOUR,
                       organizer_id=ORGANIZER, text="JAZZ")
    assert titles_of(found) == ["jazz here"]


async def test_nearby_returns_up_to_limit_plus_one_events(store):
    await add_places(store, {f"e{n}": (0, 100 * (n + 1)) for n in range(6)})

    assert titles_of(await find(store, near=PARIS, limit=2)) == ["e0", "e1", "e2"]


@pytest.mark.parametrize("bearing", [0, 45, 90, 135, 180, 225, 270, 315])
async def test_nearby_finds_an_event_just_inside_the_radius_and_not_one_just_outside(store, bearing):
    await add_places(store, {"inside": (bearing, 9_999.9), "outside": (bearing, 10_000.1)})

    found = await find(store, near=PARIS, radius_m=10_000)

    assert titles_of(found) == ["inside"]
    assert found[0]["distance_m"] == pytest.approx(9_999.9, abs=1e-3)


async def test_nearby_finds_an_event_exactly_at_the_radius(store):
    location = destination(*PARIS, 60, 3_000)
    await add_event(store, title="on the edge", location=point(*location))

    found = await find(store, near=PARIS, radius_m=distance_m(*PARIS, *location))

    assert titles_of(found) == ["on the edge"]


async def test_nearby_search_reaches_across_the_antimeridian(store):
    await add_event(store, title="west of the line", location=point(179.95, -16.5))
    await add_event(store, title="east of the line", location=point(-179.9, -16.5))
    await add_event(store, title="on the line", location=point(180.0, -16.5))
    await add_event(store, title="far west", location=point(178.0, -16.5))
    added = {e["title"]: (e["id"], e["location"]["coordinates"]) for e in await find(store, limit=10)}

    for centre in ((179.99, -16.5), (-179.99, -16.5)):
        found = await find(store, near=centre, radius_m=50_000)
        assert_nearby(found, expected_nearby(added, centre, 50_000))
        assert sorted(titles_of(found)) == ["east of the line", "on the line", "west of the line"]


async def test_nearby_search_near_the_pole_reaches_over_it(store):
    await add_event(store, title="side", location=point(90.0, 89.95))
    await add_event(store, title="across the pole", location=point(180.0, 89.95))
    await add_event(store, title="at the pole", location=point(0.0, 90.0))
    await add_event(store, title="too far south", location=point(0.0, 89.7))
    added = {e["title"]: (e["id"], e["location"]["coordinates"]) for e in await find(store, limit=10)}
    centre = (0.0, 89.95)

    found = await find(store, near=centre, radius_m=20_000)

    assert_nearby(found, expected_nearby(added, centre, 20_000))
    assert titles_of(found) == ["at the pole", "side", "across the pole"]


async def test_nearby_distances_are_great_circle_ones_far_away_too(store):
    await add_event(store, title="Paris", location=point(*PARIS))

    found = await find(store, near=LONDON, radius_m=500_000)

    assert titles_of(found) == ["Paris"]
    assert found[0]["distance_m"] == pytest.approx(distance_m(*LONDON, *PARIS), rel=1e-6)


async def test_nearby_cursor_beyond_the_radius_finds_nothing(store):
    await add_places(store, {"near": (0, 100)})

    assert await find(store, near=PARIS, radius_m=1_000, cursor=Cursor(1_000.5, "0" * 24)) == []
    assert titles_of(await find(store, near=PARIS, radius_m=1_000, cursor=Cursor(-5.0, "0" * 24))) == ["near"]


async def test_nearby_search_follows_a_moved_event_and_forgets_a_deleted_one(store):
    moved = await add_event(store, title="moved", location=point(*LONDON))
    deleted = await add_event(store, title="deleted", location=point(*PARIS))

    assert await store.events.update(moved, ORGANIZER, {"location": point(*PARIS)}, {}) == []
    assert await store.events.delete(deleted, ORGANIZER)

    assert titles_of(await find(store, near=PARIS, radius_m=1_000)) == ["moved"]
    assert await find(store, near=LONDON, radius_m=1_000) == []


async def test_nearby_shows_whether_the_viewer_rsvped(store):
    going = await add_event(store, title="going", location=point(*PARIS))
    await rsvped(store, going, ATTENDEE)

    found = await find(store, viewer_id=ATTENDEE, near=PARIS)
    assert [(e["is_rsvped"], e["rsvp_count"]) for e in found] == [(True, 1)]


# --- events: update and delete ----------------------------------------------------------------------------------

async def test_update_sets_the_changed_fields_and_no_other(store):
    event_id = await add_event(store)
    before = await store.events.get(event_id)
    changes = {"title": "Rooftop jazz (moved indoors)", "end_date": NOW + 2 * HOUR, "capacity": 40,
               "geofence": square_around(*PARIS), "updated_at": NOW}

    assert await store.events.update(event_id, ORGANIZER, changes, {}) == []

    assert await store.events.get(event_id) == {**before, **changes, "sequence": 1}


async def test_update_can_clear_optional_fields(store):
    event_id = await add_event(store, end_date=NOW + HOUR, capacity=10, geofence=square_around(*PARIS))

    assert await store.events.update(event_id, ORGANIZER, {"end_date": None, "capacity": None, "geofence": None}, {}) == []

    event = await store.events.get(event_id)
    assert (event["end_date"], event["capacity"], event["geofence"]) == (None, None, None)


async def test_update_with_the_values_the_event_already_has_is_a_change(store):
    # "Whether it changed the event" is read as "whether its conditions held": a form saved
    # again unchanged is not a conflict.
    event_id = await add_event(store, title="same")

    assert await store.events.update(event_id, ORGANIZER, {"title": "same"}, {"title": "same"}) == []


async def test_update_by_another_organizer_changes_nothing(store):
    event_id = await add_event(store)
    before = await store.events.get(event_id)

    assert await store.events.update(event_id, OTHER_ORGANIZER, {"title": "hijacked"}, {}) is None

    assert await store.events.get(event_id) == before


async def test_update_of_an_unknown_event_is_none(store):
    assert await store.events.update(some_id(99), ORGANIZER, {"title": "x"}, {}) is None


async def test_update_refuses_when_an_expected_value_has_changed(store):
    event_id = await add_event(store, title="first")
    before = await store.events.get(event_id)

    assert await store.events.update(event_id, ORGANIZER, {"title": "second"}, {"title": "first"}) == []
    assert await store.events.update(event_id, ORGANIZER, {"title": "third"}, {"title": "first"}) is None
    assert await store.events.update(event_id, ORGANIZER, {"capacity": 5}, {"date": NOW + MILLISECOND}) is None
    assert await store.events.update(event_id, ORGANIZER, {"capacity": 5}, {"end_date": NOW}) is None

    assert await store.events.get(event_id) == {**before, "title": "second", "sequence": before["sequence"] + 1}


async def test_update_accepts_expected_values_as_get_returned_them(store):
    event_id = await add_event(store, geofence=square_around(*PARIS), geofence_radius=12.5)
    before = await store.events.get(event_id)
    expected = {field: before[field] for field in Events.FIELDS}

    assert await store.events.update(event_id, ORGANIZER, {"title": "renamed"}, expected) == []
    assert (await store.events.get(event_id))["title"] == "renamed"


async def test_update_refuses_a_capacity_below_the_rsvps_and_changes_nothing(store):
    event_id = await add_event(store, capacity=10)
    await rsvped(store, event_id, *[some_id(100 + n) for n in range(3)])
    before = await store.events.get(event_id)

    assert await store.events.update(event_id, ORGANIZER, {"capacity": 2, "title": "smaller"}, {}) is None

    assert await store.events.get(event_id) == before


async def test_update_accepts_a_capacity_equal_to_the_rsvps_or_none(store):
    event_id = await add_event(store, capacity=10)
    await rsvped(store, event_id, *[some_id(100 + n) for n in range(3)])

    assert await store.events.update(event_id, ORGANIZER, {"capacity": 3}, {}) == []
    assert (await store.events.get(event_id))["capacity"] == 3
    assert await store.events.update(event_id, ORGANIZER, {"capacity": None}, {}) == []
    assert (await store.events.get(event_id))["capacity"] is None


async def test_an_updated_date_moves_the_event_in_date_order(store):
    first = await add_event(store, title="first", date=NOW)
    await add_event(store, title="second", date=NOW + HOUR)

    assert await store.events.update(first, ORGANIZER, {"date": NOW + 2 * HOUR}, {}) == []

    assert titles_of(await find(store)) == ["second", "first"]


async def test_delete_by_the_organizer_removes_the_event_and_its_chat(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)
    await store.events.add_photo(event_id, "https://photos.example.com/1.jpg", ATTENDEE, NOW, 10)
    [(message, _)] = await store.messages.append(event_id, [draft(ATTENDEE, "hello")])

    assert await store.events.delete(event_id, ORGANIZER) is True

    assert await store.events.get(event_id) is None
    assert await find(store) == []
    assert await store.messages.latest(event_id, 10) == []
    assert await store.messages.exists(event_id, message["id"]) is False
    assert await store.messages.counts([event_id]) == {event_id: 0}
    assert await store.events.photos(event_id, None, 10) is None
    assert await store.events.is_member(event_id, ATTENDEE) is None


async def test_delete_by_anyone_but_the_organizer_is_refused(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)
    await store.messages.append(event_id, [draft(ATTENDEE, "hello")])

    assert await store.events.delete(event_id, ATTENDEE) is False
    assert await store.events.delete(event_id, OTHER_ORGANIZER) is False

    assert (await store.events.get(event_id))["rsvp_count"] == 1
    assert len(await store.messages.latest(event_id, 10)) == 1


async def test_delete_of_an_unknown_or_deleted_event_is_false(store):
    event_id = await add_event(store)

    assert await store.events.delete(some_id(99), ORGANIZER) is False
    assert await store.events.delete(event_id, ORGANIZER) is True
    assert await store.events.delete(event_id, ORGANIZER) is False


async def test_delete_leaves_other_events_and_their_chat_alone(store):
    deleted = await add_event(store, title="deleted")
    kept = await add_event(store, title="kept")
    await store.messages.append(deleted, [draft(ATTENDEE, "bye")])
    await store.messages.append(kept, [draft(ATTENDEE, "hi")])
    await rsvped(store, kept, ATTENDEE)

    assert await store.events.delete(deleted, ORGANIZER)

    assert [m["text"] for m in await store.messages.latest(kept, 10)] == ["hi"]
    assert (await store.events.get(kept, ATTENDEE))["is_rsvped"] is True


async def test_delete_takes_the_chats_markers_standings_and_moderation_log_with_it(store):
    deleted, kept = await add_event(store), await add_event(store)
    for event_id in (deleted, kept):
        [(message, _)] = await store.messages.append(event_id, [draft(ATTENDEE, "hello")])
        await store.messages.mark_read(event_id, STRANGER, message["id"])
        await store.messages.moderate(event_id, "mute", ATTENDEE, ORGANIZER, NOW, until=NOW + HOUR)
        await store.messages.moderate(event_id, "remove", STRANGER, ORGANIZER, NOW)

    assert await store.events.delete(deleted, ORGANIZER)

    assert await store.messages.actions(deleted, None, 10) == []
    assert await store.messages.standing(deleted, ATTENDEE, NOW) == {"muted_until": None, "removed": False}
    assert await store.messages.standing(deleted, STRANGER, NOW) == {"muted_until": None, "removed": False}
    assert len(await store.messages.actions(kept, None, 10)) == 2
    assert await store.messages.standing(kept, ATTENDEE, NOW) == {"muted_until": NOW + HOUR, "removed": False}


async def test_a_seat_in_a_deleted_event_cannot_be_taken(store):
    event_id = await add_event(store)
    assert await store.events.delete(event_id, ORGANIZER)

    assert await store.events.take_seat(event_id, ATTENDEE, window()) is None


# --- events: seats ---------------------------------------------------------------------------------------------------

async def test_take_seat_returns_the_event_as_the_user_sees_it(store):
    event_id = await add_event(store, capacity=10)

    event = await store.events.take_seat(event_id, ATTENDEE, window())

    assert_has_keys(event, EVENT_KEYS)
    assert event == await store.events.get(event_id, ATTENDEE)
    assert (event["id"], event["rsvp_count"], event["is_rsvped"], event["has_arrived"]) == (event_id, 1, True, False)


async def test_take_seat_refuses_a_second_rsvp_by_the_same_user(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)

    assert await store.events.take_seat(event_id, ATTENDEE, window()) is None
    assert (await store.events.get(event_id))["rsvp_count"] == 1


async def test_take_seat_refuses_when_the_event_is_full(store):
    event_id = await add_event(store, capacity=2)
    await rsvped(store, event_id, some_id(100), some_id(101))

    assert await store.events.take_seat(event_id, ATTENDEE, window()) is None
    assert (await store.events.get(event_id, ATTENDEE))["rsvp_count"] == 2


async def test_take_seat_refuses_past_max_rsvps_whatever_the_capacity(store, monkeypatch):
    monkeypatch.setattr(Events, "MAX_RSVPS", 2)
    unlimited = await add_event(store, capacity=None)
    larger = await add_event(store, capacity=10)
    await rsvped(store, unlimited, some_id(100), some_id(101))
    await rsvped(store, larger, some_id(100), some_id(101))

    assert await store.events.take_seat(unlimited, ATTENDEE, window()) is None
    assert await store.events.take_seat(larger, ATTENDEE, window()) is None
    assert (await store.events.get(unlimited))["rsvp_count"] == 2


async def test_take_seat_of_an_unknown_event_is_none(store):
    assert await store.events.take_seat(some_id(99), ATTENDEE, window()) is None


@pytest.mark.parametrize("end_date", [NOW, NOW - MILLISECOND, NOW - 5 * HOUR])
async def test_take_seat_refuses_when_the_event_is_over_at_its_end_date(store, end_date):
    event_id = await add_event(store, date=end_date - HOUR, end_date=end_date)

    assert await store.events.take_seat(event_id, ATTENDEE, window()) is None


async def test_take_seat_accepts_an_event_that_started_and_ends_later(store):
    # The end date decides, even past the default duration.
    event_id = await add_event(store, date=NOW - 10 * HOUR, end_date=NOW + MILLISECOND)

    assert await store.events.take_seat(event_id, ATTENDEE, window()) is not None


async def test_take_seat_without_an_end_date_is_open_for_the_default_duration_after_the_start(store):
    still_on = await add_event(store, date=NOW - DEFAULT_DURATION + MILLISECOND)
    just_over = await add_event(store, date=NOW - DEFAULT_DURATION)
    long_over = await add_event(store, date=NOW - 10 * DEFAULT_DURATION)

    assert await store.events.take_seat(still_on, ATTENDEE, window()) is not None
    assert await store.events.take_seat(just_over, ATTENDEE, window()) is None
    assert await store.events.take_seat(long_over, ATTENDEE, window()) is None
    # The same event under a longer default duration is still on.
    assert await store.events.take_seat(just_over, ATTENDEE, window(default_duration=DEFAULT_DURATION + MINUTE))


async def test_take_seat_on_an_event_at_the_end_of_the_calendar(store):
    last = datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    event_id = await add_event(store, date=last)

    assert (await store.events.take_seat(event_id, ATTENDEE, window()))["rsvp_count"] == 1


async def test_fifty_concurrent_take_seats_for_ten_seats_give_exactly_ten(store):
    event_id = await add_event(store, capacity=10)
    users = [some_id(100 + n) for n in range(50)]

    results = await asyncio.gather(*(store.events.take_seat(event_id, user, window()) for user in users))

    seated = [user for user, result in zip(users, results) if result is not None]
    assert len(seated) == 10
    assert (await store.events.get(event_id))["rsvp_count"] == 10
    for user in users:
        assert (await store.events.is_member(event_id, user)) is (user in seated)


async def test_concurrent_take_seats_by_one_user_give_one_seat(store):
    event_id = await add_event(store)

    results = await asyncio.gather(*(store.events.take_seat(event_id, ATTENDEE, window()) for _ in range(10)))

    assert sum(result is not None for result in results) == 1
    assert (await store.events.get(event_id))["rsvp_count"] == 1


async def test_release_seat_takes_back_the_rsvp_and_the_arrival(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE, STRANGER)
    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE)

    event = await store.events.release_seat(event_id, ATTENDEE, window())

    assert_has_keys(event, EVENT_KEYS)
    assert (event["rsvp_count"], event["arrival_count"]) == (1, 0)
    assert (await store.events.get(event_id, ATTENDEE))["is_rsvped"] is False
    assert (await store.events.get(event_id, ATTENDEE))["has_arrived"] is False


async def test_release_seat_without_an_rsvp_is_none(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, STRANGER)

    assert await store.events.release_seat(event_id, ATTENDEE, window()) is None
    assert await store.events.release_seat(some_id(99), ATTENDEE, window()) is None
    assert (await store.events.get(event_id))["rsvp_count"] == 1


async def test_release_seat_after_the_event_is_over_is_none_and_keeps_the_rsvp(store):
    event_id = await add_event(store, date=NOW - HOUR, end_date=NOW + HOUR)
    await rsvped(store, event_id, ATTENDEE)

    assert await store.events.release_seat(event_id, ATTENDEE, window(now=NOW + HOUR)) is None
    assert (await store.events.get(event_id, ATTENDEE))["is_rsvped"] is True


async def test_a_released_seat_can_be_taken_again_and_frees_room(store):
    event_id = await add_event(store, capacity=1)
    await rsvped(store, event_id, ATTENDEE)
    assert await store.events.take_seat(event_id, STRANGER, window()) is None

    assert await store.events.release_seat(event_id, ATTENDEE, window()) is not None

    assert (await store.events.take_seat(event_id, STRANGER, window()))["rsvp_count"] == 1
    assert await store.events.take_seat(event_id, ATTENDEE, window()) is None


# --- events: the waitlist ------------------------------------------------------------------------------------------

async def waiting(store, event_id, *user_ids):
    for user_id in user_ids:
        assert await store.events.join_waitlist(event_id, user_id, window()) is not None


async def positions(store, event_id, user_ids):
    return [(await store.events.get(event_id, user_id))["waitlist_position"] for user_id in user_ids]


async def full_event(store, capacity=1, seated=None, **fields):
    """An event of `capacity` whose first `seated` (all) seats some_id(200), ... took."""
    event_id = await add_event(store, capacity=capacity, **fields)
    await rsvped(store, event_id, *(some_id(200 + n) for n in range(capacity if seated is None else seated)))
    return event_id


async def test_join_waitlist_puts_users_in_line_in_the_order_they_join(store):
    event_id = await full_event(store)
    line = [ATTENDEE, STRANGER, some_id(5)]

    records = [await store.events.join_waitlist(event_id, user, window()) for user in line]

    for record in records:
        assert_has_keys(record, EVENT_KEYS)
    assert [record["waitlist_position"] for record in records] == [1, 2, 3]
    assert [record["waitlist_count"] for record in records] == [1, 2, 3]
    assert records[-1] == await store.events.get(event_id, some_id(5))
    assert await positions(store, event_id, line) == [1, 2, 3]
    shown = await store.events.get(event_id, ATTENDEE)
    assert (shown["is_rsvped"], shown["rsvp_count"], shown["waitlist_count"]) == (False, 1, 3)
    assert (await store.events.get(event_id))["waitlist_position"] is None
    # Waiting is not going: no chat, no gallery.
    assert await store.events.is_member(event_id, ATTENDEE) is False


async def test_join_waitlist_refuses_while_the_event_has_room(store):
    event_id = await add_event(store, capacity=2)
    await rsvped(store, event_id, STRANGER)

    assert await store.events.join_waitlist(event_id, ATTENDEE, window()) is None
    assert (await store.events.get(event_id))["waitlist_count"] == 0


async def test_join_waitlist_refuses_an_event_without_a_capacity(store, monkeypatch):
    monkeypatch.setattr(Events, "MAX_RSVPS", 1)
    event_id = await add_event(store, capacity=None)
    await rsvped(store, event_id, STRANGER)

    assert await store.events.join_waitlist(event_id, ATTENDEE, window()) is None


async def test_join_waitlist_refuses_an_event_whose_waitlist_is_off(store):
    event_id = await full_event(store, waitlist_enabled=False)

    assert await store.events.join_waitlist(event_id, ATTENDEE, window()) is None
    assert (await store.events.get(event_id))["waitlist_enabled"] is False


async def test_join_waitlist_refuses_a_user_already_going_or_waiting(store):
    event_id = await full_event(store)
    await waiting(store, event_id, ATTENDEE)

    assert await store.events.join_waitlist(event_id, ATTENDEE, window()) is None
    assert await store.events.join_waitlist(event_id, some_id(200), window()) is None
    assert (await store.events.get(event_id))["waitlist_count"] == 1


async def test_join_waitlist_refuses_an_event_that_is_over_or_unknown(store):
    event_id = await full_event(store, date=NOW - 2 * HOUR, end_date=NOW + HOUR)

    assert await store.events.join_waitlist(event_id, ATTENDEE, window(now=NOW + HOUR)) is None
    assert await store.events.join_waitlist(some_id(99), ATTENDEE, window()) is None


async def test_join_waitlist_refuses_past_max_waitlist(store, monkeypatch):
    monkeypatch.setattr(Events, "MAX_WAITLIST", 2)
    event_id = await full_event(store)
    await waiting(store, event_id, ATTENDEE, STRANGER)

    assert await store.events.join_waitlist(event_id, some_id(5), window()) is None
    assert (await store.events.get(event_id))["waitlist_count"] == 2


async def test_take_seat_refuses_everyone_while_anyone_waits(store, monkeypatch):
    # A free seat with someone waiting: full at MAX_RSVPS = 1 when they joined, 5 seats now.
    monkeypatch.setattr(Events, "MAX_RSVPS", 1)
    event_id = await full_event(store, capacity=5, seated=1)
    await waiting(store, event_id, ATTENDEE)
    monkeypatch.setattr(Events, "MAX_RSVPS", 100_000)

    assert await store.events.take_seat(event_id, STRANGER, window()) is None
    assert await store.events.take_seat(event_id, ATTENDEE, window()) is None
    assert (await store.events.get(event_id))["rsvp_count"] == 1


async def test_leave_waitlist_moves_those_behind_up_one_place(store):
    event_id = await full_event(store)
    await waiting(store, event_id, ATTENDEE, STRANGER, some_id(5))

    left = await store.events.leave_waitlist(event_id, STRANGER)

    assert_has_keys(left, EVENT_KEYS)
    assert (left["waitlist_position"], left["waitlist_count"]) == (None, 2)
    assert await positions(store, event_id, [ATTENDEE, STRANGER, some_id(5)]) == [1, None, 2]
    assert await store.events.leave_waitlist(event_id, STRANGER) is None
    assert await store.events.leave_waitlist(some_id(99), ATTENDEE) is None
    # Joining again is joining at the end.
    await waiting(store, event_id, STRANGER)
    assert await positions(store, event_id, [ATTENDEE, some_id(5), STRANGER]) == [1, 2, 3]


async def test_release_seat_promotes_the_first_in_line_into_the_freed_seat(store):
    event_id = await full_event(store)
    await waiting(store, event_id, ATTENDEE, STRANGER)

    released = await store.events.release_seat(event_id, some_id(200), window())

    assert released["promoted"] == [ATTENDEE]
    assert (released["rsvp_count"], released["waitlist_count"]) == (1, 1)
    promoted = await store.events.get(event_id, ATTENDEE)
    assert (promoted["is_rsvped"], promoted["waitlist_position"]) == (True, None)
    assert await positions(store, event_id, [STRANGER]) == [1]
    assert await store.events.is_member(event_id, ATTENDEE) is True


async def test_release_seat_with_nobody_waiting_promotes_nobody(store):
    event_id = await full_event(store)

    released = await store.events.release_seat(event_id, some_id(200), window())

    assert (released["promoted"], released["rsvp_count"]) == ([], 0)


async def test_a_raised_capacity_promotes_as_many_as_it_adds_seats_in_line_order(store):
    event_id = await full_event(store)
    line = [ATTENDEE, STRANGER, some_id(5), some_id(6)]
    await waiting(store, event_id, *line)

    assert await store.events.update(event_id, ORGANIZER, {"capacity": 3}, {}) == [ATTENDEE, STRANGER]
    assert await positions(store, event_id, line) == [None, None, 1, 2]
    assert (await store.events.get(event_id))["rsvp_count"] == 3
    # A lower capacity, or another field, promotes nobody; no capacity at all seats everyone.
    assert await store.events.update(event_id, ORGANIZER, {"capacity": 3, "title": "Same seats"}, {}) == []
    assert await store.events.update(event_id, ORGANIZER, {"title": "Still full"}, {}) == []
    assert await store.events.update(event_id, ORGANIZER, {"capacity": None}, {}) == [some_id(5), some_id(6)]
    event = await store.events.get(event_id, some_id(6))
    assert (event["rsvp_count"], event["waitlist_count"], event["is_rsvped"]) == (5, 0, True)


async def test_a_refused_capacity_change_promotes_nobody(store):
    event_id = await full_event(store, capacity=2)
    await waiting(store, event_id, ATTENDEE)

    assert await store.events.update(event_id, ORGANIZER, {"capacity": 1}, {}) is None
    assert await store.events.update(event_id, OTHER_ORGANIZER, {"capacity": 5}, {}) is None
    assert await positions(store, event_id, [ATTENDEE]) == [1]


async def test_turning_the_waitlist_off_keeps_those_waiting_in_line(store):
    event_id = await full_event(store)
    await waiting(store, event_id, ATTENDEE)

    assert await store.events.update(event_id, ORGANIZER, {"waitlist_enabled": False}, {}) == []

    assert await store.events.join_waitlist(event_id, STRANGER, window()) is None
    assert (await store.events.release_seat(event_id, some_id(200), window()))["promoted"] == [ATTENDEE]


async def test_deleting_an_event_deletes_its_waitlist(store):
    event_id = await full_event(store)
    await waiting(store, event_id, ATTENDEE)

    assert await store.events.delete(event_id, ORGANIZER)

    assert await store.events.get(event_id, ATTENDEE) is None
    assert await store.events.leave_waitlist(event_id, ATTENDEE) is None


async def test_fifty_concurrent_joins_and_cancels_keep_the_seats_and_the_line_consistent(store):
    """Every user joins (a seat, else the line, asked again as the domain does when a seat freed
    between the two calls) while a third of them cancel (release, else leave) at once: the counts
    always add up, and no promotion is lost or doubled."""
    capacity = 10
    event_id = await add_event(store, capacity=capacity)
    users = [some_id(100 + n) for n in range(50)]
    joined, left, promotions = [], [], []

    async def join_then_maybe_leave(n, user):
        for _ in range(3):
            if await store.events.take_seat(event_id, user, window()) is not None \
                    or await store.events.join_waitlist(event_id, user, window()) is not None:
                joined.append(user)
                break
        if n % 3 == 0:
            released = await store.events.release_seat(event_id, user, window())
            if released is not None:
                promotions.extend(released["promoted"])
                left.append(user)
            elif await store.events.leave_waitlist(event_id, user) is not None:
                left.append(user)

    await asyncio.gather(*(join_then_maybe_leave(n, user) for n, user in enumerate(users)))

    standing = {user: await store.events.get(event_id, user) for user in users}
    going = {user for user, event in standing.items() if event["is_rsvped"]}
    line = sorted((event["waitlist_position"], user) for user, event in standing.items()
                  if event["waitlist_position"] is not None)
    event = await store.events.get(event_id)
    assert len(joined) == 50 and len(left) == 17
    assert len(going) == event["rsvp_count"] <= capacity
    assert [position for position, _ in line] == list(range(1, event["waitlist_count"] + 1))
    assert not going & {user for _, user in line}
    assert len(going) + len(line) == len(joined) - len(left)
    # Nobody waits while a seat is free.
    assert not line or len(going) == capacity
    assert len(promotions) == len(set(promotions))
    assert set(promotions) <= going | set(left)


# --- events: arrivals ------------------------------------------------------------------------------------------------

async def test_record_arrival_opens_opens_before_the_start(store):
    opens_now = await add_event(store, date=NOW + OPENS_BEFORE)
    not_yet = await add_event(store, date=NOW + OPENS_BEFORE + MILLISECOND)
    await rsvped(store, opens_now, ATTENDEE)
    await rsvped(store, not_yet, ATTENDEE)

    assert await store.events.record_arrival(opens_now, ATTENDEE, window(), OPENS_BEFORE) is True
    assert await store.events.record_arrival(not_yet, ATTENDEE, window(), OPENS_BEFORE) is False

    assert (await store.events.get(opens_now, ATTENDEE))["has_arrived"] is True
    assert (await store.events.get(not_yet))["arrival_count"] == 0


async def test_record_arrival_is_open_until_the_event_is_over(store):
    ends = await add_event(store, date=NOW - 5 * HOUR, end_date=NOW + MILLISECOND)
    ended = await add_event(store, date=NOW - 5 * HOUR, end_date=NOW)
    no_end = await add_event(store, date=NOW - DEFAULT_DURATION)
    for event_id in (ends, ended, no_end):
        await rsvped(store, event_id, ATTENDEE, now=NOW - HOUR)

    assert await store.events.record_arrival(ends, ATTENDEE, window(), OPENS_BEFORE) is True
    assert await store.events.record_arrival(ended, ATTENDEE, window(), OPENS_BEFORE) is False
    assert await store.events.record_arrival(no_end, ATTENDEE, window(), OPENS_BEFORE) is False


async def test_record_arrival_needs_an_rsvp(store):
    event_id = await add_event(store)

    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE) is False
    assert await store.events.record_arrival(event_id, ORGANIZER, window(), OPENS_BEFORE) is False
    assert (await store.events.get(event_id))["arrival_count"] == 0


async def test_record_arrival_counts_a_user_once(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)

    results = await asyncio.gather(*(store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE)
                                     for _ in range(5)))

    assert sorted(results) == [False] * 4 + [True]
    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE) is False
    assert (await store.events.get(event_id))["arrival_count"] == 1


async def test_record_arrival_of_an_unknown_event_is_false(store):
    assert await store.events.record_arrival(some_id(99), ATTENDEE, window(), OPENS_BEFORE) is False


# --- events: attendees and the organizer's check-in ----------------------------------------------------------

ATTENDEE_KEYS = ("user_id", "username", "status", "position", "joined_at", "check_in")


async def a_full_house(store):
    """An event with 2 seats and a waitlist: (event id, {name: user id}) for `going` (RSVPed),
    `door` (checked in by the organizer), `first` and `second` (waiting in that order), and
    `ghost`, RSVPed under an id that no user has. The geofence check-in is not in it: it takes
    the third seat, which `ghost` holds."""
    users = {name: (await add_user(store, name))["id"] for name in ("going", "door", "first", "second")}
    event_id = await add_event(store, capacity=3)
    await rsvped(store, event_id, users["going"], users["door"], STRANGER)
    assert await store.events.record_arrival(event_id, users["door"], window(), OPENS_BEFORE, checked_in_by=ORGANIZER)
    for name in ("first", "second"):
        assert await store.events.join_waitlist(event_id, users[name], window()) is not None
    return event_id, {**users, "ghost": STRANGER}


async def test_attendees_lists_everyone_going_arrived_or_waiting_in_user_id_order(store):
    event_id, users = await a_full_house(store)

    found = await store.events.attendees(event_id, None, None, 10)

    assert [attendee["user_id"] for attendee in found] == sorted(users.values())
    for attendee in found:
        assert_has_keys(attendee, ATTENDEE_KEYS)
    shown = {attendee["user_id"]: attendee for attendee in found}
    going, door = shown[users["going"]], shown[users["door"]]
    assert (going["username"], going["status"], going["position"], going["check_in"]) == ("going", "going", None, None)
    assert going["joined_at"] in (None, NOW)  # MongoDB's RSVPs are ids only
    assert (door["status"], door["check_in"]) == ("arrived", {"method": "organizer", "by": ORGANIZER, "at": NOW})
    assert [(shown[users[name]]["status"], shown[users[name]]["position"], shown[users[name]]["joined_at"])
            for name in ("first", "second")] == [("waitlisted", 1, NOW), ("waitlisted", 2, NOW)]
    assert (shown[STRANGER]["username"], shown[STRANGER]["status"]) == (None, "going")


async def test_attendees_of_one_status(store):
    event_id, users = await a_full_house(store)

    def ids(found):
        return [attendee["user_id"] for attendee in found]

    assert ids(await store.events.attendees(event_id, "going", None, 10)) == sorted([users["going"], STRANGER])
    assert ids(await store.events.attendees(event_id, "arrived", None, 10)) == [users["door"]]
    waiting = await store.events.attendees(event_id, "waitlisted", None, 10)
    assert ids(waiting) == sorted([users["first"], users["second"]])
    assert {a["user_id"]: a["position"] for a in waiting} == {users["first"]: 1, users["second"]: 2}


@pytest.mark.parametrize("status", [None, "going", "arrived", "waitlisted"])
async def test_attendee_pages_neither_repeat_nor_skip_anyone(store, status):
    event_id = await add_event(store, capacity=12)
    people = [some_id(100 + n) for n in range(20)]
    await rsvped(store, event_id, *people[::-1][:12])
    for user_id in people[::-1][:6]:
        assert await store.events.record_arrival(event_id, user_id, window(), OPENS_BEFORE)
    for user_id in people[::-1][12:]:
        assert await store.events.join_waitlist(event_id, user_id, window()) is not None
    everyone = await store.events.attendees(event_id, status, None, 100)

    pages, after = [], None
    while True:
        page = await store.events.attendees(event_id, status, after, 3)
        assert len(page) <= 3
        if not page:
            break
        pages += page
        after = page[-1]["user_id"]

    assert pages == everyone
    assert len(everyone) == {None: 20, "going": 6, "arrived": 6, "waitlisted": 8}[status]
    assert [a["user_id"] for a in everyone] == sorted(a["user_id"] for a in everyone)


async def test_attendees_of_one_user(store):
    event_id, users = await a_full_house(store)

    found = await store.events.attendees(event_id, None, None, 10, user_id=users["second"])

    assert [(a["user_id"], a["status"], a["position"]) for a in found] == [(users["second"], "waitlisted", 2)]
    assert await store.events.attendees(event_id, "going", None, 10, user_id=users["second"]) == []
    assert await store.events.attendees(event_id, None, None, 10, user_id=some_id(77)) == []
    assert await store.events.attendees(event_id, None, None, 10, user_id="nope") == []


async def test_attendees_of_an_event_without_any_or_of_no_event(store):
    event_id = await add_event(store)

    assert await store.events.attendees(event_id, None, None, 10) == []
    assert await store.events.attendees(event_id, "waitlisted", some_id(5), 10) == []
    assert await store.events.attendees(some_id(99), None, None, 10) is None
    assert await store.events.attendees("nope", None, None, 10) is None


async def test_an_organizers_check_in_and_a_geofence_arrival_count_once_either_way_round(store):
    event_id = await add_event(store)
    by_hand, by_fence = some_id(10), some_id(11)
    await rsvped(store, event_id, by_hand, by_fence)

    assert await store.events.record_arrival(event_id, by_hand, window(), OPENS_BEFORE, checked_in_by=ORGANIZER)
    assert await store.events.record_arrival(event_id, by_hand, window(), OPENS_BEFORE) is False
    assert await store.events.record_arrival(event_id, by_fence, window(), OPENS_BEFORE)
    assert await store.events.record_arrival(event_id, by_fence, window(), OPENS_BEFORE,
                                             checked_in_by=ORGANIZER) is False

    event = await store.events.get(event_id, by_hand)
    assert (event["arrival_count"], event["has_arrived"]) == (2, True)
    methods = {a["user_id"]: a["check_in"]["method"] for a in await store.events.attendees(event_id, None, None, 10)}
    assert methods == {by_hand: "organizer", by_fence: "geofence"}


async def test_an_organizers_check_in_keeps_every_rule_of_an_arrival(store):
    not_open = await add_event(store, date=NOW + OPENS_BEFORE + MILLISECOND)
    await rsvped(store, not_open, ATTENDEE)
    open_one = await add_event(store)

    assert await store.events.record_arrival(not_open, ATTENDEE, window(), OPENS_BEFORE, checked_in_by=ORGANIZER) \
        is False
    assert await store.events.record_arrival(open_one, ATTENDEE, window(), OPENS_BEFORE, checked_in_by=ORGANIZER) \
        is False
    assert await store.events.attendees(open_one, None, None, 10) == []


async def test_a_released_seat_takes_the_organizers_check_in_with_it(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)
    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE, checked_in_by=ORGANIZER)

    assert await store.events.release_seat(event_id, ATTENDEE, window()) is not None
    await rsvped(store, event_id, ATTENDEE)
    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE)

    (attendee,) = await store.events.attendees(event_id, None, None, 10)
    assert (attendee["status"], attendee["check_in"]["method"], attendee["check_in"]["by"]) == \
        ("arrived", "geofence", None)
    assert (await store.events.get(event_id))["arrival_count"] == 1


async def test_is_member_holds_the_organizer_and_rsvped_users(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)

    assert await store.events.is_member(event_id, ORGANIZER) is True
    assert await store.events.is_member(event_id, ATTENDEE) is True
    assert await store.events.is_member(event_id, STRANGER) is False
    assert await store.events.is_member(some_id(99), ORGANIZER) is None
    assert await store.events.release_seat(event_id, ATTENDEE, window())
    assert await store.events.is_member(event_id, ATTENDEE) is False


# --- events: photos -------------------------------------------------------------------------------------------------

async def add_photos(store, event_id, count, max_photos=100, uploaded_by=ORGANIZER):
    for n in range(count):
        assert await store.events.add_photo(event_id, f"https://photos.example.com/{n}.jpg", uploaded_by,
                                            NOW + n * MILLISECOND, max_photos) is not None


async def test_add_photo_by_the_organizer_or_an_rsvped_user_returns_the_event(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)

    by_organizer = await store.events.add_photo(event_id, "https://photos.example.com/a.jpg", ORGANIZER, NOW, 10)
    by_attendee = await store.events.add_photo(event_id, "https://photos.example.com/b.jpg", ATTENDEE, NOW, 10)

    assert_has_keys(by_organizer, EVENT_KEYS)
    assert (by_organizer["id"], by_organizer["photo_count"]) == (event_id, 1)
    assert (by_attendee["id"], by_attendee["photo_count"]) == (event_id, 2)


async def test_add_photo_is_refused_to_anyone_else_and_on_an_unknown_event(store):
    event_id = await add_event(store)

    assert await store.events.add_photo(event_id, "https://photos.example.com/a.jpg", STRANGER, NOW, 10) is None
    assert await store.events.add_photo(some_id(99), "https://photos.example.com/a.jpg", ORGANIZER, NOW, 10) is None
    assert (await store.events.get(event_id))["photo_count"] == 0


async def test_add_photo_is_refused_when_the_gallery_holds_max_photos(store):
    event_id = await add_event(store)
    await add_photos(store, event_id, 3, max_photos=3)

    assert await store.events.add_photo(event_id, "https://photos.example.com/x.jpg", ORGANIZER, NOW, 3) is None
    assert (await store.events.get(event_id))["photo_count"] == 3
    assert await store.events.add_photo(event_id, "https://photos.example.com/x.jpg", ORGANIZER, NOW, 4)


async def test_add_photo_with_max_photos_zero_is_refused(store):
    event_id = await add_event(store)

    assert await store.events.add_photo(event_id, "https://photos.example.com/a.jpg", ORGANIZER, NOW, 0) is None
    assert (await store.events.get(event_id))["photo_count"] == 0


async def test_concurrent_add_photo_at_the_limit_never_passes_max_photos(store):
    event_id = await add_event(store)
    await add_photos(store, event_id, 3)

    results = await asyncio.gather(*(
        store.events.add_photo(event_id, f"https://photos.example.com/c{n}.jpg", ORGANIZER, NOW, 5) for n in range(10)))

    assert sum(result is not None for result in results) == 2
    assert (await store.events.get(event_id))["photo_count"] == 5


async def test_photos_come_newest_first_in_pages_by_position(store):
    event_id = await add_event(store)
    await add_photos(store, event_id, 5)

    def urls(page):
        photos, start = page
        return [photo["url"].rsplit("/", 1)[1] for photo in photos], start

    assert urls(await store.events.photos(event_id, None, 2)) == (["4.jpg", "3.jpg"], 3)
    assert urls(await store.events.photos(event_id, 3, 2)) == (["2.jpg", "1.jpg"], 1)
    assert urls(await store.events.photos(event_id, 1, 2)) == (["0.jpg"], 0)
    assert urls(await store.events.photos(event_id, None, 10)) == (
        ["4.jpg", "3.jpg", "2.jpg", "1.jpg", "0.jpg"], 0)
    assert urls(await store.events.photos(event_id, 0, 2)) == ([], 0)
    assert urls(await store.events.photos(event_id, 8, 2)) == (["4.jpg", "3.jpg"], 3)


async def test_photos_say_who_uploaded_them_and_when(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)
    await store.events.add_photo(event_id, "https://photos.example.com/a.jpg", ATTENDEE,
                                         NOW + 5 * MILLISECOND, 10)

    (photos, start) = await store.events.photos(event_id, None, 10)

    assert_has_keys(photos[0], PHOTO_KEYS)
    assert {key: photos[0][key] for key in PHOTO_KEYS} == {
        "url": "https://photos.example.com/a.jpg", "uploaded_by": ATTENDEE, "uploaded_at": NOW + 5 * MILLISECOND}
    assert_time(photos[0]["uploaded_at"])
    assert start == 0


async def test_photos_show_each_upload_of_one_url_with_its_own_uploader(store):
    event_id = await add_event(store)
    await rsvped(store, event_id, ATTENDEE)
    url = "https://photos.example.com/same.jpg"
    await store.events.add_photo(event_id, url, ORGANIZER, NOW, 10)
    await store.events.add_photo(event_id, url, ATTENDEE, NOW + MINUTE, 10)

    photos, _ = await store.events.photos(event_id, None, 10)

    assert [(photo["uploaded_by"], photo["uploaded_at"]) for photo in photos] == [(ATTENDEE, NOW + MINUTE),
                                                                                   (ORGANIZER, NOW)]


async def test_photos_of_an_empty_gallery_and_of_an_unknown_event(store):
    event_id = await add_event(store)

    assert await store.events.photos(event_id, None, 10) == ([], 0)
    assert await store.events.photos(some_id(99), None, 10) is None


# --- messages -----------------------------------------------------------------------------------------------------

async def append(store, event_id, *drafts):
    return await store.messages.append(event_id, list(drafts))


async def test_append_to_a_deleted_event_is_refused_and_stores_nothing(store):
    event_id = await add_event(store)
    assert await store.events.delete(event_id, ORGANIZER)

    with pytest.raises(NotFound) as refusal:
        await append(store, event_id, draft(ATTENDEE, "too late"))

    assert refusal.value.code == "event_not_found"
    assert await store.messages.latest(event_id, 10) == []


async def test_append_to_a_cancelled_event_is_refused_and_stores_nothing(store):
    event_id = await add_event(store)
    await append(store, event_id, draft(ATTENDEE, "before"))
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": NOW}, {}) == []

    with pytest.raises(Conflict) as refusal:
        await append(store, event_id, draft(ATTENDEE, "too late"))

    assert refusal.value.code == "event_cancelled"
    assert [message["text"] for message in await store.messages.latest(event_id, 10)] == ["before"]


async def test_append_stores_drafts_in_order_and_returns_their_records(store):
    event_id = await add_event(store)
    drafts = [draft(ATTENDEE, "one", "c1", "ana", NOW), draft(STRANGER, "two", None, "bo", NOW + MILLISECOND)]

    results = await store.messages.append(event_id, drafts)

    assert [duplicate for _, duplicate in results] == [False, False]
    records = [record for record, _ in results]
    for record, sent in zip(records, drafts):
        assert_has_keys(record, MESSAGE_KEYS)
        assert_id(record["id"])
        assert_time(record["timestamp"])
        assert {key: record[key] for key in MESSAGE_KEYS} == {"id": record["id"], "event_id": event_id, **sent}
    assert records[0]["id"] < records[1]["id"]
    assert await store.messages.latest(event_id, 10) == records


async def test_appended_ids_increase_after_every_stored_message_of_the_event(store):
    event_id = await add_event(store)
    stored = []
    for batch in range(4):
        results = await append(store, event_id, *(draft(ATTENDEE, f"{batch}.{n}") for n in range(3)))
        stored += [record for record, _ in results]

    assert ids_of(stored) == sorted(ids_of(stored)) and len(set(ids_of(stored))) == 12
    assert ids_of(await store.messages.latest(event_id, 100)) == ids_of(stored)


async def test_append_of_a_repeated_client_msg_id_returns_the_earlier_message(store):
    event_id = await add_event(store)
    [(original, _)] = await append(store, event_id, draft(ATTENDEE, "hello", "c1"))

    [(repeated, duplicate)] = await append(store, event_id, draft(ATTENDEE, "hello again", "c1", timestamp=NOW + HOUR))

    assert (repeated, duplicate) == (original, True)
    assert await store.messages.latest(event_id, 10) == [original]


async def test_the_same_client_msg_id_from_another_sender_or_in_another_event_is_stored(store):
    event_id = await add_event(store)
    other_event = await add_event(store)
    await append(store, event_id, draft(ATTENDEE, "hello", "c1"))

    [(_, by_other_sender)] = await append(store, event_id, draft(STRANGER, "hello", "c1"))
    [(_, in_other_event)] = await append(store, other_event, draft(ATTENDEE, "hello", "c1"))

    assert (by_other_sender, in_other_event) == (False, False)
    assert (await store.messages.counts([event_id, other_event])) == {event_id: 2, other_event: 1}


async def test_messages_without_a_client_msg_id_never_conflict(store):
    event_id = await add_event(store)

    await append(store, event_id, draft(ATTENDEE, "a"), draft(ATTENDEE, "a"))
    results = await append(store, event_id, draft(ATTENDEE, "a"))

    assert results[0][1] is False
    assert len(await store.messages.latest(event_id, 10)) == 3


async def test_a_batch_mixing_repeated_and_new_drafts_stores_only_the_new_ones(store):
    event_id = await add_event(store)
    [(first, _)] = await append(store, event_id, draft(ATTENDEE, "first", "c1"))

    results = await append(store, event_id, draft(STRANGER, "new", "c1"), draft(ATTENDEE, "again", "c1"),
                           draft(ATTENDEE, "also new", "c2"))

    assert [duplicate for _, duplicate in results] == [False, True, False]
    assert results[1][0] == first
    assert results[0][0]["id"] < results[2][0]["id"]
    assert [m["text"] for m in await store.messages.latest(event_id, 10)] == ["first", "new", "also new"]


async def test_concurrent_appends_of_one_client_msg_id_store_it_once(store):
    event_id = await add_event(store)

    results = await asyncio.gather(*(append(store, event_id, draft(ATTENDEE, f"try {n}", "c1")) for n in range(10)))

    stored = await store.messages.latest(event_id, 100)
    assert len(stored) == 1
    assert sorted(duplicate for [(_, duplicate)] in results) == [False] + [True] * 9
    assert all(record == stored[0] for [(record, _)] in results)


async def test_concurrent_batches_get_distinct_ids_in_stored_order(store):
    event_id = await add_event(store)

    results = await asyncio.gather(*(
        append(store, event_id, *(draft(some_id(100 + sender), f"{sender}.{n}") for n in range(3)))
        for sender in range(8)))

    for batch in results:
        batch_ids = [record["id"] for record, _ in batch]
        assert batch_ids == sorted(batch_ids)
    stored = await store.messages.latest(event_id, 100)
    assert len(stored) == 24 and len(set(ids_of(stored))) == 24
    # Each batch is stored whole, not interleaved with another.
    senders = [m["user_id"] for m in stored]
    assert all(len(set(senders[n:n + 3])) == 1 for n in range(0, 24, 3))


async def test_message_exists_only_in_its_own_event(store):
    event_id = await add_event(store)
    other_event = await add_event(store)
    [(message, _)] = await append(store, event_id, draft(ATTENDEE, "hello"))

    assert await store.messages.exists(event_id, message["id"]) is True
    assert await store.messages.exists(other_event, message["id"]) is False
    assert await store.messages.exists(event_id, some_id(99)) is False
    assert await store.messages.exists(event_id, "junk") is False


async def history(store, count=7):
    """An event with `count` messages "m0"... and another event with its own, interleaved."""
    event_id = await add_event(store)
    other_event = await add_event(store)
    stored = []
    for n in range(count):
        [(record, _)] = await append(store, event_id, draft(ATTENDEE, f"m{n}"))
        await append(store, other_event, draft(ATTENDEE, f"other {n}"))
        stored.append(record)
    return event_id, stored


def texts(messages):
    return [message["text"] for message in messages]


async def test_latest_gives_the_last_messages_oldest_first(store):
    event_id, _ = await history(store)

    assert texts(await store.messages.latest(event_id, 3)) == ["m4", "m5", "m6"]
    assert texts(await store.messages.latest(event_id, 100)) == [f"m{n}" for n in range(7)]
    assert await store.messages.latest(await add_event(store), 10) == []


async def test_after_gives_the_messages_following_an_id_oldest_first(store):
    event_id, stored = await history(store)

    assert texts(await store.messages.after(event_id, stored[2]["id"], 100)) == ["m3", "m4", "m5", "m6"]
    assert texts(await store.messages.after(event_id, stored[2]["id"], 2)) == ["m3", "m4"]
    assert await store.messages.after(event_id, stored[6]["id"], 100) == []
    assert texts(await store.messages.after(event_id, "0" * 24, 100)) == [f"m{n}" for n in range(7)]
    assert texts(await store.messages.after(event_id, None, 3)) == ["m0", "m1", "m2"]


async def test_append_names_the_message_stored_just_before_the_batch(store):
    # The chain several processes follow a room by (domain/chat_feed.py): each batch names the
    # event's newest message before it.
    event_id = await add_event(store)
    first = await append(store, event_id, draft(ATTENDEE, "a"), draft(ATTENDEE, "b"))
    second = await append(store, event_id, draft(ATTENDEE, "c", "c-1"))
    repeat = await append(store, event_id, draft(ATTENDEE, "c again", "c-1"), draft(ATTENDEE, "d"))

    assert first.previous_id is None
    assert second.previous_id == first[-1][0]["id"]
    assert repeat.previous_id == second[0][0]["id"] and repeat[0][1] is True


async def test_before_gives_the_messages_preceding_an_id_newest_first(store):
    event_id, stored = await history(store)

    assert texts(await store.messages.before(event_id, stored[4]["id"], 100)) == ["m3", "m2", "m1", "m0"]
    assert texts(await store.messages.before(event_id, stored[4]["id"], 2)) == ["m3", "m2"]
    assert texts(await store.messages.before(event_id, None, 3)) == ["m6", "m5", "m4"]
    assert await store.messages.before(event_id, stored[0]["id"], 100) == []


async def test_counts_gives_every_asked_event_its_number_of_messages(store):
    event_id, _ = await history(store, 4)
    silent = await add_event(store)

    assert await store.messages.counts([event_id, silent, some_id(99)]) == {event_id: 4, silent: 0, some_id(99): 0}
    assert await store.messages.counts([]) == {}


def edit(user_id, message_id, text, timestamp=NOW + MINUTE):
    return {"kind": "edit", "message_id": message_id, "user_id": user_id, "text": text, "timestamp": timestamp}


def deletion(user_id, message_id, timestamp=NOW + MINUTE):
    return {"kind": "delete", "message_id": message_id, "user_id": user_id, "text": None, "timestamp": timestamp}


async def test_change_stores_an_edit_in_the_log_and_on_its_message(store):
    event_id, stored = await history(store, 2)

    [(change, repeated)] = await store.messages.change(event_id, [edit(ATTENDEE, stored[0]["id"], "m0, fixed")])

    assert repeated is False
    assert change == {"id": change["id"], "event_id": event_id, "kind": "edit", "message_id": stored[0]["id"],
                      "user_id": ATTENDEE, "text": "m0, fixed", "timestamp": NOW + MINUTE}
    assert change["id"] > stored[1]["id"]  # the room's one sequence
    [first, second] = await store.messages.latest(event_id, 10)
    assert (first["text"], first["edited_at"], first["deleted_at"]) == ("m0, fixed", NOW + MINUTE, None)
    assert second["edited_at"] is None
    # History is messages only; the log after a point holds the change, in order.
    assert texts(await store.messages.before(event_id, None, 10)) == ["m1", "m0, fixed"]
    assert await store.messages.counts([event_id]) == {event_id: 2}
    assert [entry["kind"] for entry in await store.messages.after(event_id, stored[0]["id"], 10)] == ["message", "edit"]
    assert await store.messages.exists(event_id, change["id"]) is True


async def test_change_names_the_entry_stored_just_before_its_batch_as_append_does(store):
    # Messages and changes form one chain (domain/chat_feed.py): each batch of either names the
    # event's newest entry before it.
    event_id, stored = await history(store, 2)
    changes = await store.messages.change(event_id, [edit(ATTENDEE, stored[0]["id"], "m0, fixed"),
                                                     deletion(ATTENDEE, stored[1]["id"])])
    after = await append(store, event_id, draft(ATTENDEE, "m2"))
    retried = await store.messages.change(event_id, [deletion(ATTENDEE, stored[1]["id"]),
                                                     edit(ATTENDEE, stored[0]["id"], "m0, again")])

    assert changes.previous_id == stored[1]["id"]
    assert after.previous_id == changes[-1][0]["id"]
    assert retried[0][1] is True and retried.previous_id == after[0][0]["id"]


async def test_a_deletion_leaves_a_tombstone_and_blanks_the_earlier_edits(store):
    event_id, stored = await history(store, 1)
    target = stored[0]["id"]
    await store.messages.change(event_id, [edit(ATTENDEE, target, "second thoughts")])

    [(change, repeated)] = await store.messages.change(event_id, [deletion(ATTENDEE, target, NOW + HOUR)])

    assert repeated is False
    assert change == {"id": change["id"], "event_id": event_id, "kind": "delete", "message_id": target,
                      "user_id": ATTENDEE, "text": None, "timestamp": NOW + HOUR}
    [tombstone] = await store.messages.latest(event_id, 10)
    assert tombstone["text"] is None and tombstone["deleted_at"] == NOW + HOUR
    entries = await store.messages.after(event_id, target, 10)
    assert [(entry["kind"], entry["text"]) for entry in entries] == [("edit", None), ("delete", None)]


async def test_changes_done_already_give_back_the_earlier_change(store):
    event_id, stored = await history(store, 1)
    target = stored[0]["id"]
    [(edited, _)] = await store.messages.change(event_id, [edit(ATTENDEE, target, "new")])

    results = await store.messages.change(event_id, [edit(ATTENDEE, target, "new"), deletion(ATTENDEE, target),
                                                     deletion(ATTENDEE, target)])

    assert results[0] == (edited, True)
    deleted, repeated = results[1]
    assert repeated is False and results[2] == (deleted, True)
    assert len(await store.messages.after(event_id, target, 10)) == 2


async def test_change_refuses_others_messages_and_unknown_ones_alone(store):
    event_id, stored = await history(store, 1)
    target = stored[0]["id"]
    [(deleted_other, _)] = await append(store, event_id, draft(STRANGER, "to delete"))
    results = await store.messages.change(event_id, [
        edit(STRANGER, target, "hijacked"), deletion(STRANGER, target), edit(ATTENDEE, some_id(99), "x"),
        edit(ATTENDEE, target, "m0"), edit(ORGANIZER, target, "organizer edit"),
        deletion(ORGANIZER, deleted_other["id"]), edit(STRANGER, deleted_other["id"], "too late")])

    codes = [getattr(result, "code", None) for result in results]
    assert codes == ["not_your_message", "not_your_message", "message_not_found", "unchanged", "not_your_message",
                     None, "message_deleted"]
    assert results[5][0]["user_id"] == ORGANIZER  # the organizer deletes any message
    assert texts(await store.messages.latest(event_id, 10)) == ["m0", None]


async def test_a_change_entry_is_not_a_message_to_change(store):
    event_id, stored = await history(store, 1)
    [(change, _)] = await store.messages.change(event_id, [edit(ATTENDEE, stored[0]["id"], "new")])

    [refusal] = await store.messages.change(event_id, [deletion(ATTENDEE, change["id"])])

    assert refusal.code == "message_not_found"


async def test_change_in_a_deleted_or_cancelled_event_is_refused(store):
    event_id, stored = await history(store, 1)
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": NOW}, {}) == []
    with pytest.raises(Conflict):
        await store.messages.change(event_id, [deletion(ATTENDEE, stored[0]["id"])])
    gone = await add_event(store)
    assert await store.events.delete(gone, ORGANIZER)
    with pytest.raises(NotFound):
        await store.messages.change(gone, [deletion(ATTENDEE, stored[0]["id"])])


async def test_a_read_marker_only_moves_forward_and_names_an_entry_of_the_event(store):
    event_id, stored = await history(store, 3)

    assert await store.messages.mark_read(event_id, ATTENDEE, stored[1]["id"]) == stored[1]["id"]
    assert await store.messages.mark_read(event_id, ATTENDEE, stored[0]["id"]) == stored[1]["id"]
    assert await store.messages.mark_read(event_id, ATTENDEE, some_id(99)) is None
    assert await store.messages.mark_read(event_id, ATTENDEE, "junk") is None
    assert await store.messages.mark_read(event_id, STRANGER, stored[0]["id"]) == stored[0]["id"]
    assert await asyncio.gather(*[store.messages.mark_read(event_id, ORGANIZER, message["id"])
                                  for message in stored]) is not None
    assert await store.messages.mark_read(event_id, ORGANIZER, stored[0]["id"]) == stored[2]["id"]


async def test_chats_count_the_unread_messages_of_others_after_the_marker(store):
    reader = (await add_user(store, "ana"))["id"]
    quiet = await add_event(store, title="quiet")
    busy = await add_event(store, title="busy")
    mine = await add_event(store, organizer_id=reader, title="mine")
    await add_event(store, title="not mine")
    await rsvped(store, quiet, reader)
    await rsvped(store, busy, reader)
    results = await append(store, busy, *(draft(ATTENDEE, f"b{n}") for n in range(5)), draft(reader, "own"))
    busy_messages = [record for record, _ in results]
    await store.messages.change(busy, [deletion(ATTENDEE, busy_messages[4]["id"])])
    await store.messages.mark_read(busy, reader, busy_messages[0]["id"])
    [(in_mine, _)] = await append(store, mine, draft(ATTENDEE, "hello organizer"))

    chats = await store.messages.chats(reader, 10, 100)

    assert [chat["title"] for chat in chats] == ["mine", "busy", "quiet"]  # newest event first
    by_title = {chat["title"]: chat for chat in chats}
    # b1, b2, b3: b4 is deleted and "own" is the reader's.
    assert (by_title["busy"]["unread_count"], by_title["busy"]["last_read_id"]) == (3, busy_messages[0]["id"])
    assert by_title["busy"]["last_message"] == busy_messages[5] and by_title["busy"]["event_id"] == busy
    assert (by_title["mine"]["unread_count"], by_title["mine"]["last_message"]) == (1, in_mine)
    assert by_title["quiet"] == {"event_id": quiet, "title": "quiet", "last_read_id": None, "unread_count": 0,
                                 "last_message": None}
    assert (await store.messages.chats(reader, 10, 2))[1]["unread_count"] == 2  # counted up to the cap
    assert [chat["title"] for chat in await store.messages.chats(reader, 2, 100)] == ["mine", "busy"]
    assert await store.messages.chats(some_id(98), 10, 100) == []


async def test_moderate_changes_a_standing_and_logs_the_action(store):
    event_id = await add_event(store)
    other_event = await add_event(store)

    muted = await store.messages.moderate(event_id, "mute", ATTENDEE, ORGANIZER, NOW, until=NOW + HOUR)

    assert muted == {"id": muted["id"], "event_id": event_id, "action": "mute", "user_id": ATTENDEE,
                     "actor_id": ORGANIZER, "message_id": None, "until": NOW + HOUR, "at": NOW}
    assert await store.messages.standing(event_id, ATTENDEE, NOW) == {"muted_until": NOW + HOUR, "removed": False}
    assert await store.messages.standing(event_id, ATTENDEE, NOW + HOUR) == {"muted_until": None, "removed": False}
    assert await store.messages.standing(other_event, ATTENDEE, NOW) == {"muted_until": None, "removed": False}
    removed = await store.messages.moderate(event_id, "remove", ATTENDEE, ORGANIZER, NOW + MINUTE)
    assert await store.messages.standing(event_id, ATTENDEE, NOW) == {"muted_until": NOW + HOUR, "removed": True}
    unmuted = await store.messages.moderate(event_id, "unmute", ATTENDEE, ORGANIZER, NOW + MINUTE)
    allowed = await store.messages.moderate(event_id, "allow", ATTENDEE, ORGANIZER, NOW + MINUTE)
    assert await store.messages.standing(event_id, ATTENDEE, NOW) == {"muted_until": None, "removed": False}
    assert ids_of(await store.messages.actions(event_id, None, 10)) == ids_of([allowed, unmuted, removed, muted])
    assert ids_of(await store.messages.actions(event_id, unmuted["id"], 10)) == ids_of([removed, muted])
    assert await store.messages.actions(other_event, None, 10) == []


async def test_a_muted_user_neither_sends_nor_edits_but_may_delete(store):
    event_id, stored = await history(store, 1)
    await store.messages.moderate(event_id, "mute", ATTENDEE, ORGANIZER, NOW, until=NOW + HOUR)

    [refused, (other, _)] = await append(store, event_id, draft(ATTENDEE, "let me talk"), draft(STRANGER, "fine"))
    assert refused.code == "muted" and refused.extra["retry_after"] == 3600
    assert other["text"] == "fine"
    [refused_edit] = await store.messages.change(event_id, [edit(ATTENDEE, stored[0]["id"], "edited", NOW)])
    assert refused_edit.code == "muted"
    [(deleted, _)] = await store.messages.change(event_id, [deletion(ATTENDEE, stored[0]["id"], NOW)])
    # Once the mute is over, they write again.
    [(later, _)] = await append(store, event_id, draft(ATTENDEE, "back", timestamp=NOW + HOUR))
    assert texts(await store.messages.latest(event_id, 10)) == [None, "fine", "back"]


async def test_a_removed_user_writes_nothing_until_allowed_back(store):
    event_id, stored = await history(store, 1)
    await store.messages.moderate(event_id, "remove", ATTENDEE, ORGANIZER, NOW)

    [refused] = await append(store, event_id, draft(ATTENDEE, "still here?"))
    [refused_delete] = await store.messages.change(event_id, [deletion(ATTENDEE, stored[0]["id"])])

    assert (refused.code, refused_delete.code) == ("removed_from_chat", "removed_from_chat")
    await store.messages.moderate(event_id, "allow", ATTENDEE, ORGANIZER, NOW)
    assert (await append(store, event_id, draft(ATTENDEE, "thanks")))[0][0]["text"] == "thanks"


async def test_the_organizer_deleting_someone_elses_message_is_logged(store):
    event_id, stored = await history(store, 1)
    [(own, _)] = await append(store, event_id, draft(ORGANIZER, "mine"))
    await store.messages.change(event_id, [deletion(ORGANIZER, own["id"])])

    [(deleted, _)] = await store.messages.change(event_id, [deletion(ORGANIZER, stored[0]["id"], NOW + HOUR)])

    [logged] = await store.messages.actions(event_id, None, 10)
    assert logged == {"id": logged["id"], "event_id": event_id, "action": "delete_message", "user_id": ATTENDEE,
                      "actor_id": ORGANIZER, "message_id": stored[0]["id"], "until": None, "at": NOW + HOUR}


async def test_message_ids_keep_increasing_in_a_second_store_on_the_same_database(store, twin):
    event_id = await add_event(store)
    [(first, _)] = await append(store, event_id, draft(ATTENDEE, "before"))
    [(second, _)] = await append(twin, event_id, draft(ATTENDEE, "from the other"))
    [(third, _)] = await append(store, event_id, draft(ATTENDEE, "after"))

    assert first["id"] < second["id"] < third["id"]
    assert texts(await store.messages.latest(event_id, 10)) == ["before", "from the other", "after"]


async def test_a_reader_following_after_misses_no_message_appended_through_two_stores(store, twin):
    # What replay on reconnect relies on: ids increase in the order messages are stored, even
    # when two processes append to one event at the same moment.
    event_id = await add_event(store)
    [(start, _)] = await append(store, event_id, draft(ATTENDEE, "start"))
    writers_done = asyncio.Event()

    async def write(through, sender):
        for n in range(20):
            await append(through, event_id, draft(sender, f"{n}"), draft(sender, f"{n}+"))

    async def read():
        seen, last = [], start["id"]
        while True:
            finished = writers_done.is_set()
            page = await store.messages.after(event_id, last, 1000)
            seen += page
            last = page[-1]["id"] if page else last
            if finished and not page:
                return seen
            await asyncio.sleep(0)

    reader = asyncio.ensure_future(read())
    await asyncio.gather(write(store, some_id(101)), write(twin, some_id(102)))
    writers_done.set()
    seen = await reader

    assert len(seen) == 80 and len(set(ids_of(seen))) == 80


# --- follows ---------------------------------------------------------------------------------------------------------

async def test_follow_is_true_only_when_it_creates_the_follow(store):
    ana, bo = await add_user(store, "ana"), await add_user(store, "bo")

    assert await store.follows.follow(ana["id"], bo["id"]) is True
    assert await store.follows.follow(ana["id"], bo["id"]) is False
    assert await store.follows.is_following(ana["id"], bo["id"]) is True
    assert await store.follows.is_following(bo["id"], ana["id"]) is False


async def test_unfollow_says_whether_there_was_a_follow(store):
    ana, bo = await add_user(store, "ana"), await add_user(store, "bo")
    await store.follows.follow(ana["id"], bo["id"])

    assert await store.follows.unfollow(ana["id"], bo["id"]) is True
    assert await store.follows.unfollow(ana["id"], bo["id"]) is False
    assert await store.follows.is_following(ana["id"], bo["id"]) is False
    assert await store.follows.follow(ana["id"], bo["id"]) is True


async def test_user_records_count_followers_and_following(store):
    ana, bo, cy = await add_user(store, "ana"), await add_user(store, "bo"), await add_user(store, "cy")
    await store.follows.follow(ana["id"], bo["id"])
    await store.follows.follow(cy["id"], bo["id"])
    await store.follows.follow(bo["id"], ana["id"])
    await store.follows.follow(ana["id"], bo["id"])

    counts = {user["username"]: (user["followers_count"], user["following_count"])
              for user in [await store.users.get(u["id"]) for u in (ana, bo, cy)]}
    assert counts == {"ana": (1, 1), "bo": (2, 1), "cy": (0, 1)}

    await store.follows.unfollow(cy["id"], bo["id"])
    bo_now = await store.users.get(bo["id"])
    assert (bo_now["followers_count"], bo_now["following_count"]) == (1, 1)
    assert (await store.users.find_by_email("bo@example.com"))["followers_count"] == 1


async def test_followers_and_following_list_user_records_in_id_order_after_an_id(store):
    star = await add_user(store, "star")
    fans = [await add_user(store, f"fan{n}") for n in range(5)]
    for fan in reversed(fans):
        await store.follows.follow(fan["id"], star["id"])
        await store.follows.follow(star["id"], fan["id"])
    fans = [await store.users.get(fan["id"]) for fan in fans]
    by_id = sorted(fans, key=lambda user: user["id"])

    assert await store.follows.followers(star["id"], None, 100) == by_id
    assert await store.follows.followers(star["id"], None, 2) == by_id[:2]
    assert await store.follows.followers(star["id"], by_id[1]["id"], 2) == by_id[2:4]
    assert await store.follows.followers(star["id"], by_id[4]["id"], 2) == []
    assert await store.follows.following(star["id"], None, 100) == by_id
    assert await store.follows.following(star["id"], by_id[2]["id"], 100) == by_id[3:]
    assert_has_keys(by_id[0], USER_KEYS)


async def test_follow_lists_are_empty_for_a_user_nobody_follows(store):
    loner = await add_user(store, "loner")

    assert await store.follows.followers(loner["id"], None, 10) == []
    assert await store.follows.following(loner["id"], None, 10) == []


async def test_twenty_concurrent_identical_follows_create_one(store):
    ana, bo = await add_user(store, "ana"), await add_user(store, "bo")

    results = await asyncio.gather(*(store.follows.follow(ana["id"], bo["id"]) for _ in range(20)))

    assert sorted(results) == [False] * 19 + [True]
    assert (await store.users.get(bo["id"]))["followers_count"] == 1
    assert (await store.users.get(ana["id"]))["following_count"] == 1
    assert ids_of(await store.follows.followers(bo["id"], None, 10)) == [ana["id"]]


# --- activities ------------------------------------------------------------------------------------------------------

async def test_activities_add_returns_an_id(store):
    first = await store.activities.add(activity(some_id(1), NOW))
    second = await store.activities.add(activity(some_id(1), NOW))

    assert_id(first)
    assert first < second


async def followed_activities(store):
    """A reader following ana and bo, their activities and a stranger's; {summary: id}."""
    reader, ana, bo, stranger = [await add_user(store, name) for name in ("reader", "ana", "bo", "stranger")]
    await store.follows.follow(reader["id"], ana["id"])
    await store.follows.follow(reader["id"], bo["id"])
    added = {}
    for summary, actor, minutes, kind in [("ana 1", ana, 1, "event_created"), ("bo 2", bo, 2, "rsvp"),
                                         ("stranger 3", stranger, 3, "event_created"),
                                         ("ana 4", ana, 4, "followed"), ("reader 5", reader, 5, "event_created"),
                                         ("bo 6", bo, 6, "event_created")]:
        added[summary] = await store.activities.add(activity(
            actor["id"], NOW + minutes * MINUTE, type=kind, summary=summary, actor_name=actor["username"],
            event_id=some_id(50) if kind != "followed" else None,
            target_user_id=bo["id"] if kind == "followed" else None))
    return reader, ana, bo, added


async def test_feed_holds_activities_of_the_kinds_by_followed_users_newest_first(store):
    reader, ana, bo, added = await followed_activities(store)

    feed = await store.activities.feed(reader["id"], ["event_created", "rsvp", "followed"], None, 100)

    assert [a["summary"] for a in feed] == ["bo 6", "ana 4", "bo 2", "ana 1"]
    assert_has_keys(feed[1], ACTIVITY_KEYS)
    assert {key: feed[1][key] for key in ACTIVITY_KEYS} == {
        "id": added["ana 4"], "type": "followed", "actor_id": ana["id"], "actor_name": "ana", "event_id": None,
        "target_user_id": bo["id"], "summary": "ana 4", "timestamp": NOW + 4 * MINUTE}
    assert_time(feed[1]["timestamp"])
    assert [a["summary"] for a in await store.activities.feed(reader["id"], ["event_created"], None, 100)] == [
        "bo 6", "ana 1"]
    assert await store.activities.feed(reader["id"], [], None, 100) == []


async def test_feed_pages_with_before_strictly_and_limit(store):
    reader, _, _, added = await followed_activities(store)
    kinds = ["event_created", "rsvp", "followed"]

    first = await store.activities.feed(reader["id"], kinds, None, 2)
    assert [a["summary"] for a in first] == ["bo 6", "ana 4"]
    rest = await store.activities.feed(reader["id"], kinds, (first[-1]["timestamp"], first[-1]["id"]), 2)
    assert [a["summary"] for a in rest] == ["bo 2", "ana 1"]


async def test_feed_breaks_equal_timestamps_by_id_and_before_resumes_exactly_there(store):
    reader, ana = await add_user(store, "reader"), await add_user(store, "ana")
    await store.follows.follow(reader["id"], ana["id"])
    same_time = [await store.activities.add(activity(ana["id"], NOW, summary=f"s{n}")) for n in range(4)]
    newest_first = sorted(same_time, reverse=True)

    feed = await store.activities.feed(reader["id"], ["event_created"], None, 100)
    assert ids_of(feed) == newest_first
    resumed = await store.activities.feed(reader["id"], ["event_created"], (NOW, newest_first[1]), 100)
    assert ids_of(resumed) == newest_first[2:]


async def test_feed_of_a_reader_who_follows_hundreds_merges_them_all_in_order(store):
    reader = await add_user(store, "reader")
    followed = [await add_user(store, f"u{n}") for n in range(250)]
    for user in followed:
        await store.follows.follow(reader["id"], user["id"])
    # Interleaved times, some equal, so that every page mixes users from everywhere in the list.
    added = [await store.activities.add(activity(user["id"], NOW + (n % 97) * MINUTE, summary=f"s{n}"))
             for n, user in enumerate(followed)]
    newest_first = [activity_id for _, activity_id in
                    sorted(((n % 97, activity_id) for n, activity_id in enumerate(added)), reverse=True)]

    pages, before = [], None
    while True:
        page = await store.activities.feed(reader["id"], ["event_created"], before, 40)
        pages.append(ids_of(page))
        if len(page) < 40:
            break
        before = (page[-1]["timestamp"], page[-1]["id"])

    assert pages[0] == newest_first[:40]
    assert [activity_id for page in pages for activity_id in page] == newest_first


async def test_feed_forgets_users_no_longer_followed(store):
    reader, _, bo, _ = await followed_activities(store)

    await store.follows.unfollow(reader["id"], bo["id"])

    feed = await store.activities.feed(reader["id"], ["event_created", "rsvp", "followed"], None, 100)
    assert [a["summary"] for a in feed] == ["ana 4", "ana 1"]


async def test_feed_of_a_reader_following_nobody_is_empty(store):
    _, ana, _, _ = await followed_activities(store)

    assert await store.activities.feed(ana["id"], ["event_created", "rsvp", "followed"], None, 100) == []


async def feed_of_follower(store, actor_id):
    """Every activity by `actor_id`, read through the feed of a reader who follows them."""
    reader = await add_user(store, f"reader{actor_id[-6:]}")
    await store.follows.follow(reader["id"], actor_id)
    return await store.activities.feed(reader["id"], ["followed", "rsvp"], None, 100)


async def test_add_once_stores_one_activity_per_subject(store):
    ana, bo, cy = [await add_user(store, name) for name in ("ana", "bo", "cy")]
    follows = [activity(ana["id"], NOW + n * MINUTE, type="followed", target_user_id=target["id"], summary=f"f{n}")
               for n, target in enumerate([bo, bo, cy])]
    going = activity(ana["id"], NOW - MINUTE, type="rsvp", event_id=some_id(50), summary="going")

    first, again, other, rsvp = [await store.activities.add_once(draft) for draft in [*follows, going]]

    for stored in (first, other, rsvp):
        assert_id(stored)
    assert again is None
    assert [a["summary"] for a in await feed_of_follower(store, ana["id"])] == ["f2", "f0", "going"]


async def test_add_once_finds_a_copy_stored_by_add(store):
    # Activities an older version stored with `add` (duplicates among them) count as stored.
    ana = await add_user(store, "ana")
    legacy = activity(ana["id"], NOW, type="followed", target_user_id=some_id(7), summary="legacy")
    await store.activities.add(legacy)
    await store.activities.add(legacy)

    assert await store.activities.add_once({**legacy, "summary": "new"}) is None
    assert [a["summary"] for a in await feed_of_follower(store, ana["id"])] == ["legacy", "legacy"]


async def test_add_once_called_concurrently_stores_one(store):
    ana = await add_user(store, "ana")
    draft = activity(ana["id"], NOW, type="rsvp", event_id=some_id(50))

    results = await asyncio.gather(*(store.activities.add_once(draft) for _ in range(20)))

    assert sum(result is not None for result in results) == 1
    assert len(await feed_of_follower(store, ana["id"])) == 1


async def test_withdraw_deletes_every_activity_of_the_subject_and_nothing_else(store):
    ana, bo = await add_user(store, "ana"), await add_user(store, "bo")
    followed = activity(ana["id"], NOW, type="followed", target_user_id=bo["id"], summary="followed bo")
    await store.activities.add(followed)
    await store.activities.add(followed)  # an older version's repeat
    kept = [activity(ana["id"], NOW, type="followed", target_user_id=some_id(9), summary="followed another"),
            activity(ana["id"], NOW, type="rsvp", event_id=some_id(50), summary="going"),
            activity(bo["id"], NOW, type="followed", target_user_id=ana["id"], summary="bo followed ana")]
    for kept_draft in kept:
        await store.activities.add_once(kept_draft)

    assert await store.activities.withdraw("followed", ana["id"], target_user_id=bo["id"]) == 2
    assert await store.activities.withdraw("followed", ana["id"], target_user_id=bo["id"]) == 0
    assert await store.activities.withdraw("rsvp", ana["id"], event_id=some_id(51)) == 0
    assert await store.activities.withdraw("rsvp", ana["id"]) == 0  # None matches None only
    assert await store.activities.withdraw("followed", "not an id", target_user_id=bo["id"]) == 0
    assert await store.activities.withdraw("followed", ana["id"], target_user_id="not an id") == 0
    assert sorted(a["summary"] for a in await feed_of_follower(store, ana["id"])) == ["followed another", "going"]
    assert [a["summary"] for a in await feed_of_follower(store, bo["id"])] == ["bo followed ana"]


async def test_withdraw_called_concurrently_deletes_each_activity_once(store):
    ana = await add_user(store, "ana")
    going = activity(ana["id"], NOW, type="rsvp", event_id=some_id(50))
    for _ in range(3):
        await store.activities.add(going)

    deleted = await asyncio.gather(*(store.activities.withdraw("rsvp", ana["id"], event_id=some_id(50))
                                     for _ in range(10)))

    assert sum(deleted) == 3
    assert await store.activities.add_once(going) is not None  # withdrawn, so it can be recorded again


# --- atomic across stores sharing one database (as processes do) -----------------------------------------------

async def test_add_once_from_two_stores_on_one_database_stores_one(store, twin):
    ana = await add_user(store, "ana")
    draft = activity(ana["id"], NOW, type="followed", target_user_id=some_id(7))

    results = await asyncio.gather(*((store if n % 2 else twin).activities.add_once(draft) for n in range(20)))

    assert sum(result is not None for result in results) == 1


async def test_take_seats_from_two_stores_on_one_database_give_exactly_the_capacity(store, twin):
    event_id = await add_event(store, capacity=10)
    users = [some_id(100 + n) for n in range(50)]

    results = await asyncio.gather(*((store if n % 2 else twin).events.take_seat(event_id, user, window())
                                     for n, user in enumerate(users)))

    assert sum(result is not None for result in results) == 10
    assert (await store.events.get(event_id))["rsvp_count"] == 10
    assert (await twin.events.get(event_id))["rsvp_count"] == 10


async def test_releases_from_two_stores_on_one_database_promote_each_waiting_user_once(store, twin):
    event_id = await add_event(store, capacity=5)
    seated, line = [some_id(100 + n) for n in range(5)], [some_id(200 + n) for n in range(10)]
    await rsvped(store, event_id, *seated)
    for n, user in enumerate(line):
        assert await (store if n % 2 else twin).events.join_waitlist(event_id, user, window()) is not None

    released = await asyncio.gather(*((store if n % 2 else twin).events.release_seat(event_id, user, window())
                                      for n, user in enumerate(seated)))

    promoted = [user for result in released for user in result["promoted"]]
    assert sorted(promoted) == line[:5]
    event = await twin.events.get(event_id)
    assert (event["rsvp_count"], event["waitlist_count"]) == (5, 5)
    assert await positions(store, event_id, line[5:]) == [1, 2, 3, 4, 5]


async def test_identical_follows_from_two_stores_on_one_database_create_one(store, twin):
    ana, bo = await add_user(store, "ana"), await add_user(store, "bo")

    results = await asyncio.gather(*((store if n % 2 else twin).follows.follow(ana["id"], bo["id"]) for n in range(20)))

    assert sorted(results) == [False] * 19 + [True]
    assert (await twin.users.get(bo["id"]))["followers_count"] == 1


async def test_takes_of_one_reset_token_from_two_stores_give_its_user_once(store, twin):
    await store.reset_tokens.add("digest-1", some_id(1), NOW + HOUR)

    taken = await asyncio.gather(*((store if n % 2 else twin).reset_tokens.take("digest-1", NOW) for n in range(10)))

    assert sorted(taken, key=str) == [some_id(1)] + [None] * 9


async def test_case_variant_emails_added_through_two_stores_store_exactly_one(store, twin):
    emails = ["sam@example.com", "SAM@example.com", "Sam@Example.com", "sAm@EXAMPLE.com", "SAM@EXAMPLE.COM",
              "saM@example.coM"]

    results = await asyncio.gather(*(add_user(store if n % 2 else twin, f"sam{n}", email)
                                     for n, email in enumerate(emails)), return_exceptions=True)

    assert sum(isinstance(result, dict) for result in results) == 1, results
    assert all(isinstance(result, (dict, AlreadyTaken)) for result in results), results


async def test_one_client_msg_id_appended_through_two_stores_is_stored_once(store, twin):
    event_id = await add_event(store)

    results = await asyncio.gather(*(append(store if n % 2 else twin, event_id, draft(ATTENDEE, f"try {n}", "c1"))
                                     for n in range(10)))

    stored = await store.messages.latest(event_id, 100)
    assert len(stored) == 1
    assert sorted(duplicate for [(_, duplicate)] in results) == [False] + [True] * 9
    assert all(record == stored[0] for [(record, _)] in results)


async def test_photos_added_through_two_stores_never_pass_max_photos(store, twin):
    event_id = await add_event(store)
    await add_photos(store, event_id, 3)

    results = await asyncio.gather(*((store if n % 2 else twin).events.add_photo(
        event_id, f"https://photos.example.com/c{n}.jpg", ORGANIZER, NOW, 5) for n in range(10)))

    assert sum(result is not None for result in results) == 2
    assert (await store.events.get(event_id))["photo_count"] == 5


# --- members and notifications ------------------------------------------------------------------------

def notification(user_id, kind="rsvp_promoted", key=None, created_at=NOW, **data):
    return {"user_id": user_id, "type": kind, "event_id": some_id(50), "data": data, "key": key,
            "created_at": created_at}


async def test_notifications_add_returns_records_with_increasing_ids_and_page_lists_them_newest_first(store):
    added = await store.notifications.add([notification(ATTENDEE, title="A"), notification(ATTENDEE, title="B"),
                                           notification(STRANGER, title="C")])

    assert [record["data"] for record in added] == [{"title": "A"}, {"title": "B"}, {"title": "C"}]
    assert ids_of(added) == sorted(ids_of(added))
    first = added[0]
    assert_id(first["id"])
    assert (first["user_id"], first["type"], first["event_id"], first["key"], first["read"]) == (
        ATTENDEE, "rsvp_promoted", some_id(50), None, False)
    assert first["created_at"] == NOW
    page = await store.notifications.page(ATTENDEE, None, 10)
    assert ids_of(page) == [added[1]["id"], added[0]["id"]]
    assert page[1] == first
    assert ids_of(await store.notifications.page(ATTENDEE, added[1]["id"], 10)) == [added[0]["id"]]
    assert ids_of(await store.notifications.page(ATTENDEE, None, 1)) == [added[1]["id"]]
    assert await store.notifications.page(ATTENDEE, added[0]["id"], 10) == []
    assert await store.notifications.add([]) == []


async def test_a_keyed_notification_replaces_the_users_earlier_one_with_a_newer_id_unread(store):
    key = "waitlist_position:" + some_id(50)
    first = await store.notifications.add([notification(ATTENDEE, "waitlist_position", key, position=3),
                                           notification(STRANGER, "waitlist_position", key, position=4)])
    other = await store.notifications.add([notification(ATTENDEE)])
    assert await store.notifications.mark_read(ATTENDEE, other[0]["id"]) == 2

    again = await store.notifications.add([notification(ATTENDEE, "waitlist_position", key, position=2)])

    page = await store.notifications.page(ATTENDEE, None, 10)
    assert ids_of(page) == [again[0]["id"], other[0]["id"]]
    assert again[0]["id"] > other[0]["id"] > first[0]["id"]
    assert (page[0]["data"], page[0]["read"]) == ({"position": 2}, False)
    assert await store.notifications.told(key) == {ATTENDEE: {"position": 2}, STRANGER: {"position": 4}}
    assert await store.notifications.told("waitlist_position:" + some_id(51)) == {}


async def test_mark_read_marks_the_users_notifications_up_to_the_id_and_nobody_elses(store):
    mine = await store.notifications.add([notification(ATTENDEE) for _ in range(3)])
    theirs = await store.notifications.add([notification(STRANGER)])
    assert await store.notifications.unread_count(ATTENDEE) == 3

    assert await store.notifications.mark_read(ATTENDEE, mine[1]["id"]) == 2
    assert await store.notifications.mark_read(ATTENDEE, mine[1]["id"]) == 0

    assert await store.notifications.unread_count(ATTENDEE) == 1
    assert [record["read"] for record in await store.notifications.page(ATTENDEE, None, 10)] == [False, True, True]
    # Another user's id, an unknown one, a malformed one: not one of the caller's.
    for up_to in (theirs[0]["id"], some_id(999), "nope"):
        assert await store.notifications.mark_read(ATTENDEE, up_to) is None
    assert await store.notifications.unread_count(STRANGER) == 1
    assert await store.notifications.page("nope", None, 10) == []
    assert await store.notifications.unread_count("nope") == 0


# --- cancelled events, revisions and calendars -----------------------------------------------------

async def cancelled_event(store, **fields):
    event_id = await add_event(store, **fields)
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": NOW}, {}) == []
    return event_id


async def test_update_adds_one_to_the_sequence_each_time_it_changes_the_event(store):
    event_id = await add_event(store)
    assert (await store.events.get(event_id))["sequence"] == 0
    assert await store.events.update(event_id, ORGANIZER, {"title": "second"}, {}) == []
    assert await store.events.update(event_id, ORGANIZER, {"capacity": 10}, {}) == []
    assert await store.events.update(event_id, OTHER_ORGANIZER, {"title": "not theirs"}, {}) is None
    assert await store.events.update(event_id, ORGANIZER, {"title": "stale"}, {"date": NOW + HOUR}) is None
    assert (await store.events.get(event_id))["sequence"] == 2
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": NOW}, {}) == []
    event = await store.events.get(event_id)
    assert (event["sequence"], event["cancelled_at"]) == (3, NOW)


async def test_a_cancelled_event_changes_no_more(store):
    event_id = await cancelled_event(store)
    before = await store.events.get(event_id)
    assert await store.events.update(event_id, ORGANIZER, {"title": "revived"}, {}) is None
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": None}, {}) is None
    assert await store.events.update(event_id, ORGANIZER, {"capacity": 5}, {}) is None
    assert await store.events.get(event_id) == before


async def test_a_cancelled_event_takes_no_seat_place_in_line_arrival_or_photo(store):
    event_id = await add_event(store, capacity=1)
    assert await store.events.take_seat(event_id, ATTENDEE, window())
    full_id = await add_event(store, capacity=1)
    assert await store.events.take_seat(full_id, ATTENDEE, window())
    for cancelled in (event_id, full_id):
        assert await store.events.update(cancelled, ORGANIZER, {"cancelled_at": NOW}, {}) == []
    free_id = await cancelled_event(store)

    assert await store.events.take_seat(free_id, STRANGER, window()) is None
    assert await store.events.join_waitlist(full_id, STRANGER, window()) is None
    assert await store.events.record_arrival(event_id, ATTENDEE, window(), OPENS_BEFORE) is False
    assert await store.events.add_photo(event_id, "https://photos.example.com/1.jpg", ORGANIZER, NOW, 10) is None
    assert await store.events.add_photo(event_id, "https://photos.example.com/2.jpg", ATTENDEE, NOW, 10) is None
    event = await store.events.get(event_id, ATTENDEE)
    assert (event["rsvp_count"], event["arrival_count"], event["photo_count"], event["is_rsvped"]) == (1, 0, 0, True)
    assert (await store.events.get(free_id))["rsvp_count"] == 0


async def test_a_seat_freed_in_a_cancelled_event_promotes_nobody(store):
    event_id = await add_event(store, capacity=1)
    assert await store.events.take_seat(event_id, ATTENDEE, window())
    assert await store.events.join_waitlist(event_id, STRANGER, window())
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": NOW}, {}) == []

    released = await store.events.release_seat(event_id, ATTENDEE, window())

    assert released["promoted"] == [] and released["rsvp_count"] == 0
    waiting = await store.events.get(event_id, STRANGER)
    assert (waiting["is_rsvped"], waiting["waitlist_position"], waiting["waitlist_count"]) == (False, 1, 1)


async def test_find_leaves_cancelled_events_out_unless_asked_for_them(store):
    live = await add_event(store, title="live", date=NOW)
    cancelled = await cancelled_event(store, title="cancelled", date=NOW + MINUTE)
    assert ids_of(await store.events.find(DiscoveryQuery())) == [live]
    assert ids_of(await store.events.find(DiscoveryQuery(include_cancelled=True))) == [live, cancelled]
    assert ids_of(await store.events.find(DiscoveryQuery(text="cancelled"))) == []
    assert ids_of(await store.events.find(DiscoveryQuery(near=PARIS, radius_m=1000))) == [live]
    assert ids_of(await store.events.find(DiscoveryQuery(organizer_id=ORGANIZER, include_cancelled=True))) == \
        [live, cancelled]


async def test_attending_lists_the_users_rsvped_events_from_since_by_date_cancelled_ones_included(store):
    # Registered users: a calendar feed is a user's (the MongoDB store finds their events by the
    # user's own list of them).
    attendee, stranger = (await add_user(store, "ana"))["id"], (await add_user(store, "ben"))["id"]
    past = await add_event(store, title="past", date=NOW - 2 * HOUR, end_date=NOW + HOUR)
    later = await add_event(store, title="later", date=NOW + 2 * HOUR)
    sooner = await add_event(store, title="sooner", date=NOW + HOUR)
    cancelled = await add_event(store, title="cancelled", date=NOW + 3 * HOUR)
    waited_for = await add_event(store, title="waited for", date=NOW + HOUR, capacity=1)
    not_mine = await add_event(store, title="not mine", date=NOW + HOUR)
    for event_id in (past, later, sooner, cancelled):
        assert await store.events.take_seat(event_id, attendee, window())
    assert await store.events.take_seat(waited_for, stranger, window())
    assert await store.events.join_waitlist(waited_for, attendee, window())
    assert await store.events.take_seat(not_mine, stranger, window())
    assert await store.events.update(cancelled, ORGANIZER, {"cancelled_at": NOW}, {}) == []

    found = await store.events.attending(attendee, NOW - HOUR, 10)

    assert titles_of(found) == ["sooner", "later", "cancelled"]
    assert all(event["is_rsvped"] for event in found)
    assert found[2]["cancelled_at"] == NOW and found[2]["sequence"] == 1
    assert_has_keys(found[0], EVENT_KEYS)
    assert titles_of(await store.events.attending(attendee, NOW - 3 * HOUR, 2)) == ["past", "sooner"]
    assert await store.events.attending(stranger, NOW + 4 * HOUR, 10) == []
    assert await store.events.attending("not-an-id", NOW - HOUR, 10) == []
    # A seat from the line joins the feed; a cancelled RSVP leaves it.
    assert (await store.events.release_seat(waited_for, stranger, window()))["promoted"] == [attendee]
    assert await store.events.release_seat(later, attendee, window())
    assert titles_of(await store.events.attending(attendee, NOW - HOUR, 10)) == ["sooner", "waited for", "cancelled"]


async def test_a_calendar_key_finds_its_user_until_it_is_replaced(store):
    user = await add_user(store, "cal")
    other = await add_user(store, "dar")
    assert await store.users.find_by_calendar_key("digest-1") is None

    assert await store.users.set_calendar_key(user["id"], "digest-1") is True
    assert await store.users.set_calendar_key(other["id"], "digest-2") is True
    assert await store.users.find_by_calendar_key("digest-1") == user
    assert await store.users.find_by_calendar_key("digest-2") == other

    assert await store.users.set_calendar_key(user["id"], "digest-3") is True
    assert await store.users.find_by_calendar_key("digest-1") is None
    assert await store.users.find_by_calendar_key("digest-3") == user
    assert await store.users.set_calendar_key(some_id(99), "digest-4") is False
    assert await store.users.set_calendar_key("not-an-id", "digest-5") is False
    assert await store.users.find_by_calendar_key("digest-4") is None
