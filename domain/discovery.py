"""Finding events: filters, date order or nearest first, and cursor pages.

`find_events` is the one entry point. Without a centre the order is (date, _id); with one it is
(distance, _id), inside the radius only. MongoDB answers a nearby query with one `$geoNear` on
the 2dsphere index, the filters in its `query`; the in-memory store cannot evaluate geo
operators, so there the filtered candidates' locations are fetched and `geo.find_nearest`
orders them by the same great-circle distance.

Events come out as summaries: their shown fields, the counts of their id arrays and whether the
viewer is in them (`summarize`), never the arrays themselves.

Cursors are keyset positions, (date, _id) or (distance, _id) of the last item served, so a
page never repeats or skips an item while events are added or removed elsewhere in the order.
"""
import dataclasses
import datetime
import math
import re

from domain import geo
from domain.errors import InvalidInput
from domain.paging import DEFAULT_PAGE_SIZE, Page, parse_page_size
from domain.store import ASCENDING, ObjectId, parse_id
from domain.times import UTC, as_utc, parse_iso

DEFAULT_RADIUS_KM, MAX_RADIUS_KM = 10.0, 500.0
MAX_TEXT_LENGTH, MAX_CATEGORY_LENGTH = 100, 50
BY_DATE, BY_DISTANCE = "date", "distance"
CURSOR_PATTERN = r"^-?[0-9]{1,20}(\.[0-9]{1,20})?(e-[0-9]{1,3})?-[0-9a-f]{24}$"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = datetime.timedelta(milliseconds=1)
_UNENCODED_PLUS = re.compile(r" (\d\d:?\d\d)$")


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the previous page stopped: the sort key of its last item, written
    "<position>-<last id>". The position is the item's date in epoch milliseconds, or its
    distance in meters exactly as the search computed it, so equal distances resume exactly.
    Every string of CURSOR_PATTERN is a real position in either order; any other is a 400."""
    position: float
    last_id: object

    @classmethod
    def after(cls, order, item):
        if order == BY_DATE:
            return cls((as_utc(item["date"]) - EPOCH) // MILLISECOND, item["_id"])
        return cls(item["distance_m"], item["_id"])

    def encode(self):
        return f"{self.position!r}-{self.last_id}"

    @classmethod
    def decode(cls, text):
        if not re.fullmatch(CURSOR_PATTERN, text):
            raise _invalid("cursor", f"must be a next_cursor of this list ({CURSOR_PATTERN})")
        position, last_id = text.rsplit("-", 1)
        return cls(float(position), ObjectId(last_id))

    def moment(self):
        """The position as a time; beyond the calendar's ends, the end it passed."""
        try:
            return EPOCH + datetime.timedelta(milliseconds=self.position)
        except OverflowError:
            return datetime.datetime.min.replace(tzinfo=UTC) if self.position < 0 else \
                datetime.datetime.max.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class DiscoveryQuery:
    category: str = None
    date_from: datetime.datetime = None
    date_to: datetime.datetime = None
    text: str = None
    organizer_id: object = None
    near: tuple = None          # (lng, lat) for a nearby search
    radius_m: float = DEFAULT_RADIUS_KM * 1000
    limit: int = DEFAULT_PAGE_SIZE
    cursor: Cursor = None

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
    fields["organizer_id"] = take("organizer_id", _object_id)
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
        raise ValueError("must be an ISO 8601 time with an offset, e.g. 2026-12-01T18:30:00Z")
    return moment


def _object_id(text):
    value = parse_id(text)
    if value is None:
        raise ValueError("must be a 24-hex id")
    return value


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

def filters(query):
    """The MongoDB filter of everything but the centre, the radius and the cursor."""
    parts = []
    if query.category:
        parts.append({"category": query.category})
    if query.date_from or query.date_to:
        bounds = {}
        if query.date_from:
            bounds["$gte"] = query.date_from
        if query.date_to:
            bounds["$lte"] = query.date_to
        parts.append({"date": bounds})
    if query.organizer_id:
        parts.append({"organizer_id": query.organizer_id})
    if query.text:
        # Escaped: the client's text is matched literally, never run as a regular expression.
        pattern = {"$regex": re.escape(query.text), "$options": "i"}
        parts.append({"$or": [{"title": pattern}, {"description": pattern}]})
    return _all_of(parts)


def _all_of(parts):
    parts = [part for part in parts if part]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _after(cursor, key_field):
    """Items strictly after the cursor in (key_field, _id) order."""
    if cursor is None:
        return {}
    position = cursor.moment() if key_field == "date" else cursor.position
    return {"$or": [{key_field: {"$gt": position}},
                    {key_field: position, "_id": {"$gt": cursor.last_id}}]}


async def find_events(store, query, viewer_id):
    """One page of event summaries (see `summarize`) for `viewer_id` matching `query`, nearby
    ones with `distance_m`: the same events in the same order on either store."""
    if query.near is None:
        summaries = await read_summaries(store, _all_of([filters(query), _after(query.cursor, "date")]), viewer_id,
                                         sort=[("date", ASCENDING), ("_id", ASCENDING)], limit=query.limit + 1)
    elif store.in_memory:
        summaries = await _nearest_in_memory(store, query, viewer_id)
    else:
        summaries = await _nearest_with_geo_near(store, query, viewer_id)
    return _page(query, summaries)


