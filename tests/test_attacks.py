"""The attack suite: one test per attack, named for what the attacker must not get.

Grouped by the OWASP API Security Top 10 (2023). A hostile client talks to the real application.
Attacks that hold for every operation (a forged token, a size cap, a header, a field the server
owns) run against every operation of the OpenAPI document the server publishes, so a route added
later is attacked without a line here (a path parameter this file has no ids for fails, saying
so). Attacks another module already proves are named under their heading instead of repeated.
"""
import asyncio
import base64
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import re
import select
import socket
import struct
import time
import urllib.parse
import uuid
import zlib

import jwt
import pytest
import tornado.httpclient
import tornado.iostream
from PIL import Image

from domain.accounts import REGISTRATIONS_WAITING
from domain.mailer import EMAIL_TEXT
from domain.photos import MAX_JPEG_SCANS, MAX_PHOTO_PIXELS
from domain.times import parse_iso, utcnow
from handlers.base import BaseHandler
from handlers.photos import MULTIPART_OVERHEAD_BYTES
from tests.chat_client import WAIT_SECONDS, ChatClient
from tests.conftest import PASSWORD, Api, ContractCheck, make_settings
from tests.event_builders import PARIS, event_body, hours_from_now, publish, unknown_id
from tests.photo_uploads import multipart, png, upload
from tests.running_server import SAFETY_TIMEOUT, RunningServer

pytestmark = pytest.mark.gen_test

RESET_LINK = re.compile(r"(\S+/reset-password)#token=([A-Za-z0-9_\-%]+)")
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}


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
    """Each concrete path for a template, over the world's ids for its parameters: every
    combination when it has several ({event_id} and {user_id} of a check-in)."""
    concrete = [path]
    for name in re.findall(r"{(\w+)}", path):
        concrete = [done.replace(f"{{{name}}}", value) for done in concrete for value in world.ids(name)]
    return concrete


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
    return [RESET_LINK.search(getattr(record, EMAIL_TEXT)).groups()
            for record in [*caplog.get_records("setup"), *caplog.records]
            if hasattr(record, EMAIL_TEXT) and f"to={address} " in record.getMessage()]


# --- tokens an attacker can forge, or keep after they died ------------------------------------

class TokenForge:
    """Each method makes the tokens of one attack in a member's name, each with the code its
    refusal must carry. REST and the chat handshake are attacked with this one table."""

    def __init__(self, api, world, settings, services, caplog):
        self.api, self.world, self.settings, self.services, self.caplog = api, world, settings, services, caplog

    async def alg_none(self, member):
        payload = b64(claims(member, role="organizer"))
        return [(f"{b64({'alg': alg, 'typ': 'JWT'})}.{payload}.", "token_invalid")
                for alg in ("none", "None", "NONE", "nOnE")]

    async def signed_with_another_key(self, member):
        return [(signed(self.settings, claims(member), key="k" * 40), "token_invalid")]

    async def signed_with_another_algorithm(self, member):
        # The right key, but HS512: only HS256 is accepted, so the header cannot choose the check.
        return [(signed(self.settings, claims(member), algorithm="HS512"), "token_invalid")]

    async def expired(self, member):
        return [(signed(self.settings, claims(member, iat=time.time() - 7200, exp=time.time() - 1)), "token_expired")]

    async def revoked(self, member):
        assert (await self.api.call("POST", "/api/v1/auth/logout", token=member.token)).status == 200
        return [(member.token, "token_revoked")]

    async def issued_before_a_password_reset(self, member):
        await self.api.call("POST", "/api/v1/auth/forgot-password", {"email": member.email})
        await self.services.accounts.drain()
        _, reset_token = reset_emails(self.caplog, member.email)[-1]
        assert (await self.api.call("POST", "/api/v1/auth/reset-password",
                                    {"token": reset_token, "password": "a new password"})).status == 200
        return [(member.token, "token_revoked")]

    async def tampered(self, member):
        header, _, signature = member.token.split(".")
        promoted = b64(claims(member, sub=self.world.owner.id, role="organizer"))
        return [(f"{header}.{promoted}.{signature}", "token_invalid")]

    async def missing_a_claim(self, member):
        return [(signed(self.settings, claims(member, **{claim: None})), "token_invalid")
                for claim in ("exp", "iat", "sub", "jti")]

    async def of_a_user_who_no_longer_exists(self, member):
        # Signed with the server's key, as a deleted account's token still is: only the lookup of
        # its user can turn it away.
        return [(signed(self.settings, claims(member, sub=unknown_id())), "token_invalid")]


FORGERIES = [TokenForge.alg_none, TokenForge.signed_with_another_key, TokenForge.signed_with_another_algorithm,
             TokenForge.expired, TokenForge.revoked, TokenForge.issued_before_a_password_reset,
             TokenForge.tampered, TokenForge.missing_a_claim, TokenForge.of_a_user_who_no_longer_exists]


@pytest.fixture
def forge(api, world, settings, services, caplog):
    return TokenForge(api, world, settings, services, caplog)


async def refused_everywhere_all(api, world, forged):
    for token, code in forged:
        await refused_everywhere(api, world, token, code)


async def logged_in_again(api, member):
    """Another token of the same user, as a second device gets."""
    reply = await api.call("POST", "/api/v1/auth/login", {"email": member.email, "password": PASSWORD})
    assert reply.status == 200, reply
    return reply.data["token"]


# --- chat ------------------------------------------------------------------------------------

class Chats:
    """The chat connections a test opens, closed after it."""

    def __init__(self, base_url, services):
        self.base_url, self.services = base_url, services
        self.clients = []

    async def open(self, token, event):
        client = await ChatClient.connect(self.base_url, self.services, event["id"], token)
        self.clients.append(client)
        return client

    async def joined(self, member, event):
        client = await self.open(member.token, event)
        await client.join()
        return client

    def close_all(self):
        for client in self.clients:
            client.close()


@pytest.fixture
def chats(base_url, services, http_server):
    chats = Chats(base_url, services)
    yield chats
    chats.close_all()


async def handshake(api, event, token):
    """The server's HTTP answer to a chat upgrade request it refuses."""
    return await api.call("GET", f"/ws/chat/{event['id']}", headers={**UPGRADE, "Authorization": f"Bearer {token}"})


# --- a client that writes the protocol by hand --------------------------------------------------

async def bounded(awaitable):
    return await asyncio.wait_for(awaitable, WAIT_SECONDS)


async def raw_connection(base_url):
    stream = tornado.iostream.IOStream(socket.socket())
    await bounded(stream.connect(("127.0.0.1", int(base_url.rsplit(":", 1)[1]))))
    return stream


async def raw_request(base_url, head):
    """Sends a request head (and no body); returns the stream and the answer's head."""
    stream = await raw_connection(base_url)
    await stream.write(head.encode())
    return stream, await bounded(stream.read_until(b"\r\n\r\n"))


