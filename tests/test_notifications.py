"""Notifications through the API and real WebSocket clients, on every store: a promotion pushed
live, stored, listed after a reconnect, marked read and emailed; places in line; edits and
deletions told to those going and waiting; the socket's refusals (revoked token, origin, cap);
privacy; paging."""
import asyncio
import base64
import json
import time
import uuid

import jwt
import pytest
import tornado.httpclient
import tornado.websocket

from domain.notifications import BATCH, MEMBER_PAGE, position_key
from domain.times import utcnow
from tests.chat_client import WAIT_SECONDS, eventually, retry_after
from tests.conftest import console_emails
from tests.event_builders import publish, unknown_id
from tests.repository_fixtures import window
from tests.stores import STORE_NAMES

pytestmark = pytest.mark.gen_test(timeout=60)
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}
FRAME_SCHEMAS = {"notification": "NotificationFrame", "error": "NotificationError"}


@pytest.fixture(params=STORE_NAMES)
def store_name(request):
    return request.param


class NotificationClient:
    """A real WebSocket client of /ws/notifications; every frame is checked against its schema."""

    def __init__(self, connection, validator):
        self.connection = connection
        self.validator = validator

    @classmethod
    async def connect(cls, base_url, services, token=None, headers=None):
        url = base_url.replace("http://", "ws://", 1) + "/ws/notifications" + (f"?token={token}" if token else "")
        request = tornado.httpclient.HTTPRequest(url, headers=headers or {})
        connection = await asyncio.wait_for(tornado.websocket.websocket_connect(request), WAIT_SECONDS)
        return cls(connection, services.validator if services else None)

    async def receive(self):
        text = await asyncio.wait_for(self.connection.read_message(), WAIT_SECONDS)
        if text is None:
            return None
        frame = json.loads(text)
        self.validator.validate(FRAME_SCHEMAS[frame["type"]], frame)
        return frame

    async def notification(self):
        frame = await self.receive()
        assert frame is not None and frame["type"] == "notification", frame
        return frame["notification"]

    async def closed(self):
        while await asyncio.wait_for(self.connection.read_message(), WAIT_SECONDS) is not None:
            pass
        return self.connection.close_code

    def close(self):
        self.connection.close()


@pytest.fixture
def sockets(base_url, services, http_server):
    """Opens notification sockets, closed after the test."""
    opened = []

    async def connect(token=None, headers=None):
        client = await NotificationClient.connect(base_url, services, token, headers)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


async def listed(api, token, query=""):
    reply = await api.call("GET", f"/api/v1/notifications{query}", token=token)
    assert reply.status == 200, reply
    return reply.data


async def notified(api, token, count):
    """The caller's list once it holds `count` notifications."""
    async def check():
        page = await listed(api, token, "?limit=100")
        return page if len(page["items"]) >= count else None
    page = await eventually(check)
    assert len(page["items"]) == count, page
    return page


async def rsvp(api, event, token, method="POST"):
    reply = await api.call(method, f"/api/v1/events/{event['id']}/rsvp", token=token)
    assert reply.status == 200, reply
    return reply.data


async def scene(api, capacity=1, waiting=1):
    """An organizer's event with `capacity` seats taken and `waiting` users in line:
    (event, organizer token, [(user, token) going], [(user, token) waiting in line order])."""
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, title="Jazz Night", capacity=capacity)
    going = [await api.register() for _ in range(capacity)]
    for _, token in going:
        assert (await rsvp(api, event, token))["status"] == "going"
    line = [await api.register() for _ in range(waiting)]
    for _, token in line:
        assert (await rsvp(api, event, token))["status"] == "waitlisted"
    return event, organizer, going, line


# --- promotion --------------------------------------------------------------------------------------

async def test_a_promotion_is_pushed_live_stored_listed_after_a_reconnect_marked_read_and_emailed(
        api, sockets, caplog):
    caplog.set_level("INFO")
    event, _, [(_, goer)], [(waiter, waiter_token)] = await scene(api)
    live = await sockets(waiter_token)

    await rsvp(api, event, goer, "DELETE")

    pushed = await live.notification()
    assert (pushed["type"], pushed["event_id"], pushed["event_title"], pushed["read"]) == (
        "rsvp_promoted", event["id"], "Jazz Night", False)
    assert pushed["message"] == "You got a seat at Jazz Night from the waitlist."
    live.close()
    again = await sockets(waiter_token)  # a reconnect: the list has what was pushed
    page = await listed(api, waiter_token)
    assert page["items"] == [pushed] and page["unread_count"] == 1 and page["next_cursor"] is None
    emails = await eventually(lambda: _emails_to(caplog, waiter["email"]))
    assert "Subject: You got a seat at Jazz Night" in emails[0]

    reply = await api.call("POST", "/api/v1/notifications/read", {"up_to": pushed["id"]}, token=waiter_token)

    assert reply.status == 200 and reply.data == {"marked": 1, "unread_count": 0}
    page = await listed(api, waiter_token)
    assert [item["read"] for item in page["items"]] == [True] and page["unread_count"] == 0
    await again.connection.write_message("{}")  # still open, and push-only
    assert (await again.receive())["code"] == "push_only"


