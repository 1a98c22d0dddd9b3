"""The organizer's attendee tools: the list (JSON, paged), its CSV export, and the check-in by hand."""
import csv
import io

from domain.events import ATTENDEE_CURSOR_PATTERN, ATTENDEE_STATUSES
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request

STATUS_QUERY = ("status", {"type": "string", "enum": list(ATTENDEE_STATUSES)},
                "Only attendees of this status; omit for all. going: RSVPed, not checked in yet; arrived: "
                "checked in (by the geofence or by the organizer); waitlisted: waiting for a seat.")
LIST_QUERY = (STATUS_QUERY, *page_query(ATTENDEE_CURSOR_PATTERN))
CSV_COLUMNS = ("user_id", "username", "status", "waitlist_position", "joined_at", "check_in_method",
               "checked_in_by", "checked_in_at")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection"):
# a username like `=HYPERLINK(...)` would run on the organizer's machine. Such a cell gets a
# leading apostrophe, which spreadsheets show as text and do not run.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class AttendeesHandler(BaseHandler):
    docs = {"get": operation(
        "An event's attendees, in user id order (its organizer)", response="AttendeePage", errors=[403],
        query=LIST_QUERY, description=(
            "Everyone going, checked in or waiting, each with one status: going, arrived (with how: "
            "geofence, or organizer with who and when) or waitlisted (with their place in line). "
            "joined_at: when they RSVPed or joined the line, null where the store does not know it. "
            "403 not_event_organizer for anyone but the event's organizer."))}

    async def get(self, event_id):
        limit, cursor = page_request(self)
        status = self.get_query_argument("status", None)
        self.reply(await self.services.events.attendees(event_id, self.current_user, status, limit, cursor))


class AttendeesCsvHandler(BaseHandler):
    docs = {"get": operation(
        "Every attendee of an event as CSV (its organizer)", errors=[403], envelope=False,
        content_type="text/csv", query=(STATUS_QUERY,), description=(
            "A download (Content-Disposition: attachment), UTF-8, a header row then one row per attendee "
            f"in user id order: {', '.join(CSV_COLUMNS)}; the same attendees and values as the JSON list, "
            "empty where that has null. A cell starting with = + - @, a tab or a carriage return gets a "
            "leading apostrophe, so that no spreadsheet runs it as a formula. Errors are JSON, as "
            "everywhere."))}

    async def get(self, event_id):
        status = self.get_query_argument("status", None)
        # Checked before the first byte: an error is still a JSON answer with its status.
        batches = await self.services.events.export_attendees(event_id, self.current_user, status)
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="attendees-{event_id}.csv"')
        self.write(csv_text([CSV_COLUMNS]))
        async for batch in batches:
            self.write(csv_text(csv_row(attendee) for attendee in batch))
            # Sent before the next batch is read: the body never piles up in memory.
            await self.flush()
        self.finish()


class CheckInHandler(BaseHandler):
    docs = {"post": operation(
        "Check a user in by hand (the event's organizer); idempotent; no body", response="Attendee",
        errors=[403, 409], description=(
            "For people whose phone cannot check them in by location: the arrival counts as any other "
            "(once, in arrival_count), recorded as checked in by the organizer. The rules of a check-in "
            "but the geofence: 409 rsvp_required unless the user is going, arrival_not_open before "
            "check-in opens, event_ended after the end, event_cancelled. Someone already checked in, either way, stays "
            "as they were and is answered as they are."))}

    async def post(self, event_id, user_id):
        attendee = await self.services.events.check_in(event_id, self.current_user, user_id)
        self.reply(attendee, "Checked in.")


def csv_row(attendee):
    check_in = attendee["check_in"] or {}
    return (attendee["user"]["id"], attendee["user"]["username"], attendee["status"],
            attendee["waitlist_position"], attendee["joined_at"], check_in.get("method"),
            check_in.get("checked_in_by"), check_in.get("at"))


def csv_text(rows):
    out = io.StringIO()
    csv.writer(out).writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def _cell(value):
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


ROUTES = [
    (r"/api/v1/events/(?P<event_id>[^/]+)/attendees", AttendeesHandler),
    (r"/api/v1/events/(?P<event_id>[^/]+)/attendees\.csv", AttendeesCsvHandler),
    (r"/api/v1/events/(?P<event_id>[^/]+)/attendees/(?P<user_id>[^/]+)/check-in", CheckInHandler),
]