def client_frame(payload, opcode=0x1, fin=True):
    """A WebSocket frame as a client sends it: masked, here with a zero key, which leaves the payload as is."""
    size = len(payload)
    length = (struct.pack("!B", 0x80 | size) if size < 126 else
              struct.pack("!BH", 0x80 | 126, size) if size < 1 << 16 else struct.pack("!BQ", 0x80 | 127, size))
    return struct.pack("!B", (0x80 if fin else 0) | opcode) + length + b"\0\0\0\0" + payload


async def server_frame(stream):
    """(opcode, payload) of the next frame the server sends."""
    first, second = await bounded(stream.read_bytes(2))
    size = second & 0x7F
    if size >= 126:
        size = int.from_bytes(await bounded(stream.read_bytes(2 if size == 126 else 8)), "big")
    return first & 0x0F, await bounded(stream.read_bytes(size)) if size else b""


# --- photos -----------------------------------------------------------------------------------

def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_png(width, height, extra_chunks=b""):
    """A valid black-and-white PNG of that size: 1-bit pixels, all zero, deflate squeezes them
    about a thousand to one (20000 × 20000 pixels in some 50 kB)."""
    squeeze, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)
    pixels = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra_chunks + png_chunk(b"IDAT", pixels)
            + png_chunk(b"IEND", b""))


@pytest.fixture
def settings(request, tmp_path):
    """The suite's settings, with photos stored in a directory of the test."""
    marker = request.node.get_closest_marker("settings")
    return make_settings(**{"media_root": str(tmp_path / "media"), **(marker.kwargs if marker else {})})


# === API1:2023 Broken Object Level Authorization =============================================
# Also proven elsewhere: tests/test_events.py::test_another_organizer_cannot_change_or_delete_the_event,
# tests/test_events.py::test_the_organizer_view_lists_only_the_callers_events_with_stats,
# tests/test_auth.py::test_reset_password_works_once_and_revokes_older_tokens (single use).

async def test_cancelling_an_rsvp_never_cancels_someone_elses(api, world):
    reply = await api.call("DELETE", f"/api/v1/events/{world.event['id']}/rsvp", token=world.mallory.token,
                           raw=json.dumps({"user_id": world.alice.id}))
    assert reply.status == 200 and (reply.data["status"], reply.data["rsvp_count"]) == ("not_going", 1)
    seen_by_alice = await api.call("GET", f"/api/v1/events/{world.event['id']}", token=world.alice.token)
    assert seen_by_alice.data["is_rsvped"] is True and seen_by_alice.data["has_arrived"] is True


async def test_an_rsvp_is_always_the_callers_own(api, world):
    reply = await api.call("POST", f"/api/v1/events/{world.rival_event['id']}/rsvp", token=world.mallory.token,
                           raw=json.dumps({"user_id": world.alice.id}))
    assert reply.status == 200 and (reply.data["status"], reply.data["rsvp_count"]) == ("going", 1)
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
    # The view takes no filter: naming another organizer is refused, never applied.
    query = urllib.parse.urlencode({"organizer_id": world.owner.id, "user_id": world.owner.id})
    reply = await api.call("GET", f"/api/v1/organizer/events?{query}", token=world.rival.token)
    assert (reply.status, reply.json["code"]) == (400, "unknown_query_parameter")
    assert world.owner.id not in reply.text and world.event["id"] not in reply.text
    reply = await api.call("GET", "/api/v1/organizer/events", token=world.rival.token)
    assert [item["id"] for item in reply.data["items"]] == [world.rival_event["id"]]


async def test_stats_of_another_organizers_event_are_counts_without_ids(api, world, services):
    reply = await api.call("GET", f"/api/v1/events/{world.event['id']}/stats", token=world.rival.token)
    assert reply.status == 200
    assert set(reply.data) == set(services.openapi["components"]["schemas"]["EventStats"]["properties"])
    assert all(isinstance(value, (int, float)) for value in reply.data.values())


# Proven elsewhere for photos and chat: no photo into an event the caller is not part of,
# tests/test_photos_http.py::test_anyone_else_is_refused_with_403_and_nothing_is_stored,
# ::test_a_cancelled_rsvp_no_longer_allows_uploads; no chat room without an RSVP,
# tests/test_chat_limits.py::test_someone_neither_organizer_nor_rsvped_is_refused_with_403,
# ::test_cancelling_the_rsvp_closes_the_door; nor its history,
# tests/test_messages.py::test_history_is_for_the_organizer_and_rsvped_users_only; nor another room's
# messages named by id, tests/test_chat.py::test_a_since_from_another_event_fails_closed.


async def cancel_rsvp(api, world):
    reply = await api.call("DELETE", f"/api/v1/events/{world.event['id']}/rsvp", token=world.alice.token)
    assert reply.status == 200, reply


async def delete_event(api, world):
    reply = await api.call("DELETE", f"/api/v1/events/{world.event['id']}", token=world.owner.token)
    assert reply.status == 200, reply


@pytest.mark.parametrize("ending, status", [(cancel_rsvp, 403), (delete_event, 404)],
                         ids=["rsvp cancelled", "event deleted"])
async def test_a_chat_handshake_that_loses_its_right_midway_is_refused(api, world, services, base_url,
                                                                       http_server, ending, status):
    # handshake_interrupted_by (under API2) lands the ending between the handshake's membership
    # check and its upgrade.
    assert await handshake_interrupted_by(services, base_url, world.alice.token, world.event,
                                          lambda: ending(api, world)) == status


async def test_the_photos_of_a_deleted_event_are_no_longer_served(api, world, http_client, base_url):
    # Alice's photo of the event: its URL is public (no token), so deleting the event must
    # delete the file, and no cache may have been told to keep it for a year.
    reply = await upload(api, world.event["id"], world.alice.token, png())
    assert reply.status == 201, reply
    url = base_url + urllib.parse.urlsplit(reply.data["url"]).path
    served = await http_client.fetch(url, raise_error=False)
    assert served.code == 200
    cache = dict(re.findall(r"([a-z-]+)(?:=(\d+))?", served.headers["Cache-Control"]))
    assert "immutable" not in cache and int(cache["max-age"]) <= 3600

    assert (await api.call("DELETE", f"/api/v1/events/{world.event['id']}", token=world.owner.token)).status == 200

    gone = await http_client.fetch(url, raise_error=False)
    assert gone.code == 404 and "max-age" not in gone.headers.get("Cache-Control", "")
    revalidated = await http_client.fetch(url, raise_error=False,
                                          headers={"If-Modified-Since": served.headers["Last-Modified"]})
    assert revalidated.code == 404


# === API2:2023 Broken Authentication ==========================================================
# Every forged or dead token below is tried on every protected operation.
# Also proven elsewhere: tests/test_auth.py::test_wrong_password_and_unknown_email_get_the_same_401,
# ::test_repeated_failures_for_one_email_are_rate_limited, ::test_repeated_failures_from_one_address_are_rate_limited,
# ::test_an_expired_reset_token_is_refused, ::test_an_unknown_reset_token_is_refused,
# tests/test_proxy.py::test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_limit.

async def test_an_alg_none_token_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.alg_none(world.mallory))


async def test_a_token_signed_with_another_key_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.signed_with_another_key(world.mallory))


