"""Event endpoints: publish and edit, discover, RSVP, arrive, stats, and the organizer's list."""
from domain.discovery import CURSOR_PATTERN, DEFAULT_RADIUS_KM, MAX_RADIUS_KM, parse_discovery_query
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request

_TIME = {"type": "string", "format": "date-time"}
PAGE_QUERY = page_query(CURSOR_PATTERN)
DISCOVERY_QUERY = (
    ("category", {"type": "string", "minLength": 1, "maxLength": 50, "pattern": r"\S"}, "Only this category (exact)."),
    ("from", _TIME, "Only events starting at or after this time."),
    ("to", _TIME, "Only events starting at or before this time."),
    ("q", {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"},
     "Text in the title or description, case-insensitive, literal."),
    ("organizer_id", {"type": "string", "pattern": "^[0-9a-f]{24}$"}, "Only this organizer's events."),
    ("lat", {"type": "number", "minimum": -90, "maximum": 90}, "With lng: nearby search, nearest first."),
    ("lng", {"type": "number", "minimum": -180, "maximum": 180}, "With lat: nearby search, nearest first."),
    ("radius_km", {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS_KM, "default": DEFAULT_RADIUS_KM},
     "Nearby search radius."),
    *PAGE_QUERY,
)


class EventsHandler(BaseHandler):
    docs = {
        "get": operation("Find events: by date, or nearest first with lat/lng", response="EventPage",
                         query=DISCOVERY_QUERY, description=(
                             "Without lat/lng: sorted by date ascending. With them: only events within "
                             "radius_km, nearest first, each with distance_m. Bad filter values are a 400.")),
        "post": operation("Publish an event (organizers)", request="EventCreateRequest", response="Event",
                          status=201, errors=[403]),
    }

    async def get(self):
        query = parse_discovery_query({name: self.get_query_argument(name, None) for name, _, _ in DISCOVERY_QUERY})
        self.reply(await self.services.events.discover(query, self.current_user))

    async def post(self):
        self.require_role("organizer")
        body = await self.large_json_body("EventCreateRequest")
        self.reply(await self.services.events.create(self.current_user, body), "Event created.", status=201)


class EventHandler(BaseHandler):
    docs = {
        "get": operation("One event", response="Event", errors=[404]),
        "put": operation("Change an event (its organizer)", request="EventUpdateRequest", response="Event",
                         errors=[403, 404, 409]),
        "patch": operation("Change an event (its organizer)", request="EventUpdateRequest", response="Event",
                           errors=[403, 404, 409]),
        "delete": operation("Delete an event, its chat history and live chat (its organizer)",
                            response="Empty", errors=[403, 404],
                            description="Its photos are deleted from the photo storage too: their URLs stop "
                                        "answering (caches may keep a copy for an hour, the photos' max-age)."),
    }

    async def get(self, event_id):
        self.reply(await self.services.events.view(event_id, self.current_user))

    async def put(self, event_id):
        self.require_role("organizer")
        body = await self.large_json_body("EventUpdateRequest")
        self.reply(await self.services.events.update(event_id, self.current_user, body), "Event updated.")

    patch = put

    async def delete(self, event_id):
        self.require_role("organizer")
        await self.services.events.delete(event_id, self.current_user)
        self.reply({}, "Event deleted.")


class RsvpHandler(BaseHandler):
    docs = {
        "post": operation("RSVP to an event, or join its waitlist when it is full; idempotent; no body",
                          response="RsvpStatus", errors=[404, 409], description=(
                              "status going, or waitlisted with position when the event is full and takes a "
                              "waitlist. Someone already going or waiting gets their standing, unchanged. 409 "
                              "event_full when the event is full without a waitlist, waitlist_full, "
                              "event_ended, event_cancelled, rsvp_conflict (changed meanwhile: try again).")),
        "delete": operation("Cancel an RSVP (and its arrival), or leave the waitlist; idempotent",
                            response="RsvpStatus", errors=[404, 409], description=(
                                "A freed seat goes to the first in line at once. 409 event_ended for an RSVP "
                                "once the event is over.")),
    }

    MESSAGES = {"going": "You are going.", "waitlisted": "You are on the waitlist.", "not_going": "You are not going."}

    async def post(self, event_id):
        self._answer(await self.services.events.rsvp(event_id, self.current_user))

    async def delete(self, event_id):
        self._answer(await self.services.events.cancel_rsvp(event_id, self.current_user))

    def _answer(self, status):
        self.reply(status, self.MESSAGES[status["status"]])


class ArrivalHandler(BaseHandler):
    docs = {"post": operation("Check in at an event by location; idempotent", request="ArrivalRequest",
                              response="ArrivalResult", errors=[404, 409, 422], description=(
                                  "422 outside_geofence with distance_m when the point is outside the "
                                  "geofence; 409 without an RSVP or outside the check-in window."))}

    async def post(self, event_id):
        body = self.json_body("ArrivalRequest")
        result = await self.services.events.arrive(event_id, self.current_user, body["location"],
                                                   body.get("accuracy_m"))
        self.reply(result, "Checked in.")


class EventStatsHandler(BaseHandler):
    docs = {"get": operation("An event's numbers", response="EventStats", errors=[404])}

    async def get(self, event_id):
        self.reply(await self.services.events.stats(event_id))


class OrganizerEventsHandler(BaseHandler):
    docs = {"get": operation("The caller's own events by date, each with its stats (organizers)",
                             response="EventWithStatsPage", errors=[403], query=PAGE_QUERY)}

    async def get(self):
        self.require_role("organizer")
        limit, cursor = page_request(self)
        self.reply(await self.services.events.organizer_events(self.current_user, limit, cursor))


ROUTES = [
    (r"/api/v1/events", EventsHandler),
    (r"/api/v1/events/(?P<event_id>[^/]+)", EventHandler),
    (r"/api/v1/events/(?P<event_id>[^/]+)/rsvp", RsvpHandler),
    (r"/api/v1/events/(?P<event_id>[^/]+)/arrival", ArrivalHandler),
    (r"/api/v1/events/(?P<event_id>[^/]+)/stats", EventStatsHandler),
    (r"/api/v1/organizer/events", OrganizerEventsHandler),
]
