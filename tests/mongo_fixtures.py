"""Fixtures of the tests only the MongoDB adapter has (tests/test_mongo_store.py,
tests/test_takeover_check.py): a store on each MongoDB the run has, mongomock-motor always and a
real server where TEST_MONGO_URI names one."""
import pytest

from tests.stores import TEST_MONGO_URI, discard_store, new_store

STORE_NAMES = ["mongomock"] + (["mongodb"] if TEST_MONGO_URI else [])


@pytest.fixture(params=STORE_NAMES)
def store_name(request):
    return request.param


@pytest.fixture
def store(store_name, io_loop):
    """A new store, not opened: tests put the old backend's documents in first, and nothing
    prepares the database until a test opens the store."""
    store = new_store(store_name)
    yield store
    io_loop.run_sync(lambda: discard_store(store))
