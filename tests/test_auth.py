"""Authentication through HTTP: register, login, tokens, logout, password reset."""
import asyncio
import re

import bcrypt
import pytest

from domain.times import utcnow
from tests.conftest import PASSWORD, console_emails

pytestmark = pytest.mark.gen_test


def _console_reset_token(caplog):
    found = re.findall(r"reset-password#token=([A-Za-z0-9_\-%]+)", "\n".join(console_emails(caplog)))
    assert found, "no reset email was printed"
    return found[-1]


# --- register -----------------------------------------------------------------------------

async def test_register_returns_the_user_and_a_working_token(api):
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "ana.m", "email": "ana@example.com", "password": PASSWORD})
    assert reply.status == 201
    user = reply.data["user"]
    assert user["username"] == "ana.m" and user["role"] == "attendee" and user["email"] == "ana@example.com"
    assert re.fullmatch(r"[0-9a-f]{24}", user["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", user["created_at"])
    me = await api.call("GET", "/api/v1/users/me", token=reply.data["token"])
    assert me.status == 200 and me.data["id"] == user["id"]
    assert "password_hash" not in reply.text and "password_hash" not in me.text


async def test_register_as_organizer(api):
    user, _ = await api.register(role="organizer")
    assert user["role"] == "organizer"


async def test_duplicate_email_in_other_case_is_a_conflict(api):
    await api.register(username="first_one", email="Dup@Example.com")
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "second_one", "email": "dup@example.COM", "password": PASSWORD})
    assert reply.status == 409 and reply.json["code"] == "email_taken"


async def test_duplicate_username_in_other_case_is_a_conflict(api):
    await api.register(username="Casey")
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "casey", "email": "other@example.com", "password": PASSWORD})
    assert reply.status == 409 and reply.json["code"] == "username_taken"


async def test_malformed_json_is_a_400(api):
    reply = await api.call("POST", "/api/v1/auth/register", raw='{"username": "x",',
                           headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json["code"] == "malformed_json"


async def test_a_body_that_is_not_an_object_is_a_400(api):
    reply = await api.call("POST", "/api/v1/auth/register", raw="[1, 2]", headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json["code"] == "validation_failed"


async def test_unknown_field_is_a_400_naming_it(api):
    reply = await api.call("POST", "/api/v1/auth/register", {
        "username": "mallory", "email": "m@example.com", "password": PASSWORD, "is_admin": True})
    assert reply.status == 400
    assert {"path": "/is_admin", "message": "unknown field"} in reply.json["errors"]


async def test_schema_violations_list_each_path(api):
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "x", "email": "not-an-email", "password": "short"})
    assert reply.status == 400
    assert {e["path"] for e in reply.json["errors"]} == {"/username", "/email", "/password"}


async def test_an_unknown_role_is_refused(api):
    reply = await api.call("POST", "/api/v1/auth/register", {
        "username": "mallory", "email": "m@example.com", "password": PASSWORD, "role": "admin"})
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/role"


async def test_a_73_byte_password_is_a_400(api):
    for password in ("a" * 73, "é" * 37):  # 73 characters; 37 characters but 74 bytes
        reply = await api.call("POST", "/api/v1/auth/register",
                               {"username": "longpw", "email": "l@example.com", "password": password})
        assert reply.status == 400, reply
        assert reply.json["errors"][0]["path"] == "/password"


async def test_a_72_byte_password_works(api):
    _, token = await api.register(password="p" * 72)
    assert token


# --- login --------------------------------------------------------------------------------

async def test_login_with_the_right_password(api):
    user, _ = await api.register(email="Login.Me@example.com")
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "login.me@EXAMPLE.com", "password": PASSWORD})
    assert reply.status == 200 and reply.data["user"]["id"] == user["id"]
    assert reply.headers["Cache-Control"] == "no-store"


async def test_wrong_password_and_unknown_email_get_the_same_401(api):
    await api.register(email="known@example.com")
    wrong = await api.call("POST", "/api/v1/auth/login", {"email": "known@example.com", "password": "nope-nope"})
    unknown = await api.call("POST", "/api/v1/auth/login", {"email": "nobody@example.com", "password": "nope-nope"})
    assert wrong.status == unknown.status == 401
    assert wrong.json == unknown.json == {"message": "The email or password is incorrect.", "code": "bad_credentials"}