async def test_a_token_signed_with_another_algorithm_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.signed_with_another_algorithm(world.mallory))


async def test_an_expired_token_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.expired(world.mallory))


async def test_a_revoked_token_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.revoked(await join(api)))


async def test_a_token_issued_before_a_password_reset_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.issued_before_a_password_reset(world.alice))


async def test_a_token_with_a_tampered_payload_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.tampered(world.mallory))


async def test_a_token_missing_a_required_claim_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.missing_a_claim(world.mallory))


async def test_a_token_of_a_user_who_no_longer_exists_is_refused_everywhere(api, world, forge):
    await refused_everywhere_all(api, world, await forge.of_a_user_who_no_longer_exists(world.mallory))


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


@pytest.mark.parametrize("forgery", FORGERIES, ids=lambda forgery: forgery.__name__)
async def test_a_forged_or_revoked_token_is_refused_at_the_chat_handshake(api, world, forge, http_server, forgery):
    # Alice may chat in the event: the token is the only reason left to turn her away.
    for token, code in await forgery(forge, world.alice):
        for query, headers in ((f"?token={token}", UPGRADE), ("", {**UPGRADE, "Authorization": f"Bearer {token}"})):
            reply = await api.call("GET", f"/ws/chat/{world.event['id']}{query}", headers=headers)
            assert reply.status == 401 and reply.json["code"] == code, (query or "header", reply)


# Proven elsewhere for the sockets a token opened before it died:
# tests/test_chat_lifecycle.py::test_logout_closes_the_sockets_opened_with_that_token_with_4401,
# ::test_a_password_reset_closes_every_socket_opened_before_it_with_4401.


async def test_a_chat_socket_is_closed_when_its_token_expires(api, world, settings, chats):
    # A genuine token of Alice's that dies in two seconds: REST refuses it from then on, and
    # so must the socket opened with it, which logout (needing a live token) could not end.
    # One timer serves every socket: a token dying sooner, opened later, is ended first all the same.
    later = signed(settings, claims(world.alice, iat=time.time(), exp=int(time.time()) + 4))
    longer = await chats.open(later, world.event)
    await longer.join()
    expiring = signed(settings, claims(world.alice, iat=time.time(), exp=int(time.time()) + 2))
    socket = await chats.open(expiring, world.event)
    await socket.join()
    assert await socket.closed() == 4401
    assert socket.connection.close_reason == "token expired"
    assert longer.close_code is None
    assert await longer.closed() == 4401
    reply = await api.call("GET", "/api/v1/users/me", token=expiring)
    assert reply.status == 401 and reply.json["code"] == "token_expired"


class MembershipPause:
    """The events repository with the next membership check (the last read of a chat handshake)
    held, once it has answered, until `release()`: so a logout, a cancel or a deletion lands
    inside the handshake every time, not by luck. The store is SQLite: its reads yield to the loop."""

    def __init__(self, events):
        self.events = events
        self.reached, self._released = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.events, name)

    async def is_member(self, event_id, user_id):
        answer = await self.events.is_member(event_id, user_id)
        if not self.reached.is_set():
            self.reached.set()
            await self._released.wait()
        return answer

    def release(self):
        self._released.set()


async def handshake_interrupted_by(services, base_url, token, event, ending):
    """The HTTP status of a chat handshake with `token` while `ending` ran in the middle of it."""
    pause = services.store.events = MembershipPause(services.store.events)
    try:
        connecting = asyncio.ensure_future(ChatClient.connect(base_url, services, event["id"], token))
        await bounded(pause.reached.wait())
        await ending()
    finally:
        pause.release()
        services.store.events = pause.events
    try:
        socket = await connecting
    except tornado.httpclient.HTTPClientError as refusal:
        return refusal.code
    socket.close()
    return 101


@pytest.mark.parametrize("ending", [TokenForge.revoked, TokenForge.issued_before_a_password_reset],
                         ids=["logout", "password reset"])
async def test_a_logout_or_reset_during_a_chat_handshake_refuses_it(world, forge, services, base_url,
                                                                    http_server, ending):
    status = await handshake_interrupted_by(services, base_url, world.alice.token, world.event,
                                            lambda: ending(forge, world.alice))
    assert status == 401


# Accounts that look alike, and logins one client can block for another (issue 12, items 6-8).

def forwarded(address):
    return {"X-Forwarded-For": address}


async def login(api, email, password, address):
    return await api.call("POST", "/api/v1/auth/login", {"email": email, "password": password},
                          headers=forwarded(address))


@pytest.mark.parametrize("look_alike", ["\u212aate@example.com", "ｋａｔｅ@example.com", "KATE@EXAMPLE.COM"])
async def test_a_unicode_look_alike_of_a_registered_email_is_a_conflict(api, look_alike):
    # The Kelvin sign, fullwidth letters: "kate@example.com" once normalized.
    await api.register(username="kate", email="kate@example.com")
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "squatter", "email": look_alike, "password": PASSWORD})
    assert reply.status == 409 and reply.json["code"] == "email_taken"


@pytest.mark.parametrize("look_alike", ["kаte@example.com", "kate@exаmple.com", "kate\u200b@example.com",
                                        "ka\u202ete@example.com"])
async def test_an_email_mixing_scripts_or_hiding_characters_is_refused(api, look_alike):
    # A Cyrillic "а" in the local part or in a label of the domain; a zero-width space; a
    # right-to-left override. NFKC leaves them all as they are: refused, not a second "kate".
    await api.register(username="kate", email="kate@example.com")
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "squatter", "email": look_alike, "password": PASSWORD})
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/email"


async def test_an_email_in_one_other_script_is_still_welcome(api):
    user, _ = await api.register(username="ivan", email="иван@пример.рф")
    assert user["email"] == "иван@пример.рф"


@pytest.mark.parametrize("look_alike,status,code", [
    ("аna", 400, "validation_failed"),  # a Cyrillic "а"
    ("ａｎａ", 400, "validation_failed"),  # fullwidth letters
    ("ana\n", 400, "validation_failed"),  # a trailing newline
    ("ANA", 409, "username_taken"),
])
async def test_a_username_look_alike_is_refused(api, look_alike, status, code):
    await api.register(username="ana")
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": look_alike, "email": "other@example.com", "password": PASSWORD})
    assert reply.status == status and reply.json["code"] == code


async def test_a_look_alike_email_registers_as_the_address_mail_really_goes_to(api, services, caplog):
    # The squatter came first with the Kelvin sign: the account holds the normalized address, so
    # the real owner of kate@example.com gets its reset mail and takes the address back.
    caplog.set_level(logging.INFO, logger="mail")
    squatter, _ = await api.register(username="squatter", email="\u212aate@example.com")
    assert squatter["email"] == "Kate@example.com"
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "kate@example.com"})
    await services.accounts.drain()
    [(_, token)] = reset_emails(caplog, "Kate@example.com")
    assert reset_emails(caplog, "\u212aate@example.com") == []
    reset = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "mine again"})
    assert reset.status == 200
    owner = await api.call("POST", "/api/v1/auth/login", {"email": "kate@example.com", "password": "mine again"})
    assert owner.status == 200 and owner.data["user"]["id"] == squatter["id"]


