"""Calendars and cancelled events, through the API, on every store: an event's .ics file and the
personal feed, read by a real iCalendar parser (`icalendar`, as a calendar app parses them), the
feed's key (no bearer header, rotation, another user's key), and what a cancelled event refuses."""
import datetime
import logging
import urllib.parse

import icalendar
import pytest

from handlers.logs import JsonFormatter
from tests.event_builders import hours_from_now, publish
from tests.photo_uploads import upload
from tests.stores import STORE_NAMES

pytestmark = pytest.mark.gen_test(timeout=60)

UTC = datetime.timezone.utc


@pytest.fixture(params=STORE_NAMES)
def store_name(request):
    return request.param


def path(event, suffix=""):
    return f"/api/v1/events/{event['id']}{suffix}"


def parsed(reply):
    """The reply's calendar as a calendar app reads it, and its events by UID."""
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar = icalendar.Calendar.from_ical(reply.text)
    assert calendar["VERSION"] == "2.0" and calendar["PRODID"]
    return calendar, {str(entry["UID"]): entry for entry in calendar.walk("VEVENT")}


def uid(event):
    return f"{event['id']}@event-backend"


async def event_file(api, event, token):
    return parsed(await api.call("GET", path(event, "/event.ics"), token=token))


async def change(api, event, token, **fields):
    reply = await api.call("PATCH", path(event), fields, token=token)
    assert reply.status == 200, reply
    return reply.data


async def subscribe(api, token):
    """The feed address of the token's user: (the reply's data, the path and query to fetch)."""
    reply = await api.call("POST", "/api/v1/users/me/calendar", token=token)
    assert reply.status == 200, reply
    url = urllib.parse.urlsplit(reply.data["url"])
    return reply.data, f"{url.path}?{url.query}"


async def test_an_event_file_is_rfc_5545_with_its_times_in_utc_whatever_offset_it_was_published_with(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, title="Jazz; night, outdoors", description="Bring:\nchairs, blankets",
                          date="2030-06-01T20:30:00+02:00", end_date="2030-06-01T23:00:00+02:00",
                          location_address="Quai de la Tournelle, Paris")
    _, reader = await api.register()

    calendar, entries = await event_file(api, event, reader)

    assert list(entries) == [uid(event)]
    entry = entries[uid(event)]
    start, end = entry.decoded("DTSTART"), entry.decoded("DTEND")
    assert start == datetime.datetime(2030, 6, 1, 18, 30, tzinfo=UTC) and start.utcoffset() == datetime.timedelta(0)
    assert end == datetime.datetime(2030, 6, 1, 21, 0, tzinfo=UTC) and end.utcoffset() == datetime.timedelta(0)
    assert str(entry["SUMMARY"]) == "Jazz; night, outdoors"
    assert str(entry["DESCRIPTION"]) == "Bring:\nchairs, blankets"
    assert str(entry["LOCATION"]) == "Quai de la Tournelle, Paris"
    geo = entry["GEO"]
    assert (geo.latitude, geo.longitude) == (event["location"]["coordinates"][1], event["location"]["coordinates"][0])
    assert (str(entry["STATUS"]), entry.decoded("SEQUENCE")) == ("CONFIRMED", 0)
    updated = datetime.datetime.fromisoformat(event["updated_at"].replace("Z", "+00:00")).replace(microsecond=0)
    assert entry.decoded("LAST-MODIFIED") == updated == entry.decoded("DTSTAMP")


async def test_an_event_without_end_date_lasts_the_default_duration_in_its_file(api, settings):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, date="2030-01-10T09:00:00-05:00")

    _, entries = await event_file(api, event, organizer)

    entry = entries[uid(event)]
    assert entry.decoded("DTSTART") == datetime.datetime(2030, 1, 10, 14, 0, tzinfo=UTC)
    assert entry.decoded("DTEND") - entry.decoded("DTSTART") == datetime.timedelta(hours=settings.default_event_hours)


async def test_the_event_file_needs_what_the_event_needs(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)
    anonymous = await api.call("GET", path(event, "/event.ics"))
    assert (anonymous.status, anonymous.json["code"]) == (401, "not_authenticated")
    missing = await api.call("GET", "/api/v1/events/0123456789abcdef01234567/event.ics", token=organizer)
    assert (missing.status, missing.json["code"]) == (404, "event_not_found")


