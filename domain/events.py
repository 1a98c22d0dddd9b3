"""Events: publishing, RSVP within capacity, geofenced arrival, and the numbers organizers watch.

Documents keep the old backend's `events` shape (`location` GeoJSON, `organizer_id`, `rsvps`,
`arrivals`, `photo_gallery`, `geofence_radius`, `created_at`) plus `end_date`, `geofence`,
`capacity`, `updated_at` and `rsvp_count`.

Concurrency: every rule that depends on an event's current state (room left, already RSVPed,
not over yet, capacity not below the RSVPs) sits in the filter of the one update that changes
the event, so MongoDB checks and writes it in a single step on a single document. A read
before that update finds what an error message should say, and for an edit, whether the
merged event is consistent; that edit's update then applies only if the fields it read are
unchanged, so a stale read can refuse a change, never let a wrong one through.
`rsvp_count` is rewritten from the `rsvps` array in that same update, so the two cannot drift,
and events written by the old backend, which have no `rsvp_count`, are counted by their array.
"""
import asyncio
import collections
import datetime
import logging
import math

from domain import discovery
from domain import store as db
from domain.activities import EVENT_CREATED, RSVP, record_activity
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Refused
from domain.geo import Geofence, polygon_contains_point
from domain.times import UTC, as_utc, parse_iso, to_iso, utcnow

log = logging.getLogger("events")

DEFAULT_GEOFENCE_RADIUS_M = 100
# A state rule that failed only because the event changed between our read and our update is
# tried again; more than this many changes in a row is answered with 409.
ATTEMPTS = 3

_RSVPS = {"$ifNull": ["$rsvps", []]}
# The stored count, or the array's length for events the old backend wrote.
_RSVP_COUNT = {"$ifNull": ["$rsvp_count", {"$size": _RSVPS}]}


def event_json(summary, usernames):
    """The contract's Event object from a summary; usernames maps user ids to names."""
    organizer_id = summary.get("organizer_id")
    shown = {
        "id": str(summary["_id"]),
        "title": summary.get("title", ""),
        "description": summary.get("description") or "",
        "date": to_iso(summary.get("date")),
        "end_date": to_iso(summary.get("end_date")),
        "category": summary.get("category", ""),
        "location_address": summary.get("location_address", ""),
        "location": summary.get("location"),
        "geofence_radius": summary.get("geofence_radius", DEFAULT_GEOFENCE_RADIUS_M),
        "geofence": summary.get("geofence"),
        "capacity": summary.get("capacity"),
        "organizer": {"id": str(organizer_id) if organizer_id else None,
                      "username": usernames.get(organizer_id, "")},
        "rsvp_count": summary["rsvp_count"],
        "arrival_count": summary["arrival_count"],
        "photo_count": summary["photo_count"],
        "is_rsvped": summary["is_rsvped"],
        "has_arrived": summary["has_arrived"],
        "created_at": to_iso(summary.get("created_at")),
        # Never edited: last changed when it was created.
        "updated_at": to_iso(summary.get("updated_at") or summary.get("created_at")),
    }
    if "distance_m" in summary:
        shown["distance_m"] = round(summary["distance_m"], 1)
    return shown


def _not_over(now, default_hours):
    """Filter: events that have not ended at `now` (no end_date: they end default_hours after the start)."""
    return {"$or": [{"end_date": {"$gt": now}},
                    {"end_date": None, "date": {"$gt": now - datetime.timedelta(hours=default_hours)}}]}


def _has_room():
    return {"$or": [{"capacity": None}, {"$expr": {"$lt": [_RSVP_COUNT, "$capacity"]}}]}


def _without(field, user_id):
    return {"$filter": {"input": {"$ifNull": [f"${field}", []]}, "cond": {"$ne": ["$$this", user_id]}}}


def _bad(path, message, text="The event is not valid."):
    return InvalidInput(text, errors=[{"path": path, "message": message}])


def _parse_time(text, path):
    moment = parse_iso(text)
    if moment is None:
        raise _bad(path, "must be an ISO 8601 time with an offset, e.g. 2026-12-01T18:30:00Z")
    return moment