def _page(query, summaries):
    if len(summaries) <= query.limit:
        return Page(summaries, None)
    summaries = summaries[:query.limit]
    return Page(summaries, Cursor.after(query.order, summaries[-1]).encode())


async def _nearest_with_geo_near(store, query, viewer_id):
    lng, lat = query.near
    geo_near = {"near": {"type": "Point", "coordinates": [lng, lat]}, "key": "location",
                "distanceField": "distance_m", "maxDistance": query.radius_m, "spherical": True,
                "query": filters(query)}
    pipeline = [{"$geoNear": geo_near}]
    if query.cursor:
        if query.cursor.position > query.radius_m:
            return []
        geo_near["minDistance"] = max(0.0, query.cursor.position)
        pipeline.append({"$match": _after(query.cursor, "distance_m")})
    pipeline += [
        # $geoNear leaves the order of equal distances open; the cursor needs it fixed by _id.
        {"$sort": {"distance_m": ASCENDING, "_id": ASCENDING}},
        {"$limit": query.limit + 1},
        {"$project": {**summary_projection(viewer_id), "distance_m": 1}},
    ]
    return await store.events.aggregate(pipeline).to_list(None)


async def _nearest_in_memory(store, query, viewer_id):
    # The boxes stand in for the 2dsphere index: the store hands over only the locations that
    # can be within the radius, and find_nearest measures those exactly.
    within_boxes = {"$or": [
        {"location.coordinates.0": {"$gte": min_lng, "$lte": max_lng},
         "location.coordinates.1": {"$gte": min_lat, "$lte": max_lat}}
        for min_lng, min_lat, max_lng, max_lat in geo.bounding_boxes(*query.near, query.radius_m)]}
    candidates = await store.events.find(_all_of([filters(query), within_boxes]), {"location": 1}).to_list(None)
    hits = geo.find_nearest(candidates, *query.near, query.radius_m)
    if query.cursor:
        mark = (query.cursor.position, str(query.cursor.last_id))
        hits = [(distance, doc) for distance, doc in hits if (distance, str(doc["_id"])) > mark]
    distances = {doc["_id"]: distance for distance, doc in hits[:query.limit + 1]}
    summaries = await read_summaries(store, {"_id": {"$in": list(distances)}}, viewer_id)
    by_id = {summary["_id"]: summary for summary in summaries}
    return [{**by_id[event_id], "distance_m": distance}
            for event_id, distance in distances.items() if event_id in by_id]


# --- events as lists and pages show them ------------------------------------------------------

SHOWN_FIELDS = ("title", "description", "date", "end_date", "category", "location_address", "location",
                "geofence_radius", "geofence", "capacity", "organizer_id", "created_at", "updated_at")
# Summaries count these arrays and say whether the viewer is in them, never ship them.
_COUNTED = {"rsvp_count": "rsvps", "arrival_count": "arrivals", "photo_count": "photo_gallery"}
_VIEWER_IN = {"is_rsvped": "rsvps", "has_arrived": "arrivals"}


def summary_projection(viewer_id):
    """`summarize` as a $project body, so MongoDB does the counting next to the data."""
    counted = {name: {"$size": {"$ifNull": [f"${array}", []]}} for name, array in _COUNTED.items()}
    # The stored count, or the array's length for events the old backend wrote.
    counted["rsvp_count"] = {"$ifNull": ["$rsvp_count", counted["rsvp_count"]]}
    return {
        **{field: 1 for field in SHOWN_FIELDS},
        **counted,
        **{name: {"$in": [viewer_id, {"$ifNull": [f"${array}", []]}]} for name, array in _VIEWER_IN.items()},
    }


def summarize(event, viewer_id):
    """The event's shown fields, its counts, and whether viewer_id has RSVPed and arrived."""
    summary = {field: event[field] for field in ("_id", *SHOWN_FIELDS) if field in event}
    summary.update({name: len(event.get(array) or []) for name, array in _COUNTED.items()})
    if event.get("rsvp_count") is not None:
        summary["rsvp_count"] = event["rsvp_count"]
    summary.update({name: viewer_id in (event.get(array) or []) for name, array in _VIEWER_IN.items()})
    return summary


async def read_summaries(store, match, viewer_id, sort=None, limit=None):
    """Summaries of the events matching `match`, in `sort` order, at most `limit`."""
    if store.in_memory:
        # The in-memory driver's aggregate copies the whole collection first; a find does not.
        cursor = store.events.find(match)
        if sort:
            cursor = cursor.sort(sort)
        if limit:
            cursor = cursor.limit(limit)
        return [summarize(event, viewer_id) for event in await cursor.to_list(None)]
    pipeline = [{"$match": match}]
    if sort:
        pipeline.append({"$sort": dict(sort)})
    if limit:
        pipeline.append({"$limit": limit})
    pipeline.append({"$project": summary_projection(viewer_id)})
    return await store.events.aggregate(pipeline).to_list(None)
