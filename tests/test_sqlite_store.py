"""What only the SQLite store does: its file (schema versions, damaged and foreign files, WAL),
its thread, its R*Tree, its text index, its follower counts, its chat batches for deleted events,
its locks and its message ids and counts across processes sharing the file.
tests/test_repositories.py holds it to the repository contracts like every other store."""
import asyncio
import datetime
import random
import re
import sqlite3
import threading

import pytest

from domain import geo
from domain.discovery import BY_DATE, Cursor, DiscoveryQuery
from domain.errors import NotFound, StoreBroken, StoreUnavailable
from domain.repositories import AlreadyTaken, Events, Notifications
from storage.sqlite import SqliteStore, database, ids, search
from storage.sqlite.schema import MIGRATIONS
from tests.repository_fixtures import (CREATED, HOUR, NOW, PARIS, PASSWORD_HASH, destination, draft, event_fields,
                                       point, some_id, window)

pytestmark = pytest.mark.gen_test

ORGANIZER = some_id(1)
READER = some_id(2)
real_connect = sqlite3.connect


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "data" / "events.sqlite3")


@pytest.fixture
def statements(monkeypatch):
    """(thread id, SQL with its values) of every statement the stores opened from now on run."""
    ran = []

    def traced_connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        connection.set_trace_callback(lambda sql: ran.append((threading.get_ident(), sql)))
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    return ran


async def opened(path, **options):
    store = SqliteStore(path, **options)
    await store.open()
    return store


def damaged_copy_of_a_database(path):
    """The bytes of a real database at `path`, with one of its table's pages overwritten."""
    connection = real_connect(path)
    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    connection.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 200,) for _ in range(200)])
    connection.commit()
    connection.close()
    data = bytearray(open(path, "rb").read())
    page = 4096
    data[3 * page + 8:3 * page + 200] = b"\xff" * 192
    return bytes(data)


# --- the file --------------------------------------------------------------------------------

async def test_a_new_file_gets_the_whole_schema_in_wal_mode(path):
    store = await opened(path)
    await store.close()

    connection = real_connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


async def test_reopening_the_file_keeps_its_data(path):
    store = await opened(path)
    user = await store.users.add("ana", "ana@example.com", "organizer", "hash", NOW)
    event_id = await store.events.add(event_fields(user["id"]))
    await store.close()

    store = await opened(path)
    assert await store.users.get(user["id"]) == user
    assert (await store.events.get(event_id))["title"] == "Rooftop jazz"
    await store.close()


async def test_a_migration_added_later_runs_once_on_a_file_that_lacks_it(path, monkeypatch):
    await (await opened(path)).close()
    monkeypatch.setattr("storage.sqlite.schema.MIGRATIONS",
                        MIGRATIONS + [("CREATE TABLE badges (user_id TEXT PRIMARY KEY)",)])

    await (await opened(path)).close()
    await (await opened(path)).close()  # a second run would fail: the table exists

    connection = real_connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert connection.execute("SELECT count(*) FROM badges").fetchone()[0] == 0
    connection.close()


async def test_a_file_from_a_newer_server_is_refused(path):
    await (await opened(path)).close()
    connection = real_connect(path)
    connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()

    with pytest.raises(StoreBroken, match="newer than this server's"):
        await opened(path)


async def test_a_damaged_database_is_refused_naming_the_file_and_left_as_it_was(tmp_path):
    path = str(tmp_path / "events.sqlite3")
    damaged = damaged_copy_of_a_database(path)
    with open(path, "wb") as file:
        file.write(damaged)

    with pytest.raises(StoreBroken) as refusal:
        await opened(path)

    message = str(refusal.value)
    assert message.startswith(f"cannot open the database {path}: the file is damaged: ")
    assert "\n" not in message
    assert open(path, "rb").read() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.sqlite3"]


async def test_a_file_that_is_not_a_database_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "events.sqlite3"
    notes = b"these are someone's notes, not a database\n" * 100
    path.write_bytes(notes)

    with pytest.raises(StoreBroken, match=f"^cannot open the database {path}: file is not a database$"):
        await opened(str(path))
    assert path.read_bytes() == notes


