"""Several real server.py processes serving the same events as one: they share one SQLite file and
one REDIS_URL, as `event-server@<port>` instances on one host do (deploy/, README "Running several
processes").

    with ServerProcesses(2, redis_server.url) as servers:
        first, second = servers
        status, body = first.request("POST", "/api/v1/auth/login", {...})
        ws_url(second, "/ws/chat/1?token=...")

Each item is a tests.running_server.RunningServer (started: READY=1 received), with its own port,
notify socket and log files; only the database file and REDIS_URL are common.
"""
import asyncio
import os
import tempfile
import uuid

from tornado.websocket import websocket_connect

from tests.chat_client import WAIT_SECONDS
from tests.conftest import PASSWORD
from tests.event_builders import event_body
from tests.running_server import RunningServer


class ServerProcesses:
    """`count` server processes; `redis_url` given as REDIS_URL (empty: each is one process alone,
    for a reference); `environment`: more settings for all of them (e.g. CHAT_MAX_CONNECTIONS_PER_USER)."""

    def __init__(self, count, redis_url, environment=None):
        self.directory = tempfile.TemporaryDirectory()
        self.database_path = os.path.join(self.directory.name, "events.sqlite3")
        shared = {"SQLITE_PATH": self.database_path, "REDIS_URL": redis_url,
                  # Secrets the processes share, or a token one issues is refused by the others.
                  "SECRET_KEY": "test-secret-key-shared-by-the-processes-0123456789",
                  "JWT_SECRET_KEY": "test-jwt-secret-shared-by-the-processes-0123456789",
                  **(environment or {})}
        self.servers = [RunningServer(shared) for _ in range(count)]

    def start(self):
        # One after the other: the first creates the SQLite schema, the next ones find it.
        for server in self.servers:
            server.start()
        return self

    def close(self):
        for server in self.servers:
            server.close()
        self.directory.cleanup()

    def __iter__(self):
        return iter(self.servers)

    def __getitem__(self, index):
        return self.servers[index]

    def __len__(self):
        return len(self.servers)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()


def ws_url(server, path):
    """ws://127.0.0.1:<port><path> for one of the processes."""
    return f"ws://127.0.0.1:{server.port}{path}"


def base_url(server):
    return f"http://127.0.0.1:{server.port}"


def registered(server, role="attendee"):
    """A new user registered through `server`: (token, user id)."""
    name = f"{role[:4]}_{uuid.uuid4().hex[:8]}"
    status, reply = server.request("POST", "/api/v1/auth/register", {
        "username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role})
    assert status == 201, reply
    return reply["data"]["token"], reply["data"]["user"]["id"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def published_event(server, organizer_token, *members):
    """An event published through `server` by the organizer, RSVPed by `members` (tokens): its id."""
    status, reply = server.request("POST", "/api/v1/events", event_body(), headers=bearer(organizer_token))
    assert status == 201, reply
    event_id = reply["data"]["id"]
    for token in members:
        status, reply = server.request("POST", f"/api/v1/events/{event_id}/rsvp", headers=bearer(token))
        assert status in (200, 201), reply
    return event_id


async def open_socket(server, path, token):
    """A WebSocket to `path` on `server`, authenticated with `token`."""
    return await asyncio.wait_for(websocket_connect(ws_url(server, f"{path}?token={token}")), WAIT_SECONDS)


async def closed(connection):
    """Reads until the server closes the socket; its close code."""
    while await asyncio.wait_for(connection.read_message(), WAIT_SECONDS) is not None:
        pass
    return connection.close_code