def parse_point(point, path="/location"):
    """A stored GeoJSON Point from a schema-checked one; NaN slips past JSON Schema's ranges."""
    lng, lat = point["coordinates"]
    if not (math.isfinite(lng) and math.isfinite(lat) and -180 <= lng <= 180 and -90 <= lat <= 90):
        raise _bad(f"{path}/coordinates", "must be [longitude in -180..180, latitude in -90..90]")
    return {"type": "Point", "coordinates": [float(lng), float(lat)]}


def _stored_fields(body):
    """The stored form of the create or update fields present in a schema-checked body."""
    fields = {}
    for name in ("title", "description", "category", "location_address"):
        if name in body:
            fields[name] = body[name].strip()
    for name in ("date", "end_date"):
        if name in body:
            fields[name] = None if body[name] is None else _parse_time(body[name], f"/{name}")
    if "location" in body:
        fields["location"] = parse_point(body["location"])
    if "geofence_radius" in body:
        radius = body["geofence_radius"]
        if not math.isfinite(radius):
            raise _bad("/geofence_radius", "must be a number of meters")
        fields["geofence_radius"] = radius
    for name in ("geofence", "capacity"):
        if name in body:
            fields[name] = body[name]
    return fields


def _check_consistent(event):
    """Rules across fields, on the event as it would be stored."""
    if event.get("end_date") is not None and as_utc(event["end_date"]) <= as_utc(event["date"]):
        raise _bad("/end_date", "must be after date")
    if event.get("geofence") is not None:
        # Raises InvalidInput (at /geofence) unless the polygon is valid.
        if not polygon_contains_point(event["geofence"], event["location"]):
            raise _bad("/geofence", "must contain the event's location")


class GeofenceCache:
    """Geofences by event version (id, updated_at). A venue polygon is validated, projected and
    prepared once per version instead of on every arrival: about 4 ms for 1,000 corners, while
    a check against the prepared fence takes microseconds and arrivals come in bursts."""

    def __init__(self, size=256):
        self.size = size
        self._fences = collections.OrderedDict()

    def fence_for(self, event):
        key = (event["_id"], event.get("updated_at"))
        fence = self._fences.get(key)
        if fence is None:
            fence = Geofence.for_event(event["location"], event.get("geofence_radius", DEFAULT_GEOFENCE_RADIUS_M),
                                       event.get("geofence"))
            self._fences[key] = fence
            if len(self._fences) > self.size:
                self._fences.popitem(last=False)
        else:
            self._fences.move_to_end(key)
        return fence


