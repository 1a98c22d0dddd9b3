"""Several real server processes (server.py) sharing one SQLite file and a real redis-server:
one order per room on every process, exact `since` replay on any process, presence counted once,
Redis going away and coming back during traffic, a process killed with kill -9."""
import asyncio
import time
import types

import pytest
import redis.asyncio

from cluster.presence import GHOST_BOUND_SECONDS, HEARTBEAT_SECONDS
from domain.validation import schema_validator
from tests.chat_client import ChatClient, eventually
from tests.processes import ServerProcesses, base_url, bearer, published_event, registered
from tests.running_server import RunningServer

pytestmark = pytest.mark.gen_test(timeout=120)

VALIDATOR = types.SimpleNamespace(validator=schema_validator())  # frames checked against their schemas


class Cluster(ServerProcesses):
    """Three processes (tests/processes.py); an event and its members are made through the first."""

    def event_with_members(self, attendees):
        """(event id, [({"id": user id}, token)], the organizer first)."""
        members = [registered(self[0], "organizer")] + [registered(self[0]) for _ in range(attendees)]
        event_id = published_event(self[0], members[0][0], *[token for token, _ in members[1:]])
        return event_id, [({"id": user_id}, token) for token, user_id in members]

    async def connect(self, server, event_id, token):
        return await ChatClient.connect(base_url(server), VALIDATOR, event_id, token)

    def stored(self, event_id, token):
        """The room's messages in stored order, read through the REST history."""
        status, reply = self[-1].request("GET", f"/api/v1/events/{event_id}/messages?limit=100",
                                         headers=bearer(token))
        assert status == 200, reply
        return [message["id"] for message in reply["data"]["items"]][::-1]


@pytest.fixture
def cluster(redis_server):
    with Cluster(3, redis_server.url, {"CHAT_MESSAGES_PER_SECOND": "1000", "CHAT_BURST": "1000"}) as running:
        yield running


def ready(server):
    return server.request("GET", "/readyz")


def metric(server, name):
    status, text = server.request("GET", "/metrics")
    assert status == 200
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_members_on_three_processes_receive_every_message_in_one_order_the_stored_one(cluster):
    event_id, members = cluster.event_with_members(attendees=2)
    clients = []
    for server, (_, token) in zip(cluster, members):
        client = await cluster.connect(server, event_id, token)
        await client.join()
        clients.append(client)
    per_sender = 30
    # Everyone at once: three writers on three processes store into one room at the same moments.
    await asyncio.gather(*[client.say(f"{n} from {index}", client_msg_id=f"{index}-{n}")
                           for n in range(per_sender) for index, client in enumerate(clients)])
    seen = [[m["id"] for m in await client.messages(per_sender * len(clients))] for client in clients]
    assert seen[0] == seen[1] == seen[2]
    assert seen[0] == sorted(seen[0]) and len(set(seen[0])) == per_sender * len(clients)
    assert seen[0] == cluster.stored(event_id, members[0][1])


async def test_a_client_reconnecting_with_since_to_another_process_gets_exactly_what_it_missed(cluster):
    event_id, members = cluster.event_with_members(attendees=2)
    (_, talker_token), (_, other_token), (_, listener_token) = members
    a, b, c = cluster
    talker, other = await cluster.connect(a, event_id, talker_token), await cluster.connect(b, event_id, other_token)
    await talker.join()
    await other.join()
    listener = await cluster.connect(c, event_id, listener_token)
    await listener.join()
    await talker.say("before")
    [seen] = await listener.messages(1)
    listener.close()
    for n in range(5):
        await talker.say(f"missed on a {n}")
        await other.say(f"missed on b {n}")
    missed = [m["id"] for m in await talker.messages(11)][1:]
    back = await cluster.connect(b, event_id, listener_token)
    assert [m["id"] for m in await back.join(since=seen["id"])] == missed
    await other.say("live again")
    assert [m["text"] for m in await back.messages(1)] == ["live again"]