async def test_a_directory_that_cannot_be_made_is_refused(tmp_path):
    # Tests run as root, whom permissions do not stop: a regular file stands in the way instead.
    (tmp_path / "data").write_text("not a directory")
    path = tmp_path / "data" / "events.sqlite3"

    with pytest.raises(StoreBroken, match=f"^cannot open the database {path}: {tmp_path / 'data'} is not a directory$"):
        await opened(str(path))


async def test_times_at_the_ends_of_the_calendar_round_trip_in_order(path):
    first = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)
    last = datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.timezone.utc)
    store = await opened(path)
    late = await store.events.add(event_fields(ORGANIZER, date=last, created_at=last))
    early = await store.events.add(event_fields(ORGANIZER, date=first, created_at=first))

    found = await store.events.find(DiscoveryQuery())
    assert [(event["id"], event["date"], event["created_at"]) for event in found] == [
        (early, first, first), (late, last, last)]
    await store.close()


# --- the thread --------------------------------------------------------------------------------

async def test_no_statement_runs_on_the_event_loop_thread(path, statements):
    store = await opened(path)
    user = await store.users.add("ana", "ana@example.com", "organizer", "hash", NOW)
    event_id = await store.events.add(event_fields(user["id"]))
    await store.events.find(DiscoveryQuery(near=PARIS, text="jazz"))
    await store.messages.append(event_id, [draft(user["id"], "hello", "m-1")])
    await store.messages.latest(event_id, 10)
    await store.close()

    threads = {thread for thread, _ in statements}
    assert threads and threading.get_ident() not in threads
    assert len(threads) == 1


# --- nearby search -----------------------------------------------------------------------------

async def test_nearby_search_finds_its_candidates_through_the_rtree(path, statements):
    store = await opened(path)
    await store.events.add(event_fields(ORGANIZER))
    await store.events.find(DiscoveryQuery(near=PARIS, category="music"))
    await store.close()

    # The search's own query, not the R*Tree's statements on its shadow tables (event_locations_node...).
    candidates = [sql for _, sql in statements
                  if sql.lstrip().startswith("SELECT") and re.search(r"\bFROM event_locations\b", sql)]
    assert candidates
    connection = real_connect(path)
    plan = " / ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {candidates[0]}"))
    connection.close()
    assert plan.startswith("SCAN event_locations VIRTUAL TABLE INDEX"), plan


@pytest.mark.parametrize("centre", [PARIS, (179.99, -16.5)], ids=["paris", "antimeridian"])
async def test_nearby_pages_match_the_exact_search_in_a_dense_crowd(path, centre):
    # Most events within a few hundred metres, ties at one venue, a few far out: the search
    # widens its reach round by round, and must still give every page of the exact answer.
    rng = random.Random(20300601)
    places = [destination(*centre, rng.uniform(0, 360), rng.choice([rng.uniform(0, 300), rng.uniform(0, 12_000)]))
              for _ in range(150)]
    places += [places[0]] * 5
    store = await opened(path)
    event_ids = [await store.events.add(event_fields(ORGANIZER, location=point(*place))) for place in places]
    docs = [{"id": event_id, "location": point(*place)} for event_id, place in zip(event_ids, places)]
    expected = [(distance, doc["id"]) for distance, doc in geo.find_nearest(docs, *centre, 10_000)]

    served, cursor = [], None
    while True:
        found = await store.events.find(DiscoveryQuery(near=centre, radius_m=10_000, limit=7, cursor=cursor))
        served += [(event["distance_m"], event["id"]) for event in found[:7]]
        if len(found) <= 7:
            break
        cursor = Cursor(found[6]["distance_m"], found[6]["id"])
    await store.close()

    assert served == expected
    assert 0 < len(expected) < len(places)


async def test_text_search_ignores_case_beyond_ascii(path):
    store = await opened(path)
    event_id = await store.events.add(event_fields(ORGANIZER, title="ÉTÉ À PARIS", description=None))

    assert [event["id"] for event in await store.events.find(DiscoveryQuery(text="été à"))] == [event_id]
    assert await store.events.find(DiscoveryQuery(text="été.à")) == []
    await store.close()


# --- text search ----------------------------------------------------------------------------------

