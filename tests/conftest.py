"""Test fixtures: the real application on a fresh database per test, and a small JSON client.

The database is the in-memory store, or a real MongoDB when TEST_MONGO_URI is set (each test
then gets its own database, dropped afterwards). Settings come from settings.yaml with
`@pytest.mark.settings(name=value, ...)` on top; bcrypt runs at its lowest cost unless a test
asks for more.
"""
import itertools
import json
import os
import pathlib
import uuid

import pytest
import tornado.httpclient

from domain.settings import load_settings
from domain.store import Store
from handlers.app import build_services, make_app

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_MONGO_URI = os.environ.get("TEST_MONGO_URI", "")
PASSWORD = "correct horse battery"

_names = itertools.count(1)


def make_settings(**overrides):
    values = {"bcrypt_rounds": 4, "public_base_url": "http://testserver", **overrides}
    return load_settings(ROOT / "settings.yaml", environ={}, **values)


def make_store():
    return Store.connect(TEST_MONGO_URI, f"test_{uuid.uuid4().hex[:12]}", timeout_ms=3000)


@pytest.fixture
def settings(request):
    marker = request.node.get_closest_marker("settings")
    return make_settings(**(marker.kwargs if marker else {}))


@pytest.fixture
def services(settings, io_loop):
    services = build_services(settings, store=make_store())
    io_loop.run_sync(services.store.ensure_indexes)
    yield services
    if not services.store.in_memory:
        io_loop.run_sync(lambda: services.store.client.drop_database(services.store.db.name))
    services.store.close()


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


class Api:
    """Talks to the app under test as a mobile client would: JSON over HTTP."""

    def __init__(self, http_client, base_url):
        self.http = http_client
        self.base_url = base_url

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
        return Reply(response)

    async def register(self, role="attendee", username=None, email=None, password=PASSWORD):
        """A new user; returns (user, token)."""
        n = next(_names)
        username = username or f"user{n}_{uuid.uuid4().hex[:6]}"
        reply = await self.call("POST", "/api/v1/auth/register", {
            "username": username, "email": email or f"{username}@example.com",
            "password": password, "role": role})
        assert reply.status == 201, reply
        return reply.data["user"], reply.data["token"]


@pytest.fixture
def api(http_client, base_url):
    return Api(http_client, base_url)
