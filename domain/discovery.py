"""Finding events: the query's parameters, and cursor pages.

`find_events` is the one entry point. Without a centre the order is (date, id); with one it is
(distance, id), inside the radius only. `Events.find` (domain/repositories.py) states what each
store must return for a query, the same events in the same order from every store; each
adapter answers it with its own index (MongoDB's 2dsphere, SQLite's R*Tree).

Cursors are keyset positions, (date, id) or (distance, id) of the last item served, so a
page never repeats or skips an item while events are added or removed elsewhere in the order.
"""
import dataclasses
import datetime
import math
import re

from domain.errors import InvalidInput
from domain.paging import CURSOR_RULE, DEFAULT_PAGE_SIZE, ID_PATTERN, Page, parse_page_size
from domain.times import ISO_TIME_RULE, UTC, epoch_ms, from_epoch_ms, parse_iso

DEFAULT_RADIUS_KM, MAX_RADIUS_KM = 10.0, 500.0
MAX_TEXT_LENGTH, MAX_CATEGORY_LENGTH = 100, 50
BY_DATE, BY_DISTANCE = "date", "distance"
CURSOR_PATTERN = r"^-?[0-9]{1,20}(\.[0-9]{1,20})?(e-[0-9]{1,3})?-[0-9a-f]{24}$"
_UNENCODED_PLUS = re.compile(r" (\d\d:?\d\d)$")


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the previous page stopped: the sort key of its last item, written
    "<position>-<last id>". The position is the item's date in epoch milliseconds, or its
    distance in meters exactly as the search computed it, so equal distances resume exactly.
    Every string of CURSOR_PATTERN is a real position in either order; any other is a 400."""
    position: float
    last_id: str

    @classmethod
    def after(cls, order, item):
        if order == BY_DATE:
            return cls(epoch_ms(item["date"]), item["id"])
        return cls(item["distance_m"], item["id"])

    def encode(self):
        return f"{self.position!r}-{self.last_id}"

    @classmethod
    def decode(cls, text):
        if not re.fullmatch(CURSOR_PATTERN, text):
            raise _invalid("cursor", CURSOR_RULE)
        position, last_id = text.rsplit("-", 1)
        return cls(float(position), last_id)

    def moment(self):
        """The position as a time; beyond the calendar's ends, the end it passed."""
        try:
            return from_epoch_ms(self.position)
        except OverflowError:
            return datetime.datetime.min.replace(tzinfo=UTC) if self.position < 0 else \
                datetime.datetime.max.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class DiscoveryQuery:
    category: str = None
    date_from: datetime.datetime = None
    date_to: datetime.datetime = None
    text: str = None
    organizer_id: str = None
    near: tuple = None          # (lng, lat) for a nearby search
    radius_m: float = DEFAULT_RADIUS_KM * 1000
    limit: int = DEFAULT_PAGE_SIZE
    cursor: Cursor = None
    # Cancelled events are left out of discovery: nobody can go any more. Their organizer's list
    # keeps them.
    include_cancelled: bool = False

    @property
    def order(self):
        return BY_DISTANCE if self.near else BY_DATE

    def resumed_from(self, cursor_text):
        """This query continuing after the page that handed out cursor_text (None: from the start)."""
        if cursor_text is None:
            return self
        return dataclasses.replace(self, cursor=Cursor.decode(cursor_text))


def _invalid(parameter, message):
    return InvalidInput(f"The query parameter {parameter} is not valid.",
                        errors=[{"path": parameter, "message": message}], code="invalid_query")


def parse_discovery_query(args):
    """A DiscoveryQuery from the raw query parameters (name -> text or None). Every bad value
    is reported at once as InvalidInput, with one error per parameter."""
    fields, errors = {}, []

    def take(name, parse):
        text = args.get(name)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as e:
            errors.append({"path": name, "message": str(e)})
            return None

    fields["category"] = take("category", lambda t: _bounded_text(t, MAX_CATEGORY_LENGTH))
    fields["text"] = take("q", lambda t: _bounded_text(t, MAX_TEXT_LENGTH))
    fields["date_from"] = take("from", _time)
    fields["date_to"] = take("to", _time)
    fields["organizer_id"] = take("organizer_id", _id)
    lat = take("lat", lambda t: _number(t, -90.0, 90.0))
    lng = take("lng", lambda t: _number(t, -180.0, 180.0))
    radius_km = take("radius_km", _radius_km)
    fields["limit"] = take("limit", parse_page_size)
    cursor = args.get("cursor")

    present = [name for name in ("lat", "lng") if args.get(name) is not None]
    if len(present) == 1:
        missing = "lng" if present == ["lat"] else "lat"
        errors.append({"path": missing, "message": f"is required with {present[0]}"})
    if args.get("radius_km") is not None and not present:
        errors.append({"path": "radius_km", "message": "needs lat and lng"})
    if errors:
        raise InvalidInput("Some query parameters are not valid.", errors=errors, code="invalid_query")

    if lat is not None and lng is not None:
        fields["near"] = (lng, lat)
        fields["radius_m"] = (radius_km or DEFAULT_RADIUS_KM) * 1000
    query = DiscoveryQuery(**{name: value for name, value in fields.items() if value is not None})
    return query.resumed_from(cursor)


def _bounded_text(text, longest):
    text = text.strip()
    if not text or len(text) > longest:
        raise ValueError(f"must be 1 to {longest} characters")
    return text


def _time(text):
    # An unencoded "+01:00" offset reaches us as " 01:00"; take it as the client meant it.
    moment = parse_iso(_UNENCODED_PLUS.sub(r"+\1", text))
    if moment is None:
        raise ValueError(f"must be {ISO_TIME_RULE}")
    return moment


def _id(text):
    if not re.fullmatch(ID_PATTERN, text):
        raise ValueError("must be a user id: 24 characters, 0-9 and a-f")
    return text


def _float(text):
    try:
        return float(text)
    except ValueError:
        return math.nan  # fails every range check below, as "nan" and "inf" do


def _number(text, low, high):
    value = _float(text)
    if not low <= value <= high:
        raise ValueError(f"must be a number from {low:g} to {high:g}")
    return value


def _radius_km(text):
    value = _float(text)
    if not 0 < value <= MAX_RADIUS_KM:
        raise ValueError(f"must be a number above 0 and at most {MAX_RADIUS_KM:g}")
    return value


# --- the search --------------------------------------------------------------------------------

async def find_events(store, query, viewer_id):
    """One page of event records (`domain.repositories.Events`) for `viewer_id` matching
    `query`, nearby ones with `distance_m`."""
    events = await store.events.find(query, viewer_id)
    if len(events) <= query.limit:
        return Page(events, None)
    events = events[:query.limit]
    return Page(events, Cursor.after(query.order, events[-1]).encode())