def titles_found(found):
    return sorted(event["title"] for event in found)


def indexed_rows(path):
    connection = real_connect(path)
    rows = connection.execute("SELECT rowid, title, description FROM event_text ORDER BY rowid").fetchall()
    connection.close()
    return rows


@pytest.fixture
def text_checks(monkeypatch):
    """The (text, field) of every contains_text call of the stores opened from now on."""
    calls, contains_text = [], database.contains_text

    def counted(text, field):
        calls.append((text, field))
        return contains_text(text, field)

    monkeypatch.setattr(database, "contains_text", counted)
    return calls


async def test_a_version_1_file_gets_its_events_indexed(path, monkeypatch):
    with monkeypatch.context() as old_server:
        old_server.setattr("storage.sqlite.schema.MIGRATIONS", MIGRATIONS[:1])
        old_server.setattr(search, "refresh_index", lambda connection: None)
        old_server.setattr(Events, "FIELDS", tuple(field for field in Events.FIELDS
                                                   if field not in ("waitlist_enabled", "cancelled_at")))
        store = await opened(path)
        await store.events.add(event_fields(ORGANIZER, title="Zydeco night", description="Accordion."))
        await store.events.add(event_fields(ORGANIZER, title="Quiet", description="A ZYDECO band"))
        await store.events.add(event_fields(ORGANIZER, title="Other", description=None))
        await store.close()
    assert real_connect(path).execute("PRAGMA user_version").fetchone()[0] == 1

    store = await opened(path)
    assert titles_found(await store.events.find(DiscoveryQuery(text="zydeco"))) == ["Quiet", "Zydeco night"]
    await store.close()
    assert [row[1:] for row in indexed_rows(path)] == [
        (search.search_key("Zydeco night"), search.search_key("Accordion.")),
        (search.search_key("Quiet"), search.search_key("A ZYDECO band")), (search.search_key("Other"), None)]


async def test_events_of_a_file_from_before_waitlists_take_one(path, monkeypatch):
    with monkeypatch.context() as old_server:
        old_server.setattr("storage.sqlite.schema.MIGRATIONS", MIGRATIONS[:5])
        old_server.setattr(Events, "FIELDS", tuple(field for field in Events.FIELDS
                                                   if field not in ("waitlist_enabled", "cancelled_at")))
        store = await opened(path)
        event_id = await store.events.add(event_fields(ORGANIZER, capacity=1))
        await store.close()

    store = await opened(path)
    assert await store.events.take_seat(event_id, some_id(10), window())
    joined = await store.events.join_waitlist(event_id, some_id(11), window())
    assert (joined["waitlist_enabled"], joined["waitlist_position"], joined["waitlist_count"]) == (True, 1, 1)
    assert (await store.events.release_seat(event_id, some_id(10), window()))["promoted"] == [some_id(11)]
    await store.close()


async def test_events_and_users_of_a_file_from_before_calendars_read_as_live_and_take_a_key(path, monkeypatch):
    with monkeypatch.context() as old_server:
        old_server.setattr("storage.sqlite.schema.MIGRATIONS", MIGRATIONS[:6])
        old_server.setattr(Events, "FIELDS", tuple(field for field in Events.FIELDS if field != "cancelled_at"))
        store = await opened(path)
        event_id = await store.events.add(event_fields(ORGANIZER))
        user = await store.users.add("old", "old@example.com", "attendee", PASSWORD_HASH, CREATED)
        await store.close()

    store = await opened(path)
    event = await store.events.get(event_id)
    assert (event["cancelled_at"], event["sequence"]) == (None, 0)
    assert await store.events.take_seat(event_id, user["id"], window())
    assert [e["id"] for e in await store.events.attending(user["id"], NOW - HOUR, 10)] == [event_id]
    assert await store.users.set_calendar_key(user["id"], "digest") is True
    assert (await store.users.find_by_calendar_key("digest"))["id"] == user["id"]
    assert await store.events.update(event_id, ORGANIZER, {"cancelled_at": NOW}, {}) == []
    assert (await store.events.get(event_id))["sequence"] == 1
    await store.close()


