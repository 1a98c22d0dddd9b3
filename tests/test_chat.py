"""Live chat with real WebSocket clients: delivery, one order, acknowledgement, retries, recovery,
and a database that cannot take a write."""
import asyncio
import datetime
import sqlite3
import time

import pytest

from domain.chat import MAX_CATCH_UP, RECENT_COUNT
from domain.errors import StoreUnavailable
from tests.chat_client import ChatRoom
from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test
FAST = dict(chat_messages_per_second=10_000, chat_burst=10_000)
EVERY_MESSAGE = 100_000  # more than any test stores


async def stored_messages(services, event_id):
    return await services.store.messages.latest(event_id, EVERY_MESSAGE)


async def stored_texts(services, event_id):
    return [message["text"] for message in await stored_messages(services, event_id)]


class Unreachable:
    """Stands in for a repository whose database cannot be reached: every call raises
    StoreUnavailable, as the adapters do then."""

    def __getattr__(self, name):
        async def unreachable(*args, **kwargs):
            raise StoreUnavailable()
        return unreachable


async def test_two_clients_see_each_others_messages_in_the_same_order(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    alice, bob = await room.joined(token_a), await room.joined(token_b)
    await alice.say("hello from alice")
    await bob.say("hello from bob")
    seen_by_alice = [m["text"] for m in await alice.messages(2)]
    seen_by_bob = [m["text"] for m in await bob.messages(2)]
    assert seen_by_alice == seen_by_bob
    assert set(seen_by_alice) == {"hello from alice", "hello from bob"}
    assert seen_by_alice == await stored_texts(room.services, room.event_id)


async def test_the_senders_echo_is_the_stored_message_with_its_client_msg_id(room):
    await room.create(attendees=0)
    organizer, token = room.members[0]
    client = await room.joined(token)
    await client.say("  doors open at eight  ", client_msg_id="m-1")
    [message] = await client.messages(1)
    assert message["client_msg_id"] == "m-1"
    assert message["text"] == "doors open at eight"  # trimmed
    assert message["user_id"] == organizer["id"] and message["username"] == organizer["username"]
    assert message["event_id"] == room.event_id and message["timestamp"].endswith("Z")
    [stored] = await stored_messages(room.services, room.event_id)
    assert stored["id"] == message["id"]
    assert stored["text"] == "doors open at eight" and stored["client_msg_id"] == "m-1"


async def test_a_client_msg_id_is_up_to_64_characters(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say("long id", client_msg_id="i" * 64)
    assert (await client.messages(1))[0]["client_msg_id"] == "i" * 64


async def test_a_message_without_client_msg_id_has_none(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say("no id")
    [message] = await client.messages(1)
    assert "client_msg_id" not in message


async def test_a_retried_client_msg_id_is_stored_once_and_echoes_the_original_to_the_sender_only(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    sender, other = await room.joined(token_a), await room.joined(token_b)
    await sender.say("only once", client_msg_id="retry-me")
    [original] = await sender.messages(1)
    await sender.say("only once", client_msg_id="retry-me")
    await sender.say("only once", client_msg_id="retry-me")
    assert await sender.messages(2) == [original, original]
    await sender.say("next", client_msg_id="another")
    assert [m["text"] for m in await other.messages(2)] == ["only once", "next"]  # no second copy
    assert await stored_texts(room.services, room.event_id) == ["only once", "next"]


async def test_a_retry_after_reconnecting_gets_the_original(room):
    await room.create(attendees=0)
    first = await room.joined(room.organizer_token)
    await first.say("sent before the drop", client_msg_id="c-7")
    [original] = await first.messages(1)
    first.close()
    again = await room.joined(room.organizer_token)
    await again.say("sent before the drop", client_msg_id="c-7")
    assert await again.messages(1) == [original]
    assert await stored_texts(room.services, room.event_id) == ["sent before the drop"]


@pytest.mark.settings(**FAST)
async def test_retries_sent_together_store_one_message(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    for _ in range(5):
        await client.say("impatient", client_msg_id="same")
    received = await client.messages(5)
    assert len({m["id"] for m in received}) == 1
    assert await stored_texts(room.services, room.event_id) == ["impatient"]


async def test_the_same_client_msg_id_from_two_senders_is_two_messages(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    a, b = await room.joined(token_a), await room.joined(token_b)
    await a.say("from a", client_msg_id="1")
    await a.messages(1)
    await b.say("from b", client_msg_id="1")
    assert [m["text"] for m in await b.messages(2)] == ["from a", "from b"]


@pytest.mark.settings(**FAST)
async def test_joining_replays_the_last_50_messages_oldest_first(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    talker = await room.joined(token_a)
    for n in range(RECENT_COUNT + 5):
        await talker.say(f"message {n}")
    await talker.messages(RECENT_COUNT + 5)
    latecomer = await room.connect(token_b)
    replay = await latecomer.join()
    assert [m["text"] for m in replay] == [f"message {n}" for n in range(5, RECENT_COUNT + 5)]


@pytest.mark.settings(**FAST)
async def test_a_client_that_reconnects_with_since_gets_exactly_what_it_missed(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    talker, listener = await room.joined(token_a), await room.joined(token_b)
    for n in range(3):
        await talker.say(f"before {n}")
    last_seen = (await listener.messages(3))[-1]
    listener.close()
    for n in range(4):
        await talker.say(f"missed {n}")
    await talker.messages(7)
    back = await room.connect(token_b)
    replay = await back.join(since=last_seen["id"])
    assert [m["text"] for m in replay] == [f"missed {n}" for n in range(4)]
    await talker.say("live again")
    assert [m["text"] for m in await back.messages(1)] == ["live again"]


@pytest.mark.settings(**FAST)
async def test_joining_while_others_send_misses_nothing_and_doubles_nothing(room):
    await room.create(attendees=2)
    (_, token_a), (_, token_b), (_, token_c) = room.members
    talker, witness = await room.joined(token_a), await room.joined(token_b)
    latecomer = await room.connect(token_c)
    for n in range(60):
        await talker.say(f"m{n}")
        if n == 30:
            await latecomer.send({"type": "join_chat"})
    everything = [m["id"] for m in await witness.messages(60)]
    replay = [m["id"] for m in (await latecomer.receive_type("recent_messages"))["messages"]]
    already = everything.index(replay[-1]) + 1 if replay else 0
    live = [m["id"] for m in await latecomer.messages(len(everything) - already)]
    assert replay + live == everything[already - len(replay):]


async def test_an_unknown_since_fails_closed(room):
    await room.create(attendees=0)
    client = await room.connect(room.organizer_token)
    await client.send({"type": "join_chat", "since": unknown_id()})
    error = await client.receive_type("error")
    assert error["code"] == "unknown_since"
    await client.say("am I in?")
    assert (await client.receive_type("error"))["code"] == "not_joined"
    assert await client.join() == []  # joining without since still works


async def test_a_since_from_another_event_fails_closed(room):
    await room.create(attendees=0)
    here = await room.joined(room.organizer_token)
    other_room = await ChatRoom(room.api, room.base_url, room.services).create(attendees=0)
    there = await other_room.joined(other_room.organizer_token)
    await there.say("elsewhere")
    [elsewhere] = await there.messages(1)
    here.close()
    back = await room.connect(room.organizer_token)
    await back.send({"type": "join_chat", "since": elsewhere["id"]})
    assert (await back.receive_type("error"))["code"] == "unknown_since"
    other_room.close_all()


async def test_a_malformed_since_is_an_invalid_frame(room):
    await room.create(attendees=0)
    client = await room.connect(room.organizer_token)
    await client.send({"type": "join_chat", "since": "not-an-id"})
    error = await client.receive_type("error")
    assert error["code"] == "invalid_frame" and error["errors"][0]["path"] == "/since"


async def test_a_since_up_to_500_messages_behind_is_replayed_and_further_fails_closed(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say("the last one I saw")
    [seen] = await client.messages(1)

    async def history_grows_by(count):  # as if written while the client was away
        await room.write_history(["meanwhile"] * count)

    await history_grows_by(MAX_CATCH_UP)
    back = await room.connect(room.organizer_token)
    assert len(await back.join(since=seen["id"])) == MAX_CATCH_UP
    await history_grows_by(1)
    late = await room.connect(room.organizer_token)
    await late.send({"type": "join_chat", "since": seen["id"]})
    assert (await late.receive_type("error"))["code"] == "too_far_behind"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.settings(**FAST)
async def test_twenty_clients_sending_at_once_lose_nothing_and_all_see_one_order(room):
    senders, per_sender = 20, 50
    await room.create(attendees=senders - 1)
    clients = [await room.joined(token, checked=n == 0) for n, (_, token) in enumerate(room.members)]

    async def talk(index, client):
        for n in range(per_sender):
            await client.say(f"c{index}-{n}", client_msg_id=f"{index}-{n}")

    await asyncio.gather(*(talk(i, client) for i, client in enumerate(clients)))
    total = senders * per_sender
    orders = await asyncio.gather(*(client.messages(total) for client in clients))
    first = [m["id"] for m in orders[0]]
    assert all([m["id"] for m in order] == first for order in orders)
    assert len(set(first)) == total
    assert first == sorted(first)  # ids grow in stored order
    assert [m["id"] for m in await stored_messages(room.services, room.event_id)] == first
    for index in range(senders):  # each sender's own messages in the order it sent them
        mine = [m["text"] for m in orders[0] if m["text"].startswith(f"c{index}-")]
        assert mine == [f"c{index}-{n}" for n in range(per_sender)]


async def test_presence_counts_users_not_connections(room):
    await room.create(attendees=1)
    (organizer, token_a), (attendee, token_b) = room.members
    watcher = await room.joined(token_a)
    itself = await watcher.receive_type("user_joined")
    assert itself["user"]["id"] == organizer["id"] and itself["online_count"] == 1
    first = await room.joined(token_b)
    joined = await watcher.receive_type("user_joined")
    assert joined["user"] == {"id": attendee["id"], "username": attendee["username"]}
    assert joined["online_count"] == 2
    second = await room.joined(token_b)  # the same user again: no second user_joined
    second.close()
    await watcher.say("marker")
    assert (await watcher.receive_type("new_message", "user_joined", "user_left"))["type"] == "new_message"
    first.close()
    left = await watcher.receive_type("user_left")
    assert left["user"]["id"] == attendee["id"] and left["online_count"] == 1


async def test_leave_chat_tells_the_room_and_keeps_the_connection(room):
    await room.create(attendees=1)
    (_, token_a), (attendee, token_b) = room.members
    watcher, leaver = await room.joined(token_a), await room.joined(token_b)
    await leaver.send({"type": "leave_chat"})
    left = await watcher.receive_type("user_left")
    assert left["user"]["id"] == attendee["id"] and left["online_count"] == 1
    await leaver.say("still here?")
    assert (await leaver.receive_type("error"))["code"] == "not_joined"
    assert await leaver.join() == []


async def test_a_message_before_join_chat_is_refused(room):
    await room.create(attendees=0)
    client = await room.connect(room.organizer_token)
    await client.say("too early", client_msg_id="e1")
    error = await client.receive_type("error")
    assert error["code"] == "not_joined" and error["client_msg_id"] == "e1"
    assert await stored_texts(room.services, room.event_id) == []


async def test_leaving_without_joining_is_refused(room):
    await room.create(attendees=0)
    client = await room.connect(room.organizer_token)
    await client.send({"type": "leave_chat"})
    assert (await client.receive_type("error"))["code"] == "not_joined"


async def test_joining_twice_is_refused(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.send({"type": "join_chat"})
    assert (await client.receive_type("error"))["code"] == "already_joined"


@pytest.mark.parametrize("text", ["", "   \n\t ", "x" * 2001])
async def test_message_text_is_1_to_2000_characters_after_trimming(room, text):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say(text, client_msg_id="t")
    error = await client.receive_type("error")
    assert error["code"] == "invalid_text" and error["client_msg_id"] == "t"
    await client.say(" " + "y" * 2000 + " ")
    assert len((await client.messages(1))[0]["text"]) == 2000


async def test_the_organizer_view_and_stats_count_messages_and_people_online(room):
    await room.create(attendees=2)
    (_, token_a), (_, token_b), (_, token_c) = room.members
    a, b = await room.joined(token_a), await room.joined(token_b)
    await room.joined(token_b)
    await a.say("one")
    await b.say("two")
    await a.messages(2)
    stats = await room.api.call("GET", f"/api/v1/events/{room.event_id}/stats", token=token_c)
    assert stats.status == 200, stats
    assert stats.data["message_count"] == 2 and stats.data["online_count"] == 2
    mine = await room.api.call("GET", "/api/v1/organizer/events", token=room.organizer_token)
    [event] = mine.data["items"]
    assert event["stats"]["message_count"] == 2 and event["stats"]["online_count"] == 2


async def test_new_messages_sort_after_every_stored_one_even_one_stamped_by_a_clock_ahead(room, monkeypatch):
    await room.create(attendees=0)
    year_2100 = datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    with monkeypatch.context() as fast_clock:  # as another process, whose clock is far ahead, wrote it
        fast_clock.setattr(time, "time", lambda: year_2100)
        [ahead] = await room.write_history(["written by a process with a fast clock"])
    # Ids are shaped like ObjectIds, creation seconds first: this one is ahead of any id made now.
    assert ahead["id"] > f"{int(time.time()):08x}" + "f" * 16
    client = await room.joined(room.organizer_token)
    await client.say("now")
    await client.say("later")
    now, later = await client.messages(2)
    assert ahead["id"] < now["id"] < later["id"]
    assert await stored_texts(room.services, room.event_id) == [
        "written by a process with a fast clock", "now", "later"]


async def test_a_message_the_database_cannot_take_is_refused_and_can_be_sent_again(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    store = room.services.store
    working, store.messages = store.messages, Unreachable()
    await client.say("did it go?", client_msg_id="r1")
    error = await client.receive_type("error")
    assert error["code"] == "unavailable" and error["client_msg_id"] == "r1"
    store.messages = working
    await client.say("did it go?", client_msg_id="r1")
    [message] = await client.messages(1)
    assert message["client_msg_id"] == "r1"
    assert await stored_texts(room.services, room.event_id) == ["did it go?"]


async def test_the_handshake_is_a_503_while_the_database_is_down(room):
    await room.create(attendees=0)
    room.services.store.revoked_tokens = Unreachable()
    reply = await room.api.call("GET", f"/ws/chat/{room.event_id}?token={room.organizer_token}", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg=="})
    assert reply.status == 503 and reply.json["code"] == "database_unavailable"


class TestOnADatabaseFileAnotherProcessHoldsLocked:
    """The chat on a SQLite file while another connection to it holds the write lock, as a
    process stuck in a long transaction does: each write waits out the busy timeout, then fails
    for real, as on a full disk."""

    @pytest.fixture
    def services(self, file_services):
        return file_services

    @pytest.mark.settings(**FAST)
    async def test_a_batch_that_cannot_be_written_is_refused_to_its_senders_whole_and_can_be_sent_again(
            self, room, database_path):
        await room.create(attendees=2)
        (_, token_a), (_, token_b), (_, token_c) = room.members
        alice, bob, listener = [await room.joined(token) for token in (token_a, token_b, token_c)]
        await alice.say("before", client_msg_id="a-0")
        [before] = await listener.messages(1)

        locker = sqlite3.connect(database_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            await alice.say("a one", client_msg_id="a-1")
            await alice.say("a two", client_msg_id="a-2")
            await bob.say("b one", client_msg_id="b-1")
            refusals = [await alice.receive_type("error"), await alice.receive_type("error"),
                        await bob.receive_type("error")]
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert [refusal["client_msg_id"] for refusal in refusals] == ["a-1", "a-2", "b-1"]
        for refusal in refusals:
            assert refusal["code"] == "unavailable", refusal
            assert "not stored" in refusal["message"] and "same client_msg_id" in refusal["message"], refusal
        stored = await stored_messages(room.services, room.event_id)
        assert [m["id"] for m in stored] == [before["id"]]  # nothing of the batch was written

        await alice.say("a one", client_msg_id="a-1")
        await alice.say("a two", client_msg_id="a-2")
        resent = await alice.messages(2)
        assert [m["client_msg_id"] for m in resent] == ["a-1", "a-2"]
        await bob.say("b one", client_msg_id="b-1")
        assert [m["client_msg_id"] for m in await bob.messages(3)] == ["a-1", "a-2", "b-1"]
        await alice.messages(1)  # bob's
        await alice.say("a one", client_msg_id="a-1")  # once more: the resend is the one stored
        assert await alice.messages(1) == resent[:1]
        await alice.say("marker")
        seen = await listener.messages(4)  # nothing of the failed batch was published either
        assert [m["text"] for m in seen] == ["a one", "a two", "b one", "marker"]
        stored = await stored_messages(room.services, room.event_id)
        assert [m["id"] for m in stored] == [before["id"]] + [m["id"] for m in seen]
