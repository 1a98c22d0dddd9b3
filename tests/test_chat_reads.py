"""Read markers and unread counts: `mark_read` through real WebSocket clients, kept by the server
across devices and reconnects, and GET /api/v1/users/me/chats."""
import pytest

from tests.chat_client import ChatRoom
from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test
FAST = dict(chat_messages_per_second=10_000, chat_burst=10_000)


async def chats(room, token):
    reply = await room.api.call("GET", "/api/v1/users/me/chats", token=token)
    assert reply.status == 200, reply
    return reply.json["data"]["items"]


async def chat_of(room, token, event_id=None):
    return next(chat for chat in await chats(room, token) if chat["event_id"] == (event_id or room.event_id))


@pytest.mark.settings(**FAST)
async def test_unread_counts_follow_the_marker_on_every_device(room):
    await room.create(attendees=1)
    (_, talker_token), (_, reader_token) = room.members
    talker = await room.joined(talker_token)
    for n in range(4):
        await talker.say(f"m{n}")
    sent = await talker.messages(4)
    assert await chat_of(room, reader_token) == {
        "event_id": room.event_id, "title": room.event["title"], "last_read_id": None, "unread_count": 4,
        "last_message": sent[3]}
    phone, laptop = await room.connect(reader_token), await room.joined(reader_token)
    await phone.send({"type": "mark_read", "id": sent[1]["id"]})  # before joining: allowed
    expected = {"type": "read_marker", "event_id": room.event_id, "last_read_id": sent[1]["id"]}
    assert await phone.receive_type("read_marker") == expected
    assert await laptop.receive_type("read_marker") == expected  # the other device hears of it
    chat = await chat_of(room, reader_token)
    assert (chat["unread_count"], chat["last_read_id"]) == (2, sent[1]["id"])
    # A late marker from a device that was behind never moves it back.
    await laptop.send({"type": "mark_read", "id": sent[0]["id"]})
    assert (await laptop.receive_type("read_marker"))["last_read_id"] == sent[1]["id"]
    laptop.close()
    # Kept across reconnects: the count is the server's.
    again = await room.joined(reader_token)
    await again.send({"type": "mark_read", "id": sent[3]["id"]})
    await again.receive_type("read_marker")
    assert (await chat_of(room, reader_token))["unread_count"] == 0


async def test_own_and_deleted_messages_are_not_unread(room):
    await room.create(attendees=1)
    (_, organizer_token), (_, token) = room.members
    mine, theirs = await room.joined(token), await room.joined(organizer_token)
    await mine.say("my own")
    await theirs.say("theirs, soon gone")
    await theirs.say("theirs, kept")
    messages = await theirs.messages(3)
    await theirs.delete(messages[1]["id"])
    await theirs.receive_type("message_deleted")
    chat = await chat_of(room, token)
    assert chat["unread_count"] == 1 and chat["last_message"]["text"] == "theirs, kept"


async def test_the_list_holds_the_users_chats_newest_message_first(room):
    await room.create(attendees=1)
    (_, organizer_token), (user, token) = room.members
    other = await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)
    assert (await room.api.call("POST", f"/api/v1/events/{other.event_id}/rsvp", token=token)).status == 200
    silent = await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)
    assert (await room.api.call("POST", f"/api/v1/events/{silent.event_id}/rsvp", token=token)).status == 200
    await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)  # not theirs
    await room.write_history(["older"])
    await other.write_history(["newer"])
    listed = await chats(room, token)
    assert [chat["event_id"] for chat in listed] == [other.event_id, room.event_id, silent.event_id]
    assert listed[2]["last_message"] is None and listed[2]["unread_count"] == 0
    # The organizer's list has their event.
    assert [chat["event_id"] for chat in await chats(room, organizer_token)] == [room.event_id]


async def test_a_marker_must_name_an_entry_of_this_chat(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    other = await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)
    [elsewhere] = await other.write_history(["elsewhere"])
    for bad, code in ((unknown_id(), "message_not_found"), (elsewhere["id"], "message_not_found"),
                      ("not-an-id", "invalid_frame")):
        await client.send({"type": "mark_read", "id": bad})
        error = await client.receive_type("error")
        assert error["code"] == code
    assert (await chat_of(room, room.organizer_token))["last_read_id"] is None


async def test_the_chat_list_needs_a_token(api):
    reply = await api.call("GET", "/api/v1/users/me/chats")
    assert reply.status == 401
