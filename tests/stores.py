"""The stores a test can run on, by name: "sqlite" (a file in a temporary directory, or
":memory:"), "mongomock" (mongomock-motor, the MongoDB adapter's test double) and "mongodb"
(a real server at TEST_MONGO_URI, each store in its own database, dropped afterwards)."""
import os
import uuid

TEST_MONGO_URI = os.environ.get("TEST_MONGO_URI", "")
# The store the HTTP and WebSocket tests use: sqlite unless TEST_STORE says otherwise
# (TEST_MONGO_URI alone selects mongodb).
DEFAULT_STORE = os.environ.get("TEST_STORE") or ("mongodb" if TEST_MONGO_URI else "sqlite")
STORE_NAMES = ["sqlite", "mongomock"] + (["mongodb"] if TEST_MONGO_URI else [])


def new_store(name, directory=None):
    """A fresh, unopened store. `directory`: where the sqlite file goes (None: in memory)."""
    if name == "sqlite":
        from storage.sqlite import SqliteStore
        return SqliteStore(os.path.join(directory, "events.sqlite3") if directory else ":memory:")
    from storage.mongo import MongoStore
    dbname = f"test_{uuid.uuid4().hex[:12]}"
    if name == "mongomock":
        import mongomock_motor

        import tests.mongomock_extensions  # noqa: F401  (gives the double what the adapter uses)
        return MongoStore(mongomock_motor.AsyncMongoMockClient(tz_aware=True), dbname)
    if name == "mongodb":
        return MongoStore.connect(TEST_MONGO_URI, dbname, 3000)
    raise ValueError(f"unknown store {name!r}")


async def open_store(store):
    """Opens the store and, for a store that prepares in the background (MongoStore: the
    backfill and the indexes), waits for that preparation, so tests start on a ready store."""
    await store.open()
    prepared = getattr(store, "prepared", None)
    if prepared is not None:
        await prepared()


async def discard_store(store):
    """Closes the store; a real MongoDB test database is dropped first."""
    if getattr(store, "kind", None) == "mongodb" and TEST_MONGO_URI:
        await store.drop_database()
    await store.close()