async def test_reset_mail_goes_only_to_the_address_its_owner_registered(api, services, caplog):
    # An account stored before normalization with the Kelvin sign shares the key of kate@example.com:
    # a reset asked for kate@example.com must not be mailed to it.
    caplog.set_level(logging.INFO, logger="mail")
    await services.store.users.add("squatter", "\u212aate@example.com", "attendee", None, utcnow())
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "kate@example.com"})
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "KATE@example.com"})
    await services.accounts.drain()
    assert reset_emails(caplog, "\u212aate@example.com") == []
    # Asked for the registered address itself, it is mailed there.
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "\u212aate@example.com"})
    await services.accounts.drain()
    assert len(reset_emails(caplog, "\u212aate@example.com")) == 1


@pytest.mark.settings(trusted_proxies=["127.0.0.1"], login_attempts_per_email=3)
async def test_one_strangers_failed_logins_never_lock_the_owner_out(api):
    await api.register(email="victim@example.com")
    guesses = [(await login(api, "victim@example.com", f"guess {n}", "203.0.113.66")).status for n in range(10)]
    assert guesses == [401] * 3 + [429] * 7  # the stranger is stopped...
    owner = await login(api, "VICTIM@example.com", PASSWORD, "198.51.100.7")
    assert owner.status == 200  # ...and the owner, elsewhere, is not


@pytest.mark.settings(trusted_proxies=["127.0.0.1"], login_attempts_per_account=6, login_backoff_max_seconds=60)
async def test_guessing_spread_over_many_addresses_backs_off_and_the_owner_still_logs_in(api):
    await api.register(email="victim@example.com")
    assert (await login(api, "victim@example.com", PASSWORD, "198.51.100.7")).status == 200  # the owner's address
    guesses = await asyncio.gather(*[login(api, "victim@example.com", f"guess {n}", f"203.0.113.{n}")
                                     for n in range(20)])
    assert sorted(reply.status for reply in guesses) == [401] * 6 + [429] * 14
    # The backoff is bounded: nobody is told to wait longer than login_backoff_max_seconds...
    assert all(1 <= int(reply.headers["Retry-After"]) <= 60 for reply in guesses if reply.status == 429)
    elsewhere = await login(api, "victim@example.com", PASSWORD, "192.0.2.1")
    assert elsewhere.status == 429 and int(elsewhere.headers["Retry-After"]) <= 60
    # ...and the owner's own address passes it.
    assert (await login(api, "victim@example.com", PASSWORD, "198.51.100.7")).status == 200


@pytest.mark.settings(trusted_proxies=["127.0.0.1"], login_attempts_per_address=3, login_attempts_per_email=100)
async def test_ipv4_clients_seen_as_ipv4_mapped_ipv6_do_not_share_one_login_limit(api):
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d, all in one IPv6 /64.
    for n in range(3):
        assert (await login(api, f"guess{n}@example.com", "wrong password", "::ffff:203.0.113.1")).status == 401
    assert (await login(api, "guess@example.com", "wrong password", "::ffff:203.0.113.1")).status == 429
    assert (await login(api, "guess@example.com", "wrong password", "203.0.113.1")).status == 429  # the same client
    assert (await login(api, "guess@example.com", "wrong password", "::ffff:203.0.113.2")).status == 401


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
    # A 400 on create; on PUT and PATCH ignored (a fetched event may be sent back), never applied.
    schemas = services.openapi["components"]["schemas"]
    # `cancelled` is written by PUT/PATCH only (tests/test_calendar.py), not computed.
    computed = set(schemas["Event"]["properties"]) - set(schemas["EventCreateRequest"]["properties"]) - {"cancelled"}
    assert {"rsvp_count", "arrival_count", "photo_count", "organizer", "is_rsvped"} <= computed
    path, rivals = f"/api/v1/events/{world.event['id']}", f"/api/v1/events/{world.rival_event['id']}"
    before = (await api.call("GET", path, token=world.owner.token)).data
    rivals_before = (await api.call("GET", rivals, token=world.rival.token)).data
    smuggled = {"id": world.rival_event["id"], "organizer": {"id": world.rival.id, "username": "rival"},
                "rsvp_count": 0, "arrival_count": 99, "photo_count": 99, "waitlist_count": 99,
                "waitlist_position": 1, "is_rsvped": True, "has_arrived": True,
                "created_at": "2000-01-01T00:00:00Z", "updated_at": "2000-01-01T00:00:00Z", "distance_m": 0,
                "stats": {"rsvp_count": 0}, "cancelled_at": "2000-01-01T00:00:00Z", "sequence": 0}
    assert computed <= set(smuggled) | {"stats"}
    for field in sorted(computed):
        reply = await api.call("POST", "/api/v1/events", event_body(**{field: 0}), token=world.owner.token)
        assert reply.status == 400 and reply.json["errors"][0]["path"] == f"/{field}", (field, reply)
    for method in ("PUT", "PATCH"):
        reply = await api.call(method, path, {**smuggled, "title": before["title"]}, token=world.owner.token)
        assert reply.status == 200, (method, reply)
        # Only read-only fields and the title it has: nothing is written, its revision included.
        assert (await api.call("GET", path, token=world.owner.token)).data == before
    assert (await api.call("GET", rivals, token=world.rival.token)).data == rivals_before


