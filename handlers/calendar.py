"""Calendar endpoints: an event's .ics file, the caller's feed address, and the feed itself."""
from domain.calendar import KEY_MAX_LENGTH
from handlers.base import BaseHandler
from handlers.docs import operation

CALENDAR_TYPE = "text/calendar; charset=utf-8"


class CalendarFileHandler(BaseHandler):
    """Answers iCalendar text rather than the JSON envelope; errors stay JSON."""

    def send_calendar(self, text, filename):
        self.set_header("Content-Type", CALENDAR_TYPE)
        self.set_header("Content-Disposition", f'inline; filename="{filename}"')
        self.finish(text)


class EventFileHandler(CalendarFileHandler):
    docs = {"get": operation(
        "One event as an iCalendar (RFC 5545) file", response="ICalendar", envelope=False,
        content_type="text/calendar", errors=[404], description=(
            "One VEVENT: UID <id>@event-backend (stable), DTSTART and DTEND in UTC (DTEND is end_date, or "
            "default_event_hours after the start), SUMMARY, DESCRIPTION, LOCATION, GEO, CATEGORIES, STATUS "
            "CONFIRMED or CANCELLED, SEQUENCE (the event's sequence), CREATED, LAST-MODIFIED and DTSTAMP (its "
            "last change). Whoever may read the event may read this."))}

    async def get(self, event_id):
        self.send_calendar(await self.services.calendars.event_file(event_id), "event.ics")


class CalendarSubscriptionHandler(BaseHandler):
    docs = {"post": operation(
        "A new address for the caller's calendar feed (no body); any earlier one stops working",
        response="CalendarSubscription", errors=[404], description=(
            "The address holds a new secret key, shown only in this answer (the server keeps a digest of it): "
            "give `url` or `webcal_url` to a calendar app. Calling again replaces the key, so an address that "
            "leaked stops working (404 invalid_calendar_key). 404 user_not_found when the caller's account is gone."))}

    async def post(self):
        subscription = await self.services.calendars.subscribe(self.current_user)
        self.reply(subscription, "Subscribe to this address in your calendar app. It is shown only once.")


class CalendarFeedHandler(CalendarFileHandler):
    # Calendar apps cannot send a bearer token: the key in the address is the credential.
    authentication = "none"
    docs = {"get": operation(
        "The calendar feed of the events a user is going to (calendar apps subscribe to it)",
        response="ICalendar", envelope=False, content_type="text/calendar", public=True, errors=[404],
        query=(("key", {"type": "string", "minLength": 1, "maxLength": KEY_MAX_LENGTH},
                "The feed's secret key, from POST /api/v1/users/me/calendar."),),
        description=(
            "No Authorization header: the key in the address identifies the user. The events the user has "
            "RSVPed to (not those they wait for), from 30 days ago on, by date, at most 200; cancelled ones "
            "stay, with STATUS:CANCELLED and a higher SEQUENCE, so calendars drop or mark them. 404 "
            "invalid_calendar_key without a key or for a key that was replaced or never issued."))}

    async def get(self):
        self.send_calendar(await self.services.calendars.feed(self.get_query_argument("key", "")), "calendar.ics")


ROUTES = [
    (r"/api/v1/events/(?P<event_id>[^/]+)/event\.ics", EventFileHandler),
    (r"/api/v1/users/me/calendar", CalendarSubscriptionHandler),
    (r"/api/v1/users/me/calendar\.ics", CalendarFeedHandler),
]
