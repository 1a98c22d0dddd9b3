"""The attack suite: one test per attack, named for what the attacker must not get.

Grouped by the OWASP API Security Top 10 (2023). A hostile client talks to the real application.
Attacks that hold for every operation (a forged token, a size cap, a header, a field the server
owns) run against every operation of the OpenAPI document the server publishes, so a route added
later is attacked without a line here (a path parameter this file has no ids for fails, saying
so). Attacks another module already proves are named under their heading instead of repeated.
"""
import base64
import dataclasses
import json
import logging
import re
import time
import urllib.parse
import uuid

import jwt
import pytest

from domain.store import ObjectId
from handlers.base import BaseHandler
from tests.conftest import PASSWORD
from tests.event_builders import PARIS, event_body, hours_from_now, publish

pytestmark = pytest.mark.gen_test

RESET_LINK = re.compile(r"(\S+/reset-password)\?token=([A-Za-z0-9_\-%]+)")


@dataclasses.dataclass
class Member:
    id: str
    username: str
    email: str
    token: str


async def join(api, role="attendee"):
    user, token = await api.register(role=role)
    return Member(user["id"], user["username"], user["email"], token)


@dataclasses.dataclass
class World:
    """Who is who: `owner` organizes `event`, which `alice` RSVPed to and arrived at; `rival` is
    another organizer with `rival_event`; `mallory` is the attacker, an attendee of nothing."""
    owner: Member
    rival: Member
    alice: Member
    mallory: Member
    event: dict
    rival_event: dict

    @property
    def members(self):
        return [self.owner, self.rival, self.alice, self.mallory]

    def ids(self, name):
        """Every id of this world that a path parameter of that name can take."""
        known = {"event_id": [self.event["id"], self.rival_event["id"]],
                 "user_id": [self.alice.id, self.owner.id, self.rival.id]}
        assert name in known, f"a new path parameter, {{{name}}}: give the World ids for it"
        return known[name]


async def populate(api, services):
    owner, rival, alice, mallory = (await join(api, "organizer"), await join(api, "organizer"),
                                    await join(api), await join(api))
    event = await publish(api, owner.token, date=hours_from_now(0.5), capacity=10, category="music")
    rival_event = await publish(api, rival.token, category="sports")
    assert (await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=alice.token)).status == 200
    arrival = await api.call("POST", f"/api/v1/events/{event['id']}/arrival",
                             {"location": {"type": "Point", "coordinates": PARIS}}, token=alice.token)
    assert arrival.status == 200, arrival
    for follower, followed in ((alice, owner), (owner, alice), (mallory, alice)):
        assert (await api.call("POST", f"/api/v1/users/{followed.id}/follow", token=follower.token)).status == 200
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": alice.email})
    await services.accounts.drain()
    return World(owner, rival, alice, mallory, event, rival_event)


@pytest.fixture
def world(io_loop, api, services, caplog):
    caplog.set_level(logging.INFO)  # the console mailer logs reset emails at INFO
    return io_loop.run_sync(lambda: populate(api, services))


# --- the operations of the published document ------------------------------------------------