async def test_an_overlong_password_at_login_is_just_wrong(api):
    await api.register(email="known@example.com")
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "known@example.com", "password": "x" * 100})
    assert reply.status == 401


@pytest.mark.settings(login_attempts_per_email=3)
async def test_repeated_failures_for_one_email_are_rate_limited(api):
    # From one address: the client that failed is stopped, even with the right password; other
    # clients are not (login_attempts_per_email counts per email and address since issue 12:
    # tests/test_attacks.py::test_one_strangers_failed_logins_never_lock_the_owner_out).
    await api.register(email="target@example.com")
    for _ in range(3):
        reply = await api.call("POST", "/api/v1/auth/login", {"email": "target@example.com", "password": "wrong-pass"})
        assert reply.status == 401
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "TARGET@example.com", "password": PASSWORD})
    assert reply.status == 429 and reply.json["code"] == "rate_limited"
    assert int(reply.headers["Retry-After"]) >= 1


@pytest.mark.settings(login_attempts_per_email=5)
async def test_parallel_failures_cannot_outrun_the_rate_limit(api):
    # From one address: its limit on the email (login_attempts_per_email). From many, the account's
    # backoff: tests/test_attacks.py::test_guessing_spread_over_many_addresses_backs_off_and_the_owner_still_logs_in.
    await api.register(email="burst@example.com")
    replies = await asyncio.gather(*[api.call("POST", "/api/v1/auth/login",
                                              {"email": "burst@example.com", "password": "wrong-pass"})
                                     for _ in range(20)])
    assert sorted(r.status for r in replies) == [401] * 5 + [429] * 15


async def test_successful_logins_do_not_use_up_the_address_limit(api):
    await api.register(email="regular@example.com")
    for _ in range(30):  # more than login_attempts_per_address (20)
        reply = await api.call("POST", "/api/v1/auth/login", {"email": "regular@example.com", "password": PASSWORD})
        assert reply.status == 200


@pytest.mark.settings(login_attempts_per_address=4)
async def test_repeated_failures_from_one_address_are_rate_limited(api):
    for n in range(4):
        reply = await api.call("POST", "/api/v1/auth/login", {"email": f"guess{n}@example.com", "password": "wrong-pass"})
        assert reply.status == 401
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "another@example.com", "password": "wrong-pass"})
    assert reply.status == 429 and "Retry-After" in reply.headers


@pytest.mark.settings(login_attempts_per_address=3, trusted_proxies=["127.0.0.1"])
async def test_one_ipv6_subscriber_block_shares_one_address_limit(api):
    for n in range(3):
        reply = await api.call("POST", "/api/v1/auth/login", {"email": f"g{n}@example.com", "password": "wrong-pass"},
                               headers={"X-Forwarded-For": f"2001:db8:1:2::{n + 1}"})
        assert reply.status == 401
    same_block = await api.call("POST", "/api/v1/auth/login", {"email": "h@example.com", "password": "wrong-pass"},
                                headers={"X-Forwarded-For": "2001:db8:1:2:ffff::9"})
    other_block = await api.call("POST", "/api/v1/auth/login", {"email": "h@example.com", "password": "wrong-pass"},
                                 headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    assert same_block.status == 429 and other_block.status == 401


async def test_a_hash_written_by_the_old_flask_backend_logs_in(api, services):
    # Flask-Bcrypt stored bcrypt's $2b$ text. (The old backend's user documents themselves, without
    # normalized copies of email and username, are taken over by the MongoDB adapter:
    # tests/test_mongo_store.py.)
    old_hash = bcrypt.hashpw(b"legacy-password", bcrypt.gensalt(4)).decode()
    assert old_hash.startswith("$2b$")
    await services.store.users.add("Legacy", "Legacy@Example.com", "organizer", old_hash, utcnow())
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "legacy@example.com", "password": "legacy-password"})
    assert reply.status == 200 and reply.data["user"]["role"] == "organizer"