async def test_no_response_shows_another_users_email_or_any_hash_or_secret(api, world, services, settings, caplog):
    password_hashes = [(await services.store.users.get(member.id))["password_hash"] for member in world.members]
    [(_, raw_reset_token)] = reset_emails(caplog, world.alice.email)
    # The world's one pending reset token as the store keeps it, its SHA-256 digest: taking it
    # proves that this is the digest stored.
    reset_digest = hashlib.sha256(raw_reset_token.encode()).hexdigest()
    assert await services.store.reset_tokens.take(reset_digest, utcnow()) == world.alice.id
    never_shown = (password_hashes + [reset_digest, raw_reset_token] +
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


# Proven elsewhere: an uploaded photo keeps no location or camera (EXIF GPS and Make, through HTTP),
# tests/test_photos_http.py::test_the_organizer_uploads_a_photo_that_is_served_without_its_gps_at_the_returned_url,
# tests/test_photos_s3_http.py::test_an_upload_is_stored_in_the_bucket_without_its_gps.

async def test_a_chat_message_cannot_choose_its_sender_or_time(world, services, chats):
    sent_after = utcnow() - datetime.timedelta(seconds=1)
    alice, owner = await chats.joined(world.alice, world.event), await chats.joined(world.owner, world.event)
    chosen = {"user_id": world.owner.id, "username": world.owner.username, "timestamp": "2000-01-01T00:00:00Z",
              "id": unknown_id(), "_id": unknown_id(), "event_id": world.rival_event["id"],
              "created_at": "2000-01-01T00:00:00Z"}
    for field, value in chosen.items():
        await alice.send({"type": "send_message", "text": f"as {field}", "client_msg_id": field, field: value})
        refusal = await alice.receive_type("error")
        assert (refusal["code"], refusal["client_msg_id"]) == ("invalid_frame", field)
    await alice.say("in my own name")
    [message] = await owner.messages(1)  # the first message the room sees
    assert message["text"] == "in my own name", message
    assert (message["user_id"], message["username"], message["event_id"]) == (
        world.alice.id, world.alice.username, world.event["id"])
    assert parse_iso(message["timestamp"]) >= sent_after and message["id"] not in chosen.values()
    stored = await services.store.messages.latest(world.event["id"], 100)
    assert [(m["text"], m["user_id"], m["username"]) for m in stored] == [
        ("in my own name", world.alice.id, world.alice.username)]
    assert await services.store.messages.latest(world.rival_event["id"], 100) == []


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
    # 600 kB, under the body limit: refused before it is parsed, for its 300,000 JSON values.
    # 8,000 vertices pass that count, and are refused for the length of the ring alone.
    for vertices, code, path in ((100_000, "body_too_complex", None),
                                 (8_000, "validation_failed", "/geofence/coordinates/0")):
        ring = [[1, 2]] * vertices
        raw = json.dumps(event_body(geofence={"type": "Polygon", "coordinates": [ring]}), separators=(",", ":"))
        reply = await api.call("POST", "/api/v1/events", raw=raw, token=world.owner.token,
                               headers={"Content-Type": "application/json"})
        assert (reply.status, reply.json["code"]) == (400, code), reply
        assert [error["path"] for error in reply.json.get("errors", [])][:1] == ([path] if path else [])


async def test_an_email_built_to_make_its_pattern_backtrack_is_refused(api):
    # "a@" then dots: the email pattern backtracks quadratically on it (half a megabyte: hours).
    reply = await api.call("POST", "/api/v1/auth/register",
                           {"username": "mallory", "email": "a@" + "." * 500_000 + "@", "password": PASSWORD})
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/email"


async def test_a_venue_polygon_of_5000_wrong_positions_gets_its_first_error_only(api, world):
    # 50 kB, every latitude out of range: validation stops at the first wrong position instead of
    # listing all 5,000 first (0.4 s of the event loop; the figures are bench/attack_mix_bench.py's).
    raw = json.dumps(event_body(geofence={"type": "Polygon", "coordinates": [[[2.35, 100]] * 1000] * 5}))
    reply = await api.call("POST", "/api/v1/events", raw=raw, token=world.owner.token,
                           headers={"Content-Type": "application/json"})
    assert (reply.status, reply.json["code"]) == (400, "validation_failed"), reply
    assert reply.json["errors"] == [{"path": "/geofence/coordinates/0/0/1",
                                     "message": "must be a number from -90 to 90"}]


async def test_a_huge_value_where_a_string_belongs_is_not_quoted_back(api, world):
    # 20,000 numbers where the title goes: the message names the value, shortened (quoting it
    # whole took longer than parsing it).
    reply = await api.call("POST", "/api/v1/events", event_body(title=[[123456.789] * 5000] * 4),
                           token=world.owner.token)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == "/title", reply
    assert len(reply.text) < 1000


async def test_a_body_of_thousands_of_unknown_fields_gets_a_short_answer(api):
    body = {f"field{n}": n for n in range(5_000)}
    reply = await api.call("POST", "/api/v1/auth/login", body)
    assert reply.status == 400 and len(reply.text) < 5000


async def test_deeply_nested_json_is_a_400_not_a_crash(api):
    # Around the interpreter's recursion limit (1000) the parser gives up with RecursionError.
    for depth in (*range(850, 1010, 10), 100_000):
        raw = '{"email": ' + "[" * depth + "]" * depth + ', "password": "x"}'
        reply = await api.call("POST", "/api/v1/auth/login", raw=raw, headers={"Content-Type": "application/json"})
        assert reply.status == 400, (depth, reply)


async def test_reset_emails_to_one_address_are_capped(api, world, services, caplog):
    answers = set()
    for _ in range(10):
        reply = await api.call("POST", "/api/v1/auth/forgot-password", {"email": world.mallory.email})
        answers.add((reply.status, reply.text))
    await services.accounts.drain()
    assert len(answers) == 1  # the same answer throughout: nothing tells that the cap was reached
    assert len(reset_emails(caplog, world.mallory.email)) == 3
    assert await services.store.reset_tokens.count(world.mallory.id) == 3


# Proven elsewhere for photos: tests/test_photos_http.py::test_a_chunked_body_over_the_limit_is_413,
# ::test_a_photo_over_the_limit_is_413_even_when_the_framing_fits.

@pytest.mark.parametrize("declared", [10 * 1024 * 1024 + MULTIPART_OVERHEAD_BYTES + 1, 10 * 1024 ** 3])
async def test_a_photo_over_its_size_limit_is_a_413_before_it_is_read(world, base_url, declared):
    # Only the head is sent: an answer that waited for the body would never come.
    stream, head = await raw_request(base_url, (
        f"POST /api/v1/events/{world.event['id']}/photos HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {world.owner.token}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {declared}\r\n\r\n"))
    stream.close()
    assert head.startswith(b"HTTP/1.1 413 "), head


def inflating_comment(size):
    return png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(size), 9))


@pytest.mark.parametrize("build, code", [
    pytest.param(lambda: blank_png(20_000, 20_000), (400, "image_too_large"), id="20000 x 20000 pixels"),
    # Over this server's cap (50 M pixels), under the 89 M at which Pillow itself would refuse.
    pytest.param(lambda: blank_png(8_000, MAX_PHOTO_PIXELS // 8_000 + 1), (400, "image_too_large"),
                 id="just over the pixel cap"),
    pytest.param(lambda: blank_png(16, 16, inflating_comment(64 << 20)), (415, "unsupported_media_type"),
                 id="a comment inflating to 64 MiB"),
])
async def test_a_decompression_bomb_photo_is_refused(api, world, build, code):
    data = build()
    assert len(data) < 200_000
    reply = await upload(api, world.event["id"], world.owner.token, data, filename="bomb.png", content_type="image/png")
    assert (reply.status, reply.json["code"]) == code, reply
    shown = await api.call("GET", f"/api/v1/events/{world.event['id']}", token=world.owner.token)
    assert shown.data["photo_count"] == 0


def jpeg_segments(data):
    """(marker, bytes) of each segment of a JPEG after its SOI, up to its EOI; a scan keeps its
    entropy-coded data, which runs to the next marker that is not a stuffed 0xFF or a restart."""
    segments, position = [], 2
    while data[position + 1] != 0xD9:
        marker = data[position + 1]
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:
            end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end).start()
        segments.append((marker, data[position:end]))
        position = end
    return segments


def scan_bomb(size, scans):
    """A progressive JPEG of a flat grey square with `scans` scans: Pillow's last one, an AC
    refinement pass that covers every block of the image in 14 bytes (one end-of-band run), is
    repeated with its Huffman table. The decoder walks all the coefficients of the image on each
    pass: 4,000 passes over 2000 x 2000 pixels cost ~13 s of CPU for 160 kB."""
    out = io.BytesIO()
    Image.new("L", (size, size), 128).save(out, "JPEG", progressive=True)
    segments = jpeg_segments(out.getvalue())
    (table_marker, table), (scan_marker, scan) = segments[-2:]
    assert (table_marker, scan_marker) == (0xC4, 0xDA)
    extra = scans - sum(marker == 0xDA for marker, _ in segments)
    return b"\xff\xd8" + b"".join(segment for _, segment in segments) + (table + scan) * extra + b"\xff\xd9"


