"""What users are told without asking: who is notified of what, stored and then pushed live.

Four kinds, each about one event:
- `rsvp_promoted`: you got a seat from the waitlist (also sent by email);
- `waitlist_position`: your place in the line changed (someone ahead left or was promoted);
- `event_changed`: an event you are going to or waiting for was edited (which fields);
- `event_cancelled`: such an event was cancelled, or deleted, by its organizer.

Each is stored first (the list at GET /api/v1/notifications is the record: nothing is lost while
a user is offline), then handed to `push(user_id, notification_json)`, which the live side
(handlers/notifications.py) sets to its hub.

All of it runs in background tasks, off the request that caused it: a change to an event with
10,000 waiting is 10,000 notifications, written in batches of BATCH (one transaction or bulk
write each). The bound for the line: a user's place in one event's line is one keyed
notification (`waitlist_position:<event id>`), replaced rather than added, so the store holds at
most one per waiting user and event; and an event's line is recomputed by at most one pass at a
time in this process, the changes arriving meanwhile merged into one next pass (`line_moved`).
So a burst of leaves costs two passes of at most MAX_WAITLIST writes, not one per leave, and a
pass writes only the places that differ from what the user was last told.

Who is told is read a page of MEMBER_PAGE at a time (Events.attendees, in user id order), and each
page drafted and stored before the next is read: an event has up to MAX_RSVPS going and
MAX_WAITLIST waiting, and reading, converting and filtering 110,000 ids in one step held the
event loop 20-60 ms (bench/notify_bench.py).
"""
import itertools
import logging
import re

from domain.background import Background
from domain.errors import InvalidInput, NotFound
from domain.paging import CURSOR_RULE, ID_PATTERN
from domain.times import to_iso, utcnow

log = logging.getLogger("notifications")

RSVP_PROMOTED, WAITLIST_POSITION = "rsvp_promoted", "waitlist_position"
EVENT_CHANGED, EVENT_CANCELLED = "event_changed", "event_cancelled"
KINDS = (RSVP_PROMOTED, WAITLIST_POSITION, EVENT_CHANGED, EVENT_CANCELLED)
# Notifications per write. SQLite runs one write at a time on its thread, so a request's calls
# queue behind at most one batch: 100 rows keep that wait to a few milliseconds (bench/notify_bench.py:
# with 500, cancels at an event with 10,000 waiting took up to 260 ms while a pass ran; with 100, 46 ms).
BATCH = 100
# Members read per page when telling an event's members: one page's read, drafts and filter take
# the loop well under a millisecond, whatever the size of the event.
MEMBER_PAGE = 250

MESSAGES = {
    RSVP_PROMOTED: "You got a seat at {title} from the waitlist.",
    WAITLIST_POSITION: "You are now number {position} on the waitlist for {title}.",
    EVENT_CHANGED: "{title} was changed: {fields}.",
    EVENT_CANCELLED: "{title} was cancelled.",
}
# Stored field names as the API shows them (the event_changed list).
FIELD_NAMES = {"waitlist_enabled": "waitlist"}


def notification_json(record):
    """The contract's Notification object from a notification record."""
    data = record["data"]
    message = MESSAGES[record["type"]].format(
        title=data.get("title") or "An event", position=data.get("position"),
        fields=", ".join(data.get("fields") or ()))
    return {"id": record["id"], "type": record["type"], "event_id": record["event_id"],
            "event_title": data.get("title") or "", "message": message,
            "position": data.get("position"), "fields": data.get("fields"),
            "created_at": to_iso(record["created_at"]), "read": record["read"]}


def position_key(event_id):
    return f"{WAITLIST_POSITION}:{event_id}"


def changed_fields(event, changes):
    """The API names of the fields `changes` gives a new value, in a stable order."""
    return sorted(FIELD_NAMES.get(field, field) for field, value in changes.items()
                  if field != "updated_at" and event.get(field) != value)