async def test_joining_on_one_process_while_two_others_send_misses_nothing_and_doubles_nothing(cluster):
    event_id, members = cluster.event_with_members(attendees=3)
    a, b, c = cluster
    talkers = [await cluster.connect(server, event_id, token) for server, (_, token) in zip((a, b), members)]
    witness = await cluster.connect(c, event_id, members[2][1])
    for client in (*talkers, witness):
        await client.join()
    latecomer = await cluster.connect(c, event_id, members[3][1])
    for n in range(40):
        await asyncio.gather(talkers[0].say(f"a{n}"), talkers[1].say(f"b{n}"))
        if n == 20:
            await latecomer.send({"type": "join_chat"})
    everything = [m["id"] for m in await witness.messages(80)]
    replay = [m["id"] for m in (await latecomer.receive_type("recent_messages"))["messages"]]
    already = everything.index(replay[-1]) + 1 if replay else 0
    live = [m["id"] for m in await latecomer.messages(len(everything) - already)]
    assert replay + live == everything[already - len(replay):]


LOG_FRAMES = ("new_message", "message_edited", "message_deleted")


def entry_id(frame):
    return frame["message"]["id"] if frame["type"] == "new_message" else frame["id"]


async def log_frames(client, count):
    """The next `count` frames of the room's log (messages, edits, deletions) as (type, entry id)."""
    return [(frame["type"], entry_id(frame)) for frame in [await client.receive_type(*LOG_FRAMES)
                                                           for _ in range(count)]]


async def test_edits_and_deletions_reach_the_other_processes_in_the_rooms_order_and_in_since_replays(cluster):
    event_id, members = cluster.event_with_members(attendees=2)
    (_, author_token), (_, other_token), (_, reader_token) = members
    a, b, c = cluster
    author, other = await cluster.connect(a, event_id, author_token), await cluster.connect(c, event_id, other_token)
    reader = await cluster.connect(b, event_id, reader_token)
    for client in (author, other, reader):
        await client.join()
    await author.say("first")
    await author.say("second")
    first, second = await reader.messages(2)
    # Changes from process a and a message from process c, interleaved: every process sees one order.
    await author.edit(first["id"], "first, edited")
    await other.say("between")
    await author.delete(second["id"])
    seen_by_author = (await log_frames(author, 5))[2:]
    seen_by_reader = await log_frames(reader, 3)
    assert seen_by_reader == seen_by_author
    assert [frame_type for frame_type, _ in seen_by_reader].count("new_message") == 1
    assert {"message_edited", "message_deleted"} <= {frame_type for frame_type, _ in seen_by_reader}
    assert [entry for _, entry in seen_by_reader] == sorted(entry for _, entry in seen_by_reader)
    last_seen = seen_by_reader[-1][1]
    # Away, then back on the third process with `since`: the changes to what it had, and the rest.
    reader.close()
    await author.say("third")
    [third] = await author.messages(1)
    await author.edit(third["id"], "third, edited")
    await author.delete(first["id"])
    edited_third = await author.receive_type("message_edited")
    deleted_first = await author.receive_type("message_deleted")
    back = await cluster.connect(c, event_id, reader_token)
    replay = await back.join_frame(since=last_seen)
    assert [(m["id"], m["text"]) for m in replay["messages"]] == [(third["id"], "third, edited")]
    assert replay["changes"] == [deleted_first] and edited_third["message_id"] == third["id"]
    await author.edit(third["id"], "third, edited again")
    assert (await back.receive_type(*LOG_FRAMES))["text"] == "third, edited again"


async def test_typing_reaches_members_on_the_other_processes_but_not_the_typist(cluster):
    event_id, members = cluster.event_with_members(attendees=1)
    (typist_user, typist_token), (_, watcher_token) = members
    a, b, _ = cluster
    typist, watcher = await cluster.connect(a, event_id, typist_token), await cluster.connect(b, event_id, watcher_token)
    await typist.join()
    await watcher.join()
    await typist.send({"type": "typing"})
    typing = await watcher.receive_type("typing")
    assert typing["user"]["id"] == typist_user["id"] and typing["expires_in"] > 0
    await typist.say("done typing")
    assert (await typist.receive_type("typing", "new_message"))["type"] == "new_message"


async def test_presence_counts_a_user_once_across_processes(cluster):
    event_id, members = cluster.event_with_members(attendees=1)
    (_, watcher_token), (user, token) = members
    a, b, _ = cluster
    watcher = await cluster.connect(a, event_id, watcher_token)
    await watcher.join()
    on_a = await cluster.connect(a, event_id, token)
    await on_a.join()
    joined = await presence_of(watcher, user)
    assert joined["type"] == "user_joined" and joined["online_count"] == 2
    on_b = await cluster.connect(b, event_id, token)
    await on_b.join()  # the same user on a second process: not a second arrival
    await on_a.send({"type": "leave_chat"})  # still in the room through b
    await on_b.send({"type": "leave_chat"})
    left = await presence_of(watcher, user)
    assert left["type"] == "user_left" and left["online_count"] == 1
    status, stats = a.request("GET", f"/api/v1/events/{event_id}/stats",
                              headers={"Authorization": f"Bearer {watcher_token}"})
    assert status == 200 and stats["data"]["online_count"] == 1


