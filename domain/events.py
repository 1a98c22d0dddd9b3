"""Events: publishing, RSVP within capacity with a waitlist, geofenced arrival, and the numbers
organizers watch.

Concurrency: every rule that depends on an event's current state (room left, nobody waiting,
already RSVPed or in line, not over yet, not cancelled, capacity not below the RSVPs, line or
gallery not full) is a condition of the one atomic repository call that changes the event
(`take_seat`, `join_waitlist`, `leave_waitlist`, `release_seat`, `record_arrival`, `add_photo`,
`update`, `delete`; domain/repositories.py), which each adapter checks and writes in a single step. A read before
that call finds what an error message should say, and for an edit, whether the merged event is
consistent; that edit's write then applies only if the fields it read are unchanged
(`expected`), so a stale read can refuse a change, never let a wrong one through.

The waitlist: an RSVP to a full event that has a capacity and its waitlist on puts the caller in
line; the store promotes the first in line in the same atomic step that frees a seat (a
cancellation, a raised capacity), and hands back whom it promoted, who then get what an RSVP
gets (its activity, as RSVP_PROMOTED).

Cancellation (`cancelled: true` in PUT/PATCH) is final: the event stays readable, shown
cancelled, for those who were going and their calendars (RFC 5545's STATUS:CANCELLED, which
calendar apps treat as the end of the event), and takes no more RSVPs, places in line, arrivals,
photos or edits (409 `event_cancelled`, each a condition of the store's atomic call). Reviving
it would tell people who made other plans that it is on again, with seats given back to nobody;
an organizer publishes a new event instead.

Who is told what (promotions, places in line, edits, deletions) is domain/notifications.py's:
this module reports each change to its `Notifier`, which does the work in the background.
"""
import asyncio
import collections
import datetime
import logging
import math
import re

from domain import discovery
from domain.activities import EVENT_CREATED, GOING, RSVP, RSVP_PROMOTED, record_activity, withdraw_activity
from domain.background import Background
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Refused
from domain.geo import Geofence, polygon_contains_point
from domain.notifications import changed_fields, member_id_pages
from domain.paging import CURSOR_RULE, ID_PATTERN, Page
from domain import repositories
from domain.repositories import EventWindow
from domain.times import ISO_TIME_RULE, UTC, as_utc, parse_iso, to_iso, utcnow

log = logging.getLogger("events")

DEFAULT_GEOFENCE_RADIUS_M = 100
# A state rule that failed only because the event changed between our read and our write is
# tried again; more than this many changes in a row is answered with 409.
ATTEMPTS = 3
# The fields whose consistency an edit checks (_check_consistent): a write that changes any of
# them expects the others still as read.
RELATED_FIELDS = ("date", "end_date", "location", "geofence")
ATTENDEE_STATUSES = repositories.Events.ATTENDEE_STATUSES
# Attendee lists page by the last user id shown.
ATTENDEE_CURSOR_PATTERN = ID_PATTERN
# The export reads the attendees this many at a time, and the handler writes each batch before
# the next is read: a 100,000-person event is never held in memory, nor formatted in one go.
# Making the JSON objects and the CSV of 1,000 took the loop 12-25 ms (bench.attendees_bench);
# 250 take 3-6 ms.
EXPORT_BATCH = 250
# Promoted users whose names are read at once when announcing their promotions.
PROMOTION_BATCH = 250


def event_json(summary, usernames):
    """The contract's Event object from an event record; usernames maps user ids to names."""
    organizer_id = summary["organizer_id"]
    shown = {
        "id": summary["id"],
        "title": summary["title"] or "",
        "description": summary["description"] or "",
        "date": to_iso(summary["date"]),
        "end_date": to_iso(summary["end_date"]),
        "category": summary["category"] or "",
        "location_address": summary["location_address"] or "",
        "location": summary["location"],
        "geofence_radius": _geofence_radius(summary),
        "geofence": summary["geofence"],
        "capacity": summary["capacity"],
        "waitlist": _takes_waitlist(summary),
        "organizer": {"id": organizer_id, "username": usernames.get(organizer_id, "")},
        "rsvp_count": summary["rsvp_count"],
        "waitlist_count": summary["waitlist_count"],
        "waitlist_position": summary["waitlist_position"],
        "arrival_count": summary["arrival_count"],
        "photo_count": summary["photo_count"],
        "is_rsvped": summary["is_rsvped"],
        "has_arrived": summary["has_arrived"],
        "cancelled": summary["cancelled_at"] is not None,
        "cancelled_at": to_iso(summary["cancelled_at"]),
        "sequence": summary["sequence"],
        "created_at": to_iso(summary["created_at"]),
        # Never edited: last changed when it was created.
        "updated_at": to_iso(summary["updated_at"] or summary["created_at"]),
    }
    if "distance_m" in summary:
        shown["distance_m"] = round(summary["distance_m"], 1)
    return shown


