"""Logs: one JSON object a line, naming the request; never a password, token or reset link."""
import io
import json
import logging
import re
import secrets
import uuid

import pytest

from handlers.logs import JsonFormatter
from tests.conftest import PASSWORD, console_emails
from tests.running_server import RunningServer

PRODUCTION_SECRETS = {"ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48),
                      "JWT_SECRET_KEY": secrets.token_urlsafe(48), "METRICS_TOKEN": secrets.token_urlsafe(32),
                      "PUBLIC_BASE_URL": "https://events.example.com"}


@pytest.fixture
def json_lines(caplog):
    """The lines the server's formatter writes, parsed, for everything logged during the test."""
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().removeHandler(handler)


@pytest.mark.gen_test
async def test_each_request_is_one_json_line_with_request_id_route_status_duration_and_user(api, json_lines):
    user, token = await api.register()
    await api.call("GET", "/api/v1/users/me", token=token, headers={"X-Request-ID": "trace-0123456789"})
    access = [line for line in json_lines() if line["logger"] == "access"]
    me = access[-1]
    assert me["request_id"] == "trace-0123456789"
    assert me["route"] == "/api/v1/users/me" and me["path"] == "/api/v1/users/me"
    assert me["status"] == 200 and me["method"] == "GET"
    assert isinstance(me["duration_ms"], float)
    assert me["user_id"] == user["id"]
    assert me["level"] == "info" and me["time"].endswith("Z")


@pytest.mark.gen_test
async def test_an_error_line_carries_the_error_code(api, json_lines):
    await api.call("GET", "/api/v1/nothing/here")
    line = [line for line in json_lines() if line["logger"] == "access"][-1]
    assert line["status"] == 404 and line["code"] == "not_found"


def test_a_message_of_several_lines_stays_one_line_and_secrets_in_it_are_redacted():
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    message = "GET /ws/chat/1?token=%s\nAuthorization: Bearer opaque-secret\nsaw %s"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, message, ("abc123", jwt_like), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "abc123" not in line and "opaque-secret" not in line and "c2lnbmF0dXJl" not in line
    assert json.loads(line)["message"].startswith("GET /ws/chat/1?token=[redacted]")


@pytest.mark.gen_test
# Production names its database; the test's own store is the one served.
@pytest.mark.settings(env="production", secret_key="s" * 48, jwt_secret_key="j" * 48,
                      sqlite_path="/var/lib/event-server/events.sqlite3", address="127.0.0.1",
                      metrics_token="m" * 32)
async def test_in_production_the_console_mailer_keeps_the_reset_email_out_of_the_log(api, services, json_lines):
    await api.register(email="prod@example.com")
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "prod@example.com"})
    await services.accounts.drain()
    mail = [line["message"] for line in json_lines() if line["logger"] == "mail"]
    assert len(mail) == 1 and "body withheld" in mail[0]
    assert "reset-password" not in mail[0] and "code" not in mail[0]


@pytest.mark.gen_test
async def test_in_development_the_console_mailer_prints_the_email_and_logs_no_link(api, services, settings,
                                                                                   json_lines, caplog):
    await api.register(email="dev@example.com")
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "dev@example.com"})
    await services.accounts.drain()
    # What goes to stderr (tests/test_reset_page.py reads it from a server process).
    [printed] = console_emails(caplog)
    lines = printed.splitlines()
    assert {"From: no-reply@localhost", "To: dev@example.com", "Subject: Reset your password"} <= set(lines)
    link = re.search(r"^(\S+)/reset-password#token=([\w-]+)$", printed, re.M)
    assert link and link.group(1) == settings.public_base_url
    token = link.group(2)
    assert printed.count(token) == 1 and "code" not in printed  # the secret once, in the link
    # The JSON log on stdout: one line saying to whom and what, no link, no token.
    [mail] = [line["message"] for line in json_lines() if line["logger"] == "mail"]
    assert "dev@example.com" in mail and "Reset your password" in mail
    assert token not in mail and "reset-password" not in mail


def test_a_running_server_logs_no_password_token_or_reset_link(mailbox):
    mailbox, smtp_port = mailbox
    environment = {**PRODUCTION_SECRETS, "LOG_LEVEL": "DEBUG", "MAIL_BACKEND": "smtp",
                   "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp_port)}
    name = f"logcheck_{uuid.uuid4().hex[:6]}"
    address, wrong, new_password = f"{name}@example.com", "not-the-password-9431", "brand-new-password-5822"
    with RunningServer(environment) as server:
        status, registered = server.request("POST", "/api/v1/auth/register",
                                            {"username": name, "email": address, "password": PASSWORD})
        assert status == 201
        first_token = registered["data"]["token"]
        assert server.request("GET", "/api/v1/users/me", headers={"Authorization": f"Bearer {first_token}"})[0] == 200
        assert server.request("POST", "/api/v1/auth/login", {"email": address, "password": wrong})[0] == 401
        status, logged_in = server.request("POST", "/api/v1/auth/login", {"email": address, "password": PASSWORD})
        second_token = logged_in["data"]["token"]
        server.request("GET", f"/ws/chat/{'a' * 24}?token={second_token}")
        server.request("GET", f"/api/v1/users/me?access_token={second_token}")

        assert server.request("POST", "/api/v1/auth/forgot-password", {"email": address})[0] == 200
        reset_email = mailbox.wait_for_message()
        reset_token = re.search(r"https://events.example.com/reset-password#token=(\S+)", reset_email).group(1)
        assert server.request("POST", "/api/v1/auth/reset-password",
                              {"token": reset_token, "password": new_password})[0] == 200
        status, relogged = server.request("POST", "/api/v1/auth/login", {"email": address, "password": new_password})
        assert status == 200
        server.terminate()
        assert server.wait() == 0

        output = server.output()
        entries = server.log_entries()  # every stdout line parses as JSON
    kept_out = [PASSWORD, wrong, new_password, reset_token,
                PRODUCTION_SECRETS["SECRET_KEY"], PRODUCTION_SECRETS["JWT_SECRET_KEY"]]
    for token in (first_token, second_token, relogged["data"]["token"]):
        kept_out += [token, token.split(".")[2]]
    leaked = [secret for secret in kept_out if secret in output]
    assert leaked == []
    assert "reset-password#token=" not in output
    routes = {entry.get("route") for entry in entries if entry["logger"] == "access"}
    assert {"/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/forgot-password",
            "/api/v1/auth/reset-password", "/api/v1/users/me"} <= routes
    me = next(entry for entry in entries if entry.get("route") == "/api/v1/users/me" and entry["status"] == 200)
    assert me["user_id"] == registered["data"]["user"]["id"] and me["request_id"]
