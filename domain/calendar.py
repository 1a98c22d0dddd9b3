"""Calendars: an event as an iCalendar (RFC 5545) file, and each user's feed of the events they
are going to, which calendar apps subscribe to.

Calendar apps poll a feed URL and cannot send an Authorization header, so the feed is reached by
a key in its URL: a random secret of its own (never the JWT, which would then sit in the app's
settings, in proxies' logs and in synced calendar accounts, and would open the whole API). It is
stored only as its SHA-256 digest, as reset tokens are: whoever reads the database or a backup
cannot subscribe to anyone's calendar. So the URL can be shown only when it is made: a new key
replaces the old one at once (`Users.set_calendar_key`), which is how a leaked URL is revoked.
A key is 32 random bytes: guessing one is hopeless, hence no rate limit of its own.

The text is written by the `icalendar` package (line folding at 75 octets, escaping of commas,
semicolons and newlines in text, UTC times): a calendar app rejects a whole feed over one badly
folded line. Times are written in UTC (`...Z`), which every client places in its own time zone;
the event's start and end are stored in UTC whatever offset they were published with.
"""
import asyncio
import datetime
import hashlib
import secrets

import icalendar

from domain.errors import InvalidInput, NotFound
from domain.events import event_end
from domain.times import as_utc, utcnow

PRODUCT_ID = "-//Event backend//Calendar 1.0//EN"
# UIDs must never change for an event (a calendar would show the old entry beside the new), so
# they do not depend on the host the server is reached at. Event ids are unique already.
UID_SUFFIX = "@event-backend"
# A feed holds the events the user is going to from this long ago on (a calendar keeps what it
# already has; an app adding the feed today sees the last month), at most FEED_LIMIT of them: a
# couple of hundred entries take ~0.2 s of CPU to write (about 1 ms each), off the event loop.
FEED_PAST = datetime.timedelta(days=30)
FEED_LIMIT = 200
# How often a subscribing app should fetch the feed again (RFC 7986 REFRESH-INTERVAL, and the
# X-PUBLISHED-TTL that Outlook and Apple Calendar read).
REFRESH_INTERVAL = datetime.timedelta(hours=1)
KEY_BYTES = 32
# Keys are 43 characters; anything much longer is not one, and is told so rather than hashed.
KEY_MAX_LENGTH = 200
FEED_PATH = "/api/v1/users/me/calendar.ics"
FEED_NAME = "Events I'm going to"


def key_digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def _invalid_key():
    return NotFound("This calendar address is not valid any more: get the current one from the app "
                    "(POST /api/v1/users/me/calendar).", code="invalid_calendar_key")


def _vevent(event, default_duration):
    """One VEVENT from an event record; `default_duration` ends an event without end_date."""
    entry = icalendar.Event()
    start = as_utc(event["date"])
    end = event_end(event, default_duration)
    revised = as_utc(event["updated_at"] or event["created_at"] or start)
    entry.add("uid", f"{event['id']}{UID_SUFFIX}")
    # Without a METHOD, DTSTAMP is when the entry was last revised (RFC 5545 3.8.7.2): the same
    # bytes for the same revision, whenever the feed is fetched.
    entry.add("dtstamp", revised)
    entry.add("dtstart", start)
    entry.add("dtend", end)
    entry.add("summary", event["title"] or "")
    if event["description"]:
        entry.add("description", event["description"])
    if event["location_address"]:
        entry.add("location", event["location_address"])
    if event["location"]:
        lng, lat = event["location"]["coordinates"]
        entry.add("geo", (lat, lng))
    if event["category"]:
        entry.add("categories", [event["category"]])
    entry.add("status", "CANCELLED" if event["cancelled_at"] is not None else "CONFIRMED")
    entry.add("sequence", event["sequence"])
    if event["created_at"] is not None:
        entry.add("created", as_utc(event["created_at"]))
    entry.add("last-modified", revised)
    return entry


def _calendar(events, default_duration, name=None):
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODUCT_ID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    if name is not None:
        calendar.add("name", name)  # RFC 7986
        calendar.add("x-wr-calname", name)
        calendar.add("refresh-interval", REFRESH_INTERVAL, parameters={"VALUE": "DURATION"})
        calendar.add("x-published-ttl", icalendar.vDuration(REFRESH_INTERVAL))  # unknown to icalendar: typed here
    for event in events:
        calendar.add_component(_vevent(event, default_duration))
    return calendar.to_ical()


class Calendars:
    def __init__(self, store, settings, clock=utcnow):
        self.store = store
        self.settings = settings
        self.clock = clock

    def _default_duration(self):
        return datetime.timedelta(hours=self.settings.default_event_hours)

    async def event_file(self, event_id):
        """The .ics bytes of one event: anyone signed in may read it, as its JSON (about 1 ms of
        CPU, on the loop)."""
        event = await self.store.events.get(event_id)
        if event is None:
            raise NotFound("There is no such event.", code="event_not_found")
        return _calendar([event], self._default_duration())

    async def subscribe(self, user):
        """A new feed key for the user, replacing any earlier one: {url, webcal_url}."""
        key = secrets.token_urlsafe(KEY_BYTES)
        if not await self.store.users.set_calendar_key(user["id"], key_digest(key)):
            raise NotFound("There is no such user.", code="user_not_found")
        url = f"{self.settings.public_base_url}{FEED_PATH}?key={key}"
        return {"url": url, "webcal_url": "webcal://" + url.split("://", 1)[1]}

    async def feed(self, key):
        """The .ics bytes of the feed of the user whose key this is."""
        if not key:
            # A 404 like a wrong key: the OpenAPI document declares no query parameter required.
            raise NotFound("The calendar address lacks its key: get it from the app (POST "
                           "/api/v1/users/me/calendar).", code="invalid_calendar_key")
        if len(key) > KEY_MAX_LENGTH:
            raise InvalidInput("The calendar key is too long to be one.",
                               errors=[{"path": "key", "message": f"must be at most {KEY_MAX_LENGTH} characters"}])
        user = await self.store.users.find_by_calendar_key(key_digest(key))
        if user is None:
            raise _invalid_key()
        events = await self.store.events.attending(user["id"], self.clock() - FEED_PAST, FEED_LIMIT)
        # In the default executor, where the loop gets the GIL back every 5 ms: up to FEED_LIMIT
        # entries take longer than the loop may be held.
        return await asyncio.get_running_loop().run_in_executor(
            None, _calendar, events, self._default_duration(), FEED_NAME)
