"""The embedded store as an operator meets it: server.py as a real process on a SQLite file.

What the server answered survives `kill -9` and a restart on the same file; a file that is
not a database stops the start with one line and is left as it was; production must name its
database."""
import asyncio
import json
import os
import signal
import subprocess
import sys

import tornado.websocket

from tests.conftest import PASSWORD, ROOT
from tests.running_server import SAFETY_TIMEOUT, RunningServer, free_port

EVENT = {"title": "Harbour jazz", "description": "Open air", "category": "music",
         "date": "2030-06-01T19:00:00Z", "location_address": "Quay 1",
         "location": {"type": "Point", "coordinates": [2.35, 48.85]}}


def answered(reply, status):
    got, body = reply
    assert got == status, body
    return body["data"]


def login(server, email):
    return answered(server.request("POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD}),
                    200)["token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def send_acknowledged(port, event_id, token, text):
    """Sends one chat message and returns it once the server has echoed it: stored."""
    url = f"ws://127.0.0.1:{port}/ws/chat/{event_id}?token={token}"
    connection = await asyncio.wait_for(tornado.websocket.websocket_connect(url), SAFETY_TIMEOUT)
    try:
        await connection.write_message(json.dumps({"type": "join_chat"}))
        await connection.write_message(json.dumps({"type": "send_message", "text": text, "client_msg_id": "m-1"}))
        while True:
            frame = json.loads(await asyncio.wait_for(connection.read_message(), SAFETY_TIMEOUT))
            if frame["type"] == "new_message":
                return frame["message"]
    finally:
        connection.close()


def test_what_the_server_acknowledged_survives_kill_9_and_a_restart(tmp_path):
    environment = {"SQLITE_PATH": str(tmp_path / "events.sqlite3")}
    with RunningServer(environment) as first:
        organizer = answered(first.request("POST", "/api/v1/auth/register", {
            "username": "ana", "email": "ana@example.com", "password": PASSWORD, "role": "organizer"}), 201)
        answered(first.request("POST", "/api/v1/auth/register", {
            "username": "bob", "email": "bo@example.com", "password": PASSWORD}), 201)
        event = answered(first.request("POST", "/api/v1/events", EVENT, headers=bearer(organizer["token"])), 201)
        bo = login(first, "bo@example.com")
        assert answered(first.request("POST", f"/api/v1/events/{event['id']}/rsvp", headers=bearer(bo)),
                        200)["rsvped"] is True
        message = asyncio.run(send_acknowledged(first.port, event["id"], bo, "see you there"))
        first.process.send_signal(signal.SIGKILL)  # no shutdown of any kind
        first.process.wait(timeout=SAFETY_TIMEOUT)

    with RunningServer(environment) as second:
        bo = login(second, "bo@example.com")  # secrets are new: tokens are not, the account is
        seen = answered(second.request("GET", f"/api/v1/events/{event['id']}", headers=bearer(bo)), 200)
        assert seen["is_rsvped"] is True and seen["rsvp_count"] == 1
        history = answered(second.request("GET", f"/api/v1/events/{event['id']}/messages", headers=bearer(bo)), 200)
        assert [(m["id"], m["text"]) for m in history["items"]] == [(message["id"], "see you there")]


def start_and_wait(environment):
    """(exit code, stderr) of server.py started with `environment`, which must refuse to start."""
    process = subprocess.run([sys.executable, "server.py", "--port", str(free_port())], cwd=ROOT, capture_output=True,
                             text=True, timeout=SAFETY_TIMEOUT, env={"PATH": os.environ["PATH"], **environment})
    return process.returncode, process.stdout + process.stderr


def test_a_file_that_is_not_a_database_stops_the_start_and_is_left_as_it_was(tmp_path):
    path = tmp_path / "events.sqlite3"
    garbage = b"these are someone's notes, not a database\n" * 100
    path.write_bytes(garbage)
    code, output = start_and_wait({"SQLITE_PATH": str(path)})
    assert code == 2
    lines = [line for line in output.splitlines() if str(path) in line]
    assert len(lines) == 1 and "Traceback" not in output, output
    assert path.read_bytes() == garbage


def test_production_without_a_database_setting_refuses_to_start():
    code, output = start_and_wait({"ENV": "production", "SECRET_KEY": "s" * 48, "JWT_SECRET_KEY": "j" * 48})
    assert code == 2
    assert "MONGO_URI" in output and "SQLITE_PATH" in output and "Traceback" not in output