def _takes_waitlist(event):
    """Whether a full event puts callers in line: it needs a capacity, and its waitlist on."""
    return event["capacity"] is not None and event["waitlist_enabled"]


def rsvp_status(event):
    """The contract's RsvpStatus: the caller's standing in an event record as they see it."""
    position = event["waitlist_position"]
    status = "going" if event["is_rsvped"] else "waitlisted" if position is not None else "not_going"
    return {"rsvped": event["is_rsvped"], "rsvp_count": event["rsvp_count"], "status": status,
            "position": position, "waitlist_count": event["waitlist_count"]}


def _geofence_radius(event):
    # Events written by the old backend may have none.
    radius = event["geofence_radius"]
    return DEFAULT_GEOFENCE_RADIUS_M if radius is None else radius


def _bad(path, message, text="The event is not valid."):
    return InvalidInput(text, errors=[{"path": path, "message": message}])


def _parse_time(text, path):
    moment = parse_iso(text)
    if moment is None:
        raise _bad(path, f"must be {ISO_TIME_RULE}")
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
    if "waitlist" in body:
        fields["waitlist_enabled"] = body["waitlist"]
    return fields


def _differences(event, requested):
    """The requested stored fields whose values `event` does not have already. `waitlist` is
    compared with what the event shows, whether it takes a waitlist (its capacity included): the
    value it shows, sent back, is no change (an event without a capacity, shown `waitlist: false`,
    keeps its flag on), and asking for one it does not take is (a 400 without a capacity)."""
    changes = {field: value for field, value in requested.items()
               if field != "waitlist_enabled" and event.get(field) != value}
    if "waitlist_enabled" in requested and requested["waitlist_enabled"] != _takes_waitlist(event):
        changes["waitlist_enabled"] = requested["waitlist_enabled"]
    return changes


def _cancelled():
    return Conflict("The event is cancelled.", code="event_cancelled")


def _check_waitlist(changes, event):
    """Asking for a waitlist (`waitlist: true`) on an event that would have no capacity is a 400:
    an event without one is never full before the server's bound, and has no line to wait in."""
    if changes.get("waitlist_enabled") and event.get("capacity") is None:
        raise InvalidInput("An event needs a capacity to have a waitlist.", code="waitlist_needs_capacity",
                           errors=[{"path": "/waitlist", "message": "needs a capacity"}])


def _check_consistent(event):
    """Rules across fields, on the event as it would be stored."""
    if event.get("end_date") is not None and as_utc(event["end_date"]) <= as_utc(event["date"]):
        raise _bad("/end_date", "must be after date")
    if event.get("geofence") is not None:
        # Raises InvalidInput (at /geofence) unless the polygon is valid.
        if not polygon_contains_point(event["geofence"], event["location"]):
            raise _bad("/geofence", "must contain the event's location")


async def _check_consistent_off_loop(event):
    """_check_consistent, in the default executor when there is a venue polygon: checking and
    projecting 5,000 positions takes 10-20 ms of CPU, and there the event loop gets the GIL back
    every 5 ms instead of waiting for the end."""
    if event.get("geofence") is None:
        _check_consistent(event)
    else:
        await asyncio.get_running_loop().run_in_executor(None, _check_consistent, event)


