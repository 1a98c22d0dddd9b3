"""When something is wrong beneath the API: a mail server that is down, a stored hash that is not
one, a time past the calendar's end, a broken settings or schema file, a notify socket nobody
reads. Each answers as documented (or stops the start with one line) instead of crashing.
(A database that is down: tests/test_database_down.py; indexes MongoDB cannot build and a
MongoDB not there yet: tests/test_mongo_store.py; a SQLite file that is not a database:
tests/test_durability.py.)"""
import json
import logging
import sys
import time
import urllib.parse

import jwt
import pytest

from domain.settings import SettingsError, load_settings
from domain.systemd import SystemdNotifier
from domain.times import utcnow
from domain.validation import load_schemas, schema_validator
from handlers.app import build_services
from handlers.base import address_in
from handlers.logs import JsonFormatter
from tests.conftest import PASSWORD, ROOT, make_settings
from tests.event_builders import event_body, publish
from tests.running_server import free_port
from tests.stores import new_store

pytestmark = pytest.mark.gen_test


# --- accounts ----------------------------------------------------------------------------------

async def test_a_token_whose_subject_is_not_a_user_id_is_a_401(api, settings):
    now = time.time()
    token = jwt.encode({"sub": "admin", "role": "organizer", "iat": now, "exp": now + 60, "jti": "j"},
                       settings.jwt_secret_key, algorithm="HS256")
    reply = await api.call("GET", "/api/v1/users/me", token=token)
    assert reply.status == 401 and reply.json["code"] == "token_invalid"


@pytest.mark.settings(mail_backend="smtp", mail_server="127.0.0.1", mail_port=free_port())
async def test_a_mail_server_that_is_down_leaves_the_forgot_password_answer_unchanged(api, services, caplog):
    await api.register(email="known@example.com")
    known = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "known@example.com"})
    unknown = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "nobody@example.com"})
    await services.accounts.drain()
    assert known.status == unknown.status == 200 and known.json == unknown.json
    assert "password reset email not sent" in caplog.text


async def test_a_stored_hash_that_is_not_bcrypt_fails_the_login_without_a_crash(api, services):
    await services.store.users.add("plain", "plain@example.com", "attendee", PASSWORD, utcnow())
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "plain@example.com", "password": PASSWORD})
    assert reply.status == 401 and reply.json["code"] == "bad_credentials"


# --- times at the calendar's ends ----------------------------------------------------------------

@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_time_whose_utc_falls_outside_the_calendar_is_a_400(api, moment):
    _, token = await api.register(role="organizer")
    created = await api.call("POST", "/api/v1/events", event_body(date=moment), token=token)
    assert created.status == 400 and created.json["errors"][0]["path"] == "/date"
    found = await api.call("GET", "/api/v1/events?" + urllib.parse.urlencode({"from": moment}), token=token)
    assert found.status == 400 and found.json["errors"][0]["path"] == "from"


async def test_a_search_time_without_an_offset_is_a_400(api):
    _, token = await api.register()
    reply = await api.call("GET", "/api/v1/events?to=2026-12-01T18:30:00", token=token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "to"


async def test_a_full_event_at_the_end_of_the_calendar_answers_full(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, date="9999-12-31T20:00:00Z", capacity=1, waitlist=False)
    _, first = await api.register()
    _, second = await api.register()
    assert (await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=first)).status == 200
    reply = await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=second)
    assert reply.status == 409 and reply.json["code"] == "event_full"


# --- schemas and settings: wrong at start --------------------------------------------------------

def test_a_schema_file_whose_id_is_not_its_file_name_is_refused(tmp_path):
    (tmp_path / "Thing.json").write_text(json.dumps({"$id": "Other.json", "type": "object"}))
    with pytest.raises(ValueError, match="Thing.json: \\$id must be 'Thing.json'"):
        load_schemas(tmp_path)


def test_the_schemas_are_loaded_and_checked_once_per_process():
    settings = make_settings()
    first, second = (build_services(settings, store=new_store("sqlite")),
                     build_services(settings, store=new_store("sqlite")))
    assert first.validator is second.validator is schema_validator()


@pytest.mark.parametrize("content, message", [
    (None, "settings file {path}: No such file or directory"),
    ("port: [1\n", "settings file {path} is not valid YAML"),
    ("- port\n", "settings file {path} must be a mapping"),
    ("port: 5000\n", "setting address: missing from {path}"),
])
def test_a_settings_file_that_cannot_be_used_stops_the_start_naming_why(tmp_path, content, message):
    path = tmp_path / "settings.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as refused:
        load_settings(path, environ={})
    assert str(refused.value).startswith(message.format(path=path))


@pytest.mark.parametrize("name, value", [("trusted_proxies", "10.0.0.1"), ("port", True),
                                         ("allowed_origins", [1, 2])])
def test_a_setting_of_the_wrong_type_in_the_file_is_refused(tmp_path, name, value):
    path = tmp_path / "settings.yaml"
    lines = (ROOT / "settings.yaml").read_text().splitlines()
    path.write_text("\n".join(f"{name}: {json.dumps(value)}" if line.startswith(f"{name}:") else line
                              for line in lines))
    with pytest.raises(SettingsError, match=f"setting {name} \\(from {path}\\): .* is not a valid"):
        load_settings(path, environ={})


# --- the process's surroundings -----------------------------------------------------------------

def test_a_notify_socket_nobody_listens_on_is_reported_not_raised(tmp_path, caplog):
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    assert notifier.enabled and notifier.ready("listening") is False
    assert "systemd notify socket refused READY" in caplog.text
    notifier.close()
    assert not notifier.enabled and notifier.watchdog() is False


@pytest.mark.settings(trusted_proxies=["127.0.0.1"])
async def test_a_forwarded_for_hop_that_is_not_an_address_ends_the_walk(api, caplog):
    caplog.set_level(logging.INFO, logger="access")
    await api.call("GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.9, <script>"})
    assert [r.remote_ip for r in caplog.records if r.name == "access"][-1] == "127.0.0.1"
    assert address_in("<script>", ["0.0.0.0/0"]) is False


def test_an_exception_in_a_log_line_is_one_json_field_with_its_secrets_redacted():
    try:
        raise RuntimeError("upstream said: Authorization: Bearer opaque-secret")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError" in entry["exception"] and "opaque-secret" not in entry["exception"]