async def _emails_to(caplog, address):
    return [text for text in console_emails(caplog) if f"To: {address}" in text]


async def test_places_in_line_are_told_when_someone_ahead_leaves_or_is_promoted(api, sockets):
    event, _, [(_, goer)], line = await scene(api, waiting=3)
    (_, first), (_, second), (_, third) = line
    third_live = await sockets(third)

    await rsvp(api, event, second, "DELETE")  # the third moves up to 2; the first does not move

    told = await third_live.notification()
    assert (told["type"], told["position"]) == ("waitlist_position", 2)
    assert told["message"] == "You are now number 2 on the waitlist for Jazz Night."

    await rsvp(api, event, goer, "DELETE")  # the first is promoted, the third moves up to 1

    assert (await third_live.notification())["position"] == 1
    # One place per user and event: the newer replaced the older.
    page = await notified(api, third, 1)
    assert [(item["type"], item["position"], item["read"]) for item in page["items"]] == [
        ("waitlist_position", 1, False)]
    first_page = await notified(api, first, 1)
    assert [item["type"] for item in first_page["items"]] == ["rsvp_promoted"]


async def test_a_long_line_is_told_its_new_places_in_batches(api, services, store_name):
    event, _, [(_, goer)], _ = await scene(api, waiting=0)
    # Over two batches. The MongoDB double joins a line in time quadratic in its length: shorter there.
    waiting = [unknown_id() for _ in range(1200 if store_name == "sqlite" else BATCH + 2)]
    for user_id in waiting:  # through the store: 1,200 registrations would only slow the test
        assert await services.store.events.join_waitlist(event["id"], user_id, window(now=utcnow())) is not None

    await rsvp(api, event, goer, "DELETE")

    key = position_key(event["id"])
    told = await eventually(lambda: _all_told(services, key, len(waiting) - 1))
    assert told == {user_id: {"title": "Jazz Night", "position": place}
                    for place, user_id in enumerate(waiting[1:], start=1)}


async def _all_told(services, key, count):
    told = await services.store.notifications.told(key)
    return told if len(told) == count else None


# --- edits and deletions ----------------------------------------------------------------------------

async def test_an_edit_tells_those_going_and_waiting_which_fields_changed(api, sockets):
    event, organizer, [(_, goer)], [(_, waiter)] = await scene(api)
    _, stranger = await api.register()
    goer_live = await sockets(goer)
    path = f"/api/v1/events/{event['id']}"

    reply = await api.call("PATCH", path, {"title": "Jazz Night II", "description": "New band.",
                                           "category": "music"}, token=organizer)
    assert reply.status == 200, reply

    pushed = await goer_live.notification()
    assert (pushed["type"], pushed["fields"], pushed["event_title"]) == (
        "event_changed", ["description", "title"], "Jazz Night II")
    assert pushed["message"] == "Jazz Night II was changed: description, title."
    assert (await notified(api, waiter, 1))["items"][0]["fields"] == ["description", "title"]
    # Nothing changed: nobody is told. The organizer and strangers never are.
    assert (await api.call("PATCH", path, {"title": "Jazz Night II"}, token=organizer)).status == 200
    assert (await api.call("PATCH", path, {"category": "jazz"}, token=organizer)).status == 200
    page = await notified(api, goer, 2)
    assert [item["fields"] for item in page["items"]] == [["category"], ["description", "title"]]
    assert (await listed(api, organizer))["items"] == []
    assert (await listed(api, stranger))["items"] == []


async def test_deleting_an_event_tells_those_going_and_waiting_it_is_cancelled(api, sockets):
    event, organizer, [(_, goer)], [(_, waiter)] = await scene(api)
    waiter_live = await sockets(waiter)

    assert (await api.call("DELETE", f"/api/v1/events/{event['id']}", token=organizer)).status in (200, 204)

    pushed = await waiter_live.notification()
    assert (pushed["type"], pushed["event_id"], pushed["message"]) == (
        "event_cancelled", event["id"], "Jazz Night was cancelled.")
    assert [item["type"] for item in (await notified(api, goer, 1))["items"]] == ["event_cancelled"]
    assert (await listed(api, organizer))["items"] == []


