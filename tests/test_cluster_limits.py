"""Limits across processes (issue 14): the login limits, the per-user caps on chat and notification
sockets and the chat's frame rate hold across server processes, as one process holds them; a
process killed with kill -9 stops counting within the heartbeat's bound; with Redis away each
process limits on its own, and once it is back the counts are whole again.

Real server processes sharing one SQLite file and a real redis-server (tests/processes.py)."""
import asyncio
import json

import pytest
import tornado.httpclient

from cluster.limits import HEARTBEAT_TTL
from tests.conftest import PASSWORD
from tests.processes import ServerProcesses, bearer, open_socket, published_event, registered

pytestmark = pytest.mark.gen_test(timeout=120)

ATTEMPTS = 3


def login(server, email, password):
    return server.request("POST", "/api/v1/auth/login", {"email": email, "password": password})


def email_of(server, token):
    return server.request("GET", "/api/v1/users/me", headers=bearer(token))[1]["data"]["email"]


async def refused_handshake(server, path, token):
    """The HTTP status and error code of a handshake that must be refused."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        connection = await open_socket(server, path, token)
        connection.close()
    return refused.value.code, json.loads(refused.value.response.body)["code"]


async def admitted_eventually(server, path, token, bound):
    """Polls the handshake until it is admitted (within `bound` seconds: a bound, not a timing)."""
    for _ in range(int(bound / 0.25)):
        try:
            return await open_socket(server, path, token)
        except tornado.httpclient.HTTPClientError as refused:
            assert refused.code == 429
        await asyncio.sleep(0.25)
    raise AssertionError(f"still refused after {bound} s")


def test_failed_logins_count_across_processes(redis_server):
    environment = {"LOGIN_ATTEMPTS_PER_EMAIL": str(ATTEMPTS)}
    with ServerProcesses(2, redis_server.url, environment) as servers:
        token, _ = registered(servers[0])
        email = email_of(servers[0], token)
        statuses = [login(servers[n % 2], email, "wrong password")[0] for n in range(ATTEMPTS)]
        assert statuses == [401] * ATTEMPTS
        # Spread over both processes, the attempts were counted once: both refuse the next.
        for server in servers:
            status, reply = login(server, email, PASSWORD)
            assert (status, reply["code"]) == (429, "rate_limited")


def test_failed_logins_to_one_account_from_many_addresses_back_off_across_processes(redis_server):
    environment = {"LOGIN_ATTEMPTS_PER_ACCOUNT": "2", "TRUSTED_PROXIES": "127.0.0.1"}
    with ServerProcesses(2, redis_server.url, environment) as servers:
        token, _ = registered(servers[0])
        email = email_of(servers[0], token)

        def attempt(server, address):
            return server.request("POST", "/api/v1/auth/login", {"email": email, "password": "wrong password"},
                                  headers={"X-Forwarded-For": address})

        assert attempt(servers[0], "203.0.113.1")[0] == 401
        assert attempt(servers[1], "203.0.113.2")[0] == 401
        status, reply = attempt(servers[0], "203.0.113.3")
        assert (status, reply["code"]) == (429, "rate_limited")


def test_with_redis_away_each_process_still_limits_logins_on_its_own(redis_server):
    environment = {"LOGIN_ATTEMPTS_PER_EMAIL": str(ATTEMPTS)}
    with ServerProcesses(2, redis_server.url, environment) as servers:
        token, _ = registered(servers[0])
        email = email_of(servers[0], token)
        redis_server.stop()
        statuses = [login(servers[0], email, "wrong password")[0] for _ in range(ATTEMPTS + 1)]
        assert statuses == [401] * ATTEMPTS + [429]
        status, metrics = servers[0].request("GET", "/metrics")
        assert 'cluster_redis_failures_total{part="limits"}' in metrics
        redis_server.start()
        assert login(servers[1], email, PASSWORD)[0] == 200


async def test_the_chat_connection_cap_holds_across_processes_and_frees_a_place_when_one_closes(redis_server):
    with ServerProcesses(2, redis_server.url, {"CHAT_MAX_CONNECTIONS_PER_USER": "2"}) as (first, second):
        organizer, _ = registered(first, "organizer")
        event_id = published_event(first, organizer)
        path = f"/ws/chat/{event_id}"
        on_first = await open_socket(first, path, organizer)
        await open_socket(second, path, organizer)
        assert await refused_handshake(first, path, organizer) == (429, "too_many_connections")
        assert await refused_handshake(second, path, organizer) == (429, "too_many_connections")
        # The notification sockets are counted apart, with the same cap.
        await open_socket(first, "/ws/notifications", organizer)
        await open_socket(second, "/ws/notifications", organizer)
        assert await refused_handshake(first, "/ws/notifications", organizer) == (429, "too_many_connections")
        on_first.close()
        await admitted_eventually(second, path, organizer, bound=10)


async def test_a_process_killed_with_kill_9_stops_counting_its_connections_within_the_heartbeat_ttl(redis_server):
    with ServerProcesses(2, redis_server.url, {"CHAT_MAX_CONNECTIONS_PER_USER": "1"}) as (first, second):
        organizer, _ = registered(first, "organizer")
        event_id = published_event(first, organizer)
        path = f"/ws/chat/{event_id}"
        await open_socket(second, path, organizer)
        assert await refused_handshake(first, path, organizer) == (429, "too_many_connections")
        second.process.kill()
        await admitted_eventually(first, path, organizer, bound=2 * HEARTBEAT_TTL)


async def test_after_redis_lost_its_data_the_processes_count_their_open_connections_again(redis_server):
    with ServerProcesses(2, redis_server.url, {"CHAT_MAX_CONNECTIONS_PER_USER": "2"}) as (first, second):
        organizer, _ = registered(first, "organizer")
        event_id = published_event(first, organizer)
        path = f"/ws/chat/{event_id}"
        await open_socket(first, path, organizer)
        redis_server.stop()  # no persistence: it comes back empty
        # Meanwhile each process applies the cap alone: the second opens one more there.
        await open_socket(second, path, organizer)
        redis_server.start()
        # Within a heartbeat both processes wrote their counts again: two open, the cap is met.
        for _ in range(int(4 * HEARTBEAT_TTL / 0.25)):
            try:
                connection = await open_socket(first, path, organizer)
            except tornado.httpclient.HTTPClientError as refused:
                assert refused.code == 429
                break
            connection.close()
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("the open connections were never counted again")
        assert await refused_handshake(second, path, organizer) == (429, "too_many_connections")


async def test_a_reconnect_to_another_process_does_not_refill_the_chat_frame_bucket(redis_server):
    environment = {"CHAT_BURST": "4", "CHAT_MESSAGES_PER_SECOND": "0.05"}
    with ServerProcesses(2, redis_server.url, environment) as (first, second):
        organizer, _ = registered(first, "organizer")
        event_id = published_event(first, organizer)
        path = f"/ws/chat/{event_id}"
        connection = await open_socket(first, path, organizer)
        for _ in range(4):  # the whole burst, answered unknown_type (the limit counts every frame)
            await connection.write_message(json.dumps({"type": "nothing"}))
            assert json.loads(await connection.read_message())["code"] == "unknown_type"
        connection.close()
        for _ in range(40):
            reconnected = await open_socket(second, path, organizer)
            await reconnected.write_message(json.dumps({"type": "nothing"}))
            code = json.loads(await reconnected.read_message())["code"]
            if code == "rate_limited":
                break
            # Not handed over yet (the close is still on its way): that frame took a fresh token.
            reconnected.close()
            await asyncio.sleep(0.1)
        assert code == "rate_limited"