def operations(document, when=lambda operation: True):
    """(METHOD, path template, operation) for every documented operation that `when` accepts."""
    return [(method.upper(), path, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if when(operation)]


def is_protected(operation):
    return operation["security"] != []


def takes_json(operation):
    return "application/json" in operation.get("requestBody", {}).get("content", {})


def filled(path, world):
    """Each concrete path for a template, over the world's ids for its parameters."""
    names = re.findall(r"{(\w+)}", path)
    if not names:
        return [path]
    assert len(names) == 1, f"{path}: the first path with two parameters; teach `filled` to fill both"
    return [path.replace(f"{{{names[0]}}}", value) for value in world.ids(names[0])]


def first_filled(path, world):
    return filled(path, world)[0]


async def refused_everywhere(api, world, token, code, query=""):
    """Every protected operation answers 401 with `code` to this token."""
    for method, path, _ in operations(api.contract.document, is_protected):
        concrete = first_filled(path, world)
        reply = await api.call(method, concrete + query, token=token)
        assert reply.status == 401, (method, concrete, reply)
        assert reply.json["code"] == code, (method, concrete, reply)


def request_schema(services, operation):
    name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    return services.openapi["components"]["schemas"][name]


def claims(member, **changes):
    now = time.time()
    found = {"sub": member.id, "role": "attendee", "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    found.update(changes)
    return {name: value for name, value in found.items() if value is not None}


def signed(settings, payload, key=None, algorithm="HS256"):
    return jwt.encode(payload, key or settings.jwt_secret_key, algorithm=algorithm)


def b64(document):
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def reset_emails(caplog, address):
    """(link base, token) of each reset email the console mailer logged for the address, the
    world's setup included."""
    return [RESET_LINK.search(record.getMessage()).groups()
            for record in [*caplog.get_records("setup"), *caplog.records]
            if record.name == "mail" and f"to={address} " in record.getMessage()]


# === API1:2023 Broken Object Level Authorization =============================================
# Also proven elsewhere: tests/test_events.py::test_another_organizer_cannot_change_or_delete_the_event,
# tests/test_events.py::test_the_organizer_view_lists_only_the_callers_events_with_stats,
# tests/test_auth.py::test_reset_password_works_once_and_revokes_older_tokens (single use).

async def test_cancelling_an_rsvp_never_cancels_someone_elses(api, world):
    reply = await api.call("DELETE", f"/api/v1/events/{world.event['id']}/rsvp", token=world.mallory.token,
                           raw=json.dumps({"user_id": world.alice.id}))
    assert reply.status == 200 and reply.data == {"rsvped": False, "rsvp_count": 1}
    seen_by_alice = await api.call("GET", f"/api/v1/events/{world.event['id']}", token=world.alice.token)
    assert seen_by_alice.data["is_rsvped"] is True and seen_by_alice.data["has_arrived"] is True


async def test_an_rsvp_is_always_the_callers_own(api, world):
    reply = await api.call("POST", f"/api/v1/events/{world.rival_event['id']}/rsvp", token=world.mallory.token,
                           raw=json.dumps({"user_id": world.alice.id}))
    assert reply.status == 200 and reply.data == {"rsvped": True, "rsvp_count": 1}
    seen_by_alice = await api.call("GET", f"/api/v1/events/{world.rival_event['id']}", token=world.alice.token)
    assert seen_by_alice.data["is_rsvped"] is False


async def test_an_arrival_cannot_be_recorded_for_another_user(api, world):
    reply = await api.call("POST", f"/api/v1/events/{world.event['id']}/arrival",
                           {"location": {"type": "Point", "coordinates": PARIS}, "user_id": world.mallory.id},
                           token=world.alice.token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/user_id"


async def test_a_reset_token_resets_only_the_password_of_the_user_it_was_sent_to(api, world, services, caplog):
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": world.mallory.email})
    await services.accounts.drain()
    [(_, mallorys_token)] = reset_emails(caplog, world.mallory.email)
    [(_, alices_token)] = reset_emails(caplog, world.alice.email)
    aimed = await api.call("POST", "/api/v1/auth/reset-password",
                           {"token": mallorys_token, "password": "taken over!", "email": world.alice.email})
    assert aimed.status == 400 and aimed.json["errors"][0]["path"] == "/email"

    own = await api.call("POST", "/api/v1/auth/reset-password", {"token": mallorys_token, "password": "taken over!"})
    assert own.status == 200
    alice_login = await api.call("POST", "/api/v1/auth/login", {"email": world.alice.email, "password": PASSWORD})
    assert alice_login.status == 200
    assert (await api.call("GET", "/api/v1/users/me", token=world.alice.token)).status == 200
    # Alice's own pending token outlived Mallory's reset, and works for Alice alone.
    alices_reset = await api.call("POST", "/api/v1/auth/reset-password",
                                  {"token": alices_token, "password": "alice again"})
    assert alices_reset.status == 200
    mallory_login = await api.call("POST", "/api/v1/auth/login",
                                   {"email": world.mallory.email, "password": "taken over!"})
    assert mallory_login.status == 200 and mallory_login.data["user"]["id"] == world.mallory.id


async def test_the_organizer_view_shows_only_the_callers_events_whatever_the_query(api, world):
    query = urllib.parse.urlencode({"organizer_id": world.owner.id, "user_id": world.owner.id})
    reply = await api.call("GET", f"/api/v1/organizer/events?{query}", token=world.rival.token)
    assert reply.status == 200
    assert [item["id"] for item in reply.data["items"]] == [world.rival_event["id"]]


async def test_stats_of_another_organizers_event_are_counts_without_ids(api, world, services):
    reply = await api.call("GET", f"/api/v1/events/{world.event['id']}/stats", token=world.rival.token)
    assert reply.status == 200
    assert set(reply.data) == set(services.openapi["components"]["schemas"]["EventStats"]["properties"])
    assert all(isinstance(value, (int, float)) for value in reply.data.values())


# Photos (branch photohttp) add: test_a_photo_cannot_be_uploaded_to_an_event_the_caller_is_not_part_of.
# Chat (branch chat) adds: test_a_chat_room_refuses_a_user_who_has_not_rsvped,
# test_chat_history_is_refused_to_a_user_who_has_not_rsvped.


# === API2:2023 Broken Authentication ==========================================================
# Every forged or dead token below is tried on every protected operation.
# Also proven elsewhere: tests/test_auth.py::test_wrong_password_and_unknown_email_get_the_same_401,
# ::test_repeated_failures_for_one_email_are_rate_limited, ::test_repeated_failures_from_one_address_are_rate_limited,
# ::test_an_expired_reset_token_is_refused, ::test_an_unknown_reset_token_is_refused,
# tests/test_proxy.py::test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_limit.

async def test_an_alg_none_token_is_refused_everywhere(api, world):
    payload = b64(claims(world.mallory, role="organizer"))
    for alg in ("none", "None", "NONE", "nOnE"):
        await refused_everywhere(api, world, f"{b64({'alg': alg, 'typ': 'JWT'})}.{payload}.", "token_invalid")


async def test_a_token_signed_with_another_key_is_refused_everywhere(api, world, settings):
    await refused_everywhere(api, world, signed(settings, claims(world.mallory), key="k" * 40), "token_invalid")


async def test_a_token_signed_with_another_algorithm_is_refused_everywhere(api, world, settings):
    # The right key, but HS512: only HS256 is accepted, so the header cannot choose the check.
    await refused_everywhere(api, world, signed(settings, claims(world.mallory), algorithm="HS512"), "token_invalid")


async def test_an_expired_token_is_refused_everywhere(api, world, settings):
    expired = claims(world.mallory, iat=time.time() - 7200, exp=time.time() - 1)
    await refused_everywhere(api, world, signed(settings, expired), "token_expired")


async def test_a_revoked_token_is_refused_everywhere(api, world):
    leaving = await join(api)
    assert (await api.call("POST", "/api/v1/auth/logout", token=leaving.token)).status == 200
    await refused_everywhere(api, world, leaving.token, "token_revoked")


async def test_a_token_issued_before_a_password_reset_is_refused_everywhere(api, world, services, caplog):
    [(_, reset_token)] = reset_emails(caplog, world.alice.email)
    assert (await api.call("POST", "/api/v1/auth/reset-password",
                           {"token": reset_token, "password": "a new password"})).status == 200
    await refused_everywhere(api, world, world.alice.token, "token_revoked")


async def test_a_token_with_a_tampered_payload_is_refused_everywhere(api, world):
    header, _, signature = world.mallory.token.split(".")
    promoted = b64(claims(world.mallory, sub=world.owner.id, role="organizer"))
    await refused_everywhere(api, world, f"{header}.{promoted}.{signature}", "token_invalid")


async def test_a_token_missing_a_required_claim_is_refused_everywhere(api, world, settings):
    for claim in ("exp", "iat", "sub", "jti"):
        await refused_everywhere(api, world, signed(settings, claims(world.mallory, **{claim: None})), "token_invalid")


async def test_a_token_of_a_deleted_user_is_refused_everywhere(api, world, services):
    await services.store.users.delete_one({"_id": ObjectId(world.mallory.id)})
    await refused_everywhere(api, world, world.mallory.token, "token_invalid")


async def test_a_token_in_the_query_string_is_ignored_everywhere(api, world):
    # Query strings end up in access logs, proxies and browser histories; REST takes headers only.
    query = "?" + urllib.parse.urlencode({"token": world.mallory.token, "access_token": world.mallory.token,
                                          "jwt": world.mallory.token})
    await refused_everywhere(api, world, None, "not_authenticated", query=query)


async def test_a_forged_host_header_does_not_redirect_the_reset_link(api, world, services, caplog, settings):
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": world.mallory.email},
                   headers={"Host": "evil.example.com", "X-Forwarded-Host": "evil.example.com"})
    await services.accounts.drain()
    [(link, _)] = reset_emails(caplog, world.mallory.email)
    assert link == settings.public_base_url + "/reset-password"


# Chat adds: test_a_forged_or_revoked_token_is_refused_at_the_chat_handshake,
# test_logging_out_closes_the_chat_sockets_opened_with_that_token.


# === API3:2023 Broken Object Property Level Authorization =====================================
# Also proven elsewhere: tests/test_events.py::test_server_owned_fields_in_a_body_are_refused (organizer_id,
# rsvps, rsvp_count, arrivals, photo_gallery, created_at, _id on create and update),
# tests/test_auth.py::test_an_unknown_role_is_refused.

async def test_server_owned_user_fields_cannot_be_set_at_registration(api):
    for field, value in (("password_hash", "$2b$04$" + "x" * 53), ("_id", "5f0c2d1e9b1e8a3d4c5b6a79"),
                         ("id", "5f0c2d1e9b1e8a3d4c5b6a79"), ("followers", ["5f0c2d1e9b1e8a3d4c5b6a79"]),
                         ("following", []), ("created_events", []), ("rsvped_events", []),
                         ("tokens_valid_after", "2999-01-01T00:00:00Z"), ("email_lower", "a@example.com"),
                         ("created_at", "2000-01-01T00:00:00Z"), ("is_admin", True)):
        reply = await api.call("POST", "/api/v1/auth/register", {
            "username": "mallory", "email": "m@example.com", "password": PASSWORD, field: value})
        assert reply.status == 400 and reply.json["errors"][0]["path"] == f"/{field}", (field, reply)


async def test_a_role_beyond_attendee_and_organizer_cannot_be_registered(api):
    for role in ("admin", "ADMIN", "Organizer", ["organizer"], {"$ne": "attendee"}, None):
        reply = await api.call("POST", "/api/v1/auth/register", {
            "username": "mallory", "email": "m@example.com", "password": PASSWORD, "role": role})
        assert reply.status == 400 and reply.json["errors"][0]["path"] == "/role", (role, reply)


async def test_fields_the_server_computes_cannot_be_written_on_an_event(api, world, services):
    schemas = services.openapi["components"]["schemas"]
    computed = set(schemas["Event"]["properties"]) - set(schemas["EventCreateRequest"]["properties"])
    assert {"rsvp_count", "arrival_count", "photo_count", "organizer", "is_rsvped"} <= computed
    path = f"/api/v1/events/{world.event['id']}"
    for field in sorted(computed):
        for method, target, body in (("POST", "/api/v1/events", event_body(**{field: 0})),
                                     ("PUT", path, {field: 0}), ("PATCH", path, {field: 0})):
            reply = await api.call(method, target, body, token=world.owner.token)
            assert reply.status == 400 and reply.json["errors"][0]["path"] == f"/{field}", (method, field, reply)


async def test_no_response_shows_another_users_email_or_any_hash_or_secret(api, world, services, settings, caplog):
    users = await services.store.users.find({}).to_list(None)
    reset_digests = [doc["_id"] for doc in await services.store.reset_tokens.find({}).to_list(None)]
    [(_, raw_reset_token)] = reset_emails(caplog, world.alice.email)
    never_shown = ([user["password_hash"] for user in users] + reset_digests + [raw_reset_token] +
                   [settings.jwt_secret_key, settings.secret_key, "$2b$", "password_hash", "email_lower",
                    "tokens_valid_after", '"rsvps"', '"arrivals"', '"photo_gallery"'])
    for viewer in (world.mallory, world.rival):
        others = [m for m in world.members if m is not viewer]
        forbidden = never_shown + [m.email for m in others] + [m.token for m in others]
        for method, path, _ in operations(services.openapi, lambda op: "logout" not in op["operationId"].lower()):
            for concrete in filled(path, world):
                reply = await api.call(method, concrete, token=viewer.token)
                text = reply.text.lower()
                leaked = [secret for secret in forbidden if secret.lower() in text]
                assert not leaked, (viewer.username, method, concrete, leaked)


# Photos add: test_an_uploaded_photo_keeps_no_location_or_camera_metadata (through HTTP).
# Chat adds: test_a_chat_message_cannot_choose_its_sender_or_time.


# === API4:2023 Unrestricted Resource Consumption ==============================================
# Also proven elsewhere: tests/test_handler_base.py::test_a_chunked_body_over_the_limit_is_a_413,
# tests/test_auth.py::test_repeated_failures_for_one_email_are_rate_limited.

@pytest.mark.settings(max_body_bytes=1024, photo_max_bytes=2048)
async def test_a_body_over_the_limit_is_refused_by_every_operation_that_takes_one(api, world):
    oversize = "x" * (256 * 1024)
    for method, path, _ in operations(api.contract.document, lambda op: "requestBody" in op):
        reply = await api.call(method, first_filled(path, world), raw=oversize, token=world.owner.token,
                               headers={"Content-Type": "application/json"})
        assert reply.status == 413 and reply.json["code"] == "too_large", (method, path, reply)


async def test_a_page_size_beyond_the_cap_is_refused_by_every_list(api, world):
    lists = operations(api.contract.document, lambda op: any(p["name"] == "limit" for p in op["parameters"]))
    assert len(lists) >= 5
    for method, path, _ in lists:
        for limit in ("101", "0", "-1", "1e2", "10.5", "\uff15", "99999999999999999999", "", "0x10"):
            concrete = first_filled(path, world) + "?" + urllib.parse.urlencode({"limit": limit})
            reply = await api.call(method, concrete, token=world.owner.token)
            assert reply.status == 400, (method, concrete, reply)


async def test_an_overlong_query_parameter_is_refused_by_every_operation(api, world):
    for method, path, operation in operations(api.contract.document):
        for parameter in operation["parameters"]:
            cap = parameter["schema"].get("maxLength")
            if parameter["in"] == "query" and cap:
                concrete = f"{first_filled(path, world)}?{parameter['name']}={'x' * (cap + 1)}"
                reply = await api.call(method, concrete, token=world.owner.token)
                assert reply.status == 400, (method, concrete, reply)


def test_every_string_and_array_in_a_request_body_is_capped(services):
    """So that no field can carry an arbitrarily large value for the server to store or walk."""
    schemas = services.openapi["components"]["schemas"]
    uncapped = set()

    def walk(schema, where, seen):
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                walk(schemas[name], name, seen | {name})
            return
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "string" in types and "maxLength" not in schema and "enum" not in schema and "const" not in schema:
            uncapped.add(f"{where}: string without maxLength")
        if "array" in types and "maxItems" not in schema:
            uncapped.add(f"{where}: array without maxItems")
        if "object" in types and schema.get("additionalProperties") is not False:
            uncapped.add(f"{where}: object open to unknown fields")
        for name, child in schema.get("properties", {}).items():
            walk(child, f"{where}.{name}", seen)
        for keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for index, child in enumerate(schema.get(keyword, [])):
                walk(child, f"{where}[{index}]", seen)
        if isinstance(schema.get("items"), dict):
            walk(schema["items"], f"{where}[]", seen)

    for method, path, operation in operations(services.openapi, takes_json):
        walk(operation["requestBody"]["content"]["application/json"]["schema"], f"{method} {path}", set())
    assert not uncapped, uncapped


async def test_a_huge_title_is_refused(api, world):
    reply = await api.call("POST", "/api/v1/events", event_body(title="x" * 1_000_000), token=world.owner.token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/title"
    assert len(reply.text) < 2000  # the answer does not echo the value


async def test_a_venue_polygon_of_100000_vertices_is_refused_without_checking_each(api, world):
    ring = [[1, 2]] * 100_000  # 600 kB: under the body limit
    raw = json.dumps(event_body(geofence={"type": "Polygon", "coordinates": [ring]}), separators=(",", ":"))
    reply = await api.call("POST", "/api/v1/events", raw=raw, token=world.owner.token,
                           headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/geofence"


async def test_an_email_built_to_make_its_pattern_backtrack_is_refused(api):
    # "a@" then dots: the email pattern backtracks quadratically on it (half a megabyte: hours).
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "mallory", "email": "a@" + "." * 500_000 + "@", "password": PASSWORD})
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/email"


async def test_a_body_of_thousands_of_unknown_fields_gets_a_short_answer(api):
    body = {f"field{n}": n for n in range(50_000)}
    reply = await api.call("POST", "/api/v1/auth/login", body)
    assert reply.status == 400 and len(reply.text) < 5000


async def test_deeply_nested_json_is_a_400_not_a_crash(api):
    # Around the interpreter's recursion limit (1000) the parser gives up with RecursionError.
    for depth in (*range(850, 1010, 10), 100_000):
        raw = '{"email": ' + "[" * depth + "]" * depth + ', "password": "x"}'
        reply = await api.call("POST", "/api/v1/auth/login", raw=raw)
        assert reply.status == 400, (depth, reply)


async def test_reset_emails_to_one_address_are_capped(api, world, services, caplog):
    answers = set()
    for _ in range(10):
        reply = await api.call("POST", "/api/v1/auth/forgot-password", {"email": world.mallory.email})
        answers.add((reply.status, reply.text))
    await services.accounts.drain()
    assert len(answers) == 1  # the same answer throughout: nothing tells that the cap was reached
    assert len(reset_emails(caplog, world.mallory.email)) == 3
    assert await services.store.reset_tokens.count_documents({"user_id": ObjectId(world.mallory.id)}) == 3


# Photos add: test_a_photo_over_its_size_limit_is_a_413_before_it_is_read,
# test_a_decompression_bomb_photo_is_refused.
# Chat adds: test_one_user_cannot_open_more_chat_connections_than_allowed, test_a_chat_flood_is_rate_limited,
# test_an_oversized_chat_message_is_refused, test_a_client_that_does_not_read_is_dropped.


# === API5:2023 Broken Function Level Authorization ============================================
# Also proven elsewhere: tests/test_metrics.py::test_with_a_metrics_token_set_requests_without_it_get_401_json,
# ::test_an_address_outside_the_allow_list_gets_403_json.

async def test_an_attendee_is_refused_every_operation_that_can_answer_403(api, world, services):
    # /metrics answers 403 by client address (tests/test_metrics.py), not by role.
    guarded = operations(services.openapi, lambda op: "403" in op["responses"] and op["operationId"] != "getMetrics")
    assert len(guarded) >= 5
    for method, path, _ in guarded:
        concrete = first_filled(path, world)
        reply = await api.call(method, concrete, token=world.mallory.token)
        assert reply.status == 403, (method, concrete, reply)
    unchanged = await api.call("GET", f"/api/v1/events/{world.event['id']}", token=world.owner.token)
    assert unchanged.data["title"] == world.event["title"]


async def test_an_organizer_role_claimed_in_an_attendees_token_grants_nothing(api, world, settings):
    # Roles come from the stored user, never from the token: a token re-signed with a leaked key
    # and a changed role claim still cannot publish.
    token = signed(settings, claims(world.mallory, role="organizer"))
    reply = await api.call("POST", "/api/v1/events", event_body(), token=token)
    assert reply.status == 403 and reply.json["code"] == "role_required"


# === API8:2023 Security Misconfiguration, and injection ======================================
# Also proven elsewhere: tests/test_discovery.py::test_text_search_matches_regex_characters_literally (".*"),
# tests/test_handler_base.py::test_cors_is_granted_only_to_allowed_origins,
# tests/test_settings.py::test_production_refuses_missing_placeholder_or_short_secrets,
# tests/test_logs.py::test_a_running_server_logs_no_password_token_or_reset_link.

async def test_a_mongo_operator_instead_of_an_email_logs_nobody_in(api, world):
    for body in ({"email": {"$ne": None}, "password": {"$ne": None}},
                 {"email": world.alice.email, "password": {"$gt": ""}},
                 {"email": {"$regex": ".*"}, "password": PASSWORD}):
        reply = await api.call("POST", "/api/v1/auth/login", body)
        assert reply.status == 400 and "token" not in reply.text, (body, reply)


async def test_mongo_operators_in_json_bodies_are_refused_everywhere(api, world, services):
    for method, path, operation in operations(services.openapi, takes_json):
        for field in request_schema(services, operation)["properties"]:
            reply = await api.call(method, first_filled(path, world), {field: {"$ne": None}},
                                   token=world.owner.token)
            assert reply.status == 400, (method, path, field, reply)
            assert any(error["path"].startswith(f"/{field}") for error in reply.json["errors"]), (method, field, reply)


async def test_mongo_operators_in_query_parameters_are_not_operators(api, world):
    async def listed(query):
        reply = await api.call("GET", "/api/v1/events?" + query, token=world.mallory.token)
        assert reply.status in (200, 400), reply
        return reply.status, sorted(item["id"] for item in reply.data["items"]) if reply.status == 200 else None

    everything = await listed("")
    assert len(everything[1]) == 2
    # Bracketed names are not parsed into objects: an unknown parameter, so no filter at all.
    for query in ("category[$ne]=music", "organizer_id[$gt]=", "q[$regex]=.*", "category[$in][]=sports"):
        assert await listed(query) == everything, query
    # An operator written as the value is a literal value: a category nobody uses, an id that is not one.
    assert await listed(urllib.parse.urlencode({"category": '{"$ne": "music"}'})) == (200, [])
    assert (await listed(urllib.parse.urlencode({"organizer_id": '{"$gt": ""}'})))[0] == 400


async def test_a_mongo_operator_in_place_of_an_id_is_a_404(api, world):
    for text in ('{"$ne": null}', "$where", '{"$gt": ""}', "[object Object]"):
        quoted = urllib.parse.quote(text, safe="")
        for path in (f"/api/v1/events/{quoted}", f"/api/v1/users/{quoted}", f"/api/v1/events/{quoted}/stats"):
            reply = await api.call("GET", path, token=world.mallory.token)
            assert reply.status == 404, (path, reply)


async def test_mongo_operators_in_token_claims_are_refused(api, world, settings):
    for changes in ({"sub": {"$ne": None}}, {"sub": [world.owner.id]}, {"jti": {"$exists": False}}):
        reply = await api.call("GET", "/api/v1/users/me", token=signed(settings, claims(world.mallory, **changes)))
        assert reply.status == 401 and reply.json["code"] == "token_invalid", (changes, reply)


async def test_a_catastrophic_backtracking_pattern_in_q_is_matched_literally(api, world):
    await publish(api, world.owner.token, title="a" * 40 + "!")
    literal = await publish(api, world.owner.token, title="Regex night: (a+)+$ explained")
    reply = await api.call("GET", "/api/v1/events?" + urllib.parse.urlencode({"q": "(a+)+$"}),
                           token=world.mallory.token)
    assert reply.status == 200 and [item["id"] for item in reply.data["items"]] == [literal["id"]]


async def test_nan_and_infinity_are_malformed_json(api, world):
    for constant in ("NaN", "Infinity", "-Infinity"):
        raw = json.dumps(event_body(geofence_radius="here")).replace('"here"', constant)
        reply = await api.call("POST", "/api/v1/events", raw=raw, token=world.owner.token,
                               headers={"Content-Type": "application/json"})
        assert reply.status == 400 and reply.json["code"] == "malformed_json", (constant, reply)


async def test_every_response_says_nosniff_no_store_and_names_no_server(api, world):
    answered = []
    for method, path, _ in operations(api.contract.document, lambda op: "logout" not in op["operationId"].lower()):
        for token in (world.mallory.token, None):
            answered.append(await api.call(method, first_filled(path, world), token=token))
    answered += [await api.call("GET", "/api/v1/no-such-thing"), await api.call("DELETE", "/healthz"),
                 await api.call("OPTIONS", "/api/v1/events"), await api.call("TRACE", "/healthz"),
                 await api.call("POST", "/api/v1/auth/login", raw="x" * (2 * 1024 * 1024))]
    for reply in answered:
        assert reply.headers.get("X-Content-Type-Options") == "nosniff", reply
        assert reply.headers.get("Cache-Control") == "no-store", reply
        assert "Server" not in reply.headers, reply


async def test_auth_answers_are_never_cached(api, world):
    replies = [
        await api.call("POST", "/api/v1/auth/register", {"username": "fresh_one", "email": "fresh@example.com",
                                                         "password": PASSWORD}),
        await api.call("POST", "/api/v1/auth/login", {"email": world.alice.email, "password": PASSWORD}),
        await api.call("POST", "/api/v1/auth/login", {"email": world.alice.email, "password": "wrong one"}),
        await api.call("POST", "/api/v1/auth/forgot-password", {"email": world.alice.email}),
        await api.call("POST", "/api/v1/auth/reset-password", {"token": "made-up", "password": "whatever123"}),
        await api.call("GET", "/api/v1/users/me", token=world.alice.token),
        await api.call("POST", "/api/v1/auth/logout", token=world.alice.token),
    ]
    assert [reply.headers.get("Cache-Control") for reply in replies] == ["no-store"] * len(replies)


async def test_cors_is_granted_to_no_origin_by_default(api):
    for method in ("OPTIONS", "GET"):
        reply = await api.call(method, "/healthz", headers={"Origin": "https://app.example.com"})
        assert "Access-Control-Allow-Origin" not in reply.headers


@pytest.mark.settings(allowed_origins=["https://app.example.com"])
async def test_cors_is_not_granted_to_lookalike_or_null_origins(api):
    for origin in ("https://app.example.com.evil.com", "https://evilapp.example.com", "http://app.example.com",
                   "https://app.example.com:8443", "https://app.example.com/", "null", "*"):
        reply = await api.call("OPTIONS", "/api/v1/auth/login", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in reply.headers, origin
    granted = await api.call("OPTIONS", "/api/v1/auth/login", headers={"Origin": "https://app.example.com"})
    assert granted.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Credentials" not in granted.headers and "Origin" in granted.headers["Vary"]


class FailingHandler(BaseHandler):
    """An endpoint with a bug, to see what a 500 shows."""
    authentication = "none"

    def get(self):
        raise RuntimeError("cannot reach mongodb://admin:hunter2@db.internal:27017")


async def test_an_internal_error_shows_no_traceback_or_internals(api, app, services, caplog):
    app.add_handlers(r".*", [(r"/failing", FailingHandler, dict(services=services))])
    reply = await api.call("GET", "/failing")
    assert reply.status == 500 and reply.json == {"message": "Internal Server Error.", "code": "internal_error"}
    for internal in ("Traceback", "RuntimeError", "hunter2", "db.internal", "failing"):
        assert internal not in reply.text
    assert any(record.exc_info and "hunter2" in str(record.exc_info[1]) for record in caplog.records)  # logged


def test_debug_and_tracebacks_are_off(app):
    assert app.settings.get("debug") is False
    assert not app.settings.get("serve_traceback")
    assert not app.settings.get("autoreload")


async def test_trace_is_not_allowed(api):
    reply = await api.call("TRACE", "/api/v1/users/me", headers={"Authorization": "Bearer leak-me"})
    assert reply.status == 405 and "leak-me" not in reply.text


# Photos add: test_an_upload_that_is_not_an_image_is_a_415, test_a_served_photo_says_nosniff.
# Chat adds (cross-site WebSocket hijacking): test_a_chat_handshake_from_a_foreign_origin_is_refused.