async def test_each_change_raises_the_sequence_and_a_cancellation_turns_the_entry_cancelled(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)
    assert event["sequence"] == 0 and event["cancelled"] is False and event["cancelled_at"] is None

    moved = await change(api, event, organizer, title="Rooftop jazz, moved indoors")
    assert moved["sequence"] == 1
    _, entries = await event_file(api, event, organizer)
    assert entries[uid(event)].decoded("SEQUENCE") == 1
    assert str(entries[uid(event)]["SUMMARY"]) == "Rooftop jazz, moved indoors"

    cancelled = await change(api, event, organizer, cancelled=True)
    assert cancelled["cancelled"] is True and cancelled["cancelled_at"] is not None
    assert cancelled["sequence"] == 2
    _, entries = await event_file(api, event, organizer)
    assert str(entries[uid(event)]["STATUS"]) == "CANCELLED"
    assert entries[uid(event)].decoded("SEQUENCE") == 2

    # Cancelling again answers it unchanged; anything else, reviving it included, is refused.
    again = await change(api, event, organizer, cancelled=True)
    assert again == cancelled
    for fields in ({"title": "Back on"}, {"cancelled": False}, {"cancelled": True, "capacity": 5}):
        reply = await api.call("PATCH", path(event), fields, token=organizer)
        assert (reply.status, reply.json["code"]) == (409, "event_cancelled"), (fields, reply)
    assert (await api.call("GET", path(event), token=organizer)).data == cancelled


async def test_only_the_organizer_cancels_and_cancelled_must_be_a_boolean(api):
    _, organizer = await api.register(role="organizer")
    _, rival = await api.register(role="organizer")
    event = await publish(api, organizer)
    reply = await api.call("PATCH", path(event), {"cancelled": True}, token=rival)
    assert (reply.status, reply.json["code"]) == (403, "not_event_organizer")
    for value in ("yes", 1, None):
        reply = await api.call("PATCH", path(event), {"cancelled": value}, token=organizer)
        assert reply.status == 400 and reply.json["errors"][0]["path"] == "/cancelled", (value, reply)
    assert (await api.call("GET", path(event), token=organizer)).data["cancelled"] is False


async def test_a_cancelled_event_refuses_rsvps_waitlist_joins_arrivals_check_ins_and_photos_with_409(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, capacity=1, date=hours_from_now(0.25))
    (going_user, going), (_, late), (_, waiting) = [await api.register() for _ in range(3)]
    assert (await api.call("POST", path(event, "/rsvp"), token=going)).data["status"] == "going"
    assert (await api.call("POST", path(event, "/rsvp"), token=waiting)).data["status"] == "waitlisted"
    await change(api, event, organizer, cancelled=True)

    refused = [
        await api.call("POST", path(event, "/rsvp"), token=late),  # full: would join the waitlist
        await api.call("POST", path(event, "/rsvp"), token=going),
        await api.call("POST", path(event, "/arrival"), {"location": event["location"]}, token=going),
        await api.call("POST", path(event, f"/attendees/{going_user['id']}/check-in"), token=organizer),
        await upload(api, event["id"], organizer),
        await upload(api, event["id"], going),
    ]
    for reply in refused:
        assert (reply.status, reply.json["code"]) == (409, "event_cancelled"), reply
    shown = (await api.call("GET", path(event), token=going)).data
    assert (shown["cancelled"], shown["rsvp_count"], shown["waitlist_count"], shown["arrival_count"],
            shown["photo_count"]) == (True, 1, 1, 0, 0)
    # Leaving is still allowed, and gives the seat to nobody: the event is off.
    left = await api.call("DELETE", path(event, "/rsvp"), token=going)
    assert left.status == 200 and left.data["status"] == "not_going"
    assert (await api.call("GET", path(event), token=waiting)).data["waitlist_position"] == 1
    assert (await api.call("GET", path(event), token=waiting)).data["is_rsvped"] is False


