"""A database that does not answer, or cannot take a write, gives 503 JSON with Retry-After, never
a crash or a hang."""
import sqlite3

import pytest

from handlers.app import build_services
from storage.sqlite import SqliteStore
from tests.running_server import free_port

pytestmark = pytest.mark.gen_test

REGISTER = "/api/v1/auth/register"


def registration(name):
    return {"username": name, "email": f"{name}@example.com", "password": "password123"}


@pytest.fixture(params=["mongodb not listening", "sqlite closed"])
def services(request, settings, io_loop):
    if request.param == "mongodb not listening":
        from storage.mongo import MongoStore
        store = MongoStore.connect(f"mongodb://127.0.0.1:{free_port()}/", "down", 300)
    else:  # its connection closed: every call raises StoreUnavailable, as when the file cannot be reached
        store = SqliteStore(":memory:")
        io_loop.run_sync(store.open)
        io_loop.run_sync(store.close)
    yield build_services(settings, store=store)
    io_loop.run_sync(store.close)


async def test_requests_get_503_json_when_the_database_is_down(api):
    reply = await api.call("POST", REGISTER, registration("nobody"))
    assert reply.status == 503 and reply.json["code"] == "database_unavailable"
    assert reply.headers["Retry-After"]


async def test_readyz_is_503_and_healthz_200_when_the_database_is_down(api):
    assert (await api.call("GET", "/readyz")).status == 503
    assert (await api.call("GET", "/healthz")).status == 200


class TestASqliteFileAnotherProcessHoldsLocked:
    """Another connection to the file holds its write lock, as a process stuck in a long
    transaction does: a write waits out the busy timeout, then fails for real."""

    @pytest.fixture
    def services(self, file_services):
        return file_services

    async def test_a_write_that_cannot_get_the_lock_is_a_503_and_changes_nothing(self, api, database_path):
        locker = sqlite3.connect(database_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            refused = await api.call("POST", REGISTER, registration("locked.out"))
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert refused.status == 503 and refused.json["code"] == "database_unavailable"
        assert refused.headers["Retry-After"]
        again = await api.call("POST", REGISTER, registration("locked.out"))  # not taken: nothing was stored
        assert again.status == 201, again