async def test_the_index_follows_every_write_of_a_title_or_description(path):
    store = await opened(path)
    first = await store.events.add(event_fields(ORGANIZER, title="Rooftop jazz", description="Quartet"))
    second = await store.events.add(event_fields(ORGANIZER, title="Salsa", description="Live band"))

    assert await store.events.update(first, ORGANIZER, {"title": "Tango lessons"}, {}) == []
    assert await store.events.update(second, ORGANIZER, {"description": "Tango after the salsa"}, {}) == []
    assert await store.events.update(second, ORGANIZER, {"capacity": 40}, {}) == []

    assert titles_found(await store.events.find(DiscoveryQuery(text="tango"))) == ["Salsa", "Tango lessons"]
    assert await store.events.find(DiscoveryQuery(text="jazz")) == []
    assert await store.events.delete(first, ORGANIZER)
    assert titles_found(await store.events.find(DiscoveryQuery(text="tango"))) == ["Salsa"]
    await store.close()
    assert [row[1:] for row in indexed_rows(path)] == [(search.search_key("Salsa"),
                                                          search.search_key("Tango after the salsa"))]


async def test_a_rolled_back_write_leaves_the_index_as_it_was(path):
    store = await opened(path)
    event_id = await store.events.add(event_fields(ORGANIZER, title="Rooftop jazz"))
    before = indexed_rows(path)

    def retitle_then_fail(connection):
        connection.execute("UPDATE events SET title = 'Tango' WHERE id = ?", (event_id,))
        raise RuntimeError("a bug after the write")

    with pytest.raises(RuntimeError):
        await store._database.write(retitle_then_fail)
    assert indexed_rows(path) == before
    assert [event["id"] for event in await store.events.find(DiscoveryQuery(text="jazz"))] == [event_id]
    await store.close()


async def test_a_text_of_3_characters_or_more_is_checked_on_the_index_candidates_only(path, text_checks):
    titles = [f"Event {n}" + (" zydeco" if n % 20 == 0 else "") for n in range(60)]
    store = await opened(path)
    for n, title in enumerate(titles):
        await store.events.add(event_fields(ORGANIZER, title=title, date=NOW + datetime.timedelta(minutes=n)))

    found = await store.events.find(DiscoveryQuery(text="ZYDECO", category="music", limit=2))
    assert [event["title"] for event in found] == ["Event 0 zydeco", "Event 20 zydeco", "Event 40 zydeco"]
    assert len(text_checks) == 3
    text_checks.clear()
    near = await store.events.find(DiscoveryQuery(text="zydeco", near=PARIS, limit=2))
    assert [event["title"] for event in near] == ["Event 0 zydeco", "Event 20 zydeco", "Event 40 zydeco"]
    assert len(text_checks) == 3
    text_checks.clear()
    # Two characters have no trigram: every event is checked.
    assert len(await store.events.find(DiscoveryQuery(text="ZY", limit=100))) == 3
    assert {field for _, field in text_checks if field.startswith("Event")} == set(titles)
    await store.close()


async def test_a_text_more_events_hold_than_the_index_hands_out_is_scanned_in_date_order(path, monkeypatch):
    monkeypatch.setattr(search, "MAX_CANDIDATES", 3)
    store = await opened(path)
    for n in range(8):
        await store.events.add(event_fields(ORGANIZER, title=f"Jazz {n}", date=NOW + datetime.timedelta(hours=n),
                                            category="music" if n % 2 else "tech"))

    pages, cursor = [], None
    while True:
        found = await store.events.find(DiscoveryQuery(text="jazz", category="music", limit=2, cursor=cursor))
        pages.append([event["title"] for event in found[:2]])
        if len(found) <= 2:
            break
        cursor = Cursor.after(BY_DATE, found[1])
    assert pages == [["Jazz 1", "Jazz 3"], ["Jazz 5", "Jazz 7"]]
    await store.close()


