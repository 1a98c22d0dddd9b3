"""Editing and deleting messages, with real WebSocket clients: the room's one order, history,
retries, replay after a reconnect, and the attempts on other people's messages."""
import pytest

from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test
FAST = dict(chat_messages_per_second=10_000, chat_burst=10_000)


async def said(room, client, text):
    await client.say(text)
    return (await client.receive_type("new_message"))["message"]


async def history(room, token):
    reply = await room.api.call("GET", f"/api/v1/events/{room.event_id}/messages", token=token)
    assert reply.status == 200, reply
    return reply.json["data"]["items"]


async def test_an_edit_reaches_the_room_in_its_order_and_shows_in_history(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    author, reader = await room.joined(token_a), await room.joined(token_b)
    message = await said(room, author, "meet at 7")
    await author.edit(message["id"], "  meet at 8  ")
    await author.say("see you")
    frames = [await reader.receive_type("new_message", "message_edited") for _ in range(3)]
    assert [frame["type"] for frame in frames] == ["new_message", "message_edited", "new_message"]
    edited = frames[1]
    assert (edited["message_id"], edited["text"], edited["event_id"]) == (message["id"], "meet at 8", room.event_id)
    assert message["id"] < edited["id"] < frames[2]["message"]["id"]  # one sequence, the room's order
    assert await author.receive_type("message_edited") == edited  # the author's acknowledgement
    [newest, first] = await history(room, token_b)
    assert (first["text"], first["edited_at"]) == ("meet at 8", edited["edited_at"])
    assert "edited_at" not in newest


async def test_a_deleted_message_is_a_tombstone_for_everyone(room):
    await room.create(attendees=1)
    (_, token_a), (user_b, token_b) = room.members
    reader, author = await room.joined(token_a), await room.joined(token_b)
    message = await said(room, author, "oops, wrong chat")
    await author.delete(message["id"])
    deleted = await reader.receive_type("message_deleted")
    assert (deleted["message_id"], deleted["deleted_by"]) == (message["id"], user_b["id"])
    [tombstone] = await history(room, token_a)
    assert (tombstone["text"], tombstone["deleted"], tombstone["deleted_at"]) == ("", True, deleted["deleted_at"])


async def test_recent_messages_show_edits_and_tombstones(room):
    await room.create(attendees=0)
    author = await room.joined(room.organizer_token)
    kept, gone = await said(room, author, "kept"), await said(room, author, "gone")
    await author.edit(kept["id"], "kept, edited")
    await author.delete(gone["id"])
    await author.receive_type("message_deleted")
    again = await room.connect(room.organizer_token)
    frame = await again.join_frame()
    assert [(m["text"], "edited_at" in m, m.get("deleted", False)) for m in frame["messages"]] == [
        ("kept, edited", True, False), ("", False, True)]
    assert frame["changes"] == []


async def test_since_replays_the_changes_to_messages_the_client_already_has(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    author, away = await room.joined(token_a), await room.joined(token_b)
    first, second = await said(room, author, "first"), await said(room, author, "second")
    await away.messages(2)
    away.close()
    await author.edit(first["id"], "first, edited")
    edited = await author.receive_type("message_edited")
    third = await said(room, author, "third")
    await author.edit(third["id"], "third, edited")
    await author.delete(second["id"])
    deleted = await author.receive_type("message_deleted")
    back = await room.connect(token_b)
    frame = await back.join_frame(since=second["id"])
    # Messages after `since` as they are now; changes to the ones before, in order.
    assert [(m["id"], m["text"]) for m in frame["messages"]] == [(third["id"], "third, edited")]
    assert frame["changes"] == [edited, deleted]
    # A change's id is a `since` too: nothing after the deletion.
    again = await room.connect(token_b)
    assert await again.join_frame(since=deleted["id"]) == {"type": "recent_messages", "messages": [], "changes": []}


async def test_an_edit_of_a_message_deleted_later_replays_as_the_deletion_alone(room):
    await room.create(attendees=0)
    author = await room.joined(room.organizer_token)
    message = await said(room, author, "regrettable")
    await author.edit(message["id"], "more regrettable")
    await author.receive_type("message_edited")
    await author.delete(message["id"])
    deleted = await author.receive_type("message_deleted")
    back = await room.connect(room.organizer_token)
    assert (await back.join_frame(since=message["id"]))["changes"] == [deleted]  # no edit, no text


async def test_a_retried_edit_or_deletion_is_stored_once_and_answered_to_the_sender_alone(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    author, reader = await room.joined(token_a), await room.joined(token_b)
    message = await said(room, author, "draft")
    for _ in range(3):
        await author.edit(message["id"], "final")
    edits = [await author.receive_type("message_edited") for _ in range(3)]
    assert edits[0] == edits[1] == edits[2]
    for _ in range(2):
        await author.delete(message["id"])
    deletions = [await author.receive_type("message_deleted") for _ in range(2)]
    assert deletions[0] == deletions[1]
    await author.say("after")
    # The reader got each change once, then the next message.
    frames = [await reader.receive_type("new_message", "message_edited", "message_deleted") for _ in range(4)]
    assert [frame["type"] for frame in frames] == ["new_message", "message_edited", "message_deleted", "new_message"]


async def test_edits_and_deletions_of_others_messages_are_refused(room):
    await room.create(attendees=2)
    (_, _), (_, token_a), (_, token_b) = room.members
    victim, attacker = await room.joined(token_a), await room.joined(token_b)
    message = await said(room, victim, "mine")
    await attacker.edit(message["id"], "hijacked")
    error = await attacker.receive_type("error")
    assert (error["code"], error["message_id"]) == ("not_your_message", message["id"])
    await attacker.delete(message["id"])
    assert (await attacker.receive_type("error"))["code"] == "not_your_message"
    [stored] = await history(room, token_a)
    assert (stored["text"], "edited_at" in stored, "deleted" in stored) == ("mine", False, False)


async def test_the_organizer_deletes_any_message_but_edits_none(room):
    await room.create(attendees=1)
    (organizer, organizer_token), (_, token) = room.members
    moderator, author = await room.joined(organizer_token), await room.joined(token)
    message = await said(room, author, "spam spam spam")
    await moderator.edit(message["id"], "nicer")
    assert (await moderator.receive_type("error"))["code"] == "not_your_message"
    await moderator.delete(message["id"])
    deleted = await author.receive_type("message_deleted")
    assert deleted["deleted_by"] == organizer["id"]


@pytest.mark.settings(**FAST)
async def test_changes_that_cannot_be_are_refused_with_clear_errors(room):
    await room.create(attendees=0)
    client = await room.connect(room.organizer_token)
    await client.edit(unknown_id(), "text")
    assert (await client.receive_type("error"))["code"] == "not_joined"
    await client.join()
    message = await said(room, client, "same")
    cases = [({"type": "edit_message", "id": unknown_id(), "text": "x"}, "message_not_found"),
             ({"type": "edit_message", "id": message["id"], "text": "same"}, "unchanged"),
             ({"type": "edit_message", "id": message["id"], "text": "   "}, "invalid_text"),
             ({"type": "edit_message", "id": "not-an-id", "text": "x"}, "invalid_frame"),
             ({"type": "edit_message", "id": message["id"]}, "invalid_frame"),
             ({"type": "delete_message", "id": message["id"], "extra": 1}, "invalid_frame")]
    for frame, code in cases:
        await client.send(frame)
        assert (await client.receive_type("error"))["code"] == code, frame
    await client.delete(message["id"])
    await client.receive_type("message_deleted")
    await client.edit(message["id"], "resurrected")
    assert (await client.receive_type("error"))["code"] == "message_deleted"


async def test_a_change_in_a_cancelled_event_is_refused(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    message = await said(room, client, "before")
    reply = await room.api.call("PATCH", f"/api/v1/events/{room.event_id}", {"cancelled": True},
                                token=room.organizer_token)
    assert reply.status == 200, reply
    await client.delete(message["id"])
    assert (await client.receive_type("error"))["code"] == "event_cancelled"


@pytest.mark.settings(**FAST)
async def test_changes_and_messages_from_many_keep_one_order_for_everyone(room):
    await room.create(attendees=2)
    clients = [await room.joined(token) for _, token in room.members]
    for n, client in enumerate(clients):
        await client.say(f"from {n}")
    first = await clients[0].messages(len(clients))
    own = [next(m for m in first if m["user_id"] == user["id"]) for user, _ in room.members]
    for n, client in enumerate(clients):
        await client.edit(own[n]["id"], f"edited {n}")
        await client.say(f"more {n}")
        await client.delete(own[n]["id"])
    kinds = ("new_message", "message_edited", "message_deleted")
    seen = [[await client.receive_type(*kinds) for _ in range(9 if n == 0 else 12)] for n, client in enumerate(clients)]
    ids = [[frame.get("id") or frame["message"]["id"] for frame in frames] for frames in seen]
    assert ids[0] == ids[1][3:] == ids[2][3:] and ids[0] == sorted(ids[0])