async def test_discovery_leaves_cancelled_events_out_and_those_concerned_still_see_them(api):
    _, organizer = await api.register(role="organizer")
    kept = await publish(api, organizer, title="Zither evening kept")
    dropped = await publish(api, organizer, title="Zither evening dropped")
    _, attendee = await api.register()
    assert (await api.call("POST", path(dropped, "/rsvp"), token=attendee)).status == 200
    await change(api, dropped, organizer, cancelled=True)

    found = await api.call("GET", "/api/v1/events?q=zither", token=attendee)
    assert [item["id"] for item in found.data["items"]] == [kept["id"]]
    nearby = await api.call("GET", "/api/v1/events?lat=48.8566&lng=2.3522&radius_km=1", token=attendee)
    assert dropped["id"] not in [item["id"] for item in nearby.data["items"]]
    assert (await api.call("GET", path(dropped), token=attendee)).data["cancelled"] is True
    own = await api.call("GET", "/api/v1/organizer/events", token=organizer)
    assert {item["id"]: item["cancelled"] for item in own.data["items"]} == {kept["id"]: False, dropped["id"]: True}


async def test_a_calendar_app_subscribes_to_the_feed_with_its_key_and_no_bearer_header(api, settings):
    _, organizer = await api.register(role="organizer")
    soon = await publish(api, organizer, title="Soon", date="2030-03-01T19:00:00+01:00")
    later = await publish(api, organizer, title="Later", date="2030-04-01T19:00:00+02:00")
    full = await publish(api, organizer, title="Full", capacity=1)
    elsewhere = await publish(api, organizer, title="Not going")
    user, token = await api.register()
    _, someone = await api.register()
    assert (await api.call("POST", path(full, "/rsvp"), token=someone)).status == 200
    for event in (later, soon, full):  # going to two, waiting for the full one
        assert (await api.call("POST", path(event, "/rsvp"), token=token)).status == 200

    subscription, feed = await subscribe(api, token)

    assert subscription["url"].startswith(f"{settings.public_base_url}/api/v1/users/me/calendar.ics?key=")
    assert subscription["webcal_url"] == "webcal://" + subscription["url"].split("://", 1)[1]
    polled = await api.call("GET", feed)  # no Authorization header
    calendar, entries = parsed(polled)
    assert list(entries) == [uid(soon), uid(later)]  # by date; not the one waited for
    assert uid(elsewhere) not in entries
    assert entries[uid(soon)].decoded("DTSTART") == datetime.datetime(2030, 3, 1, 18, 0, tzinfo=UTC)
    assert entries[uid(later)].decoded("DTSTART") == datetime.datetime(2030, 4, 1, 17, 0, tzinfo=UTC)
    assert str(calendar["X-WR-CALNAME"]) == "Events I'm going to"
    # How often to poll, as RFC 7986 and as Outlook and Apple Calendar read it.
    assert "\r\nREFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n" in polled.text
    assert "\r\nX-PUBLISHED-TTL:PT1H\r\n" in polled.text
    before = entries[uid(later)].decoded("SEQUENCE")

    # The organizer cancels one: the next poll shows it cancelled, with a higher SEQUENCE.
    await change(api, later, organizer, cancelled=True)
    _, entries = parsed(await api.call("GET", feed))
    assert str(entries[uid(later)]["STATUS"]) == "CANCELLED"
    assert entries[uid(later)].decoded("SEQUENCE") > before
    assert str(entries[uid(soon)]["STATUS"]) == "CONFIRMED"
    # An RSVP taken back leaves the feed.
    assert (await api.call("DELETE", path(soon, "/rsvp"), token=token)).status == 200
    _, entries = parsed(await api.call("GET", feed))
    assert list(entries) == [uid(later)]
    assert user["id"] not in feed


async def test_a_replaced_key_is_refused_with_a_json_reason_and_the_new_one_works(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)
    _, token = await api.register()
    assert (await api.call("POST", path(event, "/rsvp"), token=token)).status == 200
    _, old_feed = await subscribe(api, token)
    assert (await api.call("GET", old_feed)).status == 200

    _, new_feed = await subscribe(api, token)

    refused = await api.call("GET", old_feed)
    assert (refused.status, refused.json["code"]) == (404, "invalid_calendar_key"), refused
    assert refused.headers["Content-Type"].startswith("application/json") and refused.json["message"]
    _, entries = parsed(await api.call("GET", new_feed))
    assert list(entries) == [uid(event)]
    # A bearer token does not stand in for the key.
    assert (await api.call("GET", old_feed, token=token)).status == 404


