"""SIGTERM during traffic, on a real server process: requests in flight finish, new connections
are refused, the process exits 0. And the shutdown hooks the chat uses to say goodbye.

The process keeps its data in RunningServer's SQLite file, or in a database of its own on the
test MongoDB when TEST_MONGO_URI is set; the tests read what it stored once it has ended."""
import asyncio
import http.client
import json
import socket
import uuid

import pytest
import tornado.httpserver
import tornado.testing
from prometheus_client.parser import text_string_to_metric_families

import server as server_module
from handlers.app import make_app
from storage.sqlite import SqliteStore
from tests.conftest import PASSWORD
from tests.running_server import SAFETY_TIMEOUT, RunningServer
from tests.stores import TEST_MONGO_URI, discard_store


def store_environment(database):
    """The environment that points a server process at the test MongoDB's `database`, if there is one."""
    return {"MONGO_URI": TEST_MONGO_URI, "MONGO_DBNAME": database} if TEST_MONGO_URI else {}


async def open_store_left_by(server, database):
    """The store a server process that has ended kept its data in, opened for reading."""
    if TEST_MONGO_URI:
        from storage.mongo import MongoStore
        store = MongoStore.connect(TEST_MONGO_URI, database, 3000)
    else:
        store = SqliteStore(server.database_path)
    await store.open()
    return store


class HeldRequest:
    """A registration sent all but its last body byte: in flight until the test releases it."""

    def __init__(self, port):
        self.username = f"held_{uuid.uuid4().hex[:8]}"
        body = json.dumps({"username": self.username, "email": f"{self.username}@example.com",
                           "password": PASSWORD}).encode()
        head = (f"POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
        self.socket.sendall(head + body[:-1])
        self._rest = body[-1:]

    def release(self):
        """Sends the last byte; returns (status, JSON body)."""
        self.socket.sendall(self._rest)
        response = http.client.HTTPResponse(self.socket)
        response.begin()
        status, body = response.status, json.loads(response.read())
        self.socket.close()
        return status, body


def requests_in_flight(server):
    """The server's own count, minus the /metrics request asking."""
    status, text = server.request("GET", "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return int(families["http_requests_in_flight"].samples[0].value) - 1


def wait_until_in_flight(server, count):
    for _ in range(500):
        if requests_in_flight(server) == count:
            return
    raise AssertionError(f"never saw {count} requests in flight")


def test_sigterm_lets_requests_in_flight_finish_refuses_new_connections_and_exits_0():
    database = f"shutdown_{uuid.uuid4().hex[:8]}"
    # Production cost: the hashing happens after SIGTERM.
    environment = {"BCRYPT_LOG_ROUNDS": "12", **store_environment(database)}
    with RunningServer(environment) as server:
        held = [HeldRequest(server.port) for _ in range(3)]
        wait_until_in_flight(server, 3)

        server.terminate()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT)
        answers = [request.release() for request in held]

        assert [status for status, _ in answers] == [201, 201, 201]
        assert all(body["data"]["token"] for _, body in answers)
        assert server.wait() == 0
        messages = [entry["message"] for entry in server.log_entries()]
        assert any("3 requests in flight" in message for message in messages)
        assert not any("still in flight" in message for message in messages)

        async def stored_usernames():
            store = await open_store_left_by(server, database)
            try:
                return [(await store.users.get(body["data"]["user"]["id"]) or {}).get("username")
                        for _, body in answers]
            finally:
                await discard_store(store)
        assert asyncio.run(stored_usernames()) == [request.username for request in held]


def test_a_request_still_running_at_the_deadline_is_cut_off_and_the_process_still_exits_0():
    with RunningServer({"SHUTDOWN_GRACE_SECONDS": "0.2"}) as server:
        stuck = HeldRequest(server.port)
        wait_until_in_flight(server, 1)
        server.terminate()
        assert server.wait() == 0
        assert stuck.socket.recv(1) == b""  # closed without an answer: it was never acknowledged
        messages = [entry["message"] for entry in server.log_entries()]
        assert any("1 requests still in flight" in message for message in messages)


@pytest.mark.gen_test
async def test_shutdown_hooks_run_in_order_and_a_failing_one_does_not_stop_the_rest(services):
    calls = []

    async def close_chat_sockets():
        calls.append("chat")

    async def broken():
        calls.append("broken")
        raise RuntimeError("hook failed")

    async def flush_something():
        calls.append("flush")

    services.shutdown_hooks.extend([close_chat_sockets, broken, flush_something])
    http_server = tornado.httpserver.HTTPServer(make_app(services))
    listening, _ = tornado.testing.bind_unused_port()
    http_server.add_sockets([listening])
    http_server.stop()

    await server_module.shut_down(http_server, services, grace_seconds=5)
    assert calls == ["chat", "broken", "flush"]



def test_a_port_in_use_stops_the_start_with_one_json_line_and_exit_code_1():
    server = RunningServer()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", server.port))
            taken.listen()
            server.launch()
            assert server.wait() == 1
        assert f"cannot listen on 127.0.0.1:{server.port}" in server.log_entries()[-1]["message"]
        assert "Traceback" not in server.output()
    finally:
        server.close()