async def test_a_process_killed_with_kill_9_leaves_no_ghost_presence_past_the_bound(cluster):
    event_id, members = cluster.event_with_members(attendees=1)
    (_, watcher_token), (user, token) = members
    a, doomed, _ = cluster
    watcher = await cluster.connect(a, event_id, watcher_token)
    await watcher.join()
    ghost = await cluster.connect(doomed, event_id, token)
    await ghost.join()
    assert (await presence_of(watcher, user))["online_count"] == 2
    doomed.process.kill()  # SIGKILL: no shutdown, no user_left of its own
    killed_at = time.monotonic()
    while True:
        try:
            frame = await asyncio.wait_for(presence_of(watcher, user), 1)
            break
        except asyncio.TimeoutError:
            assert time.monotonic() - killed_at < GHOST_BOUND_SECONDS + 5, "the ghost stayed"
    assert frame["type"] == "user_left" and frame["online_count"] == 1


async def test_redis_stopped_and_restarted_during_traffic_loses_nothing_and_everyone_catches_up(
        cluster, redis_server):
    event_id, members = cluster.event_with_members(attendees=2)
    a, b, c = cluster
    on_a, on_b = await cluster.connect(a, event_id, members[0][1]), await cluster.connect(b, event_id, members[1][1])
    for client in (on_a, on_b):
        await client.join()
    await on_a.say("before", client_msg_id="before")
    [before] = await on_b.messages(1)
    assert await on_a.messages(1) == [before]
    listener = await cluster.connect(c, event_id, members[2][1])
    await listener.join()

    redis_server.stop()
    for server in (a, b):
        status, reply = await eventually_async(lambda server=server: _not_ready(server))
        assert reply["code"] == "redis_unavailable" and "Redis" in reply["message"]
    assert metric(a, "redis_up") == 0 and metric(a, "redis_disconnects_total") >= 1
    sent = []
    for n in range(5):  # each acknowledged by its echo to its sender, stored before that
        await on_a.say(f"while away {n}", client_msg_id=f"away-{n}")
        sent.append((await on_a.receive_type("new_message"))["message"])
    listener.close()

    redis_server.start()
    for server in (a, b):
        await eventually_async(lambda server=server: _ready(server))
    assert metric(b, "redis_up") == 1
    # A member of another process, connected all along, gets what it missed, in order.
    caught_up = [m["id"] for m in await on_b.messages(5)]
    assert caught_up == [m["id"] for m in sent]
    await on_b.say("after")
    [after] = await on_b.messages(1)
    # A client reconnecting with `since` to any process gets everything, once.
    back = await cluster.connect(c, event_id, members[2][1])
    replay = [m["text"] for m in await back.join(since=before["id"])]
    assert replay == [f"while away {n}" for n in range(5)] + ["after"]
    assert cluster.stored(event_id, members[0][1]) == [before["id"], *caught_up, after["id"]]


async def test_redis_unreachable_at_start_serves_with_readyz_503_and_a_log_line(redis_server, tmp_path):
    redis_server.stop()
    with RunningServer({"REDIS_URL": redis_server.url, "SQLITE_PATH": str(tmp_path / "e.sqlite3")}) as server:
        status, reply = await eventually_async(lambda: _not_ready(server))
        assert reply["code"] == "redis_unavailable"
        assert server.request("GET", "/healthz")[0] == 200
        assert any(entry["level"] == "error" and "Redis is not answering" in entry["message"]
                   for entry in server.log_entries())
        redis_server.start()
        await eventually_async(lambda: _ready(server))


async def presence_of(client, user):
    """The next user_joined or user_left frame about `user`."""
    while True:
        frame = await client.receive_type("user_joined", "user_left")
        if frame["user"]["id"] == user["id"]:
            return frame


def _not_ready(server):
    status, reply = ready(server)
    return (status, reply) if status == 503 else None


def _ready(server):
    status, reply = ready(server)
    return (status, reply) if status == 200 else None