# Texts whose matches SQLite's own case folding would miss (it folds none of ı, İ, Cherokee or
# Georgian Mtavruli as Python does), NUL (where its trigram tokenizer stops reading), quotes (the
# syntax of the index's queries) and characters that only Python equates (ſ and s, K and k).
@pytest.mark.parametrize("text", [
    "istanbul", "İSTANBUL", "kirmizi", "KIRMIZI", "ꮳꮃꭹ", "ᏣᎳᎩ", "ᲗᲑᲘᲚᲘᲡᲘ", "თბილისი", "class", "kelvin",
    "null\x00byte", "byte", 'say "hi"', '"hi"', '""', "é à", "ÉTÉ", "σοφία", "ΣΟΦΊΑ",
])
async def test_the_index_never_changes_which_events_match(path, text):
    titles = ["İstanbul nights", "Istanbul days", "Kırmızı oda", "ᏣᎳᎩ language", "ꮳꮃꭹ lessons", "თბილისი jazz",
              "ᲗᲑᲘᲚᲘᲡᲘ jazz", "ClaſS", "\u212aelvin scale", "null\x00byte", 'They say "hi"', '""quoted""',
              "été à Paris", "ΣΟΦΊΑ", "σοφία", "Plain"]
    store = await opened(path)
    for title in titles:
        await store.events.add(event_fields(ORGANIZER, title=title, description=None))

    found = titles_found(await store.events.find(DiscoveryQuery(text=text, limit=100)))
    expected = sorted(title for title in titles if re.search(re.escape(text), title, re.IGNORECASE))
    assert found == expected and expected
    await store.close()


def test_search_keys_equate_every_pair_of_characters_python_equates_ignoring_case():
    # re.IGNORECASE equates only characters with case mappings; between them, the keys must join
    # every pair it does (a pair left apart would be an event the index misses).
    cased = sorted({chr(code) for code in search.KEY_TABLE} | {chr(code) for code in search.KEY_TABLE.values()}
                   | {c for code in search.KEY_TABLE for mapped in (chr(code).lower(), chr(code).upper(),
                                                                    chr(code).casefold()) for c in mapped})
    everything = "".join(cased)
    for text in cased:
        for match in re.finditer(re.escape(text), everything, re.IGNORECASE):
            assert search.search_key(match.group()) == search.search_key(text), (text, match.group())
    assert "\x00" not in search.search_key("a\x00b") and len(search.search_key("a\x00b")) == 3


async def test_the_index_is_rebuilt_for_keys_other_than_those_it_was_built_with(path):
    store = await opened(path)
    await store.events.add(event_fields(ORGANIZER, title="Kırmızı oda"))
    await store.close()
    # As a server with other Unicode tables would have left it.
    connection = real_connect(path, isolation_level=None)
    connection.execute("DELETE FROM event_text")
    connection.execute("INSERT INTO event_text (rowid, title) SELECT seq, title FROM events")
    connection.execute("UPDATE event_text_key SET fingerprint = 'older'")
    connection.close()

    store = await opened(path)
    assert titles_found(await store.events.find(DiscoveryQuery(text="KIRMIZI"))) == ["Kırmızı oda"]
    await store.close()
    assert real_connect(path).execute("SELECT fingerprint FROM event_text_key").fetchall() == [
        (search.KEY_FINGERPRINT,)]


# --- follower counts ---------------------------------------------------------------------------

def add_user_row(connection, user_id, username):
    connection.execute(
        "INSERT INTO users (id, username, username_key, email, email_key, role, password_hash, created_at)"
        " VALUES (?, ?, ?, ?, ?, 'attendee', 'hash', 0)",
        (user_id, username, username, f"{username}@example.com", f"{username}@example.com"))


def stored_counts(path):
    """{user id: (followers_count, following_count)} as the users rows hold them, and as counting
    the follows table gives them."""
    connection = real_connect(path)
    kept = {user_id: (followers, following) for user_id, followers, following in
            connection.execute("SELECT id, followers_count, following_count FROM users")}
    counted = {user_id: (followers, following) for user_id, followers, following in connection.execute(
        """SELECT id, (SELECT count(*) FROM follows WHERE followee_id = users.id),
                      (SELECT count(*) FROM follows WHERE follower_id = users.id) FROM users""")}
    connection.close()
    return kept, counted


