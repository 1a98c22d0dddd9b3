"""Behind a proxy: X-Forwarded-For and X-Forwarded-Proto are believed only from trusted proxies."""
import logging

import pytest

pytestmark = pytest.mark.gen_test

LOGIN = "/api/v1/auth/login"
PROXY = "127.0.0.1"  # the test client's address: the "proxy" in these tests


@pytest.fixture
def access_records(caplog):
    caplog.set_level(logging.INFO, logger="access")
    return lambda: [record for record in caplog.records if record.name == "access"]


async def failed_login(api, client_address, n):
    reply = await api.call("POST", LOGIN, {"email": f"user{n}@example.com", "password": "wrong password"},
                           headers={"X-Forwarded-For": client_address})
    return reply.status


@pytest.mark.settings(trusted_proxies=[PROXY], login_attempts_per_address=2, login_attempts_per_email=100)
async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_login_limit(api):
    assert [await failed_login(api, "203.0.113.1", n) for n in range(3)] == [401, 401, 429]
    assert await failed_login(api, "203.0.113.2", 3) == 401


@pytest.mark.settings(login_attempts_per_address=2, login_attempts_per_email=100)
async def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_limit(api):
    assert [await failed_login(api, f"203.0.113.{n}", n) for n in range(3)] == [401, 401, 429]


@pytest.mark.settings(trusted_proxies=[PROXY, "10.0.0.5"])
async def test_the_client_is_the_first_untrusted_hop_counting_from_the_nearest(api, access_records):
    await api.call("GET", "/healthz", headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.0.0.5"})
    assert access_records()[-1].remote_ip == "203.0.113.9"  # 198.51.100.7 is whatever the client claimed


async def test_without_trusted_proxies_the_peer_address_is_the_client(api, access_records):
    await api.call("GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    assert access_records()[-1].remote_ip == PROXY


@pytest.mark.settings(trusted_proxies=[PROXY])
async def test_forwarded_proto_from_a_trusted_proxy_sets_the_request_scheme(api, access_records):
    await api.call("GET", "/healthz", headers={"X-Forwarded-Proto": "https"})
    assert access_records()[-1].scheme == "https"


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(api, access_records):
    await api.call("GET", "/healthz", headers={"X-Forwarded-Proto": "https"})
    assert access_records()[-1].scheme == "http"


@pytest.mark.settings(trusted_proxies=[PROXY])
async def test_a_forwarded_proto_that_is_not_http_or_https_is_ignored(api, access_records):
    await api.call("GET", "/healthz", headers={"X-Forwarded-Proto": "javascript"})
    assert access_records()[-1].scheme == "http"
