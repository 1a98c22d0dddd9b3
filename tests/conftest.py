"""Test fixtures: the real application on a fresh database per test, and a small JSON client.

The database is SQLite in memory, or the store TEST_STORE names (tests/stores.py: "sqlite",
"mongomock", or "mongodb" at TEST_MONGO_URI, which each test gets its own database of). Settings come from settings.yaml with
`@pytest.mark.settings(name=value, ...)` on top; bcrypt runs at its lowest cost unless a test
asks for more.
"""
import email
import itertools
import json
import os
import pathlib
import re
import shutil
import time
import uuid

import jsonschema
import pytest
import tornado.httpclient
from aiosmtpd.controller import Controller

from domain.mailer import EMAIL_TEXT
from domain.settings import load_settings
from handlers.app import build_services, make_app, route_table
from handlers.openapi import openapi_path
from storage.sqlite import SqliteStore
from tests.chat_client import ChatRoom
from tests.redis_server import RedisServer
from tests.running_server import free_port
from tests.stores import DEFAULT_STORE, discard_store, new_store, open_store

ROOT = pathlib.Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"

_names = itertools.count(1)


def make_settings(**overrides):
    # Every test client registers from 127.0.0.1: the per-address registration limit is tested
    # where a test asks for it.
    values = {"bcrypt_rounds": 4, "public_base_url": "http://testserver", "registrations_per_address": 100_000,
              **overrides}
    return load_settings(ROOT / "settings.yaml", environ={}, **values)


def console_emails(caplog):
    """The full text of each email the console mailer printed during the test (on stderr, when
    the server runs), oldest first. The test sets caplog's level to INFO."""
    return [getattr(record, EMAIL_TEXT) for record in caplog.records if hasattr(record, EMAIL_TEXT)]


@pytest.fixture
def settings(request):
    marker = request.node.get_closest_marker("settings")
    return make_settings(**(marker.kwargs if marker else {}))


@pytest.fixture
def store_name():
    """The store the app runs on. A module runs its tests on every store by overriding this
    with a fixture parametrized over tests.stores.STORE_NAMES."""
    return DEFAULT_STORE


@pytest.fixture
def services(settings, io_loop, store_name):
    store = new_store(store_name)
    io_loop.run_sync(lambda: open_store(store))
    services = build_services(settings, store=store)
    yield services
    io_loop.run_sync(services.photo_workers.close)
    io_loop.run_sync(lambda: discard_store(store))


@pytest.fixture
def database_path(tmp_path):
    return str(tmp_path / "events.sqlite3")


@pytest.fixture
def file_services(settings, io_loop, database_path):
    """The app on a SQLite file whose writes give up after 200 ms of waiting for the lock: for
    tests in which another connection holds the file locked, as a process stuck in a long
    transaction does, so that writes fail for real."""
    store = SqliteStore(database_path, busy_timeout_ms=200)
    io_loop.run_sync(store.open)
    services = build_services(settings, store=store)
    yield services
    io_loop.run_sync(services.photo_workers.close)
    io_loop.run_sync(store.close)


@pytest.fixture
def app(services):
    return make_app(services)


class Reply:
    def __init__(self, response):
        self.status = response.code
        self.headers = response.headers
        self.text = response.body.decode("utf-8", "replace") if response.body else ""
        try:
            self.json = json.loads(self.text) if self.text else None
        except ValueError:
            self.json = None

    @property
    def data(self):
        return self.json["data"]

    def __repr__(self):
        return f"<Reply {self.status} {self.text[:300]}>"


class ContractCheck:
    """Checks every response the suite receives against the OpenAPI document the server publishes."""

    def __init__(self, document):
        self.document = document
        self.routes = []
        for pattern, _ in route_table():
            path, _ = openapi_path(pattern)
            if path in document["paths"]:
                self.routes.append((re.compile(pattern + "$"), document["paths"][path]))

    def check(self, method, path, reply):
        operation = next((item.get(method.lower()) for regex, item in self.routes if regex.match(path)), None)
        if operation is None or method == "OPTIONS":
            if reply.status >= 400:
                self._validate({"$ref": "#/components/schemas/Error"}, reply)
            return
        documented = operation["responses"].get(str(reply.status))
        assert documented, f"{method} {path} answered {reply.status}, which its documentation does not list"
        for content_type, media in documented.get("content", {}).items():
            if content_type == "application/json":
                self._validate(media["schema"], reply)

    def _validate(self, schema, reply):
        assert reply.json is not None, f"not JSON: {reply}"
        root = {**schema, "components": self.document["components"]}
        errors = list(jsonschema.Draft202012Validator(root).iter_errors(reply.json))
        assert not errors, f"response does not match its documented schema: {errors[0].message} in {reply}"


class Api:
    """Talks to the app under test as a mobile client would: JSON over HTTP."""

    def __init__(self, http_client, base_url, contract=None):
        self.http = http_client
        self.base_url = base_url
        self.contract = contract

    async def call(self, method, path, body=None, token=None, headers=None, raw=None):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            raw = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if raw is None and method in ("POST", "PUT", "PATCH"):
            raw = ""
        request = tornado.httpclient.HTTPRequest(
            self.base_url + path, method=method, headers=headers, body=raw,
            allow_nonstandard_methods=True, request_timeout=60)
        response = await self.http.fetch(request, raise_error=False)
        reply = Reply(response)
        if self.contract:
            self.contract.check(method, path.split("?")[0], reply)
        return reply

    async def register(self, role="attendee", username=None, email=None, password=PASSWORD):
        """A new user; returns (user, token)."""
        n = next(_names)
        username = username or f"user{n}_{uuid.uuid4().hex[:6]}"
        reply = await self.call("POST", "/api/v1/auth/register", {
            "username": username, "email": email or f"{username}@example.com",
            "password": password, "role": role})
        assert reply.status == 201, reply
        return reply.data["user"], reply.data["token"]

    async def register_follower(self, users):
        """A new user following each of `users` (user JSON), whose feed therefore shows their
        activities; returns (user, token)."""
        follower, token = await self.register()
        for user in users:
            assert (await self.call("POST", f"/api/v1/users/{user['id']}/follow", token=token)).status == 200
        return follower, token


@pytest.fixture
def api(http_client, base_url, services):
    return Api(http_client, base_url, ContractCheck(services.openapi))


@pytest.fixture
def room(api, base_url, services, http_server):
    """One event's live chat, with its members' clients closed after the test (tests/chat_client.py)."""
    room = ChatRoom(api, base_url, services)
    yield room
    room.close_all()


class Mailbox:
    """A real SMTP server's handler (aiosmtpd): keeps every envelope that arrives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 Message accepted for delivery"

    def wait_for_message(self):
        """The next message's text, waiting (bounded) for a server in another process to send it."""
        for _ in range(600):
            if self.messages:
                return email.message_from_bytes(self.messages.pop(0).content).get_payload(decode=True).decode()
            time.sleep(0.05)
        raise AssertionError("no email arrived")


@pytest.fixture
def mailbox():
    """(Mailbox, port) of an SMTP server listening on loopback for this test."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of this test's own (tests/redis_server.py); `.stop()` and `.start()`
    take it away and bring it back on the same port. Without Debian's redis-server the tests of
    several processes are skipped on a developer's machine, and fail in CI (CI=true)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it")
        pytest.skip("needs Debian's redis-server (apt-get install redis-server)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
