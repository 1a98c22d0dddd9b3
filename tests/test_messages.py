"""Chat history over REST: newest first, page by page, for the event's members only."""
import pytest

from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test


async def chat(room, count):
    """Sends `count` messages through the live chat; returns them in stored order."""
    client = await room.joined(room.organizer_token)
    for n in range(count):
        await client.say(f"message {n}", client_msg_id=f"c{n}")
    return await client.messages(count)


def history_path(room, **query):
    path = f"/api/v1/events/{room.event_id}/messages"
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


@pytest.mark.settings(chat_messages_per_second=10_000, chat_burst=10_000)
async def test_history_pages_newest_first_until_the_oldest(room):
    await room.create(attendees=1)
    sent = await chat(room, 25)
    _, attendee_token = room.members[1]
    pages, cursor = [], None
    while True:
        reply = await room.api.call("GET", history_path(room, limit=10, **({"cursor": cursor} if cursor else {})),
                                    token=attendee_token)
        assert reply.status == 200, reply
        pages.append(reply.data["items"])
        cursor = reply.data["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [m for page in pages for m in page] == list(reversed(sent))


async def test_history_messages_have_the_live_shape(room):
    await room.create(attendees=0)
    [sent] = await chat(room, 1)
    reply = await room.api.call("GET", history_path(room), token=room.organizer_token)
    assert reply.data == {"items": [sent], "next_cursor": None}
    assert sent["client_msg_id"] == "c0"


async def test_an_empty_history(room):
    await room.create(attendees=0)
    reply = await room.api.call("GET", history_path(room), token=room.organizer_token)
    assert reply.status == 200 and reply.data == {"items": [], "next_cursor": None}


async def test_history_is_for_the_organizer_and_rsvped_users_only(room):
    await room.create(attendees=0)
    _, stranger = await room.api.register()
    reply = await room.api.call("GET", history_path(room), token=stranger)
    assert reply.status == 403 and reply.json["code"] == "not_a_member"
    assert (await room.api.call("GET", history_path(room))).status == 401


async def test_history_of_an_unknown_event_is_a_404(room):
    await room.create(attendees=0)
    for event_id in (unknown_id(), "nope"):
        reply = await room.api.call("GET", f"/api/v1/events/{event_id}/messages", token=room.organizer_token)
        assert reply.status == 404


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"cursor": "zzz"}])
async def test_bad_page_parameters_are_a_400(room, query):
    await room.create(attendees=0)
    reply = await room.api.call("GET", history_path(room, **query), token=room.organizer_token)
    assert reply.status == 400, reply
    assert reply.json["errors"][0]["path"] == next(iter(query))