async def test_a_version_2_file_gets_its_follower_counts_from_its_follows(path, monkeypatch):
    with monkeypatch.context() as old_server:
        old_server.setattr("storage.sqlite.schema.MIGRATIONS", MIGRATIONS[:2])
        await (await opened(path)).close()
    users = [some_id(n) for n in range(1, 6)]
    connection = real_connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
    for n, user_id in enumerate(users):
        add_user_row(connection, user_id, f"user{n}")
    follows = [(users[0], users[1]), (users[0], users[2]), (users[2], users[1]), (users[3], users[1]),
               (users[1], users[0]), (users[0], some_id(99))]  # the last one of no user
    connection.executemany("INSERT INTO follows (follower_id, followee_id) VALUES (?, ?)", follows)
    connection.commit()
    connection.close()

    store = await opened(path)
    counts = {user_id: ((await store.users.get(user_id))["followers_count"],
                        (await store.users.get(user_id))["following_count"]) for user_id in users}
    assert counts == {users[0]: (1, 3), users[1]: (3, 1), users[2]: (1, 1), users[3]: (0, 1), users[4]: (0, 0)}
    # And from then on the follows keep them.
    assert await store.follows.follow(users[4], users[1]) is True
    assert await store.follows.unfollow(users[0], users[2]) is True
    assert (await store.users.get(users[1]))["followers_count"] == 4
    assert [user["id"] for user in await store.follows.following(users[0], None, 10)] == [users[1]]
    await store.close()
    kept, counted = stored_counts(path)
    assert kept == counted
    assert real_connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_version_3_file_gets_identity_keys_and_users_who_now_collide_keep_their_accounts(path, monkeypatch,
                                                                                                     caplog):
    with monkeypatch.context() as old_server:
        old_server.setattr("storage.sqlite.schema.MIGRATIONS", MIGRATIONS[:3])
        await (await opened(path)).close()
    connection = real_connect(path)
    # Keys as version 3 computed them (str.lower): distinct then, one key now.
    rows = [(some_id(1), "Kate", "kate@example.com", 10), (some_id(2), "ｋａｔｅ2", "ｋａｔｅ@example.com", 20),
            (some_id(3), "Straße", "strasse@example.com", 30), (some_id(4), "STRASSE", "sam@example.com", 5)]
    connection.executemany(
        "INSERT INTO users (id, username, username_key, email, email_key, role, password_hash, created_at)"
        " VALUES (?, ?, lower(?), ?, lower(?), 'attendee', 'hash', ?)",
        [(user_id, name, name, email, email, created) for user_id, name, email, created in rows])
    connection.commit()
    connection.close()

    store = await opened(path)  # starts, whatever collides
    # The oldest user keeps the key: every spelling finds it but the younger one's exact address.
    assert (await store.users.find_by_email("KATE@example.com"))["id"] == some_id(1)
    assert (await store.users.find_by_email("ｋａｔｅ@example.com"))["id"] == some_id(2)
    with pytest.raises(AlreadyTaken):
        await store.users.add("kate3", "ＫＡＴＥ@EXAMPLE.com", "attendee", "hash", NOW)
    # Usernames likewise: STRASSE (older) keeps its key, and "Straße" now collides with it.
    assert await store.users.taken("new@example.com", "strasse") == "username"
    assert (await store.users.get(some_id(3)))["username"] == "Straße"
    assert sum("older user has the same" in record.getMessage() for record in caplog.records) == 2
    await store.close()
    assert real_connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_reading_a_user_never_counts_follows(path, statements):
    store = await opened(path)
    ana = await store.users.add("ana", "ana@example.com", "attendee", "hash", NOW)
    bo = await store.users.add("bo", "bo@example.com", "attendee", "hash", NOW)
    await store.follows.follow(ana["id"], bo["id"])
    statements.clear()

    assert (await store.users.get(bo["id"]))["followers_count"] == 1
    assert (await store.users.find_by_email("ana@example.com"))["following_count"] == 1
    await store.close()

    assert statements and not any("follows" in sql for _, sql in statements)