async def test_a_missing_unknown_or_misspelt_key_is_a_clear_4xx_with_a_json_reason(api):
    missing = await api.call("GET", "/api/v1/users/me/calendar.ics")
    assert (missing.status, missing.json["code"]) == (404, "invalid_calendar_key")
    unknown = await api.call("GET", "/api/v1/users/me/calendar.ics?key=not-a-key-anyone-has")
    assert (unknown.status, unknown.json["code"]) == (404, "invalid_calendar_key")
    misspelt = await api.call("GET", "/api/v1/users/me/calendar.ics?token=abc")
    assert (misspelt.status, misspelt.json["code"]) == (400, "unknown_query_parameter")
    assert misspelt.json["accepted"] == ["key"]
    anonymous = await api.call("POST", "/api/v1/users/me/calendar")
    assert anonymous.status == 401


async def test_a_key_reads_only_its_own_users_calendar(api):
    _, organizer = await api.register(role="organizer")
    mine, theirs = await publish(api, organizer, title="Mine"), await publish(api, organizer, title="Theirs")
    _, me = await api.register()
    other, them = await api.register()
    assert (await api.call("POST", path(mine, "/rsvp"), token=me)).status == 200
    assert (await api.call("POST", path(theirs, "/rsvp"), token=them)).status == 200
    _, my_feed = await subscribe(api, me)
    _, their_feed = await subscribe(api, them)

    assert list(parsed(await api.call("GET", my_feed))[1]) == [uid(mine)]
    assert list(parsed(await api.call("GET", their_feed))[1]) == [uid(theirs)]
    # Naming the other user beside my key is not a way in: the key alone says whose feed it is.
    reply = await api.call("GET", f"{my_feed}&user_id={other['id']}")
    assert (reply.status, reply.json["code"]) == (400, "unknown_query_parameter")


async def test_the_feed_key_never_reaches_a_log_line(api, caplog):
    caplog.set_level(logging.INFO)
    _, token = await api.register()
    _, feed = await subscribe(api, token)
    key = urllib.parse.parse_qs(urllib.parse.urlsplit(feed).query)["key"][0]
    assert (await api.call("GET", feed)).status == 200
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert any("calendar.ics?key=[redacted]" in line for line in lines)
    assert not any(key in line for line in lines)


async def test_a_key_longer_than_any_key_is_a_400(api):
    reply = await api.call("GET", "/api/v1/users/me/calendar.ics?key=" + "k" * 201)
    assert (reply.status, reply.json["errors"]) == (400, [{"path": "key", "message": "must be at most 200 characters"}])


async def test_the_chat_of_a_cancelled_event_stays_readable_and_refuses_new_messages(room):
    await room.create(attendees=1)
    _, token = room.members[1]
    client = await room.joined(token)
    await client.say("see you there", client_msg_id="before")
    assert [m["text"] for m in await client.messages(1)] == ["see you there"]
    reply = await room.api.call("PATCH", f"/api/v1/events/{room.event_id}", {"cancelled": True},
                                token=room.organizer_token)
    assert reply.status == 200, reply

    await client.say("is it off?", client_msg_id="after")

    refused = await client.receive_type("error")
    assert (refused["code"], refused["client_msg_id"]) == ("event_cancelled", "after")
    history = await room.api.call("GET", f"/api/v1/events/{room.event_id}/messages", token=token)
    assert [m["text"] for m in history.data["items"]] == ["see you there"]


async def test_an_event_sent_back_unchanged_keeps_its_revision_and_an_edit_raises_it(api):
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer)

    for method in ("PUT", "PATCH"):
        reply = await api.call(method, path(event), event, token=organizer)
        assert reply.status == 200 and reply.data == event, (method, reply)
    _, entries = await event_file(api, event, organizer)
    assert entries[uid(event)].decoded("SEQUENCE") == 0

    edited = await api.call("PUT", path(event), {**event, "title": "Rooftop jazz, later"}, token=organizer)
    assert (edited.data["sequence"], edited.data["title"]) == (1, "Rooftop jazz, later")
    assert edited.data["updated_at"] != event["updated_at"]
