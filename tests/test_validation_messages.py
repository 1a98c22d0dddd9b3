"""Validation errors are written for people: each names its field and the rule ("at least 8
characters", "an ISO 8601 time with Z or an offset"), never quotes the value sent (a password, a
token) and never shows a regular expression."""
import json
import re
import urllib.parse

import pytest

from domain.times import ISO_TIME_RULE
from domain.validation import Validator, load_schemas
from tests.conftest import PASSWORD
from tests.event_builders import event_body, publish

pytestmark = pytest.mark.gen_test
TIME_MESSAGE = "must be an ISO 8601 time with Z or an offset, e.g. 2026-12-03T07:33:43Z"
# What no message may show: the characters regular expressions are made of.
REGEX = re.compile(r"[\^$\[\]\\]|\(\?|\.\*|\{\d")


def errors_of(reply):
    assert (reply.status, reply.json["code"]) == (400, "validation_failed"), reply
    return {error["path"]: error["message"] for error in reply.json["errors"]}


async def test_a_short_password_is_told_its_minimum_and_not_quoted(api):
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "shorty", "email": "shorty@example.com", "password": "abc123"})
    assert errors_of(reply) == {"/password": "must be at least 8 characters"}
    assert "abc123" not in reply.text


async def test_a_short_password_at_reset_is_told_the_same_and_neither_it_nor_the_token_is_quoted(api):
    reply = await api.call("POST", "/api/v1/auth/reset-password", {"token": "reset-token-value", "password": "abc123"})
    assert errors_of(reply) == {"/password": "must be at least 8 characters"}
    assert "abc123" not in reply.text and "reset-token-value" not in reply.text


async def test_no_value_is_quoted_whatever_rule_it_breaks(api):
    secret = "s3cret-" + "x" * 80
    for body in ({"email": "a@example.com", "password": [secret]},          # wrong type
                 {"email": "a@example.com", "password": secret * 20},       # too long
                 {"email": secret + "\n", "password": PASSWORD},            # pattern
                 {"email": "a@example.com", "password": PASSWORD, secret[:20]: secret}):  # unknown field
        reply = await api.call("POST", "/api/v1/auth/login", body)
        assert reply.status == 400 and secret not in reply.text, reply


async def test_a_time_without_an_offset_is_told_it_needs_z_or_an_offset(api):
    _, token = await api.register(role="organizer")
    reply = await api.call("POST", "/api/v1/events", event_body(date="2026-12-03T07:33:43"), token=token)
    assert errors_of(reply) == {"/date": TIME_MESSAGE}
    event = await publish(api, token)
    reply = await api.call("PATCH", f"/api/v1/events/{event['id']}", {"end_date": "2026-12-03T07:33:43"}, token=token)
    assert errors_of(reply) == {"/end_date": TIME_MESSAGE}


async def test_a_time_in_a_body_and_in_a_query_string_are_told_the_same_rule(api):
    _, token = await api.register(role="organizer")
    body = await api.call("POST", "/api/v1/events", event_body(date="tomorrow"), token=token)
    query = await api.call("GET", "/api/v1/events?" + urllib.parse.urlencode({"from": "tomorrow"}), token=token)
    assert body.json["errors"][0]["message"] == query.json["errors"][0]["message"] == f"must be {ISO_TIME_RULE}"


async def test_a_bad_email_or_username_is_described_in_words_not_as_a_regular_expression(api):
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "no spaces!", "email": "not-an-email", "password": PASSWORD})
    messages = errors_of(reply)
    assert messages == {"/username": "may hold only letters A to Z (either case), digits and the characters _ . -",
                        "/email": "must be an email address, like name@example.com"}
    login = await api.call("POST", "/api/v1/auth/login", {"email": "a@example.com\n", "password": PASSWORD})
    assert errors_of(login) == {"/email": "must not hold control characters or line breaks"}
    for message in [*messages.values(), *errors_of(login).values()]:
        assert not REGEX.search(message), message


@pytest.mark.parametrize("body, path, message", [
    ({"role": "admin"}, "/role", 'must be one of "attendee", "organizer"'),
    ({"username": 42}, "/username", "must be a string"),
    ({"username": "ab"}, "/username", "must be at least 3 characters"),
    ({"username": "a" * 31}, "/username", "must be at most 30 characters"),
    ({"password": None}, "/password", "must be a string"),
    ({"email": ...}, "/email", "is required"),
    ({"rol": "organizer"}, "/rol", "unknown field; did you mean role?"),
    ({"is_admin": True}, "/is_admin", "unknown field"),
])
async def test_each_rule_is_named_at_its_field(api, body, path, message):
    fields = {"username": "ruled", "email": "ruled@example.com", "password": PASSWORD, **body}
    reply = await api.call("POST", "/api/v1/auth/register", {k: v for k, v in fields.items() if v is not ...})
    assert errors_of(reply) == {path: message}


@pytest.mark.parametrize("fields, path, message", [
    ({"capacity": 0}, "/capacity", "must be a whole number from 1 to 100000"),
    ({"geofence_radius": 5}, "/geofence_radius", "must be a number from 10 to 5000"),
    ({"location": {"type": "Point", "coordinates": [10, -90.5]}}, "/location/coordinates/1",
     "must be a number from -90 to 90"),
    ({"location": {"type": "Point", "coordinates": [10]}}, "/location/coordinates", "must have at least 2 items"),
    ({"location": {"type": "Pt", "coordinates": [1, 2]}}, "/location/type", 'must be "Point"'),
    ({"geofence": "round"}, "/geofence", "must be an object or null"),
    ({"title": "   "}, "/title", "must not be blank (only spaces)"),
    ({"end_date": 5}, "/end_date", "must be a string or null"),
])
async def test_each_event_rule_is_named_at_its_field(api, fields, path, message):
    _, token = await api.register(role="organizer")
    reply = await api.call("POST", "/api/v1/events", event_body(**fields), token=token)
    assert errors_of(reply) == {path: message}


async def test_a_misspelt_field_gets_the_likely_one(api):
    _, token = await api.register(role="organizer")
    event = await publish(api, token)
    reply = await api.call("PATCH", f"/api/v1/events/{event['id']}", {"titel": "New"}, token=token)
    assert errors_of(reply) == {"/titel": "unknown field; did you mean title?"}


async def test_a_cursor_that_is_not_one_is_not_told_a_regular_expression(api):
    user, token = await api.register()
    for path in ("/api/v1/events", f"/api/v1/users/{user['id']}/followers", "/api/v1/feed"):
        reply = await api.call("GET", f"{path}?cursor=nope", token=token)
        assert reply.status == 400, reply
        message = reply.json["errors"][0]["message"]
        assert message == "must be the next_cursor of a page of this list, as it was given" and not REGEX.search(message)


def test_every_pattern_in_the_schemas_says_in_words_what_it_asks_for(tmp_path):
    (tmp_path / "Code.json").write_text(json.dumps({"$id": "Code.json", "type": "string", "pattern": "^[0-9]{6}$"}))
    with pytest.raises(ValueError, match="Code.json: a pattern without its x-pattern-message"):
        Validator(load_schemas(tmp_path))
