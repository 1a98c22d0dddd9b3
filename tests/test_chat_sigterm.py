"""SIGTERM on a real server process with chat traffic: everything it read is stored and
acknowledged, every socket gets 1001, the process exits 0."""
import json
import signal
import uuid

import pymongo
import pytest
import tornado.websocket

from tests.conftest import PASSWORD, TEST_MONGO_URI
from tests.event_builders import event_body
from tests.running_server import RunningServer

pytestmark = pytest.mark.gen_test(timeout=60)


def registered(server, role):
    name = f"{role[:4]}_{uuid.uuid4().hex[:8]}"
    status, reply = server.request("POST", "/api/v1/auth/register", {
        "username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role})
    assert status == 201, reply
    return reply["data"]["token"]


async def test_sigterm_acknowledges_every_message_it_read_then_closes_sockets_with_1001_and_exits_0():
    environment, database = {}, f"chat_shutdown_{uuid.uuid4().hex[:8]}"
    if TEST_MONGO_URI:
        environment.update(MONGO_URI=TEST_MONGO_URI, MONGO_DBNAME=database)
    with RunningServer(environment) as server:
        token = registered(server, "organizer")
        status, reply = server.request("POST", "/api/v1/events", event_body(),
                                       headers={"Authorization": f"Bearer {token}"})
        assert status == 201, reply
        event_id = reply["data"]["id"]
        client = await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{server.port}/ws/chat/{event_id}?token={token}")
        await client.write_message(json.dumps({"type": "join_chat"}))
        sent = [f"bye-{n}" for n in range(8)]  # with the join and the bad frame: the default burst
        for client_msg_id in sent:
            await client.write_message(json.dumps(
                {"type": "send_message", "text": "last words", "client_msg_id": client_msg_id}))
        await client.write_message("not a frame")  # its answer says the eight were read
        acknowledged = []

        async def read_until(done):
            while (text := await client.read_message()) is not None:
                frame = json.loads(text)
                if frame["type"] == "new_message":
                    acknowledged.append(frame["message"]["client_msg_id"])
                if done(frame):
                    return

        await read_until(lambda frame: frame["type"] == "error")
        server.process.send_signal(signal.SIGTERM)
        await read_until(lambda frame: False)
        assert acknowledged == sent
        assert client.close_code == 1001
        assert server.wait() == 0
    if TEST_MONGO_URI:
        with pymongo.MongoClient(TEST_MONGO_URI) as mongo:
            db = mongo.get_default_database(default=database)
            stored = [doc["client_msg_id"] for doc in db.messages.find({}).sort("_id", 1)]
            mongo.drop_database(db.name)
        assert stored == acknowledged
