"""How chat connections end: revoked tokens (4401), deleted events (4404), shutdown (1001)."""
import asyncio
import re

import pytest
import tornado.httpclient

from tests.chat_client import ChatClient, ChatRoom, retry_after
from tests.conftest import PASSWORD, console_emails

pytestmark = pytest.mark.gen_test


class SlowAppends:
    """The messages repository with every append taking `delay` seconds more, as over a slow link."""

    def __init__(self, messages, delay):
        self._messages, self._delay = messages, delay

    def __getattr__(self, name):
        return getattr(self._messages, name)

    async def append(self, event_id, drafts):
        await asyncio.sleep(self._delay)
        return await self._messages.append(event_id, drafts)


async def login(api, user):
    reply = await api.call("POST", "/api/v1/auth/login", {"email": f"{user['username']}@example.com",
                                                          "password": PASSWORD})
    assert reply.status == 200, reply
    return reply.data["token"]


async def test_logout_closes_the_sockets_opened_with_that_token_with_4401(room):
    await room.create(attendees=1)
    user, first_token = room.members[1]
    second_token = await login(room.api, user)
    revoked, same_token_unjoined = await room.joined(first_token), await room.connect(first_token)
    other_session = await room.joined(second_token)
    assert (await room.api.call("GET", "/api/v1/auth/logout", token=first_token)).status == 200
    assert await revoked.closed() == 4401
    assert await same_token_unjoined.closed() == 4401
    await other_session.say("still here")
    assert [m["text"] for m in await other_session.messages(1)] == ["still here"]


async def test_a_revoked_member_leaves_the_room_at_once(room):
    await room.create(attendees=1)
    (_, organizer_token), (attendee, token) = room.members
    watcher = await room.joined(organizer_token)
    await room.joined(token)
    await room.api.call("POST", "/api/v1/auth/logout", token=token)
    left = await watcher.receive_type("user_left")
    assert left["user"]["id"] == attendee["id"] and left["online_count"] == 1


async def test_a_password_reset_closes_every_socket_opened_before_it_with_4401(room, caplog):
    caplog.set_level("INFO")
    await room.create(attendees=1)
    user, token = room.members[1]
    second_token = await login(room.api, user)
    sockets = [await room.joined(token), await room.connect(second_token)]
    await room.api.call("POST", "/api/v1/auth/forgot-password", {"email": f"{user['username']}@example.com"})
    await room.services.accounts.drain()  # the email goes out in the background
    reset_token = re.findall(r"reset-password#token=([A-Za-z0-9_\-%]+)", console_emails(caplog)[-1])[-1]
    reply = await room.api.call("POST", "/api/v1/auth/reset-password", {"token": reset_token, "password": "a new one!"})
    assert reply.status == 200
    assert [await socket.closed() for socket in sockets] == [4401, 4401]


async def test_cancelling_the_rsvp_closes_that_users_sockets_in_that_event_with_4403(room):
    await room.create(attendees=2)
    _, (_, leaver_token), (_, stayer_token) = room.members
    leaving, staying = await room.joined(leaver_token), await room.joined(stayer_token)
    reply = await room.api.call("DELETE", f"/api/v1/events/{room.event_id}/rsvp", token=leaver_token)
    assert reply.status == 200
    assert await leaving.closed() == 4403
    await staying.say("still here")
    assert [m["text"] for m in await staying.messages(1)] == ["still here"]
    with pytest.raises(tornado.httpclient.HTTPClientError) as refusal:
        await room.connect(leaver_token)
    assert refusal.value.code == 403


async def test_deleting_the_event_closes_its_sockets_with_4404(room):
    await room.create(attendees=1)
    (_, organizer_token), (_, token) = room.members
    joined, not_joined = await room.joined(token), await room.connect(organizer_token)
    other_room = await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)
    elsewhere = await other_room.joined(other_room.organizer_token)
    reply = await room.api.call("DELETE", f"/api/v1/events/{room.event_id}", token=organizer_token)
    assert reply.status == 200
    assert await joined.closed() == 4404
    assert await not_joined.closed() == 4404
    await elsewhere.say("unaffected")
    assert [m["text"] for m in await elsewhere.messages(1)] == ["unaffected"]
    with pytest.raises(tornado.httpclient.HTTPClientError) as refusal:
        await room.connect(token)
    assert refusal.value.code == 404
    other_room.close_all()


async def test_deleting_the_event_deletes_its_messages(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say("soon gone")
    await client.messages(1)
    await room.api.call("DELETE", f"/api/v1/events/{room.event_id}", token=room.organizer_token)
    assert await client.closed() == 4404
    assert await room.services.store.messages.latest(room.event_id, 100) == []


@pytest.mark.settings(chat_messages_per_second=10_000, chat_burst=10_000)
async def test_shutdown_stores_and_acknowledges_what_was_sent_then_closes_with_1001(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    sender, listener = await room.joined(token_a), await room.joined(token_b)
    room.services.store.messages = SlowAppends(room.services.store.messages, 0.05)
    for n in range(10):
        await sender.say(f"last words {n}", client_msg_id=f"w{n}")
    await sender.send("not a frame")  # answered at once, after the ten were queued
    assert (await sender.receive_type("error", "new_message"))["type"] == "error"

    shutting_down = asyncio.ensure_future(room.services.chat.shutdown())

    acknowledged = [m["client_msg_id"] for m in await sender.messages(10)]
    assert acknowledged == [f"w{n}" for n in range(10)]
    assert await sender.closed() == 1001
    assert retry_after(sender.connection.close_reason) == 5  # then a random delay: the protocol's jitter
    assert len(await listener.messages(10)) == 10
    assert await listener.closed() == 1001
    await shutting_down
    stored = await room.services.store.messages.latest(room.event_id, 100)
    assert sorted(message["client_msg_id"] for message in stored) == sorted(acknowledged)
    reply = await room.api.call("GET", f"/ws/chat/{room.event_id}?token={token_a}", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg=="})
    assert reply.status == 503 and reply.json["code"] == "shutting_down"


async def test_a_message_sent_during_shutdown_is_refused_not_lost(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    room.services.chat.accepting = False  # the first thing shutdown() does
    await client.say("too late", client_msg_id="late")
    error = await client.receive_type("error")
    assert error["code"] == "shutting_down" and error["client_msg_id"] == "late"


async def test_a_socket_that_never_joined_is_closed_at_shutdown_too(room):
    await room.create(attendees=0)
    idle = await ChatClient.connect(room.base_url, room.services, room.event_id, room.organizer_token)
    shutting_down = asyncio.ensure_future(room.services.chat.shutdown())
    assert await idle.closed() == 1001
    await shutting_down