async def uploads_at_once(api, world, *photos):
    """Each photo uploaded to the world's event at the same time; their replies, in order."""
    sent = [upload(api, world.event["id"], world.owner.token, data, filename="photo.jpg", content_type="image/jpeg")
            for data in photos]
    return await asyncio.wait_for(asyncio.gather(*sent), 120)


@pytest.mark.parametrize("bomb", [
    pytest.param(lambda: scan_bomb(2000, 4000), id="4000 scans in 160 kB"),
    # Few enough scans, but too many for the size: 70 passes over 16 M pixels.
    pytest.param(lambda: scan_bomb(4000, 70), id="70 scans of 16 M pixels"),
])
async def test_a_progressive_jpeg_scan_bomb_is_refused_and_an_honest_upload_goes_through_meanwhile(
        api, world, bomb):
    data = bomb()
    assert len(data) < 210_000
    *bombs, honest = await uploads_at_once(api, world, data, data, png((1, 1)))
    for reply in bombs:
        assert (reply.status, reply.json["code"]) == (400, "image_too_complex"), reply
    assert honest.status == 201, honest
    shown = await api.call("GET", f"/api/v1/events/{world.event['id']}", token=world.owner.token)
    assert shown.data["photo_count"] == 1


@pytest.mark.settings(photo_decode_cpu_seconds=0.2)
async def test_a_photo_whose_decode_outruns_the_cpu_limit_is_stopped_and_refused(api, world):
    # Within every limit read from the headers (100 scans of 9 M pixels), yet ~0.8 s of CPU: the
    # decode is stopped at the limit, here 0.2 s, and the next upload gets a fresh worker.
    heavy = scan_bomb(3000, MAX_JPEG_SCANS)
    *stopped, honest = await uploads_at_once(api, world, heavy, heavy, png((1, 1)))
    for reply in stopped:
        assert (reply.status, reply.json["code"]) == (400, "image_too_complex"), reply
    assert honest.status == 201, honest
    again = await uploads_at_once(api, world, png((2, 2)))
    assert again[0].status == 201, again


def test_sigterm_while_photos_decode_exits_within_the_grace_period():
    """Decodes are killed at the end of the grace period rather than waited for."""
    grace = 1
    # 49 M pixels in 34 bytes, within every limit: seconds of CPU to re-encode, far beyond the grace.
    out = io.BytesIO()
    Image.new("RGBA", (7000, 7000), (1, 2, 3, 255)).save(out, "WEBP", lossless=True, method=0, quality=0)
    with RunningServer({"SHUTDOWN_GRACE_SECONDS": str(grace), "PHOTO_DECODE_CPU_SECONDS": "60"}) as server:
        status, registered = server.request("POST", "/api/v1/auth/register", {
            "username": "organizer", "email": "organizer@example.com", "password": PASSWORD, "role": "organizer"})
        assert status == 201, registered
        authorization = {"Authorization": f"Bearer {registered['data']['token']}"}
        status, event = server.request("POST", "/api/v1/events", event_body(), headers=authorization)
        assert status == 201, event
        body, headers = multipart(out.getvalue(), filename="big.webp", content_type="image/webp")
        head = "".join(f"{name}: {value}\r\n" for name, value in {**headers, **authorization}.items())
        uploads = []
        for _ in range(2):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT)
            connection.sendall(f"POST /api/v1/events/{event['data']['id']}/photos HTTP/1.1\r\nHost: x\r\n{head}"
                               f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            uploads.append(connection)
        while len(workers := child_processes(server.process.pid)) < 2:  # both photos are decoding
            time.sleep(0.05)

        asked = time.monotonic()
        server.terminate()
        assert server.wait() == 0
        assert time.monotonic() - asked < grace + 5  # a decode alone takes longer
        for worker in workers:  # killed, not left decoding for nobody
            with pytest.raises(ProcessLookupError):
                os.kill(worker, 0)
        for connection in uploads:
            connection.close()


def child_processes(pid):
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listed:
            children += [int(child) for child in listed.read().split()]
    return children


def closed_by_server(connection, trickle=b"1"):
    """Keeps sending a byte every 0.2 s, as a slow client does, until the server closes the
    connection; False if it is still open after SAFETY_TIMEOUT."""
    for _ in range(int(SAFETY_TIMEOUT / 0.2)):
        if select.select([connection], [], [], 0.2)[0]:
            return connection.recv(65536) == b""
        try:
            connection.sendall(trickle)
        except ConnectionError:
            return True
    return False


def test_slow_headers_slow_bodies_and_idle_connections_are_closed_and_one_address_holds_few():
    environment = {"HEADER_TIMEOUT_SECONDS": "1", "BODY_TIMEOUT_SECONDS": "1", "MAX_CONNECTIONS_PER_ADDRESS": "3"}
    with RunningServer(environment) as server:
        def connect(first_bytes=b""):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT)
            connection.sendall(first_bytes)
            return connection

        slow_headers = connect(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow_body = connect(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100000\r\n\r\n{")
        idle = connect()
        refused = connect()
        answer = b""
        while chunk := refused.recv(65536):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 ") and json.loads(body)["code"] == "too_many_connections", answer

        assert closed_by_server(slow_headers)  # however steadily the bytes come
        assert closed_by_server(slow_body)
        assert closed_by_server(idle, trickle=b"")
        assert server.request("GET", "/healthz")[0] == 200  # the address's connections were let go
        for connection in (slow_headers, slow_body, idle, refused):
            connection.close()


def test_connections_from_a_trusted_proxy_are_not_capped():
    # Every client behind the proxy shares its address; the proxy limits them itself.
    environment = {"TRUSTED_PROXIES": "127.0.0.1", "MAX_CONNECTIONS_PER_ADDRESS": "2"}
    with RunningServer(environment) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT) for _ in range(4)]
        assert server.request("GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.7"})[0] == 200
        for connection in held:
            connection.close()


# Proven elsewhere for chat: tests/test_chat_limits.py::test_connections_beyond_the_per_user_cap_are_refused_with_429,
# ::test_frames_beyond_the_rate_limit_get_rate_limited_errors,
# ::test_a_frame_over_64_kib_closes_the_connection_with_1009,
# tests/test_chat.py::test_message_text_is_1_to_2000_characters_after_trimming; a client that does not read is
# dropped, tests/test_chat_limits.py::test_a_client_that_never_reads_is_disconnected_while_the_others_keep_receiving,
# ::test_a_client_that_does_not_read_its_own_answers_is_disconnected. Below, the ways around those limits.