async def test_cancelling_an_event_tells_those_going_and_waiting_once_and_not_of_the_edits_with_it(api, sockets):
    event, organizer, [(_, goer)], [(_, waiter)] = await scene(api)
    goer_live = await sockets(goer)

    reply = await api.call("PATCH", f"/api/v1/events/{event['id']}", {"cancelled": True, "title": "Jazz Night (off)"},
                           token=organizer)
    assert reply.status == 200 and reply.json["data"]["cancelled"] is True, reply

    pushed = await goer_live.notification()
    assert (pushed["type"], pushed["event_id"]) == ("event_cancelled", event["id"])
    assert [item["type"] for item in (await notified(api, waiter, 1))["items"]] == ["event_cancelled"]
    assert [item["type"] for item in (await notified(api, goer, 1))["items"]] == ["event_cancelled"]
    assert (await listed(api, organizer))["items"] == []


async def test_deleting_a_cancelled_event_tells_nobody_again(api):
    event, organizer, [(_, goer)], [(_, waiter)] = await scene(api)
    path = f"/api/v1/events/{event['id']}"
    assert (await api.call("PATCH", path, {"cancelled": True}, token=organizer)).status == 200
    for token in (goer, waiter):
        await notified(api, token, 1)

    assert (await api.call("DELETE", path, token=organizer)).status in (200, 204)

    # A later notification would be listed first: wait until another one, then check there is none.
    _, other_goer = await api.register()
    other = await publish(api, organizer, title="Other night")
    await rsvp(api, other, goer)
    await rsvp(api, other, other_goer)
    assert (await api.call("DELETE", f"/api/v1/events/{other['id']}", token=organizer)).status in (200, 204)
    await notified(api, other_goer, 1)
    page = await notified(api, goer, 2)
    assert [(item["type"], item["event_id"]) for item in page["items"]] == [
        ("event_cancelled", other["id"]), ("event_cancelled", event["id"])]
    assert [item["type"] for item in (await listed(api, waiter))["items"]] == ["event_cancelled"]


async def test_an_edit_of_an_event_over_several_pages_tells_each_member_once(api, services):
    _, organizer = await api.register(role="organizer")
    others = [unknown_id() for _ in range(2 * MEMBER_PAGE + 3)]
    event = await publish(api, organizer, title="Jazz Night", capacity=len(others) + 1)
    (_, goer), waiting = await api.register(), await api.register()
    assert (await rsvp(api, event, goer))["status"] == "going"
    # Through the store: hundreds of registrations would only slow the test. Random ids, on both
    # sides of the real ones in user id order, which fall inside pages.
    for user_id in others:
        assert await services.store.events.take_seat(event["id"], user_id, window(now=utcnow())) is not None
    assert (await rsvp(api, event, waiting[1]))["status"] == "waitlisted"

    assert (await api.call("PATCH", f"/api/v1/events/{event['id']}", {"title": "Jazz Night II"},
                           token=organizer)).status == 200

    for token in (goer, waiting[1]):
        assert [item["fields"] for item in (await notified(api, token, 1))["items"]] == [["title"]]
    told = await eventually(lambda: _told_of_edit(services, others))
    assert told == {user_id: 1 for user_id in others}
    assert (await listed(api, organizer))["items"] == []


async def _told_of_edit(services, user_ids):
    counts = {}
    for user_id in user_ids:
        counts[user_id] = len(await services.store.notifications.page(user_id, None, 10))
    return counts if all(counts.values()) else None


# --- the socket's refusals --------------------------------------------------------------------------

async def test_shutdown_closes_the_socket_with_1001_and_the_delay_before_coming_back(api, services, sockets):
    _, token = await api.register()
    live = await sockets(token)

    await services.notifications.shutdown()

    assert await live.closed() == 1001
    assert retry_after(live.connection.close_reason) == 5
    reply = await api.call("GET", f"/ws/notifications?token={token}", headers=UPGRADE)
    assert reply.status == 503 and reply.json["code"] == "shutting_down"


async def test_a_revoked_token_closes_the_socket_with_4401_and_is_refused_with_401_json(api, sockets):
    _, token = await api.register()
    live = await sockets(token)

    assert (await api.call("POST", "/api/v1/auth/logout", token=token)).status == 200

    assert await live.closed() == 4401
    assert live.connection.close_reason == "token revoked"
    reply = await api.call("GET", f"/ws/notifications?token={token}", headers=UPGRADE)
    assert reply.status == 401 and reply.json["code"] == "token_revoked"
    with pytest.raises(tornado.httpclient.HTTPClientError) as refusal:
        await NotificationClient.connect(api.base_url, None, token)
    assert refusal.value.code == 401