@pytest.mark.settings(bcrypt_rounds=12)
# Logins check one at a time below the loop's priority (domain/passwords.py): on a busy machine the
# three take seconds, which is the point, not a failure.
@pytest.mark.gen_test(timeout=60)
async def test_hashing_does_not_block_other_requests(api):
    await api.register(email="slow@example.com")
    finished = []

    async def timed(name, coroutine):
        reply = await coroutine
        finished.append(name)
        return reply

    logins = [timed(f"login{n}", api.call("POST", "/api/v1/auth/login",
                                          {"email": "slow@example.com", "password": PASSWORD})) for n in range(3)]
    tasks = [asyncio.ensure_future(c) for c in logins]
    await asyncio.sleep(0.05)  # let the logins reach bcrypt
    health = await timed("healthz", api.call("GET", "/healthz"))
    replies = await asyncio.gather(*tasks)
    assert health.status == 200 and all(r.status == 200 for r in replies)
    assert finished[0] == "healthz", finished


# --- tokens -------------------------------------------------------------------------------
# Forged, expired, revoked and misplaced tokens are attacks: tests/test_attacks.py (API2) tries
# each on every protected operation.

async def test_no_token_is_a_401(api):
    reply = await api.call("GET", "/api/v1/users/me")
    assert reply.status == 401 and reply.json["code"] == "not_authenticated"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_logout_revokes_the_token(api, method):
    _, token = await api.register()
    reply = await api.call(method, "/api/v1/auth/logout", token=token)
    assert reply.status == 200
    after = await api.call("GET", "/api/v1/users/me", token=token)
    assert after.status == 401 and after.json["code"] == "token_revoked"
    again = await api.call(method, "/api/v1/auth/logout", token=token)
    assert again.status == 401


async def test_logout_leaves_other_tokens_of_the_user_working(api):
    user, token = await api.register(email="two@example.com")
    second = await api.call("POST", "/api/v1/auth/login", {"email": "two@example.com", "password": PASSWORD})
    await api.call("POST", "/api/v1/auth/logout", token=token)
    reply = await api.call("GET", "/api/v1/users/me", token=second.data["token"])
    assert reply.status == 200


# --- password reset -----------------------------------------------------------------------

async def test_forgot_password_answers_the_same_for_known_and_unknown_emails(api):
    await api.register(email="known@example.com")
    known = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "known@example.com"})
    unknown = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "nobody@example.com"})
    assert known.status == unknown.status == 200
    assert known.json == unknown.json


async def test_reset_password_works_once_and_revokes_older_tokens(api, caplog):
    caplog.set_level("INFO")
    _, old_token = await api.register(email="reset@example.com")
    forgot = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "reset@example.com"})
    await asyncio.sleep(0.01)  # the email goes out in the background
    token = _console_reset_token(caplog)
    assert token not in forgot.text

    reply = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "brand new password"})
    assert reply.status == 200
    assert (await api.call("GET", "/api/v1/users/me", token=old_token)).status == 401
    login = await api.call("POST", "/api/v1/auth/login", {"email": "reset@example.com", "password": "brand new password"})
    assert login.status == 200
    assert (await api.call("GET", "/api/v1/users/me", token=login.data["token"])).status == 200
    old = await api.call("POST", "/api/v1/auth/login", {"email": "reset@example.com", "password": PASSWORD})
    assert old.status == 401

    again = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "another password"})
    assert again.status == 401 and again.json["code"] == "invalid_reset_token"


async def test_an_unknown_reset_token_is_refused(api):
    reply = await api.call("POST", "/api/v1/auth/reset-password", {"token": "made-up", "password": "whatever123"})
    assert reply.status == 401 and reply.json["code"] == "invalid_reset_token"


@pytest.mark.settings(reset_token_lifetime_seconds=1)
async def test_an_expired_reset_token_is_refused(api, caplog):
    caplog.set_level("INFO")
    await api.register(email="late@example.com")
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "late@example.com"})
    await asyncio.sleep(0.01)
    token = _console_reset_token(caplog)
    await asyncio.sleep(1.1)
    reply = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "brand new password"})
    assert reply.status == 401


async def test_a_reset_with_a_too_long_password_keeps_the_token(api, caplog):
    caplog.set_level("INFO")
    await api.register(email="keep@example.com")
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "keep@example.com"})
    await asyncio.sleep(0.01)
    token = _console_reset_token(caplog)
    bad = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "é" * 40})
    assert bad.status == 400
    good = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "fine password"})
    assert good.status == 200