@pytest.mark.settings(chat_max_connections_per_user=2)
async def test_one_user_cannot_open_more_chat_connections_than_allowed(api, world, chats):
    # The cap is the user's: more tokens (logging in again) and more events do not raise it.
    rsvp = await api.call("POST", f"/api/v1/events/{world.rival_event['id']}/rsvp", token=world.alice.token)
    assert rsvp.status == 200
    await chats.open(world.alice.token, world.event)
    await chats.open(await logged_in_again(api, world.alice), world.rival_event)
    third_token = await logged_in_again(api, world.alice)
    for event in (world.event, world.rival_event):
        reply = await handshake(api, event, third_token)
        assert reply.status == 429 and reply.json["code"] == "too_many_connections", reply


@pytest.mark.settings(chat_burst=3, chat_messages_per_second=0.001)
async def test_a_chat_flood_is_rate_limited(world, services, chats):
    # Reconnecting must not refill the bucket, or a flood is a reconnect loop away.
    first = await chats.joined(world.alice, world.event)  # join_chat takes one of the 3
    await first.say("one")
    await first.say("two")
    assert [m["text"] for m in await first.messages(2)] == ["one", "two"]
    first.close()
    await first.closed()
    again = await chats.open(world.alice.token, world.event)
    await again.send({"type": "join_chat"})
    await again.say("three", client_msg_id="three")
    refusals = [await again.receive_type("error") for _ in range(2)]
    assert [(refusal["code"], refusal.get("client_msg_id")) for refusal in refusals] == [
        ("rate_limited", None), ("rate_limited", "three")]
    stored = await services.store.messages.latest(world.event["id"], 100)
    assert sorted(m["text"] for m in stored) == ["one", "two"]


@pytest.mark.settings(chat_burst=1, chat_messages_per_second=100)
async def test_the_buckets_of_closed_chat_connections_are_let_go_once_refilled(world, services, chats):
    # Else connecting and closing, over and over, would grow the server's memory without end.
    for _ in range(3):
        client = await chats.open(world.alice.token, world.event)
        client.close()
        await client.closed()

    async def let_go():
        while services.chat._refilling:
            await asyncio.sleep(0.01)
    await bounded(let_go())


async def test_an_oversized_chat_message_is_refused(world, base_url, http_server):
    # Sent in fragments, each under the 64 KiB cap: the cap holds for the message they make.
    stream, head = await raw_request(base_url, (
        f"GET /ws/chat/{world.event['id']} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {world.alice.token}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
        + "\r\n"))
    assert head.startswith(b"HTTP/1.1 101 "), head
    small = json.dumps({"type": "dance"}).encode()
    await stream.write(client_frame(small[:5], fin=False) + client_frame(small[5:], opcode=0x0))
    opcode, payload = await server_frame(stream)  # reassembled, so answered
    assert opcode == 0x1 and json.loads(payload)["code"] == "unknown_type"
    large = json.dumps({"type": "send_message", "text": "x" * (100 * 1024)}).encode()
    await stream.write(client_frame(large[:50 * 1024], fin=False) + client_frame(large[50 * 1024:], opcode=0x0))
    opcode, payload = await server_frame(stream)
    stream.close()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009


# Registration: a flood must cost neither hashes for duplicates nor the logins' latency
# (bench/registration_flood_bench.py measures the latter).

@pytest.mark.settings(trusted_proxies=["127.0.0.1"], registrations_per_address=3)
async def test_registrations_from_one_address_are_limited(api):
    await api.register(email="taken@example.com")
    attempts = [await api.call("POST", "/api/v1/auth/register",
                               {"username": f"flood{n}", "email": "taken@example.com", "password": PASSWORD},
                               headers={"X-Forwarded-For": "203.0.113.9"}) for n in range(5)]
    assert [reply.status for reply in attempts] == [409] * 3 + [429] * 2  # conflicts count too
    assert int(attempts[-1].headers["Retry-After"]) >= 1
    other = await api.call("POST", "/api/v1/auth/register",
                           {"username": "someone", "email": "someone@example.com", "password": PASSWORD},
                           headers={"X-Forwarded-For": "203.0.113.10"})
    assert other.status == 201


@pytest.mark.gen_test(timeout=30)
@pytest.mark.settings(bcrypt_rounds=11)  # slow enough that the queue is still full when the last request arrives
async def test_a_registration_flood_waits_in_a_bounded_queue_and_duplicates_never_join_it(
        services, base_url, http_server):
    # A client of its own, with enough connections to have every request in flight at once.
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
    api = Api(client, base_url, ContractCheck(services.openapi))
    try:
        await api.register(email="taken@example.com")
        fresh = [api.call("POST", "/api/v1/auth/register",
                          {"username": f"fresh{n}", "email": f"fresh{n}@example.com", "password": PASSWORD})
                 for n in range(services.accounts.hasher.yielding_threads + REGISTRATIONS_WAITING + 8)]
        duplicates = [api.call("POST", "/api/v1/auth/register",
                               {"username": f"dup{n}", "email": "taken@example.com", "password": PASSWORD})
                      for n in range(8)]
        replies = await asyncio.gather(*fresh, *duplicates)
    finally:
        client.close()
    fresh_replies, duplicate_replies = replies[:len(fresh)], replies[len(fresh):]
    busy = [reply for reply in fresh_replies if reply.status == 429]
    assert busy and all(reply.json["code"] == "registrations_busy" and int(reply.headers["Retry-After"]) >= 1
                        for reply in busy)
    assert {reply.status for reply in fresh_replies} == {201, 429}
    # A duplicate is a lookup, not a hash: answered 409, never queued nor turned away as busy.
    assert {reply.status for reply in duplicate_replies} == {409}


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


# === API6:2023 Unrestricted Access to Sensitive Business Flows ================================

async def feed_of(api, member):
    reply = await api.call("GET", "/api/v1/feed?limit=100", token=member.token)
    assert reply.status == 200, reply
    return reply.data["items"]


async def test_follow_and_rsvp_loops_cannot_spam_the_feed_or_leave_a_cancelled_rsvp_in_it(api, world):
    # The owner follows Alice. Alice scripts follow/unfollow and RSVP/cancel rounds to keep
    # appearing in her followers' feeds: each fact shows at most once, and only while true.
    follow, rsvp = f"/api/v1/users/{world.rival.id}", f"/api/v1/events/{world.rival_event['id']}/rsvp"
    for _ in range(5):
        for method, path in (("POST", follow + "/follow"), ("POST", follow + "/unfollow"), ("POST", follow + "/follow"),
                             ("POST", rsvp), ("DELETE", rsvp)):
            assert (await api.call(method, path, token=world.alice.token)).status == 200
    items = await feed_of(api, world.owner)
    assert len([item for item in items if item["type"] == "FOLLOW" and item["target_user_id"] == world.rival.id]) == 1
    assert [item for item in items if item["type"] == "RSVP" and item["event_id"] == world.rival_event["id"]] == []

    # The same rounds sent all at once: the feed still ends telling what is true.
    rounds = [("POST", follow + "/follow"), ("POST", follow + "/unfollow"), ("POST", rsvp), ("DELETE", rsvp)] * 10
    replies = await asyncio.gather(*(api.call(method, path, token=world.alice.token) for method, path in rounds))
    assert all(reply.status == 200 for reply in replies), replies
    follows = (await api.call("GET", follow, token=world.alice.token)).data["is_following"]
    going = (await api.call("GET", f"/api/v1/events/{world.rival_event['id']}", token=world.alice.token)).data
    items = await feed_of(api, world.owner)
    assert len([item for item in items if item["type"] == "FOLLOW" and item["target_user_id"] == world.rival.id]) \
        == int(follows)
    assert len([item for item in items if item["type"] == "RSVP" and item["event_id"] == world.rival_event["id"]]) \
        == int(going["is_rsvped"])


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
        for field, rule in request_schema(services, operation)["properties"].items():
            if rule.get("readOnly"):
                continue  # ignored whatever its value: test_fields_the_server_computes_cannot_be_written_on_an_event
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
    # Bracketed names are not parsed into objects: an unknown parameter, a 400.
    for query in ("category[$ne]=music", "organizer_id[$gt]=", "q[$regex]=.*", "category[$in][]=sports"):
        assert await listed(query) == (400, None), query
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


