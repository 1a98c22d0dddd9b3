"""The organizer's moderation of an event's chat, through REST and real WebSocket clients: deleting
any message, mutes, removals, the moderation log, and attendees trying to moderate."""
import pytest

from tests.chat_client import ChatRoom
from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test


async def moderate(room, body, token=None):
    return await room.api.call("POST", f"/api/v1/events/{room.event_id}/moderation", body,
                               token=token or room.organizer_token)


async def moderated(room, body):
    reply = await moderate(room, body)
    assert reply.status == 200, reply
    return reply.json["data"]


async def moderation_log(room, token=None, query=""):
    return await room.api.call("GET", f"/api/v1/events/{room.event_id}/moderation{query}",
                               token=token or room.organizer_token)


async def test_a_muted_user_reads_but_cannot_send_until_unmuted(room):
    await room.create(attendees=1)
    (organizer, _), (user, token) = room.members
    talker, muted = await room.joined(room.organizer_token), await room.joined(token)
    action = await moderated(room, {"action": "mute", "user_id": user["id"], "duration_seconds": 600})
    assert (action["action"], action["user_id"], action["actor_id"]) == ("mute", user["id"], organizer["id"])
    await muted.say("let me speak", client_msg_id="m1")
    error = await muted.receive_type("error")
    assert (error["code"], error["client_msg_id"], error["muted_until"]) == ("muted", "m1", action["until"])
    assert 0 < error["retry_after"] <= 600
    await talker.say("you can still read")
    assert (await muted.receive_type("new_message"))["message"]["text"] == "you can still read"
    await moderated(room, {"action": "unmute", "user_id": user["id"]})
    await muted.say("thanks", client_msg_id="m1")  # the same id: the refused send was not stored
    assert [m["text"] for m in await talker.messages(2)] == ["you can still read", "thanks"]


async def test_a_muted_user_cannot_edit_but_may_delete_their_messages(room):
    await room.create(attendees=1)
    (_, _), (user, token) = room.members
    client = await room.joined(token)
    await client.say("before the mute")
    [message] = await client.messages(1)
    await moderated(room, {"action": "mute", "user_id": user["id"], "duration_seconds": 60})
    await client.edit(message["id"], "sneaky")
    assert (await client.receive_type("error"))["code"] == "muted"
    await client.delete(message["id"])
    assert (await client.receive_type("message_deleted"))["message_id"] == message["id"]


async def test_a_removed_user_is_closed_with_4403_and_cannot_come_back_until_allowed(room):
    await room.create(attendees=1)
    (_, _), (user, token) = room.members
    phone, laptop = await room.joined(token), await room.connect(token)
    await moderated(room, {"action": "remove", "user_id": user["id"]})
    assert await phone.closed() == 4403 and await laptop.closed() == 4403
    refused = await room.api.call("GET", f"/api/v1/events/{room.event_id}/messages", token=token)
    assert (refused.status, refused.json["code"]) == (403, "removed_from_chat")
    with pytest.raises(Exception) as handshake:
        await room.connect(token)
    assert getattr(handshake.value, "code", None) == 403
    await moderated(room, {"action": "allow", "user_id": user["id"]})
    back = await room.joined(token)
    await back.say("I'll behave")
    assert (await back.receive_type("new_message"))["message"]["text"] == "I'll behave"


async def test_every_action_is_in_the_log_newest_first(room):
    await room.create(attendees=1)
    (organizer, _), (user, token) = room.members
    moderator, author = await room.joined(room.organizer_token), await room.joined(token)
    await author.say("offensive")
    [message] = await author.messages(1)
    await moderator.delete(message["id"])
    await moderator.receive_type("message_deleted")
    await moderated(room, {"action": "mute", "user_id": user["id"], "duration_seconds": 60})
    await moderated(room, {"action": "remove", "user_id": user["id"]})
    reply = await moderation_log(room, query="?limit=2")
    assert reply.status == 200, reply
    page = reply.json["data"]
    assert [item["action"] for item in page["items"]] == ["remove", "mute"]
    older = (await moderation_log(room, query=f"?cursor={page['next_cursor']}")).json["data"]
    [deleted] = older["items"]
    assert (deleted["action"], deleted["message_id"], deleted["user_id"], deleted["actor_id"]) == (
        "delete_message", message["id"], user["id"], organizer["id"])
    assert older["next_cursor"] is None


async def test_attendees_cannot_moderate_nor_read_the_log(room):
    await room.create(attendees=2)
    (organizer, _), (victim, _), (_, attacker_token) = room.members
    for body in ({"action": "mute", "user_id": victim["id"], "duration_seconds": 60},
                 {"action": "remove", "user_id": organizer["id"]}):
        reply = await moderate(room, body, token=attacker_token)
        assert (reply.status, reply.json["code"]) == (403, "not_event_organizer")
    reply = await moderation_log(room, token=attacker_token)
    assert (reply.status, reply.json["code"]) == (403, "not_event_organizer")
    assert (await moderation_log(room)).json["data"]["items"] == []


async def test_an_organizer_of_another_event_cannot_moderate_this_one(room):
    await room.create(attendees=1)
    (_, _), (victim, _) = room.members
    other = await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)
    reply = await moderate(room, {"action": "remove", "user_id": victim["id"]}, token=other.organizer_token)
    assert (reply.status, reply.json["code"]) == (403, "not_event_organizer")


async def test_moderation_requests_that_cannot_be_are_clear_4xx(room):
    await room.create(attendees=1)
    (organizer, _), (user, _) = room.members
    cases = [
        ({"action": "mute", "user_id": user["id"]}, 400, None),
        ({"action": "remove", "user_id": user["id"], "duration_seconds": 5}, 400, None),
        ({"action": "mute", "user_id": user["id"], "duration_seconds": 0}, 400, None),
        ({"action": "mute", "user_id": user["id"], "duration_seconds": 10 ** 9}, 400, None),
        ({"action": "ban", "user_id": user["id"]}, 400, None),
        ({"action": "remove", "user_id": "nope"}, 400, None),
        ({"action": "remove", "user_id": organizer["id"]}, 400, "cannot_moderate_organizer"),
        ({"action": "remove", "user_id": unknown_id()}, 404, "user_not_found"),
    ]
    for body, status, code in cases:
        reply = await moderate(room, body)
        assert reply.status == status, (body, reply)
        if code:
            assert reply.json["code"] == code, body
    reply = await room.api.call("POST", f"/api/v1/events/{unknown_id()}/moderation",
                                {"action": "remove", "user_id": user["id"]}, token=room.organizer_token)
    assert (reply.status, reply.json["code"]) == (404, "event_not_found")
    assert (await moderation_log(room, query="?cursor=junk")).status == 400
    assert (await moderation_log(room)).json["data"]["items"] == []  # nothing half-done