class GeofenceCache:
    """Geofences by event version (id, updated_at). A venue polygon is validated, projected and
    prepared once per version instead of on every arrival: about 4 ms for 1,000 corners, while
    a check against the prepared fence takes microseconds and arrivals come in bursts."""

    def __init__(self, size=256):
        self.size = size
        self._fences = collections.OrderedDict()

    def fence_for(self, event):
        key = (event["id"], event["updated_at"])
        fence = self._fences.get(key)
        if fence is None:
            fence = Geofence.for_event(event["location"], _geofence_radius(event), event["geofence"])
            self._fences[key] = fence
            if len(self._fences) > self.size:
                self._fences.popitem(last=False)
        else:
            self._fences.move_to_end(key)
        return fence


class Events:
    def __init__(self, store, settings, notifier, clock=utcnow):
        self.store = store
        self.settings = settings
        self.notifier = notifier  # domain.notifications.Notifier
        self.clock = clock
        self.geofences = GeofenceCache()
        # Called as listener(event_id) after an event is deleted, e.g. to close its chat room.
        self.deleted_listeners = []
        # Awaited as cleanup(event_id) after an event is deleted and before the answer, e.g. to
        # delete its stored photos; a failure is logged, as the event is deleted either way.
        self.deleted_cleanups = []
        # Called as listener(event_id, user_id) when someone who is not the organizer cancels
        # an RSVP, so access granted by that RSVP (the event's live chat) ends with it.
        self.left_listeners = []
        # How many people are in each of some events' live chats now ({event id: count}, awaited:
        # with several processes the count is read from Redis); the chat replaces this.
        self.online_counter = _no_one_online
        self.background = Background(log, "announcing promotions failed")

    # --- reading ---------------------------------------------------------------------------

    async def _summary(self, event_id, viewer_id=None):
        event = await self.store.events.get(event_id, viewer_id)
        if event is None:
            raise NotFound("There is no such event.", code="event_not_found")
        return event

    async def _present(self, summaries):
        organizer_ids = {summary["organizer_id"] for summary in summaries if summary["organizer_id"]}
        usernames = await self.store.users.usernames(organizer_ids)
        return [event_json(summary, usernames) for summary in summaries]

    async def view(self, event_id, viewer):
        summary = await self._summary(event_id, viewer["id"])
        return (await self._present([summary]))[0]

    async def discover(self, query, viewer):
        """A page of events as the contract shows them: {items, next_cursor}."""
        page = await discovery.find_events(self.store, query, viewer["id"])
        return {"items": await self._present(page.items), "next_cursor": page.next_cursor}

    # --- publishing ------------------------------------------------------------------------

    async def create(self, organizer, body):
        now = self.clock()
        fields = _stored_fields(body)
        event = {
            "description": "", "end_date": None, "geofence_radius": DEFAULT_GEOFENCE_RADIUS_M,
            "geofence": None, "capacity": None, "waitlist_enabled": True, **fields,
            "organizer_id": organizer["id"], "created_at": now, "updated_at": now,
        }
        _check_waitlist(fields, event)
        await _check_consistent_off_loop(event)
        event["id"] = await self.store.events.add(event)
        await record_activity(self.store, EVENT_CREATED, organizer, event=event, clock=self.clock)
        return await self.view(event["id"], organizer)

    async def _owned(self, event_id, organizer, action="change it"):
        event = await self.store.events.get(event_id)
        if event is None:
            raise NotFound("There is no such event.", code="event_not_found")
        if event["organizer_id"] != organizer["id"]:
            raise Forbidden(f"Only the event's organizer can {action}.", code="not_event_organizer")
        return event

    async def update(self, event_id, organizer, body):
        """Applies any subset of the create fields, and `cancelled: true`; PUT and PATCH alike. A
        raised capacity promotes as many waiting users as it adds seats. A cancelled event changes
        no more: asking to cancel it again is answered with it, anything else is a 409. Values the
        event already has change nothing: a fetched event sent back unchanged writes nothing, and
        its revision (`sequence`, calendars' SEQUENCE) and `updated_at` stay."""
        requested = _stored_fields(body)
        cancelling = body.get("cancelled") is True
        for _ in range(ATTEMPTS):
            event = await self._owned(event_id, organizer)
            changes = _differences(event, requested)
            if event["cancelled_at"] is not None:
                if changes or body.get("cancelled") is False:  # reviving it is a change too
                    raise _cancelled()
                return await self.view(event_id, organizer)
            if not changes and not cancelling:
                return await self.view(event_id, organizer)
            _check_waitlist(changes, {**event, **changes})
            await _check_consistent_off_loop({**event, **changes})
            capacity = changes.get("capacity")
            if capacity is not None and capacity < event["rsvp_count"]:
                raise _capacity_below_rsvps()
            now = self.clock()
            # The write also refuses a capacity below the RSVPs taken since this read, and any
            # change to an event cancelled since.
            promoted = await self.store.events.update(
                event_id, organizer["id"],
                {**changes, "updated_at": now, **({"cancelled_at": now} if cancelling else {})},
                expected=_read_for(changes, event))
            if promoted is not None:
                break
        else:
            raise Conflict("The event changed while it was being updated. Try again.", code="edit_conflict")
        if cancelling:
            # Those going or waiting learn of the cancellation, not of the edits that came with it.
            self.notifier.cancelled({**event, **changes}, organizer["id"])
        else:
            self.notifier.changed({**event, **changes}, changed_fields(event, changes), organizer["id"])
        if promoted:
            # Answered first: a raise can promote up to MAX_WAITLIST users (10,000 took 8 s to announce).
            self.background.spawn(self._announce_promotions(await self._summary(event_id), promoted))
        return await self.view(event_id, organizer)

    async def delete(self, event_id, organizer):
        """Deletes the event with its RSVPs, arrivals, photos (the stored files too) and chat history;
        those going or waiting are told."""
        # Read before: afterwards nobody is going any more (someone RSVPing in between is not told).
        # Only for the organizer's own event: nobody else can make the server read a long list; and
        # not for a cancelled one, whose members were told at the cancellation.
        # The ids are read a page at a time, each page its own await (110,000 ids read in one step
        # held the loop 20-60 ms), and kept as those pages (a few MB at most) until the delete is
        # done; then the notifier drafts and stores them in the background, a page at a time. They
        # cannot be read after the delete, and the delete must not wait for 110,000 notifications:
        # reading them first costs the request 0.6 s at 100,000 going (bench/notify_bench.py), the
        # loop no step over a few milliseconds.
        event = await self.store.events.get(event_id)
        owned = event is not None and event["organizer_id"] == organizer["id"] and event["cancelled_at"] is None
        members = [ids async for ids in member_id_pages(self.store, event_id)] if owned else None
        if not await self.store.events.delete(event_id, organizer["id"]):
            await self._owned(event_id, organizer)  # 404 or 403, whichever applies
            raise NotFound("There is no such event.", code="event_not_found")
        self._notify(self.deleted_listeners, event_id)
        self.notifier.deleted(event, members, organizer["id"])
        for cleanup in self.deleted_cleanups:
            try:
                await cleanup(event_id)
            except Exception:
                log.exception("cleaning up after deleting event %s failed", event_id)

    def _notify(self, listeners, *args):
        for listener in listeners:
            try:
                listener(*args)
            except Exception:
                # The change is made either way; one broken listener must not stop the rest.
                log.exception("event listener failed")

    # --- RSVP ------------------------------------------------------------------------------

    async def rsvp(self, event_id, user):
        """A seat, else a place in the event's waitlist; idempotent: someone already going or
        waiting is answered with their standing, unchanged."""
        user_id = user["id"]
        for _ in range(ATTEMPTS):
            now = self.clock()
            # Each rule in one atomic call. A seat: not yet RSVPed, nobody waiting, not over,
            # room left. Else the line: a capacity, its waitlist on, full, not over.
            event = await self.store.events.take_seat(event_id, user_id, self._window(now))
            if event is not None:
                await self._record_rsvp(user, event, RSVP)
                return rsvp_status(event)
            event = await self.store.events.join_waitlist(event_id, user_id, self._window(now))
            if event is not None:
                return rsvp_status(event)
            summary = await self._summary(event_id, user_id)
            if summary["cancelled_at"] is not None:
                raise _cancelled()
            if summary["is_rsvped"] or summary["waitlist_position"] is not None:
                return rsvp_status(summary)
            if self._is_over(summary, now):
                raise Conflict("The event is over.", code="event_ended")
            most = repositories.Events.MAX_RSVPS
            if summary["rsvp_count"] >= min(summary["capacity"] or most, most):
                if not _takes_waitlist(summary):
                    raise Conflict("The event is full.", code="event_full")
                if summary["waitlist_count"] >= repositories.Events.MAX_WAITLIST:
                    raise Conflict("The event is full and so is its waitlist.", code="waitlist_full")
            # Otherwise the event changed between the calls (a seat freed, the line emptied): again.
        raise Conflict("The event changed while you were RSVPing. Try again.", code="rsvp_conflict")

    async def _record_rsvp(self, user, event, kind):
        await record_activity(self.store, kind, user, event=event, clock=self.clock)
        # A cancel may have released the seat, and withdrawn nothing yet to withdraw, before the
        # activity was stored; then the RSVP is gone by now and this withdraws it. (Either the
        # cancel's withdrawal comes after the record, or its release came before this read.)
        current = await self.store.events.get(event["id"], user["id"])
        if current is None or not current["is_rsvped"]:
            await withdraw_activity(self.store, kind, user["id"], event_id=event["id"])

    async def _announce_promotions(self, event, promoted):
        """What an RSVP gets, for each user the store promoted from the waitlist into a seat, and
        their notifications (and those of the users behind them in line). The users are read
        PROMOTION_BATCH at a time, so that many promotions (a raised capacity) take no long step."""
        self.notifier.promoted(event, promoted)
        for start in range(0, len(promoted), PROMOTION_BATCH):
            batch = promoted[start:start + PROMOTION_BATCH]
            usernames = await self.store.users.usernames(batch)
            for user_id in batch:
                if user_id in usernames:  # else no such user: nothing to show
                    await self._record_rsvp({"id": user_id, "username": usernames[user_id]}, event, RSVP_PROMOTED)

    async def cancel_rsvp(self, event_id, user):
        """Takes back an RSVP (and the arrival with it), promoting the first in line into the
        seat, or leaves the waitlist; idempotent; an RSVP stays once the event is over."""
        user_id = user["id"]
        for _ in range(ATTEMPTS):
            now = self.clock()
            event = await self.store.events.release_seat(event_id, user_id, self._window(now))
            if event is None:
                # The place they leave, for the notifications of those behind (who move up).
                before = await self.store.events.get(event_id, user_id)
                event = await self.store.events.leave_waitlist(event_id, user_id)
                if event is not None:
                    if before is not None and before["waitlist_position"] is not None:
                        self.notifier.line_moved(event_id, before["waitlist_position"])
                    return rsvp_status(event)
                event = await self._summary(event_id, user_id)
                if event["is_rsvped"] and self._is_over(event, now):
                    raise Conflict("The event is over; its RSVPs stay as they were.", code="event_ended")
                if event["is_rsvped"] or event["waitlist_position"] is not None:
                    continue
            else:
                if event["organizer_id"] != user_id:
                    self._notify(self.left_listeners, event["id"], user_id)
                await self._announce_promotions(event, event["promoted"])
            # "is going to" is no longer true. Also when there was no RSVP to take back: an
            # activity left by a failed request goes too.
            for kind in GOING:
                await withdraw_activity(self.store, kind, user_id, event_id=event["id"])
            return rsvp_status(event)
        raise Conflict("The event changed while you were cancelling. Try again.", code="rsvp_conflict")

    def _window(self, now):
        return EventWindow(now, datetime.timedelta(hours=self.settings.default_event_hours))

    def _end(self, event):
        return event_end(event, datetime.timedelta(hours=self.settings.default_event_hours))

    def _is_over(self, event, now):
        return now >= self._end(event)

    # --- arrival ---------------------------------------------------------------------------

    async def arrive(self, event_id, user, location, accuracy_m=None):
        """Checks the caller in when the reported point is inside the event's geofence.

        The rule: the distance from the point to the fence (0 inside it; the fence is the
        `geofence` polygon, else the circle of `geofence_radius` meters around `location`) may
        be at most min(accuracy_m, arrival_accuracy_cap_m), from arrival_opens_minutes_before
        the start until the end (end_date, or the start plus default_event_hours).
        """
        user_id = user["id"]
        point = parse_point(location)
        for _ in range(ATTEMPTS):
            now = self.clock()
            event = await self._summary(event_id, user_id)
            distance_m = self._judge_arrival(event, point, accuracy_m, now)
            # Conditional on the RSVP and the window as well: either may have changed since the read.
            if event["has_arrived"] or await self.store.events.record_arrival(
                    event_id, user_id, self._window(now), self._opens_before()):
                return {"arrived": True, "distance_m": distance_m}
        raise Conflict("The event changed while you were checking in. Try again.", code="arrival_conflict")

    def _judge_arrival(self, event, point, accuracy_m, now):
        """The point's distance to the fence, rounded; raises unless the arrival counts (or already did)."""
        fence = self.geofences.fence_for(event)
        inside, outside_m = fence.admits(*point["coordinates"], accuracy_m, self.settings.arrival_accuracy_cap_m)
        distance_m = round(outside_m, 1)
        if event["has_arrived"]:
            return distance_m
        self._check_arrival_allowed(event, now, "RSVP to the event before checking in.")
        if not inside:
            raise Refused("You are not at the event yet.", code="outside_geofence", distance_m=distance_m)
        return distance_m

    def _check_arrival_allowed(self, event, now, not_going):
        """Raises unless the viewer of `event` may arrive now, wherever they are: they are going,
        and check-in is open (the window record_arrival checks too), in an event not cancelled."""
        if event["cancelled_at"] is not None:
            raise _cancelled()
        if not event["is_rsvped"]:
            raise Conflict(not_going, code="rsvp_required")
        if now < self._arrival_opens(event):
            raise Conflict(f"Check-in opens at {to_iso(self._arrival_opens(event))}.", code="arrival_not_open")
        if self._is_over(event, now):
            raise Conflict("The event is over.", code="event_ended")

    def _opens_before(self):
        return datetime.timedelta(minutes=self.settings.arrival_opens_minutes_before)

    def _arrival_opens(self, event):
        return _shifted(event["date"], -self._opens_before())

    # --- attendees (the organizer's) -----------------------------------------------------

    async def attendees(self, event_id, organizer, status, limit, cursor):
        """A page of the event's attendees (all, or of one status) in user id order, for its
        organizer: {items, next_cursor}."""
        status, after = _attendee_status(status), _attendee_position(cursor)
        await self._owned(event_id, organizer, "see its attendees")
        found = await self.store.events.attendees(event_id, status, after, limit + 1)
        if found is None:
            raise NotFound("There is no such event.", code="event_not_found")
        shown = found[:limit]
        next_cursor = shown[-1]["user_id"] if len(found) > limit else None
        return Page([attendee_json(attendee) for attendee in shown], next_cursor).as_json()

    async def export_attendees(self, event_id, organizer, status):
        """Every attendee (all, or of one status), for the event's organizer: checks the caller
        and the status now, and returns an async iterator of lists of Attendee objects, at most
        EXPORT_BATCH each, in user id order."""
        status = _attendee_status(status)
        await self._owned(event_id, organizer, "see its attendees")
        return self._attendee_batches(event_id, status)

    async def _attendee_batches(self, event_id, status):
        after = None
        while True:
            found = await self.store.events.attendees(event_id, status, after, EXPORT_BATCH)
            if not found:  # the end, or the event was deleted meanwhile
                return
            yield [attendee_json(attendee) for attendee in found]
            if len(found) < EXPORT_BATCH:
                return
            after = found[-1]["user_id"]

    async def check_in(self, event_id, organizer, user_id):
        """The organizer checks a user in by hand, at the door, when the user's phone cannot: the
        rules of an arrival but the geofence (going; from when check-in opens until the end).
        Idempotent: someone already arrived, either way, stays arrived as they did, once.
        Returns their Attendee object."""
        await self._owned(event_id, organizer, "check people in")
        for _ in range(ATTEMPTS):
            now = self.clock()
            event = await self._summary(event_id, user_id)
            if not event["has_arrived"]:
                self._check_arrival_allowed(event, now, "Only someone going to the event can be checked in.")
                if not await self.store.events.record_arrival(event_id, user_id, self._window(now),
                                                              self._opens_before(), checked_in_by=organizer["id"]):
                    continue  # the RSVP, the arrival or the event changed since the read
            found = await self.store.events.attendees(event_id, "arrived", None, 1, user_id=user_id)
            if found:
                return attendee_json(found[0])
        raise Conflict("The event changed while checking in. Try again.", code="arrival_conflict")

    # --- numbers ---------------------------------------------------------------------------

    async def stats(self, event_id):
        summary = await self._summary(event_id)
        counts = await self.store.messages.counts([event_id])
        online = await self.online_counter([event_id])
        return self._stats(summary, counts[event_id], online[event_id])

    def _stats(self, summary, message_count, online_count):
        rsvps, arrivals = summary["rsvp_count"], summary["arrival_count"]
        return {
            "rsvp_count": rsvps,
            "arrival_count": arrivals,
            "arrival_rate": round(arrivals / rsvps, 4) if rsvps else 0.0,
            "photo_count": summary["photo_count"],
            "waitlist_count": summary["waitlist_count"],
            "message_count": message_count,
            "online_count": online_count,
        }

    async def organizer_events(self, organizer, limit, cursor):
        """The organizer's events by date, each with its stats: {items, next_cursor}."""
        query = discovery.DiscoveryQuery(organizer_id=organizer["id"], limit=limit,
                                         include_cancelled=True).resumed_from(cursor)
        page = await discovery.find_events(self.store, query, organizer["id"])
        counts = await self.store.messages.counts([summary["id"] for summary in page.items])
        online = await self.online_counter([summary["id"] for summary in page.items])
        shown = await self._present(page.items)
        items = [{**event, "stats": self._stats(summary, counts[summary["id"]], online[summary["id"]])}
                 for event, summary in zip(shown, page.items)]
        return {"items": items, "next_cursor": page.next_cursor}