async def eventually_async(check):
    """`eventually` for a plain (blocking, quick) check: a bound, not a timing."""
    async def checked():
        return check()
    return await eventually(checked)


async def joined_pair(cluster):
    """Two members of a new event, joined: the first on the first process, the second on the second."""
    event_id, ((_, talker_token), (_, listener_token)) = cluster.event_with_members(attendees=1)
    a, b, _ = cluster
    talker, listener = await cluster.connect(a, event_id, talker_token), await cluster.connect(b, event_id, listener_token)
    await talker.join()
    await listener.join()
    return event_id, talker, listener


async def test_a_malformed_message_on_the_chat_channels_does_not_stop_a_process_listening(cluster, redis_server):
    event_id, talker, listener = await joined_pair(cluster)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        # Not JSON, and not UTF-8: from a process that is not one of ours.
        await client.publish(f"chat:batch:{event_id}", b"intruder - {not json")
        await client.publish(f"chat:relay:{event_id}", b"intruder \xff\xfe")
    finally:
        await client.aclose()
    await talker.say("still heard")
    assert (await listener.receive_type("new_message"))["message"]["text"] == "still heard"
    await talker.send({"type": "typing"})
    assert (await listener.receive_type("typing"))["type"] == "typing"


async def test_a_batch_whose_publish_failed_reaches_the_other_processes_by_the_next_heartbeat(cluster, redis_server):
    event_id, talker, listener = await joined_pair(cluster)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        # Every process's pooled command connections go, their subscriptions stay: the next
        # PUBLISH fails while nothing looks down to the listener.
        await client.client_kill_filter(_type="normal", skipme=True)
    finally:
        await client.aclose()
    await talker.say("published late")
    assert (await talker.receive_type("new_message"))["message"]["text"] == "published late"
    received = await asyncio.wait_for(listener.receive_type("new_message"), HEARTBEAT_SECONDS * 3)
    assert received["message"]["text"] == "published late"


async def test_a_process_reaped_while_alive_puts_its_presence_back(cluster, redis_server):
    event_id, members = cluster.event_with_members(attendees=1)
    (_, watcher_token), (_, token) = members
    a, b, _ = cluster
    watcher, member = await cluster.connect(a, event_id, watcher_token), await cluster.connect(b, event_id, token)
    await watcher.join()
    await member.join()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert await client.hlen(f"chat:online:{event_id}") == 2
        # As if the processes' loops had stalled past the alive key's TTL: the next heartbeat of
        # any of them reaps the others.
        await client.delete(*await client.keys("chat:alive:*"))

        async def back():
            return await client.hlen(f"chat:online:{event_id}") == 2 and not await client.keys("chat:reaped:*")
        await asyncio.sleep(HEARTBEAT_SECONDS * 2)  # one heartbeat reaps, the next puts back
        await eventually(back)
    finally:
        await client.aclose()


async def test_a_read_marker_reaches_the_users_devices_on_the_other_processes(cluster):
    event_id, members = cluster.event_with_members(attendees=1)
    (_, talker_token), (_, reader_token) = members
    a, b, _ = cluster
    talker = await cluster.connect(a, event_id, talker_token)
    await talker.join()
    await talker.say("read me")
    said = await talker.receive_type("new_message")
    phone, laptop = await cluster.connect(a, event_id, reader_token), await cluster.connect(b, event_id, reader_token)
    await laptop.join()  # joined or not, each device of the user hears of it
    await phone.send({"type": "mark_read", "id": said["message"]["id"]})
    expected = {"type": "read_marker", "event_id": event_id, "last_read_id": said["message"]["id"]}
    assert await phone.receive_type("read_marker") == expected
    assert await laptop.receive_type("read_marker") == expected


async def test_the_rest_online_count_is_the_same_on_a_process_without_members_in_the_room(cluster):
    event_id, members = cluster.event_with_members(attendees=1)
    (_, organizer_token), (user, token) = members
    a, _, c = cluster
    member = await cluster.connect(a, event_id, token)
    await member.join()
    assert (await presence_of(member, user))["online_count"] == 1  # counted in Redis by now
    for server in (a, c):  # c has no socket in the room: it was told of no count
        status, stats = server.request("GET", f"/api/v1/events/{event_id}/stats", headers=bearer(organizer_token))
        assert status == 200 and stats["data"]["online_count"] == 1