async def test_repeated_follows_and_unfollows_of_nobody_change_no_count(path):
    store = await opened(path)
    ana = await store.users.add("ana", "ana@example.com", "attendee", "hash", NOW)
    bo = await store.users.add("bo", "bo@example.com", "attendee", "hash", NOW)

    assert [await store.follows.follow(ana["id"], bo["id"]) for _ in range(3)] == [True, False, False]
    assert await store.follows.unfollow(bo["id"], ana["id"]) is False
    assert await store.follows.follow(ana["id"], some_id(99)) is True  # of no user: no row to count on
    assert ((await store.users.get(bo["id"]))["followers_count"],
            (await store.users.get(ana["id"]))["following_count"]) == (1, 2)
    assert [await store.follows.unfollow(ana["id"], bo["id"]) for _ in range(3)] == [True, False, False]
    assert ((await store.users.get(bo["id"]))["followers_count"],
            (await store.users.get(ana["id"]))["following_count"]) == (0, 1)
    await store.close()


async def test_counts_stay_right_under_concurrent_follows_and_unfollows_from_two_stores(path):
    first, second = await opened(path), await opened(path)
    users = [(await first.users.add(f"user{n}", f"user{n}@example.com", "attendee", "hash", NOW))["id"]
             for n in range(6)]
    pairs = [(follower, followee) for follower in users for followee in users if follower != followee]
    shuffle = random.Random(7)
    for _ in range(4):
        # Every pair followed or unfollowed at once through both stores, in a shuffled order:
        # of each two identical calls, only one may change anything.
        operations = [(shuffle.choice(["follow", "unfollow"]), pair) for pair in shuffle.sample(pairs, len(pairs))]
        results = await asyncio.gather(*(getattr(store.follows, name)(*pair)
                                         for name, pair in operations for store in (first, second)))
        assert not any(a and b for a, b in zip(results[::2], results[1::2]))

    kept, counted = stored_counts(path)
    assert kept == counted
    assert sum(followers for followers, _ in counted.values()) > 0
    for store in (first, second):
        assert {user_id: ((await store.users.get(user_id))["followers_count"],
                          (await store.users.get(user_id))["following_count"]) for user_id in users} == counted
    await first.close()
    await second.close()


# --- chat batches for events that are gone -----------------------------------------------------

async def test_a_batch_for_an_event_that_does_not_exist_is_refused_and_stores_nothing(path):
    store = await opened(path)
    event_id = await store.events.add(event_fields(ORGANIZER))
    await store.messages.append(event_id, [draft(READER, "before", "m-1")])
    assert await store.events.delete(event_id, ORGANIZER)

    for gone in (event_id, some_id(99)):
        with pytest.raises(NotFound) as refusal:
            await store.messages.append(gone, [draft(READER, "lost", "m-2"), draft(READER, "also lost")])
        assert (refusal.value.code, refusal.value.message) == ("event_not_found", "There is no such event.")
    await store.close()

    connection = real_connect(path)
    assert connection.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    connection.close()


async def test_a_batch_racing_the_deletion_of_its_event_is_stored_before_it_or_not_at_all(path):
    first, second = await opened(path), await opened(path)
    event_ids = [await first.events.add(event_fields(ORGANIZER)) for _ in range(20)]

    async def append(event_id):
        try:
            return await second.messages.append(event_id, [draft(READER, "hi")])
        except NotFound:
            return None

    await asyncio.gather(*(call for event_id in event_ids
                           for call in (append(event_id), first.events.delete(event_id, ORGANIZER))))
    await first.close()
    await second.close()

    connection = real_connect(path)
    assert connection.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    connection.close()


# --- locks and failures ------------------------------------------------------------------------

async def test_a_write_blocked_past_the_busy_timeout_is_unavailable_and_the_store_recovers(path):
    store = await opened(path, busy_timeout_ms=50)
    user = await store.users.add("ana", "ana@example.com", "organizer", "hash", NOW)
    other_process = real_connect(path, isolation_level=None)
    other_process.execute("BEGIN EXCLUSIVE")

    with pytest.raises(StoreUnavailable):
        await store.events.add(event_fields(user["id"]))
    assert await store.users.get(user["id"]) == user  # WAL: reading never waits for the writer

    other_process.execute("ROLLBACK")
    other_process.close()
    event_id = await store.events.add(event_fields(user["id"]))
    assert (await store.events.get(event_id))["organizer_id"] == user["id"]
    await store.close()