class Notifier:
    def __init__(self, store, mailer, clock=utcnow):
        self.store = store
        self.mailer = mailer
        self.clock = clock
        # Called as push(user_id, notification JSON) for every notification stored.
        self.push = lambda user_id, notification: None
        self.background = Background(log, "notifying failed")
        self._line_from = {}  # event id -> the first place whose holder may have moved, not yet passed
        self._line_running = set()

    # --- what the events domain reports ---------------------------------------------------

    def promoted(self, event, user_ids):
        """Users the store moved from the event's waitlist into seats; those behind moved up."""
        if user_ids:
            self.background.spawn(self._promoted(event, list(user_ids)))
            self.line_moved(event["id"], 1)

    def line_moved(self, event_id, from_place):
        """The holders of places `from_place` and after in the event's line may have moved up."""
        pending = self._line_from.get(event_id)
        self._line_from[event_id] = from_place if pending is None else min(pending, from_place)
        if event_id not in self._line_running:
            self._line_running.add(event_id)
            self.background.spawn(self._line_passes(event_id))

    def changed(self, event, fields, by_user_id):
        """The organizer (`by_user_id`) changed `fields` (API names) of the event."""
        if fields:
            self.background.spawn(self._to_current_members(EVENT_CHANGED, event, by_user_id, {"fields": fields}))

    def cancelled(self, event, by_user_id):
        """The organizer cancelled the event (it stays, cancelled: its members are read here)."""
        self.background.spawn(self._to_current_members(EVENT_CANCELLED, event, by_user_id, {}))

    def deleted(self, event, id_pages, by_user_id):
        """The organizer deleted the event; `id_pages`: lists of the ids of those going or
        waiting, as `member_id_pages` read them before the delete. An event cancelled before it was
        deleted tells nobody: they were told at the cancellation, and are told once."""
        if event is not None and id_pages is not None and event["cancelled_at"] is None:
            self.background.spawn(self._to_members(EVENT_CANCELLED, event, _each(id_pages), by_user_id, {}))

    # --- the work -------------------------------------------------------------------------


    async def _store(self, drafts):
        """Stores the drafts (an iterable, consumed a batch at a time, so that no step between two
        awaits builds more than BATCH of them) and pushes each stored one."""
        drafts = iter(drafts)
        while batch := list(itertools.islice(drafts, BATCH)):
            for record in await self.store.notifications.add(batch):
                self.push(record["user_id"], notification_json(record))

    def _draft(self, kind, user_id, event, data, key=None):
        return {"user_id": user_id, "type": kind, "event_id": event["id"], "key": key,
                "data": {"title": event.get("title") or "", **data}, "created_at": self.clock()}

    async def _promoted(self, event, user_ids):
        await self._store(self._draft(RSVP_PROMOTED, user_id, event, {}) for user_id in user_ids)
        for user_id in user_ids:
            user = await self.store.users.get(user_id)
            if user is not None and user["email"]:
                await self._email_promotion(user, event)

    async def _email_promotion(self, user, event):
        title = event.get("title") or "an event"
        try:
            await self.mailer.send(user["email"], f"You got a seat at {title}",
                                   f"Hello {user['username'] or ''},\n\nA seat freed up at {title} and it is "
                                   f"yours: you are going.\nIf you cannot make it, cancel your RSVP so that the "
                                   f"next person in line gets it.\n")
        except Exception:
            log.warning("promotion email to user %s not sent", user["id"])

    async def _line_passes(self, event_id):
        try:
            while event_id in self._line_from:
                try:
                    await self._line_pass(event_id, self._line_from.pop(event_id))
                except Exception:
                    log.exception("updating waitlist places of event %s failed", event_id)
        finally:
            self._line_running.discard(event_id)

    async def _line_pass(self, event_id, from_place):
        event = await self.store.events.get(event_id)
        if event is None:
            return
        key = position_key(event_id)
        told = await self.store.notifications.told(key)
        # Pages of those waiting, in user id order, each with their place. The line may move while
        # they are read: any move reports itself (line_moved), and the next pass tells the rest.
        async for page in member_pages(self.store, event_id, "waitlisted"):
            await self._store(self._draft(WAITLIST_POSITION, attendee["user_id"], event,
                                          {"position": attendee["position"]}, key)
                              for attendee in page
                              if attendee["position"] is not None and attendee["position"] >= from_place
                              and told.get(attendee["user_id"], {}).get("position") != attendee["position"])

    async def _to_current_members(self, kind, event, by_user_id, data):
        await self._to_members(kind, event, member_id_pages(self.store, event["id"]), by_user_id, data)

    async def _to_members(self, kind, event, id_pages, by_user_id, data):
        """`id_pages`: an async iterable of lists of user ids, each drafted and stored before the
        next. Those going and those waiting are disjoint: nobody is in two pages."""
        async for user_ids in id_pages:
            await self._store(self._draft(kind, user_id, event, data) for user_id in user_ids if user_id != by_user_id)


async def member_pages(store, event_id, status=None):
    """The event's attendees (everyone going, arrived or waiting; or those of `status`), as lists of
    at most MEMBER_PAGE attendee records in user id order, each one read: no step between two
    awaits handles more than a page. Ends early if the event is deleted meanwhile."""
    after = None
    while True:
        page = await store.events.attendees(event_id, status, after, MEMBER_PAGE)
        if not page:
            return
        yield page
        if len(page) < MEMBER_PAGE:
            return
        after = page[-1]["user_id"]


async def member_id_pages(store, event_id):
    """The ids of those going or waiting, as `member_pages` reads them: lists of at most MEMBER_PAGE."""
    async for page in member_pages(store, event_id):
        yield [attendee["user_id"] for attendee in page]


async def _each(items):
    for item in items:
        yield item


# --- reading --------------------------------------------------------------------------------------

def _bad_cursor():
    return InvalidInput("The cursor is not one this server handed out.", code="invalid_cursor",
                        errors=[{"path": "cursor", "message": CURSOR_RULE}])


async def notification_page(store, user_id, limit, cursor=None):
    """A page of the user's notifications, newest first: {items, next_cursor, unread_count}."""
    if cursor is not None and not re.fullmatch(ID_PATTERN, cursor):
        raise _bad_cursor()
    records = await store.notifications.page(user_id, cursor, limit + 1)
    items = [notification_json(record) for record in records[:limit]]
    return {"items": items, "next_cursor": items[-1]["id"] if len(records) > limit else None,
            "unread_count": await store.notifications.unread_count(user_id)}


async def mark_read(store, user_id, up_to):
    """Marks the user's notifications up to the one `up_to` names read: {marked, unread_count}.
    An id that is not one of the user's notifications is a 404, whoever's it is."""
    marked = await store.notifications.mark_read(user_id, up_to)
    if marked is None:
        raise NotFound("You have no such notification.", code="notification_not_found")
    return {"marked": marked, "unread_count": await store.notifications.unread_count(user_id)}
