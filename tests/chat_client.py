"""A chat client for the tests: a real WebSocket connection to the running app.

Every frame it receives is checked against the schema documented for its type, as the REST
answers are checked against the OpenAPI document.
"""
import asyncio
import json

import tornado.httpclient
import tornado.websocket

from domain.times import utcnow
from tests.event_builders import publish

WAIT_SECONDS = 10  # a bound on every wait, never a timing assertion
SERVER_FRAME_SCHEMAS = {"recent_messages": "ChatRecentMessages", "user_joined": "ChatUserJoined",
                        "user_left": "ChatUserLeft", "new_message": "ChatNewMessage", "error": "ChatError",
                        "message_edited": "ChatMessageEdited", "message_deleted": "ChatMessageDeleted",
                        "read_marker": "ChatReadMarker", "typing": "ChatUserTyping"}


async def write_history(store, event_id, author, texts):
    """Stores messages from `author` (a user's JSON) through the store, as if sent while nobody
    watched (far faster than through a socket); returns their records, oldest first."""
    drafts = [{"user_id": author["id"], "username": author["username"], "text": text, "timestamp": utcnow(),
               "client_msg_id": None} for text in texts]
    return [message for message, _ in await store.messages.append(event_id, drafts)]


async def eventually(check):
    """Polls `check` (an async callable) until it returns something true; a bound, not a timing."""
    for _ in range(int(WAIT_SECONDS / 0.02)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


def chat_url(base_url, event_id, token=None):
    url = base_url.replace("http://", "ws://", 1) + f"/ws/chat/{event_id}"
    return url + (f"?token={token}" if token else "")


class ChatClient:
    def __init__(self, connection, validator):
        self.connection = connection
        self.validator = validator  # None: frames are not checked (for clients that read thousands)

    @classmethod
    async def connect(cls, base_url, services, event_id, token=None, headers=None, checked=True):
        request = tornado.httpclient.HTTPRequest(chat_url(base_url, event_id, token), headers=headers or {})
        connection = await asyncio.wait_for(tornado.websocket.websocket_connect(request), WAIT_SECONDS)
        return cls(connection, services.validator if checked else None)

    async def send(self, frame):
        await self.connection.write_message(frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self):
        """The next frame, checked against its schema; None once the server closed."""
        text = await asyncio.wait_for(self.connection.read_message(), WAIT_SECONDS)
        if text is None:
            return None
        frame = json.loads(text)
        if self.validator:
            self.validator.validate(SERVER_FRAME_SCHEMAS[frame["type"]], frame)
        return frame

    async def receive_type(self, *types):
        """The next frame of one of `types`, skipping others (presence, mostly)."""
        while True:
            frame = await self.receive()
            assert frame is not None, f"closed ({self.close_code}) while waiting for {types}"
            if frame["type"] in types:
                return frame

    async def join(self, since=None):
        """Joins and returns the replayed messages."""
        return (await self.join_frame(since))["messages"]

    async def join_frame(self, since=None):
        """Joins and returns the whole recent_messages frame (messages and changes)."""
        await self.send({"type": "join_chat", **({"since": since} if since else {})})
        return await self.receive_type("recent_messages")

    async def edit(self, message_id, text):
        await self.send({"type": "edit_message", "id": message_id, "text": text})

    async def delete(self, message_id):
        await self.send({"type": "delete_message", "id": message_id})

    async def say(self, text, client_msg_id=None):
        await self.send({"type": "send_message", "text": text,
                         **({"client_msg_id": client_msg_id} if client_msg_id else {})})

    async def messages(self, count):
        """The next `count` messages of new_message frames, in arrival order."""
        return [(await self.receive_type("new_message"))["message"] for _ in range(count)]

    async def closed(self):
        """Reads until the server closes; returns the close code."""
        while await asyncio.wait_for(self.connection.read_message(), WAIT_SECONDS) is not None:
            pass
        return self.close_code

    @property
    def close_code(self):
        return self.connection.close_code

    def close(self):
        self.connection.close()


class ChatRoom:
    """An event with its organizer and RSVPed attendees, ready to chat."""

    def __init__(self, api, base_url, services):
        self.api, self.base_url, self.services = api, base_url, services
        self.clients = []

    async def create(self, attendees=2):
        self.organizer, self.organizer_token = await self.api.register(role="organizer")
        self.event = await publish(self.api, self.organizer_token)
        self.event_id = self.event["id"]
        self.members = [(self.organizer, self.organizer_token)]
        for _ in range(attendees):
            self.members.append(await self.rsvped_user())
        return self

    async def rsvped_user(self):
        user, token = await self.api.register()
        reply = await self.api.call("POST", f"/api/v1/events/{self.event_id}/rsvp", token=token)
        assert reply.status == 200, reply
        return user, token

    async def connect(self, token, **options):
        client = await ChatClient.connect(self.base_url, self.services, self.event_id, token, **options)
        self.clients.append(client)
        return client

    async def joined(self, token, **options):
        client = await self.connect(token, **options)
        await client.join()
        return client

    async def write_history(self, texts):
        """Messages from the organizer, stored as `write_history` does; returns their records."""
        return await write_history(self.services.store, self.event_id, self.organizer, texts)

    def close_all(self):
        for client in self.clients:
            client.close()
