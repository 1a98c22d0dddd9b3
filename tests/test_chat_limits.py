"""Chat handshake refusals and per-connection limits: tokens, membership, origin, caps, rate,
bad frames, oversize frames, and clients that stop reading."""
import asyncio
import base64
import json
import logging
import os
import socket
import struct

import pytest
import tornado.httpclient
import tornado.iostream
from prometheus_client.parser import text_string_to_metric_families

from domain.chat import MAX_CATCH_UP
from handlers.chat import _plainly_valid_send
from tests.chat_client import WAIT_SECONDS, ChatClient, retry_after
from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}


async def handshake(room, event_id, token=None, headers=None):
    """The HTTP answer to an upgrade request that the server refuses."""
    query = f"?token={token}" if token else ""
    return await room.api.call("GET", f"/ws/chat/{event_id}{query}", headers={**UPGRADE, **(headers or {})})


async def refused_status(room, event_id, token=None, headers=None):
    """The status with which a real WebSocket client is turned away."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as refusal:
        await ChatClient.connect(room.base_url, room.services, event_id, token, headers=headers)
    return refusal.value.code


# --- the handshake ---------------------------------------------------------------------------

async def test_a_member_connects_with_the_token_in_the_query_or_the_header(room):
    await room.create(attendees=1)
    (_, organizer_token), (_, attendee_token) = room.members
    assert await (await room.connect(organizer_token)).join() == []
    by_header = await room.connect(None, headers={"Authorization": f"Bearer {attendee_token}"})
    assert await by_header.join() == []


async def test_no_token_is_refused_with_401_before_the_upgrade(room):
    await room.create(attendees=0)
    assert await refused_status(room, room.event_id) == 401
    reply = await handshake(room, room.event_id)
    assert reply.status == 401 and reply.json["code"] == "not_authenticated"


async def test_a_bad_token_is_refused_with_401(room):
    await room.create(attendees=0)
    assert await refused_status(room, room.event_id, token="not.a.jwt") == 401
    reply = await handshake(room, room.event_id, token="not.a.jwt")
    assert reply.status == 401 and reply.json["code"] == "token_invalid"


async def test_a_revoked_token_is_refused_with_401(room):
    await room.create(attendees=0)
    assert (await room.api.call("POST", "/api/v1/auth/logout", token=room.organizer_token)).status == 200
    reply = await handshake(room, room.event_id, token=room.organizer_token)
    assert reply.status == 401 and reply.json["code"] == "token_revoked"


async def test_an_unknown_or_malformed_event_is_a_404(room):
    await room.create(attendees=0)
    for event_id in (unknown_id(), "nope"):
        assert await refused_status(room, event_id, token=room.organizer_token) == 404
        reply = await handshake(room, event_id, token=room.organizer_token)
        assert reply.status == 404 and reply.json["code"] == "event_not_found"


async def test_someone_neither_organizer_nor_rsvped_is_refused_with_403(room):
    await room.create(attendees=0)
    _, stranger = await room.api.register()
    _, other_organizer = await room.api.register(role="organizer")
    for token in (stranger, other_organizer):
        assert await refused_status(room, room.event_id, token=token) == 403
        reply = await handshake(room, room.event_id, token=token)
        assert reply.status == 403 and reply.json["code"] == "not_a_member"


async def test_cancelling_the_rsvp_closes_the_door(room):
    await room.create(attendees=1)
    _, token = room.members[1]
    assert (await room.api.call("DELETE", f"/api/v1/events/{room.event_id}/rsvp", token=token)).status == 200
    assert await refused_status(room, room.event_id, token=token) == 403


@pytest.mark.settings(allowed_origins=["https://app.example"])
async def test_browser_origins_must_be_allowed_and_native_apps_send_none(room):
    await room.create(attendees=0)
    token = room.organizer_token
    assert await refused_status(room, room.event_id, token, headers={"Origin": "https://evil.example"}) == 403
    reply = await handshake(room, room.event_id, token, headers={"Origin": "https://evil.example"})
    assert reply.status == 403 and reply.json["code"] == "origin_not_allowed"
    assert await (await room.connect(token, headers={"Origin": "https://app.example"})).join() == []
    assert await (await room.connect(token)).join() == []


@pytest.mark.settings(allowed_origins=["https://app.example.com"])
async def test_a_chat_handshake_from_a_foreign_origin_is_refused(room):
    # Cross-site WebSocket hijacking: a page elsewhere must not open the chat in a user's name.
    await room.create(attendees=0)
    for origin in ("https://app.example.com.evil.com", "https://evilapp.example.com", "http://app.example.com",
                   "https://app.example.com:8443", "null", "*", ""):
        reply = await handshake(room, room.event_id, room.organizer_token, headers={"Origin": origin})
        assert reply.status == 403 and reply.json["code"] == "origin_not_allowed", origin


@pytest.mark.settings(chat_max_connections_per_user=2)
async def test_connections_beyond_the_per_user_cap_are_refused_with_429(room):
    await room.create(attendees=0)
    token = room.organizer_token
    first = await room.connect(token)
    await room.connect(token)
    assert await refused_status(room, room.event_id, token) == 429
    reply = await handshake(room, room.event_id, token)
    assert reply.status == 429 and reply.json["code"] == "too_many_connections"
    assert int(reply.headers["Retry-After"]) >= 1
    first.close()
    await first.closed()  # the server answered the close, so it has let the connection go
    assert await (await room.connect(token)).join() == []


async def test_tokens_never_reach_the_access_log(room, caplog):
    await room.create(attendees=0)
    with caplog.at_level(logging.INFO, logger="access"):
        await room.connect(room.organizer_token)
        await handshake(room, room.event_id, token=room.organizer_token + "x")
    lines = [record.getMessage() for record in caplog.records if record.name == "access"]
    assert any("/ws/chat/" in line and " 101" in line for line in lines)
    assert any("/ws/chat/" in line and " 401" in line for line in lines)
    assert not any(room.organizer_token in line for line in lines)
    assert all("token=[redacted]" in line for line in lines if "/ws/chat/" in line)


async def test_a_handshake_with_a_query_parameter_other_than_token_is_a_400(room):
    # `since` belongs in the join_chat frame: in the URL it would be dropped, and the catch-up with it.
    await room.create(attendees=0)
    message_id = (await room.write_history(["hello"]))[0]["id"]
    token = room.organizer_token
    reply = await handshake(room, room.event_id, f"{token}&since={message_id}")
    assert (reply.status, reply.json["code"]) == (400, "unknown_query_parameter"), reply
    assert reply.json["accepted"] == ["token"] and reply.json["errors"][0]["path"] == "since"
    assert token not in reply.text
    reply = await room.api.call("GET", f"/ws/chat/{room.event_id}?access_token={token}", headers=UPGRADE)
    assert reply.status == 400 and reply.json["errors"][0]["suggestion"] == "token"
    assert await refused_status(room, room.event_id, f"{token}&since={message_id}") == 400
    assert await (await room.connect(token)).join() != []


async def test_a_plain_http_request_is_told_to_upgrade(room):
    await room.create(attendees=0)
    reply = await room.api.call("GET", f"/ws/chat/{room.event_id}?token={room.organizer_token}")
    assert reply.status == 400 and reply.json["code"] == "websocket_required"


# --- limits on an open connection ------------------------------------------------------------

@pytest.mark.settings(chat_burst=3, chat_messages_per_second=0.001)
async def test_frames_beyond_the_rate_limit_get_rate_limited_errors(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)  # join_chat takes one of the 3
    for n in range(4):
        await client.say(f"m{n}", client_msg_id=f"id{n}")
    frames = [await client.receive_type("new_message", "error") for _ in range(4)]
    assert [f["message"]["text"] for f in frames if f["type"] == "new_message"] == ["m0", "m1"]
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["code"], e["client_msg_id"]) for e in errors] == [("rate_limited", "id2"), ("rate_limited", "id3")]
    assert all(e["retry_after"] > 0 for e in errors)
    assert client.close_code is None


@pytest.mark.parametrize("frame, code", [
    ("not json", "invalid_frame"),
    ("[1, 2]", "invalid_frame"),
    ('{"text": "no type"}', "invalid_frame"),
    ('{"type": 7}', "invalid_frame"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "send_message"}', "invalid_frame"),
    ('{"type": "send_message", "text": 42}', "invalid_frame"),
    ('{"type": "send_message", "text": "hi", "room": "other"}', "invalid_frame"),
    ('{"type": "send_message", "text": "hi", "client_msg_id": ""}', "invalid_frame"),
    ('{"type": "send_message", "text": "hi", "client_msg_id": null}', "invalid_frame"),
    ('{"type": "send_message", "text": "hi", "client_msg_id": "%s"}' % ("x" * 65), "invalid_frame"),
    ('{"type": "leave_chat", "text": "hi"}', "invalid_frame"),
    ("[" * 10000 + "]" * 10000, "invalid_frame"),
    ('{"type": "send_message", "text": "\\ud800 half an emoji"}', "invalid_text"),
    ('{"type": "send_message", "text": "hi", "client_msg_id": "\\udfff"}', "invalid_frame"),
])
async def test_a_bad_frame_gets_an_error_and_the_connection_stays_open(room, frame, code):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.send(frame)
    error = await client.receive_type("error")
    assert error["code"] == code
    await client.say("still open")
    assert [m["text"] for m in await client.messages(1)] == ["still open"]


async def test_a_binary_frame_gets_an_error(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.connection.write_message(b'{"type": "leave_chat"}', binary=True)
    assert (await client.receive_type("error"))["code"] == "invalid_frame"


async def test_a_frame_over_64_kib_closes_the_connection_with_1009(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say("x" * (64 * 1024 + 1))
    assert await client.closed() == 1009


async def test_a_frame_just_under_64_kib_is_only_a_too_long_message(room):
    await room.create(attendees=0)
    client = await room.joined(room.organizer_token)
    await client.say("x" * (64 * 1024 - 100))
    assert (await client.receive_type("error"))["code"] == "invalid_text"


# --- a client that stops reading --------------------------------------------------------------

def masked_frame(frame):
    """A client's text frame (clients must mask; a zero key leaves the payload as it is)."""
    payload = json.dumps(frame).encode()
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload


class StuckClient:
    """A WebSocket client that completes the handshake and joins, then never reads again."""

    def __init__(self, stream):
        self.stream = stream

    @classmethod
    async def connect(cls, base_url, event_id, token, since=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
        stream = tornado.iostream.IOStream(sock)
        port = int(base_url.rsplit(":", 1)[1])
        await stream.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.write((f"GET /ws/chat/{event_id}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), WAIT_SECONDS)
        assert head.startswith(b"HTTP/1.1 101"), head
        await stream.write(masked_frame({"type": "join_chat", **({"since": since} if since else {})}))
        return cls(stream)

    async def close_code(self):
        """Reads the frames the server had buffered, up to its close frame; returns its code."""
        buffer, at = b"", 0
        while True:
            buffer = buffer[at:] + await asyncio.wait_for(self.stream.read_bytes(1 << 20, partial=True), WAIT_SECONDS)
            at = 0
            while len(buffer) - at >= 2:
                length, start = buffer[at + 1] & 0x7F, at + 2
                if length >= 126:
                    size = 2 if length == 126 else 8
                    if len(buffer) < start + size:
                        break
                    length, start = int.from_bytes(buffer[start:start + size], "big"), start + size
                if len(buffer) < start + length:
                    break
                if buffer[at] & 0x0F == 0x8:
                    self.close_reason = buffer[start + 2:start + length].decode()
                    return struct.unpack("!H", buffer[start:start + 2])[0]
                at = start + length


@pytest.mark.settings(chat_max_buffer_bytes=16384, chat_messages_per_second=10_000, chat_burst=10_000)
async def test_a_client_that_never_reads_is_disconnected_while_the_others_keep_receiving(room):
    await room.create(attendees=2)
    (_, talker_token), (_, witness_token), (stuck_user, stuck_token) = room.members
    talker, witness = await room.joined(talker_token), await room.joined(witness_token)
    stuck = await StuckClient.connect(room.base_url, room.event_id, stuck_token)
    joined = await witness.receive_type("user_joined")
    while joined["user"]["id"] != stuck_user["id"]:
        joined = await witness.receive_type("user_joined")
    sent = 0
    left = None
    while left is None:
        for _ in range(20):
            await talker.say(f"{sent:04d} " + "\U0001F600" * 1990)  # 12 bytes each in ASCII JSON
            sent += 1
        assert sent <= 2000, "the stuck client was never dropped"
        frames = [await witness.receive_type("new_message", "user_left") for _ in range(20)]
        left = next((f for f in frames if f["type"] == "user_left"), None)
    assert left["user"]["id"] == stuck_user["id"] and left["online_count"] == 2
    assert room.services.chat.hub.dropped_slow_consumers == 1
    await talker.say("after the drop")
    while (await witness.receive_type("new_message"))["message"]["text"] != "after the drop":
        pass
    assert await stuck.close_code() == 1013
    assert retry_after(stuck.close_reason) == 10
    stuck.stream.close()


@pytest.mark.parametrize("frame", [
    {"type": "send_message", "text": "hi"},
    {"type": "send_message", "text": "", "client_msg_id": "x" * 64},
    {"type": "send_message", "text": "hi", "client_msg_id": "x" * 65},
    {"type": "send_message", "text": "hi", "client_msg_id": ""},
    {"type": "send_message", "text": "hi", "client_msg_id": None},
    {"type": "send_message", "text": None},
    {"type": "send_message"},
    {"type": "send_message", "text": "hi", "extra": 1},
    {"type": "join_chat"},
])
async def test_send_frames_passed_without_the_schema_are_ones_the_schema_accepts(services, frame):
    if _plainly_valid_send(frame):
        services.validator.validate("ChatSend", frame)


@pytest.mark.settings(chat_max_buffer_bytes=16384)
@pytest.mark.gen_test(timeout=30)  # 3 s alone: 501 stored messages and a 12 MB replay; more on a busy machine
async def test_a_client_that_does_not_read_its_own_answers_is_disconnected(room):
    await room.create(attendees=0)
    # Stored before anyone joins: stored later, behind the message log's back as another process
    # would, the room feed would deliver it to the room before the replay (domain/chat_feed.py).
    history = await room.write_history(["\U0001F600" * 2000] * (MAX_CATCH_UP + 1))
    await room.joined(room.organizer_token)  # so that the stuck connection's join announces nothing
    stuck = await StuckClient.connect(room.base_url, room.event_id, room.organizer_token,
                                      since=history[0]["id"])  # a 12 MB replay, never read
    await stuck.stream.write(masked_frame({"type": "dance"}))  # its answer finds that backlog
    assert await stuck.close_code() == 1013
    assert retry_after(stuck.close_reason) == 10
    assert room.services.chat.hub.dropped_slow_consumers == 0  # not a broadcast: its own answer
    stuck.stream.close()


@pytest.mark.settings(chat_ping_interval_seconds=0.3)
async def test_a_peer_that_does_not_answer_pings_is_closed(room):
    await room.create(attendees=0)
    silent = await StuckClient.connect(room.base_url, room.event_id, room.organizer_token)
    assert await silent.close_code() == 1000
    assert silent.close_reason == "ping timed out"
    silent.stream.close()
    healthy = await room.joined(room.organizer_token)  # a client library answers pings by itself
    await asyncio.sleep(1)
    await healthy.say("still connected")
    assert [m["text"] for m in await healthy.messages(1)] == ["still connected"]


# --- the figures ---------------------------------------------------------------------------------

@pytest.mark.settings(chat_burst=3, chat_messages_per_second=0.001)
async def test_the_chat_counts_its_sockets_rooms_messages_and_refusals_in_the_metrics(room):
    await room.create(attendees=1)
    (_, token_a), (_, token_b) = room.members
    sender, listener = await room.joined(token_a), await room.joined(token_b)
    await sender.say("counted")
    await sender.say("counted too")
    await sender.say("one too many")
    await listener.messages(2)
    assert (await sender.receive_type("error"))["code"] == "rate_limited"
    text = (await room.api.call("GET", "/metrics")).text
    figures = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert figures[("chat_open_websockets", frozenset())] == 2
    assert figures[("chat_rooms", frozenset())] == 1
    assert figures[("chat_messages_received_total", frozenset())] == 2
    assert figures[("chat_messages_sent_total", frozenset())] == 4  # two messages, two members
    assert figures[("rate_limit_refusals_total", frozenset({("route", r"/ws/chat/(?P<event_id>[^/]+)")}))] == 1