class Events:
    def __init__(self, store, settings, clock=utcnow):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.geofences = GeofenceCache()
        # Called as listener(event_id) after an event is deleted, e.g. to close its chat room.
        self.deleted_listeners = []
        # Called as listener(event_id, user_id) when someone who is not the organizer cancels
        # an RSVP, so access granted by that RSVP (the event's live chat) ends with it.
        self.left_listeners = []
        # How many people are in an event's live chat now; the chat replaces this.
        self.online_counter = lambda event_id: 0

    # --- reading ---------------------------------------------------------------------------

    async def _summary(self, event_id, viewer_id=None):
        found = await discovery.read_summaries(self.store, {"_id": event_id}, viewer_id)
        if not found:
            raise NotFound("There is no such event.", code="event_not_found")
        return found[0]

    async def _present(self, summaries):
        organizer_ids = list({s["organizer_id"] for s in summaries if s.get("organizer_id")})
        users = await self.store.users.find({"_id": {"$in": organizer_ids}}, {"username": 1}).to_list(None)
        usernames = {user["_id"]: user.get("username", "") for user in users}
        return [event_json(summary, usernames) for summary in summaries]

    async def view(self, event_text_id, viewer):
        summary = await self._summary(parse_event_id(event_text_id), viewer["_id"])
        return (await self._present([summary]))[0]

    async def discover(self, query, viewer):
        """A page of events as the contract shows them: {items, next_cursor}."""
        page = await discovery.find_events(self.store, query, viewer["_id"])
        return {"items": await self._present(page.items), "next_cursor": page.next_cursor}

    # --- publishing ------------------------------------------------------------------------

    async def create(self, organizer, body):
        now = self.clock()
        event = {
            "description": "", "end_date": None, "geofence_radius": DEFAULT_GEOFENCE_RADIUS_M,
            "geofence": None, "capacity": None, **_stored_fields(body),
            "organizer_id": organizer["_id"], "rsvps": [], "arrivals": [], "photo_gallery": [],
            "rsvp_count": 0, "created_at": now, "updated_at": now,
        }
        _check_consistent(event)
        event["_id"] = (await self.store.events.insert_one(event)).inserted_id
        await self.store.users.update_one({"_id": organizer["_id"]}, {"$addToSet": {"created_events": event["_id"]}})
        await record_activity(self.store, EVENT_CREATED, organizer, event=event, clock=self.clock)
        return await self.view(str(event["_id"]), organizer)

    async def _owned(self, event_id, organizer, projection=None):
        event = await self.store.events.find_one({"_id": event_id}, projection)
        if event is None:
            raise NotFound("There is no such event.", code="event_not_found")
        if event.get("organizer_id") != organizer["_id"]:
            raise Forbidden("Only the event's organizer can change it.", code="not_event_organizer")
        return event

    async def update(self, event_text_id, organizer, body):
        """Applies any subset of the create fields; PUT and PATCH alike."""
        event_id = parse_event_id(event_text_id)
        changes = _stored_fields(body)
        for _ in range(ATTEMPTS):
            event = await self._owned(event_id, organizer,
                                      {"rsvps": 0, "arrivals": 0, "photo_gallery": 0, "photos": 0})
            _check_consistent({**event, **changes})
            capacity = changes.get("capacity")
            if capacity is not None and capacity < (await self._summary(event_id))["rsvp_count"]:
                raise _capacity_below_rsvps()
            result = await self.store.events.update_one(
                self._unchanged_since_read(event, changes),
                {"$set": {**changes, "updated_at": self.clock()}})
            if result.matched_count:
                break
        else:
            raise Conflict("The event changed while it was being updated. Try again.", code="edit_conflict")
        return await self.view(event_text_id, organizer)

    def _unchanged_since_read(self, event, changes):
        """Filter: the event still as read, in everything the validation of `changes` relied on."""
        condition = {"_id": event["_id"], "organizer_id": event["organizer_id"]}
        related = ("date", "end_date", "location", "geofence")
        if any(field in changes for field in related):
            condition.update({field: event.get(field) for field in related if field not in changes})
        if changes.get("capacity") is not None:
            condition["$expr"] = {"$lte": [_RSVP_COUNT, changes["capacity"]]}
        return condition

    async def delete(self, event_text_id, organizer):
        """Deletes the event, its chat history, and its id from its users' lists."""
        event_id = parse_event_id(event_text_id)
        event = await self.store.events.find_one_and_delete(
            {"_id": event_id, "organizer_id": organizer["_id"]}, {"rsvps": 1})
        if event is None:
            await self._owned(event_id, organizer, {"_id": 1})  # 404 or 403, whichever applies
            raise NotFound("There is no such event.", code="event_not_found")
        self._notify(self.deleted_listeners, str(event_id))
        await self.store.messages.delete_many({"event_id": event_id})
        await self.store.users.update_one({"_id": organizer["_id"]}, {"$pull": {"created_events": event_id}})
        await self.store.users.update_many({"_id": {"$in": event.get("rsvps") or []}},
                                           {"$pull": {"rsvped_events": event_id}})

    def _notify(self, listeners, *args):
        for listener in listeners:
            try:
                listener(*args)
            except Exception:
                # The change is made either way; one broken listener must not stop the rest.
                log.exception("event listener failed")

    # --- RSVP ------------------------------------------------------------------------------

    async def rsvp(self, event_text_id, user):
        event_id, user_id = parse_event_id(event_text_id), user["_id"]
        for _ in range(ATTEMPTS):
            now = self.clock()
            # The whole rule in one conditional update: not yet RSVPed, not over, room left.
            event = await self.store.events.find_one_and_update(
                {"_id": event_id, "rsvps": {"$ne": user_id},
                 "$and": [_not_over(now, self.settings.default_event_hours), _has_room()]},
                [{"$set": {"rsvps": {"$concatArrays": [_RSVPS, [user_id]]}}},
                 {"$set": {"rsvp_count": {"$size": "$rsvps"}}}],
                projection={"title": 1, "rsvp_count": 1}, return_document=db.ReturnDocument.AFTER)
            if event is not None:
                await self.store.users.update_one({"_id": user_id}, {"$addToSet": {"rsvped_events": event_id}})
                await record_activity(self.store, RSVP, user, event=event, clock=self.clock)
                return {"rsvped": True, "rsvp_count": event["rsvp_count"]}
            summary = await self._summary(event_id, user_id)
            if summary["is_rsvped"]:
                await self.store.users.update_one({"_id": user_id}, {"$addToSet": {"rsvped_events": event_id}})
                return {"rsvped": True, "rsvp_count": summary["rsvp_count"]}
            if self._is_over(summary, now):
                raise Conflict("The event is over.", code="event_ended")
            if summary.get("capacity") is not None and summary["rsvp_count"] >= summary["capacity"]:
                raise Conflict("The event is full.", code="event_full")
        raise Conflict("The event changed while you were RSVPing. Try again.", code="rsvp_conflict")

    async def cancel_rsvp(self, event_text_id, user):
        """Takes back an RSVP (and the arrival with it); idempotent; refused once the event is over."""
        event_id, user_id = parse_event_id(event_text_id), user["_id"]
        for _ in range(ATTEMPTS):
            now = self.clock()
            event = await self.store.events.find_one_and_update(
                {"_id": event_id, "rsvps": user_id, **_not_over(now, self.settings.default_event_hours)},
                [{"$set": {"rsvps": _without("rsvps", user_id), "arrivals": _without("arrivals", user_id)}},
                 {"$set": {"rsvp_count": {"$size": "$rsvps"}}}],
                projection={"rsvp_count": 1, "organizer_id": 1}, return_document=db.ReturnDocument.AFTER)
            if event is None:
                event = await self._summary(event_id, user_id)
                if event["is_rsvped"] and self._is_over(event, now):
                    raise Conflict("The event is over; its RSVPs stay as they were.", code="event_ended")
                if event["is_rsvped"]:
                    continue
            elif event.get("organizer_id") != user_id:
                self._notify(self.left_listeners, str(event_id), str(user_id))
            await self.store.users.update_one({"_id": user_id}, {"$pull": {"rsvped_events": event_id}})
            return {"rsvped": False, "rsvp_count": event["rsvp_count"]}
        raise Conflict("The event changed while you were cancelling. Try again.", code="rsvp_conflict")

    def _end(self, event):
        if event.get("end_date") is not None:
            return as_utc(event["end_date"])
        return _shifted(event["date"], datetime.timedelta(hours=self.settings.default_event_hours))

    def _is_over(self, event, now):
        return now >= self._end(event)

    # --- arrival ---------------------------------------------------------------------------

    async def arrive(self, event_text_id, user, location, accuracy_m=None):
        """Checks the caller in when the reported point is inside the event's geofence.

        The rule: the distance from the point to the fence (0 inside it; the fence is the
        `geofence` polygon, else the circle of `geofence_radius` meters around `location`) may
        be at most min(accuracy_m, arrival_accuracy_cap_m), from arrival_opens_minutes_before
        the start until the end (end_date, or the start plus default_event_hours).
        """
        event_id, user_id = parse_event_id(event_text_id), user["_id"]
        point = parse_point(location)
        for _ in range(ATTEMPTS):
            now = self.clock()
            event = await self._summary(event_id, user_id)
            distance_m = self._judge_arrival(event, point, accuracy_m, now)
            if event["has_arrived"] or await self._record_arrival(event_id, user_id, now):
                return {"arrived": True, "distance_m": distance_m}
        raise Conflict("The event changed while you were checking in. Try again.", code="arrival_conflict")

    def _judge_arrival(self, event, point, accuracy_m, now):
        """The point's distance to the fence, rounded; raises unless the arrival counts (or already did)."""
        fence = self.geofences.fence_for(event)
        inside, outside_m = fence.admits(*point["coordinates"], accuracy_m, self.settings.arrival_accuracy_cap_m)
        distance_m = round(outside_m, 1)
        if event["has_arrived"]:
            return distance_m
        if not event["is_rsvped"]:
            raise Conflict("RSVP to the event before checking in.", code="rsvp_required")
        if now < self._arrival_opens(event):
            raise Conflict(f"Check-in opens at {to_iso(self._arrival_opens(event))}.", code="arrival_not_open")
        if self._is_over(event, now):
            raise Conflict("The event is over.", code="event_ended")
        if not inside:
            raise Refused("You are not at the event yet.", code="outside_geofence", distance_m=distance_m)
        return distance_m

    async def _record_arrival(self, event_id, user_id, now):
        # Conditional on the RSVP and the window as well: either may have changed since the read.
        result = await self.store.events.update_one(
            {"_id": event_id, "rsvps": user_id, "arrivals": {"$ne": user_id},
             "date": {"$lte": now + self._opens_before()}, **_not_over(now, self.settings.default_event_hours)},
            {"$push": {"arrivals": user_id}})
        return result.matched_count == 1

    def _opens_before(self):
        return datetime.timedelta(minutes=self.settings.arrival_opens_minutes_before)

    def _arrival_opens(self, event):
        return _shifted(event["date"], -self._opens_before())

    # --- numbers ---------------------------------------------------------------------------

    async def stats(self, event_text_id):
        event_id = parse_event_id(event_text_id)
        summary = await self._summary(event_id)
        counts = await self._message_counts([event_id])
        return self._stats(summary, counts.get(event_id, 0))

    def _stats(self, summary, message_count):
        rsvps, arrivals = summary["rsvp_count"], summary["arrival_count"]
        return {
            "rsvp_count": rsvps,
            "arrival_count": arrivals,
            "arrival_rate": round(arrivals / rsvps, 4) if rsvps else 0.0,
            "photo_count": summary["photo_count"],
            "message_count": message_count,
            "online_count": self.online_counter(str(summary["_id"])),
        }

    async def _message_counts(self, event_ids):
        # One indexed count per event (a page holds at most 100) rather than a $group, which
        # the in-memory driver would run over a copy of every message.
        counts = await asyncio.gather(*(self.store.messages.count_documents({"event_id": event_id})
                                        for event_id in event_ids))
        return dict(zip(event_ids, counts))

    async def organizer_events(self, organizer, limit, cursor):
        """The organizer's events by date, each with its stats: {items, next_cursor}."""
        query = discovery.DiscoveryQuery(organizer_id=organizer["_id"], limit=limit).resumed_from(cursor)
        page = await discovery.find_events(self.store, query, organizer["_id"])
        counts = await self._message_counts([summary["_id"] for summary in page.items])
        shown = await self._present(page.items)
        items = [{**event, "stats": self._stats(summary, counts.get(summary["_id"], 0))}
                 for event, summary in zip(shown, page.items)]
        return {"items": items, "next_cursor": page.next_cursor}


def _shifted(moment, delta):
    """moment + delta, held at the calendar's ends (events may be dated in year 1 or 9999)."""
    try:
        return as_utc(moment) + delta
    except OverflowError:
        return datetime.datetime.max.replace(tzinfo=UTC) if delta > datetime.timedelta(0) else \
            datetime.datetime.min.replace(tzinfo=UTC)


def parse_event_id(text):
    """An event's ObjectId from its id text; a malformed one is an unknown event (404)."""
    event_id = db.parse_id(text)
    if event_id is None:
        raise NotFound("There is no such event.", code="event_not_found")
    return event_id


def organizer_or_rsvped(user_id):
    """Filter: events `user_id` organizes or has RSVPed, the people an event's chat and gallery
    are for."""
    return {"$or": [{"organizer_id": user_id}, {"rsvps": user_id}]}


def _capacity_below_rsvps():
    return Conflict("The capacity cannot be below the number of RSVPs already taken.",
                    code="capacity_below_rsvps")