# Names and emails: whole strings, no control characters (issue 12, item 4).

@pytest.mark.parametrize("field,value", [("username", "ana\n"), ("email", "ana@example.com\n")])
async def test_a_trailing_newline_does_not_make_a_look_alike_account(api, field, value):
    # Python's $ matches before a final newline: "ana\n" passed ^...$ and was another "ana".
    await api.register(username="ana", email="ana@example.com")
    body = {"username": "someone", "email": "someone@example.com", "password": PASSWORD, field: value}
    reply = await api.call("POST", "/api/v1/auth/register", body)
    assert reply.status == 400 and reply.json["errors"][0]["path"] == f"/{field}"


CONTROL_CHARACTERS = ["\x00", "\x1b", "\x7f", "\x85", "\n", "\r", "\t"]


@pytest.mark.parametrize("control", CONTROL_CHARACTERS, ids=repr)
async def test_control_characters_and_nul_are_refused_wherever_a_name_or_email_is_accepted(api, control):
    register = {"username": "ana", "email": "ana@example.com", "password": PASSWORD}
    attempts = [
        ("/api/v1/auth/register", {**register, "username": f"an{control}a"}, "/username"),
        ("/api/v1/auth/register", {**register, "email": f"an{control}a@example.com"}, "/email"),
        ("/api/v1/auth/register", {**register, "email": f"ana@example.com{control}"}, "/email"),
        ("/api/v1/auth/login", {"email": f"ana@example.com{control}", "password": PASSWORD}, "/email"),
        ("/api/v1/auth/login", {"email": f"{control}ana@example.com", "password": PASSWORD}, "/email"),
        ("/api/v1/auth/forgot-password", {"email": f"ana@exa{control}mple.com"}, "/email"),
        ("/api/v1/auth/forgot-password", {"email": f"ana@example.com{control}"}, "/email"),
    ]
    for path, body, field in attempts:
        reply = await api.call("POST", path, body)
        assert reply.status == 400 and reply.json["errors"][0]["path"] == field, (path, body, reply)


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


async def test_a_json_body_sent_as_a_form_or_text_is_refused_by_every_operation(api, world, services, caplog):
    # A page on any site can make its visitor's browser POST text/plain or form bodies without a
    # CORS preflight, so a JSON body is only read as application/json (which needs the preflight).
    for method, path, _ in operations(api.contract.document, takes_json):
        for content_type in ("text/plain", "text/plain; charset=UTF-8", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", "application/jsonp"):
            reply = await api.call(method, first_filled(path, world), raw='{"email": "x@example.com"}',
                                   token=world.owner.token, headers={"Content-Type": content_type})
            assert (reply.status, reply.json["code"]) == (415, "json_required"), (method, path, content_type, reply)
    # Cross-site register, login and forgot-password: nothing happens.
    for path, body in (("/api/v1/auth/register",
                        {"username": "csrf", "email": "csrf@example.com", "password": PASSWORD}),
                       ("/api/v1/auth/login", {"email": world.alice.email, "password": PASSWORD}),
                       ("/api/v1/auth/forgot-password", {"email": world.alice.email})):
        reply = await api.call("POST", path, raw=json.dumps(body), headers={"Content-Type": "text/plain"})
        assert reply.status == 415 and "token" not in reply.text, (path, reply)
    await services.accounts.drain()
    assert len(reset_emails(caplog, world.alice.email)) == 1  # the world's own
    refused = await api.call("POST", "/api/v1/auth/login", {"email": "csrf@example.com", "password": PASSWORD})
    assert refused.status == 401
    # JSON as it should be sent, with or without a charset, is read.
    for content_type in ("application/json", "Application/JSON; charset=utf-8"):
        reply = await api.call("POST", "/api/v1/auth/login", {"email": world.alice.email, "password": PASSWORD},
                               headers={"Content-Type": content_type})
        assert reply.status == 200, (content_type, reply)


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9\xb2", b"\xd9\xa1", b"-1", b"1e3", b" ", b"0x10"])
async def test_a_content_length_that_is_not_ascii_digits_is_a_400_not_a_500(base_url, http_server, caplog, length):
    # b"\xb2" is "²" (latin-1, as headers are read): a digit to str.isdigit() and not to int().
    stream = await raw_connection(base_url)
    await stream.write(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + length + b"\r\n\r\n")
    head = await bounded(stream.read_until(b"\r\n\r\n"))
    size = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE).group(1))
    body = json.loads(await bounded(stream.read_bytes(size)))
    stream.close()
    assert head.startswith(b"HTTP/1.1 400 ") and body["code"] == "malformed_content_length", (head, body)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_trace_is_not_allowed(api):
    reply = await api.call("TRACE", "/api/v1/users/me", headers={"Authorization": "Bearer leak-me"})
    assert reply.status == 405 and "leak-me" not in reply.text


# Proven elsewhere for photos: an upload that is not an image is a 415,
# tests/test_photos_http.py::test_a_jpg_that_is_really_text_is_415_and_not_stored,
# ::test_a_body_that_is_not_multipart_is_415;
# a served photo says nosniff, ::test_the_organizer_uploads_a_photo_that_is_served_without_its_gps_at_the_returned_url.
# For chat (cross-site WebSocket hijacking):
# tests/test_chat_limits.py::test_a_chat_handshake_from_a_foreign_origin_is_refused.

async def test_a_page_hidden_behind_a_real_photo_is_not_served(api, world, http_client, base_url):
    # A valid PNG with HTML after its end: if stored as sent, the photo URL would serve a page that
    # a browser sniffing past the declared type could run, on this server's origin.
    page = b"<html><script>alert(document.cookie)</script></html>"
    reply = await upload(api, world.event["id"], world.owner.token, png() + page, filename="photo.html",
                         content_type="text/html")
    assert reply.status == 201, reply
    served = await http_client.fetch(base_url + urllib.parse.urlsplit(reply.data["url"]).path, raise_error=False)
    assert served.code == 200 and served.headers["Content-Type"] == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script" not in served.body and b"<html" not in served.body
