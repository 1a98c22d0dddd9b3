"""A database that does not answer gives 503 JSON, never a crash or a hang."""

import pytest

from domain.store import Store
from handlers.app import build_services
from tests.running_server import free_port

pytestmark = pytest.mark.gen_test



@pytest.fixture
def services(settings):
    store = Store.connect(f"mongodb://127.0.0.1:{free_port()}/", "down", timeout_ms=300)
    services = build_services(settings, store=store)
    yield services
    store.close()


async def test_requests_get_503_json_when_the_database_is_down(api):
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "nobody", "email": "n@example.com", "password": "password123"})
    assert reply.status == 503 and reply.json["code"] == "database_unavailable"
    assert reply.headers["Retry-After"]


async def test_readyz_is_503_and_healthz_200_when_the_database_is_down(api):
    assert (await api.call("GET", "/readyz")).status == 503
    assert (await api.call("GET", "/healthz")).status == 200