async def test_a_handshake_without_a_good_token_is_a_401_with_json(api, http_server):
    for query, code in (("", "not_authenticated"), ("?token=not.a.jwt", "token_invalid")):
        reply = await api.call("GET", f"/ws/notifications{query}", headers=UPGRADE)
        assert reply.status == 401 and reply.json["code"] == code, query
    _, token = await api.register()
    reply = await api.call("GET", f"/ws/notifications?token={token}&since=x", headers=UPGRADE)
    assert reply.status == 400 and reply.json["code"] == "unknown_query_parameter"
    reply = await api.call("GET", f"/ws/notifications?token={token}")
    assert reply.status == 400 and reply.json["code"] == "websocket_required"


@pytest.mark.settings(allowed_origins=["https://app.example.com"])
async def test_a_foreign_origin_is_refused_with_403_and_an_allowed_one_or_none_connects(api, sockets):
    _, token = await api.register()
    for origin in ("https://app.example.com.evil.com", "http://app.example.com", "null"):
        reply = await api.call("GET", f"/ws/notifications?token={token}", headers={**UPGRADE, "Origin": origin})
        assert reply.status == 403 and reply.json["code"] == "origin_not_allowed", origin
    await sockets(token, headers={"Origin": "https://app.example.com"})
    await sockets(token)


@pytest.mark.settings(chat_max_connections_per_user=2)
async def test_connections_beyond_the_per_user_cap_are_refused_with_429(api, sockets):
    _, token = await api.register()
    first = await sockets(token)
    await sockets(token)

    reply = await api.call("GET", f"/ws/notifications?token={token}", headers=UPGRADE)
    assert reply.status == 429 and reply.json["code"] == "too_many_connections"

    first.close()  # a place frees once the server sees it closed
    await eventually(lambda: _admitted(api, token))


async def _admitted(api, token):
    try:
        client = await NotificationClient.connect(api.base_url, None, token)
    except tornado.httpclient.HTTPClientError:
        return False
    client.close()
    return True


# --- privacy and paging -----------------------------------------------------------------------------

async def test_another_users_notifications_cannot_be_listed_or_marked(api, http_server):
    event, _, [(_, goer)], [(_, waiter)] = await scene(api)
    await rsvp(api, event, goer, "DELETE")
    [theirs] = (await notified(api, waiter, 1))["items"]
    _, intruder = await api.register()

    assert (await listed(api, intruder)) == {"items": [], "next_cursor": None, "unread_count": 0}
    for up_to in (theirs["id"], unknown_id()):
        reply = await api.call("POST", "/api/v1/notifications/read", {"up_to": up_to}, token=intruder)
        assert reply.status == 404 and reply.json["code"] == "notification_not_found"
    assert (await listed(api, waiter))["unread_count"] == 1
    # The waiter's own id with a cursor cannot reach into another list either.
    assert (await listed(api, intruder, f"?cursor={unknown_id()}"))["items"] == []
    assert (await api.call("GET", "/api/v1/notifications")).status == 401


async def test_the_list_pages_newest_first_and_bad_input_is_a_400(api, http_server):
    event, organizer, [(_, goer)], _ = await scene(api, waiting=0)
    for n in range(5):
        reply = await api.call("PATCH", f"/api/v1/events/{event['id']}", {"title": f"Jazz {n}"}, token=organizer)
        assert reply.status == 200
    newest_first = [item["id"] for item in (await notified(api, goer, 5))["items"]]
    assert newest_first == sorted(newest_first, reverse=True)

    seen, cursor = [], None
    while True:
        page = await listed(api, goer, "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [item["id"] for item in page["items"]]
        assert page["unread_count"] == 5
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first
    reply = await api.call("POST", "/api/v1/notifications/read", {"up_to": newest_first[2]}, token=goer)
    assert reply.data == {"marked": 3, "unread_count": 2}

    for query, code in (("?cursor=zz", "invalid_cursor"), ("?limit=0", "invalid_limit")):
        reply = await api.call("GET", f"/api/v1/notifications{query}", token=goer)
        assert reply.status == 400 and reply.json["code"] == code, query
    for body in ({}, {"up_to": "nope"}, {"up_to": newest_first[0], "ids": []}):
        reply = await api.call("POST", "/api/v1/notifications/read", body, token=goer)
        assert reply.status == 400, body


async def test_the_socket_closes_with_4401_when_its_token_expires(api, sockets, settings):
    user, _ = await api.register()
    now = int(time.time())
    short = jwt.encode({"sub": user["id"], "role": "attendee", "iat": now, "exp": now + 1, "jti": uuid.uuid4().hex},
                       settings.jwt_secret_key, algorithm="HS256")
    live = await sockets(short)

    assert await live.closed() == 4401
    assert live.connection.close_reason == "token expired"
