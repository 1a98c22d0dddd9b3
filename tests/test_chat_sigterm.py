"""SIGTERM on a real server process with chat traffic: everything it read is stored and
acknowledged, every socket gets 1001, the process exits 0."""
import json
import signal
import uuid

import pytest
import tornado.websocket

from tests.conftest import PASSWORD
from tests.event_builders import event_body
from tests.running_server import RunningServer
from tests.stores import discard_store
from tests.test_server_process import open_store_left_by, store_environment

pytestmark = pytest.mark.gen_test(timeout=60)


def registered(server, role):
    name = f"{role[:4]}_{uuid.uuid4().hex[:8]}"
    status, reply = server.request("POST", "/api/v1/auth/register", {
        "username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role})
    assert status == 201, reply
    return reply["data"]["token"]


async def test_sigterm_acknowledges_every_message_it_read_then_closes_sockets_with_1001_and_exits_0():
    database = f"chat_shutdown_{uuid.uuid4().hex[:8]}"
    with RunningServer(store_environment(database)) as server:
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
        store = await open_store_left_by(server, database)
        try:
            stored = [message["client_msg_id"] for message in await store.messages.latest(event_id, 100)]
        finally:
            await discard_store(store)
        assert stored == acknowledged
