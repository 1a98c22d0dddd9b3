"""Endings on every process (issue 14): a logout, an RSVP cancelled or an event deleted on one
server process closes the affected sockets open on another, with the codes one process uses; with
Redis away meanwhile, they close once it is back (the re-check after subscribing again).

Real server processes sharing one SQLite file and a real redis-server (tests/processes.py)."""
import asyncio
import json
import re

import pytest

from tests.processes import ServerProcesses, bearer, closed, open_socket, published_event, registered

pytestmark = pytest.mark.gen_test(timeout=90)


async def joined_chat(server, event_id, token):
    connection = await open_socket(server, f"/ws/chat/{event_id}", token)
    await connection.write_message(json.dumps({"type": "join_chat"}))
    while json.loads(await connection.read_message())["type"] != "recent_messages":
        pass
    return connection


async def test_a_logout_on_one_process_closes_the_tokens_chat_and_notification_sockets_on_another_with_4401(
        redis_server):
    with ServerProcesses(2, redis_server.url) as (first, second):
        organizer, _ = registered(first, "organizer")
        event_id = published_event(first, organizer)
        chat = await joined_chat(second, event_id, organizer)
        notifications = await open_socket(second, "/ws/notifications", organizer)
        status, _ = first.request("POST", "/api/v1/auth/logout", headers=bearer(organizer))
        assert status == 200
        assert await closed(chat) == 4401
        assert await closed(notifications) == 4401
        assert chat.close_reason == "token revoked"


async def reset_token_mailed(server, email):
    """The token in the reset email the console mailer wrote to the process's stderr."""
    for _ in range(200):  # a bound: the email is sent in the background
        link = re.search(r"reset-password#token=(\S+)", server.stderr())
        if link:
            return link.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reset email to {email}")


async def test_a_password_reset_on_one_process_closes_the_users_sockets_on_another_with_4401(redis_server):
    with ServerProcesses(2, redis_server.url) as (first, second):
        organizer, _ = registered(first, "organizer")
        event_id = published_event(first, organizer)
        email = first.request("GET", "/api/v1/users/me", headers=bearer(organizer))[1]["data"]["email"]
        chat = await joined_chat(second, event_id, organizer)
        notifications = await open_socket(second, "/ws/notifications", organizer)
        assert first.request("POST", "/api/v1/auth/forgot-password", {"email": email})[0] == 200
        token = await reset_token_mailed(first, email)
        status, _ = first.request("POST", "/api/v1/auth/reset-password",
                                  {"token": token, "password": "a new password 1"})
        assert status == 200
        assert await closed(chat) == 4401
        assert await closed(notifications) == 4401


async def test_an_rsvp_cancelled_on_one_process_closes_the_members_chat_on_another_with_4403_only(redis_server):
    with ServerProcesses(2, redis_server.url) as (first, second):
        organizer, _ = registered(first, "organizer")
        leaving, _ = registered(first)
        staying, _ = registered(first)
        event_id = published_event(first, organizer, leaving, staying)
        leaving_chat = await joined_chat(second, event_id, leaving)
        staying_chat = await joined_chat(second, event_id, staying)
        status, _ = first.request("DELETE", f"/api/v1/events/{event_id}/rsvp", headers=bearer(leaving))
        assert status == 200
        assert await closed(leaving_chat) == 4403
        await staying_chat.write_message(json.dumps({"type": "send_message", "text": "still here"}))
        while (frame := json.loads(await staying_chat.read_message()))["type"] != "new_message":
            pass
        assert frame["message"]["text"] == "still here"


async def test_a_removal_from_the_chat_on_one_process_closes_the_users_chat_on_another_with_4403(redis_server):
    with ServerProcesses(2, redis_server.url) as (first, second):
        organizer, _ = registered(first, "organizer")
        removed, removed_id = registered(first)
        event_id = published_event(first, organizer, removed)
        chat = await joined_chat(second, event_id, removed)
        status, _ = first.request("POST", f"/api/v1/events/{event_id}/moderation",
                                  {"action": "remove", "user_id": removed_id}, headers=bearer(organizer))
        assert status in (200, 201)
        assert await closed(chat) == 4403
        assert chat.close_reason == "removed from chat"


async def test_an_event_deleted_on_one_process_closes_its_chat_on_every_process_with_4404(redis_server):
    with ServerProcesses(3, redis_server.url) as servers:
        organizer, _ = registered(servers[0], "organizer")
        member, _ = registered(servers[0])
        event_id = published_event(servers[0], organizer, member)
        sockets = [await joined_chat(server, event_id, member) for server in servers]
        status, _ = servers[0].request("DELETE", f"/api/v1/events/{event_id}", headers=bearer(organizer))
        assert status in (200, 204)
        assert [await closed(socket) for socket in sockets] == [4404, 4404, 4404]


async def test_a_logout_while_redis_is_away_closes_the_socket_on_another_process_once_redis_is_back(redis_server):
    with ServerProcesses(2, redis_server.url) as (first, second):
        organizer, _ = registered(first, "organizer")
        member, _ = registered(first)
        event_id = published_event(first, organizer, member)
        revoked_chat = await joined_chat(second, event_id, organizer)
        cancelled_chat = await joined_chat(second, event_id, member)
        kept_chat = await open_socket(second, "/ws/notifications", member)
        redis_server.stop()
        status, _ = first.request("POST", "/api/v1/auth/logout", headers=bearer(organizer))
        assert status == 200  # the store holds it; only the other process's close waits for Redis
        status, _ = first.request("DELETE", f"/api/v1/events/{event_id}/rsvp", headers=bearer(member))
        assert status == 200
        # Refused by the store at once, on any process, Redis or not.
        status, reply = second.request("GET", "/api/v1/users/me", headers=bearer(organizer))
        assert (status, reply["code"]) == (401, "token_revoked")
        redis_server.start()
        assert await closed(revoked_chat) == 4401
        assert await closed(cancelled_chat) == 4403
        await kept_chat.write_message("ping?")  # still open: answered push_only
        assert json.loads(await kept_chat.read_message())["code"] == "push_only"