async def test_a_store_opened_while_another_process_writes_serves_once_the_lock_is_released(path):
    await (await opened(path)).close()
    other_process = real_connect(path, isolation_level=None)
    other_process.execute("BEGIN EXCLUSIVE")

    store = SqliteStore(path, busy_timeout_ms=50)
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert store.problems()

    other_process.execute("ROLLBACK")
    other_process.close()
    await store.ping()
    assert store.problems() == []
    await store.close()


async def test_a_batch_that_does_not_fit_on_disk_stores_none_of_its_messages(path, monkeypatch):
    def connect_to_a_small_disk(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        connection.execute("PRAGMA max_page_count = 64")  # the schema takes about 30 pages of 4 KiB
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_to_a_small_disk)
    store = await opened(path)
    event_id = await store.events.add(event_fields(ORGANIZER))
    await store.messages.append(event_id, [draft(READER, "first")])

    with pytest.raises(StoreUnavailable):
        await store.messages.append(event_id, [draft(READER, "x" * 4000, f"m-{n}") for n in range(64)])

    assert [message["text"] for message in await store.messages.latest(event_id, 100)] == ["first"]
    await store.messages.append(event_id, [draft(READER, "second", "m-1")])
    assert await store.messages.counts([event_id]) == {event_id: 2}
    await store.close()


async def test_a_call_that_fails_midway_releases_the_write_lock(path):
    store = await opened(path)
    event_id = await store.events.add(event_fields(ORGANIZER))

    with pytest.raises(sqlite3.ProgrammingError):  # a bug: a value SQLite cannot store
        await store.messages.append(event_id, [draft(READER, "fine"), draft(READER, object())])

    other_process = real_connect(path, isolation_level=None, timeout=0)
    other_process.execute("BEGIN IMMEDIATE")
    other_process.execute("ROLLBACK")
    other_process.close()
    await store.messages.append(event_id, [draft(READER, "next")])
    assert [message["text"] for message in await store.messages.latest(event_id, 10)] == ["next"]
    await store.close()


async def test_calls_after_close_are_unavailable(path):
    store = await opened(path)
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.ping()


# --- two processes on one file -----------------------------------------------------------------

async def test_message_ids_increase_in_stored_order_across_stores_sharing_the_file(path, monkeypatch):
    first, second = await opened(path), await opened(path)
    event_id = await first.events.add(event_fields(ORGANIZER))
    stored = []
    for round_number in range(5):
        for store in (first, second):
            appended = await store.messages.append(event_id, [draft(READER, f"{round_number}-{n}") for n in range(3)])
            stored += [message["id"] for message, _ in appended]
    # A process whose clock is an hour behind still numbers its messages after the stored ones.
    clock = ids.time.time()
    monkeypatch.setattr(ids.time, "time", lambda: clock - 3600)
    stored += [message["id"] for message, _ in await second.messages.append(event_id, [draft(READER, "late")])]

    assert stored == sorted(stored) and len(set(stored)) == len(stored)
    assert [message["id"] for message in await first.messages.latest(event_id, 100)] == stored
    await first.close()
    await second.close()


async def test_concurrent_seats_from_two_stores_on_one_file_never_overbook(path):
    first, second = await opened(path), await opened(path)
    event_id = await first.events.add(event_fields(ORGANIZER, capacity=10))

    taken = await asyncio.gather(*(store.events.take_seat(event_id, some_id(100 + n), window())
                                   for n, store in enumerate([first, second] * 25)))

    assert sum(record is not None for record in taken) == 10
    assert (await second.events.get(event_id))["rsvp_count"] == 10
    await first.close()
    await second.close()


async def test_notifications_past_the_retention_period_are_forgotten_as_others_are_added(path):
    store = await opened(path)
    old = NOW - Notifications.RETENTION - datetime.timedelta(seconds=1)
    unkeyed = {"user_id": "a" * 24, "type": "rsvp_promoted", "event_id": None, "data": {}, "key": None}
    await store.notifications.add([{**unkeyed, "created_at": old}])
    kept = await store.notifications.add([{**unkeyed, "created_at": NOW - Notifications.RETENTION}])

    await store.notifications.add([{**unkeyed, "created_at": NOW}])

    page = await store.notifications.page("a" * 24, None, 10)
    assert len(page) == 2 and page[1]["id"] == kept[0]["id"]
    await store.close()
