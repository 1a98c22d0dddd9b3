"""Typing indicators with real WebSocket clients: relayed to the others but not the typist, not
stored nor replayed, absorbed when sent too often, refused when muted or not joined."""
import pytest

from handlers.chat import TYPING_EXPIRES

pytestmark = pytest.mark.gen_test
FAST = dict(chat_messages_per_second=10_000, chat_burst=10_000)


async def test_typing_reaches_the_others_but_not_the_typist(room):
    await room.create(attendees=2)
    (typist_user, typist_token), (_, token_b), (_, token_c) = room.members
    typist, b, c = await room.joined(typist_token), await room.joined(token_b), await room.joined(token_c)
    await typist.send({"type": "typing"})
    await typist.say("done typing")
    for other in (b, c):
        frame = await other.receive_type("typing")
        assert frame == {"type": "typing", "user": {"id": typist_user["id"], "username": typist_user["username"]},
                         "expires_in": TYPING_EXPIRES}
        assert (await other.receive_type("new_message", "typing"))["type"] == "new_message"
    # The typist's own next frame of either kind is its message: its indicator never came back.
    assert (await typist.receive_type("new_message", "typing"))["type"] == "new_message"


@pytest.mark.settings(**FAST)
async def test_a_typing_flood_reaches_the_room_once(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    typist, other = await room.joined(token_a), await room.joined(token_b)
    for _ in range(200):
        await typist.send({"type": "typing"})
    await typist.say("finally")
    assert (await other.receive_type("typing", "new_message"))["type"] == "typing"
    assert (await other.receive_type("typing", "new_message"))["type"] == "new_message"


async def test_a_typing_flood_is_rate_limited_like_any_frame(room):
    await room.create(attendees=0)
    typist = await room.joined(room.organizer_token)
    for _ in range(room.services.settings.chat_burst + 5):
        await typist.send({"type": "typing"})
    assert (await typist.receive_type("error"))["code"] == "rate_limited"


async def test_typing_is_neither_stored_nor_replayed(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    typist, other = await room.joined(token_a), await room.joined(token_b)
    await typist.say("first")
    [first] = await other.messages(1)
    other.close()
    await typist.send({"type": "typing"})
    await typist.say("second")
    await typist.messages(2)
    back = await room.connect(token_b)
    frame = await back.join_frame(since=first["id"])
    assert [m["text"] for m in frame["messages"]] == ["second"] and frame["changes"] == []
    assert [m["text"] for m in await (await room.connect(token_b)).join()] == ["first", "second"]


async def test_typing_needs_a_joined_connection_and_an_unmuted_user(room):
    await room.create(attendees=1)
    (_, _), (user, token) = room.members
    client = await room.connect(token)
    await client.send({"type": "typing"})
    assert (await client.receive_type("error"))["code"] == "not_joined"
    await client.join()
    await client.send({"type": "typing", "text": "no payload here"})
    assert (await client.receive_type("error"))["code"] == "invalid_frame"
    reply = await room.api.call("POST", f"/api/v1/events/{room.event_id}/moderation",
                                {"action": "mute", "user_id": user["id"], "duration_seconds": 60},
                                token=room.organizer_token)
    assert reply.status == 200, reply
    watcher = await room.joined(room.organizer_token)
    await client.send({"type": "typing"})
    error = await client.receive_type("error")
    assert error["code"] == "muted" and 0 < error["retry_after"] <= 60
    await watcher.say("nobody typing")
    assert (await watcher.receive_type("typing", "new_message"))["type"] == "new_message"


async def test_a_user_muted_before_connecting_types_to_no_one(room):
    await room.create(attendees=1)
    (_, _), (user, token) = room.members
    reply = await room.api.call("POST", f"/api/v1/events/{room.event_id}/moderation",
                                {"action": "mute", "user_id": user["id"], "duration_seconds": 60},
                                token=room.organizer_token)
    assert reply.status == 200, reply
    watcher = await room.joined(room.organizer_token)
    client = await room.joined(token)  # a socket opened after the mute, its first frame a typing one
    await client.send({"type": "typing"})
    error = await client.receive_type("error")
    assert error["code"] == "muted" and 0 < error["retry_after"] <= 60
    await watcher.say("nobody typing")
    assert (await watcher.receive_type("typing", "new_message"))["type"] == "new_message"