async def _no_one_online(event_ids):
    return dict.fromkeys(event_ids, 0)


def attendee_json(attendee):
    """The contract's Attendee object from an attendee record."""
    check_in = attendee["check_in"]
    return {
        "user": {"id": attendee["user_id"], "username": attendee["username"] or ""},
        "status": attendee["status"],
        "waitlist_position": attendee["position"],
        "joined_at": to_iso(attendee["joined_at"]),
        "check_in": None if check_in is None else {
            "method": check_in["method"], "checked_in_by": check_in["by"], "at": to_iso(check_in["at"])},
    }


def _attendee_status(text):
    if text is not None and text not in ATTENDEE_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(ATTENDEE_STATUSES)}.", code="invalid_status",
                           errors=[{"path": "status", "message": f"must be one of {', '.join(ATTENDEE_STATUSES)}"}])
    return text


def _attendee_position(cursor):
    """The user id an attendee cursor points after."""
    if cursor is not None and not re.fullmatch(ATTENDEE_CURSOR_PATTERN, cursor):
        raise InvalidInput("The cursor is not valid; start again without one.", code="invalid_cursor",
                           errors=[{"path": "cursor", "message": CURSOR_RULE}])
    return cursor


def _read_for(changes, event):
    """What an update of `changes` expects still as it was in `event`: the fields its
    consistency check relied on, when it changes any of them."""
    if not any(field in changes for field in RELATED_FIELDS):
        return {}
    return {field: event[field] for field in RELATED_FIELDS if field not in changes}


def event_end(event, default_duration):
    """When the event ends: its end_date, or `default_duration` after its start."""
    if event["end_date"] is not None:
        return as_utc(event["end_date"])
    return _shifted(event["date"], default_duration)


def _shifted(moment, delta):
    """moment + delta, held at the calendar's ends (events may be dated in year 1 or 9999)."""
    try:
        return as_utc(moment) + delta
    except OverflowError:
        return datetime.datetime.max.replace(tzinfo=UTC) if delta > datetime.timedelta(0) else \
            datetime.datetime.min.replace(tzinfo=UTC)


def _capacity_below_rsvps():
    return Conflict("The capacity cannot be below the number of RSVPs already taken.",
                    code="capacity_below_rsvps")
