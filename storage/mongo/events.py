"""Events with their RSVPs, arrivals and photos, and discovery, in the old backend's `events`
collection.

An event document keeps the old backend's shape (`location` GeoJSON, `organizer_id`, the id
arrays `rsvps` and `arrivals`, `photo_gallery`: photo URLs in upload order, `geofence_radius`,
`created_at`) plus `end_date`, `geofence`, `capacity`, `updated_at`, `rsvp_count`, `photos`
(who uploaded each URL, and when), `waitlist_enabled`, `waitlist` (the users waiting, as
{user_id, at} in the order they joined), `last_promoted` (see `_promotion`),
`organizer_check_ins` ({user_id, by, at} for each arrival an organizer checked in by hand; the
ids of everyone arrived, however, stay in `arrivals`, which the old backend reads: an entry here
only says how an arrival in `arrivals` was made, and is pushed by the same update), `cancelled_at`
(null or absent: not cancelled) and `sequence` (absent: 0). Events the old
backend wrote may lack any of the additions: their `rsvp_count` is the length of `rsvps`, their
waitlist is empty and enabled, the others read as None. Arrays, theirs and the users', are read
and changed by the rule of storage/mongo/arrays.py (null or absent is empty).

Concurrency: every rule that depends on an event's current state (not RSVPed yet, room left,
nobody waiting, not in line yet, not over, not cancelled, capacity not below the RSVPs, line or
gallery not full) sits in the filter of the one update
that changes the event, so MongoDB checks and writes it in a single step on a single document.
`rsvp_count` is rewritten from the `rsvps` array in that same update, so the two cannot drift.
The waitlist lives in the same document as the seats so that a promotion, moving the first
waiting ids into `rsvps`, is part of the one update that frees the seats: MongoDB applies a write
to a single document atomically, even one that changes several fields or runs a pipeline
("Atomicity and Transactions" in its manual: "a write operation is atomic on the level of a
single document"), and concurrent updates of one document are applied one after the other, each
evaluating its filter and pipeline on the document as the previous one left it. So no reader or
writer sees a free seat while someone waits, and no promotion is lost or made twice.
The users' `created_events` and `rsvped_events`, which only the old backend reads, follow in a
second write: `organizer_id` and `rsvps` are the truth.
"""
import re

from bson import ObjectId
from pymongo import ReturnDocument

from domain import repositories
from storage.mongo.arrays import added, array, pulled, pushed
from storage.mongo.repository import Repository
from storage.mongo.values import aware, id_text, object_id, stored_id

TIME_FIELDS = ("date", "end_date", "created_at", "updated_at", "cancelled_at")
_RSVPS = array("rsvps")
_ARRIVALS = array("arrivals")
_GALLERY = array("photo_gallery")
_PHOTOS = array("photos")
_WAITLIST = array("waitlist")
_CHECK_INS = array("organizer_check_ins")
_WAITING_IDS = {"$map": {"input": _WAITLIST, "in": "$$this.user_id"}}
# The stored count, or the array's length for events the old backend wrote.
_RSVP_COUNT = {"$ifNull": ["$rsvp_count", {"$size": _RSVPS}]}
# $geoNear's distance and domain.geo.distance_m are one formula computed in two ways, which may
# disagree in the last bits (around 1e-15 of the distance). An event exactly at the radius, as
# domain.geo measures it, stays inside with this much more reach: 10 nanometres at 10 km.
_ROUNDING_SLACK = 1e-12


# The events served: those the old backend wrote with a BSON date and a GeoJSON point, as its
# own code did. One with a date stored as a string, or a location of another shape, cannot be
# placed in time or on the map (or shown as the contract's Event), so it reads as absent
# instead of failing every page it would be on; `python -m storage.check` lists them.
SERVED = {"date": {"$type": "date"}, "location.type": "Point"}


def summary_projection(viewer):
    """$project body of event records: the fields, the counts and whether `viewer` (an ObjectId,
    or None) is in the arrays, computed next to the data so that the arrays never travel.
    `distance_m` is there on nearby searches only."""
    projection = {field: 1 for field in repositories.Events.FIELDS}
    projection.update(sequence=1, rsvp_count=_RSVP_COUNT, arrival_count={"$size": _ARRIVALS},
                      photo_count={"$size": _GALLERY}, waitlist_count={"$size": _WAITLIST}, distance_m=1)
    if viewer is not None:
        projection.update(is_rsvped={"$in": [viewer, _RSVPS]}, has_arrived={"$in": [viewer, _ARRIVALS]},
                          waitlist_index={"$indexOfArray": [{"$map": {"input": _WAITLIST, "in": "$$this.user_id"}},
                                                            viewer]})
    return projection


def event_record(document):
    record = {"id": str(document["_id"])}
    record.update({field: document.get(field) for field in repositories.Events.FIELDS})
    record.update({field: aware(document.get(field)) for field in TIME_FIELDS})
    record["organizer_id"] = id_text(document.get("organizer_id"))
    record["waitlist_enabled"] = document.get("waitlist_enabled") is not False
    record["sequence"] = document.get("sequence") or 0
    index = document.get("waitlist_index", -1)
    record.update(rsvp_count=document["rsvp_count"], arrival_count=document["arrival_count"],
                  photo_count=document["photo_count"], waitlist_count=document["waitlist_count"],
                  is_rsvped=document.get("is_rsvped", False), has_arrived=document.get("has_arrived", False),
                  waitlist_position=index + 1 if index >= 0 else None)
    if "distance_m" in document:
        record["distance_m"] = document["distance_m"]
    return record


def stored_fields(fields):
    """The stored form of event fields (names from Events.FIELDS)."""
    stored = {}
    for field, value in fields.items():
        if field not in repositories.Events.FIELDS:
            raise ValueError(f"{field!r} is not an event field")
        stored[field] = stored_id(value) if field == "organizer_id" else value
    return stored


def _not_over(window):
    """Filter: events not over at window.now: before their end_date or, without one, started less
    than window.default_duration ago."""
    return {"$or": [{"end_date": {"$gt": window.now}},
                    {"end_date": None, "date": {"$gt": window.now - window.default_duration}}]}


def _seats(max_rsvps):
    """Aggregation: the seats an event has, its capacity and never more than `max_rsvps`."""
    return {"$min": [{"$ifNull": ["$capacity", max_rsvps]}, max_rsvps]}


def _has_room(max_rsvps):
    """Filter: fewer RSVPs than the capacity, and than `max_rsvps` whatever the capacity."""
    return {"$expr": {"$lt": [_RSVP_COUNT, _seats(max_rsvps)]}}


# Filter: not cancelled (null matches an absent field too: the old backend's events).
_LIVE = {"cancelled_at": None}
# Aggregation: whether the event is not cancelled.
_IS_LIVE = {"$eq": [{"$ifNull": ["$cancelled_at", None]}, None]}
# Update pipeline stage: one more change (RFC 5545's SEQUENCE).
_NEXT_SEQUENCE = {"$set": {"sequence": {"$add": [{"$ifNull": ["$sequence", 0]}, 1]}}}

# Filter: nobody waits (the array is absent, null or empty).
_NOBODY_WAITING = {"waitlist.0": {"$exists": False}}


def _promotion(max_rsvps):
    """Update pipeline stages, run after the stages of an update that may free seats: move the
    first waiting users into the free seats, as many as fit, and keep their ids in
    `last_promoted` (an empty list when none). Every update that runs these stages rewrites
    `last_promoted`, and reads it from its own result (find_one_and_update returns the document
    as that one write left it), so it learns exactly whom it promoted, whatever other writes do.
    The free seats are counted on the document as the earlier stages left it."""
    free = {"$cond": [_IS_LIVE, {"$max": [0, {"$subtract": [_seats(max_rsvps), {"$size": _RSVPS}]}]}, 0]}
    promoted = {"$min": [free, {"$size": _WAITLIST}]}
    # $slice with a position takes a positive count only (its manual page): none to promote
    # takes none, by $cond, rather than a count of 0.
    first = {"$slice": [_WAITLIST, 0, {"$max": [1, promoted]}]}
    return [
        {"$set": {"last_promoted": {"$cond": [{"$gt": [promoted, 0]},
                                              {"$map": {"input": first, "in": "$$this.user_id"}},
                                              {"$literal": []}]}}},
        # The rest of the line, from position len(last_promoted).
        {"$set": {"rsvps": {"$concatArrays": [_RSVPS, "$last_promoted"]},
                  "waitlist": {"$slice": [_WAITLIST, {"$size": "$last_promoted"},
                                          {"$max": [1, {"$size": _WAITLIST}]}]}}},
        {"$set": {"rsvp_count": {"$size": "$rsvps"}}},
    ]


def _filters(query):
    """The filter of a DiscoveryQuery but its centre, radius and cursor; None when it can match
    nothing (an organizer_id that is not an id)."""
    parts = [SERVED] if query.include_cancelled else [SERVED, _LIVE]
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
        organizer = object_id(query.organizer_id)
        if organizer is None:
            return None
        parts.append({"organizer_id": organizer})
    if query.text:
        # Escaped: the client's text is found literally, never run as a regular expression.
        pattern = {"$regex": re.escape(query.text), "$options": "i"}
        parts.append({"$or": [{"title": pattern}, {"description": pattern}]})
    return _all_of(parts)


def _all_of(parts):
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _after(key_field, position, last_id):
    """Filter: documents strictly after (position, last_id) in (key_field, _id) order."""
    return {"$or": [{key_field: {"$gt": position}}, {key_field: position, "_id": {"$gt": object_id(last_id)}}]}


class Events(Repository, repositories.Events):
    def __init__(self, db):
        self._events = db["events"]
        self._users = db["users"]
        self._messages = db["messages"]
        self._message_heads = db["message_heads"]
        # The chat's other collections (storage/mongo/messages.py), emptied with the event.
        self._chat = [db[name] for name in ("chat_reads", "chat_mutes", "chat_removals", "chat_moderation")]

    # --- reading ---------------------------------------------------------------------------

    async def get(self, event_id, viewer_id=None):
        event = object_id(event_id)
        return None if event is None else await self._one(event, object_id(viewer_id))

    async def _one(self, event, viewer):
        found = await self._records([{"$match": {"_id": event, **SERVED}}], viewer)
        return found[0] if found else None

    async def _records(self, stages, viewer):
        pipeline = [*stages, {"$project": summary_projection(viewer)}]
        return [event_record(document) for document in await self._events.aggregate(pipeline).to_list(None)]

    async def find(self, query, viewer_id=None):
        match = _filters(query)
        if match is None:
            return []
        if query.near is None:
            return await self._by_date(query, match, object_id(viewer_id))
        return await self._nearest(query, match, object_id(viewer_id))

    async def _by_date(self, query, match, viewer):
        if query.cursor is not None:
            match = _all_of([match, _after("date", query.cursor.moment(), query.cursor.last_id)])
        return await self._records(
            [{"$match": match}, {"$sort": {"date": 1, "_id": 1}}, {"$limit": query.limit + 1}], viewer)

    async def _nearest(self, query, match, viewer):
        """One $geoNear on the 2dsphere index, the other filters in its `query`, reading about a
        page of events however many the radius holds.

        Why these are the contract's events, distances and order. With `spherical: true` over a
        2dsphere index, $geoNear measures great-circle distances in metres on a sphere of radius
        6378100 m (MongoDB's kRadiusOfEarthInMeters; its manual's $geoNear page and "Calculate
        Distance Using Spherical Geometry"), the radius domain.geo.EARTH_RADIUS_M names; it keeps
        the documents at most `maxDistance` away, puts each distance in `distance_m`, and S2
        handles the antimeridian and the poles.

        Reading a page, not the radius. $geoNear emits documents nearest first, searching the
        index in growing rings and passing each document on as its ring is done, so the $limit
        after it stops the search once it has the page: no $sort may come between them (a $sort
        would wait for every event within the radius, up to 500 km of them). It has had no
        default limit since MongoDB 4.2, hence the explicit one.

        Ties. $geoNear leaves the order of equal distances open, and the contract orders them by
        id. It reads `limit + 2` events: when the last of them is farther than the one before,
        every event at that one's distance or nearer is among the first `limit + 1`, which are
        then exactly the page, sorted here. Otherwise a group of equal distances straddles the
        page's end (events at one venue share a location), and `_tied` reads that group in id
        order to complete the page.

        Cursors: a cursor holds a distance exactly as $geoNear reported it, and $geoNear computes
        the same value for the same two points on every call, so the $match "distance above the
        position, or equal to it with a greater _id" resumes exactly, ties included. `minDistance`
        only spares the index the events nearer than the cursor; it stays a metre short of the
        position because the server widens `maxDistance` for the index's approximate cover but
        not `minDistance` (SERVER-52953), and the exact cut is the $match.

        The tests give their MongoDB double a $geoNear whose ties come in a random order;
        tests/test_repositories.py holds this to the contract on it, and on a real MongoDB where
        TEST_MONGO_URI names one.
        """
        reach = query.radius_m * (1 + _ROUNDING_SLACK)
        if query.cursor is not None and query.cursor.position > reach:
            return []
        stages = self._near(query, match, reach, query.cursor)
        found = await self._records([*stages, {"$limit": query.limit + 2}], viewer)
        page = _by_distance(found[:query.limit + 1])
        if len(found) == query.limit + 2 and found[-1]["distance_m"] == found[-2]["distance_m"]:
            tie = found[-2]["distance_m"]
            tied = await self._tied(query, match, tie, viewer)
            page = _by_distance([event for event in page if event["distance_m"] < tie] + tied)
        return page[:query.limit + 1]

    def _near(self, query, match, reach, cursor, nearest=0.0):
        """The $geoNear (and the cursor's $match) of events within `reach` of the query's centre,
        not nearer than `nearest`, after `cursor`."""
        lng, lat = query.near
        geo_near = {"near": {"type": "Point", "coordinates": [lng, lat]}, "key": "location",
                    "distanceField": "distance_m", "maxDistance": reach, "spherical": True, "query": match}
        stages = [{"$geoNear": geo_near}]
        if cursor is not None:
            nearest = max(nearest, cursor.position)
            stages.append({"$match": _after("distance_m", cursor.position, cursor.last_id)})
        if nearest > 0:
            geo_near["minDistance"] = max(0.0, nearest - 1.0)
        return stages

    async def _tied(self, query, match, distance, viewer):
        """The first `limit + 1` events, in id order, at exactly `distance` (and after the
        cursor): a group of equal distances, read from a one-metre ring only."""
        stages = self._near(query, match, distance + 1.0, query.cursor, nearest=distance)
        stages += [{"$match": {"distance_m": distance}}, {"$sort": {"_id": 1}}, {"$limit": query.limit + 1}]
        return await self._records(stages, viewer)

    async def attending(self, user_id, since, limit):
        user = object_id(user_id)
        if user is None:
            return []
        # The candidates are the user's `rsvped_events`, which every seat change keeps (the old
        # backend kept it on both sides too), found by _id; `rsvps` stays the truth of who goes, so
        # a stale entry adds nothing (a missing one leaves its event out). Not an index on `rsvps`:
        # a multikey index of a 100,000-id array makes MongoDB recompute its keys, the whole
        # array's, on every RSVP and cancellation of that event ("Multikey Indexes" in its manual:
        # one key per element), the hottest write there is.
        found = await self._users.find_one({"_id": user}, {"rsvped_events": 1})
        candidates = [event for event in (found or {}).get("rsvped_events") or [] if isinstance(event, ObjectId)]
        return await self._records([{"$match": {"$and": [SERVED, {"_id": {"$in": candidates}, "rsvps": user,
                                                                   "date": {"$gte": since}}]}},
                                    {"$sort": {"date": 1, "_id": 1}}, {"$limit": limit}], user)

    async def is_member(self, event_id, user_id):
        event, user = object_id(event_id), object_id(user_id)
        if event is None:
            return None
        member = {"$or": [{"$eq": ["$organizer_id", user]}, {"$in": [user, _RSVPS]}]} if user else {"$literal": False}
        found = await self._events.aggregate(
            [{"$match": {"_id": event}}, {"$project": {"member": member}}]).to_list(None)
        return found[0]["member"] if found else None

    async def attendees(self, event_id, status, after_id, limit, user_id=None):
        """Two reads: the page's ids (the arrays are sorted next to the data, never sent), then
        what the page's users are (arrived, how; waiting, where). Someone who leaves between the two
        reads is shown as they were. MongoDB knows no time for an RSVP, nor for an arrival by the
        geofence: the old backend's arrays hold ids only."""
        event = object_id(event_id)
        if event is None:
            return None
        candidates = {"going": {"$setDifference": [_RSVPS, _ARRIVALS]},
                      "arrived": {"$setIntersection": [_RSVPS, _ARRIVALS]},
                      "waitlisted": _WAITING_IDS,
                      None: {"$setUnion": [_RSVPS, _WAITING_IDS]}}[status]
        after = object_id(after_id) if after_id else None
        only = object_id(user_id) if user_id is not None else None
        conditions = ([{"$gt": ["$$this", after]}] if after is not None else []) + \
            ([{"$eq": ["$$this", only]}] if user_id is not None else [])
        if conditions:
            candidates = {"$filter": {"input": candidates, "cond": _all_of(conditions)}}
        found = await self._events.aggregate([
            {"$match": {"_id": event}}, {"$project": {"user": candidates}},
            # An event without any (or none left after the cursor) still gives one document.
            {"$unwind": {"path": "$user", "preserveNullAndEmptyArrays": True}},
            {"$sort": {"user": 1}}, {"$limit": limit},
        ]).to_list(None)
        if not found:
            return None
        page = [document["user"] for document in found if document.get("user") is not None]
        if not page:
            return []
        found = await self._events.aggregate([
            {"$match": {"_id": event}},
            {"$project": {"arrived": {"$setIntersection": [{"$literal": page}, _ARRIVALS]},
                          "check_ins": {"$filter": {"input": _CHECK_INS,
                                                    "cond": {"$in": ["$$this.user_id", {"$literal": page}]}}},
                          "waiting": {"$filter": {"input": _WAITLIST,
                                                  "cond": {"$in": ["$$this.user_id", {"$literal": page}]}}},
                          "positions": {"$map": {"input": {"$literal": page},
                                                 "in": {"$indexOfArray": [_WAITING_IDS, "$$this"]}}}}},
        ]).to_list(None)
        if not found:
            return None  # deleted between the two reads
        details = found[0]
        arrived = set(details["arrived"])
        check_ins = {entry["user_id"]: entry for entry in details["check_ins"]}
        joined = {entry["user_id"]: entry.get("at") for entry in details["waiting"]}
        names = {user["_id"]: user.get("username") async for user in
                 self._users.find({"_id": {"$in": page}}, {"username": 1})}
        return [_attendee(user, names.get(user), index, user in arrived, check_ins.get(user), joined.get(user))
                for user, index in zip(page, details["positions"])]

    async def photos(self, event_id, before, limit):
        """Two small reads: the arrays' lengths, then only the page's slice of each (a full
        gallery is thousands of URLs).

        Which entry of `photos` describes gallery position p: add_photo pushes every upload to
        both arrays in one update, and the old backend's uploads, which came before, are in
        `photo_gallery` only. So the described uploads are the last len(photos) of the gallery,
        and position p is photos[p - (len(photo_gallery) - len(photos))]. An entry whose URL does
        not match is not taken: the uploader is then unknown, never a wrong one."""
        event = object_id(event_id)
        if event is None:
            return None
        lengths = await self._events.aggregate([
            {"$match": {"_id": event}},
            {"$project": {"gallery": {"$size": _GALLERY}, "described": {"$size": _PHOTOS}}},
        ]).to_list(None)
        if not lengths:
            return None
        size, described = lengths[0]["gallery"], lengths[0]["described"]
        end = size if before is None else max(0, min(before, size))
        start = max(0, end - limit)
        first_described = size - described
        found = await self._events.aggregate([
            {"$match": {"_id": event}},
            {"$project": {"gallery": _slice(_GALLERY, start, end),
                          "photos": _slice(_PHOTOS, max(start, first_described) - first_described,
                                           end - first_described)}},
        ]).to_list(None)
        if not found:
            return None  # deleted between the two reads
        entries = found[0]["photos"]
        photos = []
        for position, url in enumerate(found[0]["gallery"], start):
            index = position - max(start, first_described)
            entry = entries[index] if 0 <= index < len(entries) else {}
            photos.append(_photo_record(url, entry if entry.get("url") == url else {}))
        return photos[::-1], start

    # --- writing ---------------------------------------------------------------------------

    async def add(self, fields):
        document = stored_fields({field: fields.get(field) for field in self.FIELDS})
        document.update(rsvps=[], arrivals=[], photo_gallery=[], photos=[], rsvp_count=0, sequence=0)
        await self._events.insert_one(document)
        if document["organizer_id"] is not None:
            await self._users.update_one({"_id": document["organizer_id"]},
                                         [{"$set": {"created_events": added("created_events", document["_id"])}}])
        return str(document["_id"])

    async def update(self, event_id, organizer_id, changes, expected):
        event, organizer = object_id(event_id), object_id(organizer_id)
        if event is None or organizer is None:
            return None
        # "Unchanged since read": the values the caller's validation relied on are part of the
        # filter, so a stale read can refuse a change, never let a wrong one through.
        condition = {**stored_fields(expected), "_id": event, "organizer_id": organizer, **_LIVE}
        if changes.get("capacity") is not None:
            # The RSVPs are counted in the same step as the write: none can slip in between.
            condition["$expr"] = {"$lte": [_RSVP_COUNT, changes["capacity"]]}
        # A pipeline rather than $inc, which refuses the null `sequence` an old document may hold.
        values = {field: {"$literal": value} for field, value in stored_fields(changes).items()}
        stages = [{"$set": values}, _NEXT_SEQUENCE]
        if "capacity" not in changes:
            result = await self._events.update_one(condition, stages)
            return [] if result.matched_count == 1 else None
        # A capacity change promotes into the seats it frees, in the same update.
        return await self._promoting(event, condition, stages)

    async def _promoting(self, event, condition, stages):
        """Runs an update that may free seats, with the promotion into them; None when the
        condition did not match, else the promoted users' ids (texts), in line order."""
        changed = await self._events.find_one_and_update(
            condition, [*stages, *_promotion(self.MAX_RSVPS)], projection={"last_promoted": 1},
            return_document=ReturnDocument.AFTER)
        if changed is None:
            return None
        promoted = changed["last_promoted"]
        if promoted:
            # The old backend's lists follow, as after take_seat.
            await self._users.update_many({"_id": {"$in": promoted}},
                                          [{"$set": {"rsvped_events": added("rsvped_events", event)}}])
        return [id_text(user) for user in promoted]

    async def delete(self, event_id, organizer_id):
        event, organizer = object_id(event_id), object_id(organizer_id)
        if event is None or organizer is None:
            return False
        # Deleting the document is the decision, and takes its RSVPs, arrivals and photos with it.
        deleted = await self._events.find_one_and_delete({"_id": event, "organizer_id": organizer},
                                                         projection={"rsvps": 1})
        if deleted is None:
            return False
        # Then what refers to it. Should the database fail in between, what is left is unreachable
        # (chat history is read only for an event that exists) and only the old backend's lists
        # still name the event.
        await self._messages.delete_many({"event_id": event})
        await self._message_heads.delete_one({"_id": event})  # the chat's lease (storage/mongo/messages.py)
        for collection in self._chat:
            await collection.delete_many({"event_id": event})
        await self._users.update_one({"_id": organizer},
                                     [{"$set": {"created_events": pulled("created_events", event)}}])
        await self._users.update_many({"_id": {"$in": deleted.get("rsvps") or []}},
                                      [{"$set": {"rsvped_events": pulled("rsvped_events", event)}}])
        return True

    async def take_seat(self, event_id, user_id, window):
        event, user = object_id(event_id), object_id(user_id)
        if event is None or user is None:
            return None
        # The whole rule in one conditional update: not RSVPed yet, not over, room left; and the
        # count rewritten from the array in the same step.
        taken = await self._events.update_one(
            {"_id": event, "rsvps": {"$ne": user}, **_NOBODY_WAITING, **_LIVE,
             "$and": [_not_over(window), _has_room(self.MAX_RSVPS)]},
            [{"$set": {"rsvps": pushed("rsvps", user)}},
             {"$set": {"rsvp_count": {"$size": "$rsvps"}}}])
        if taken.matched_count != 1:
            return None
        await self._users.update_one({"_id": user}, [{"$set": {"rsvped_events": added("rsvped_events", event)}}])
        # Read after the update rather than returned by it: counting in find_one_and_update's
        # projection needs MongoDB 4.4, and the test double cannot. The record may show later changes
        # too; it is never older than this one. Likewise after the other changes below.
        return await self._one(event, user)

    async def join_waitlist(self, event_id, user_id, window):
        event, user = object_id(event_id), object_id(user_id)
        if event is None or user is None:
            return None
        # One conditional update: a capacity and the waitlist on, no room, not over, the line not
        # full (it has no entry at position MAX_WAITLIST - 1), the user neither RSVPed nor waiting.
        joined = await self._events.update_one(
            {"_id": event, "rsvps": {"$ne": user}, "waitlist.user_id": {"$ne": user}, **_LIVE,
             "capacity": {"$ne": None}, "waitlist_enabled": {"$ne": False},
             f"waitlist.{self.MAX_WAITLIST - 1}": {"$exists": False},
             "$and": [_not_over(window), {"$expr": {"$gte": [_RSVP_COUNT, _seats(self.MAX_RSVPS)]}}]},
            [{"$set": {"waitlist": pushed("waitlist", {"user_id": user, "at": window.now})}}])
        if joined.matched_count != 1:
            return None
        return await self._one(event, user)

    async def leave_waitlist(self, event_id, user_id):
        event, user = object_id(event_id), object_id(user_id)
        if event is None or user is None:
            return None
        left = await self._events.update_one(
            {"_id": event, "waitlist.user_id": user},
            [{"$set": {"waitlist": {"$filter": {"input": _WAITLIST, "cond": {"$ne": ["$$this.user_id", user]}}}}}])
        if left.matched_count != 1:
            return None
        return await self._one(event, user)

    async def release_seat(self, event_id, user_id, window):
        event, user = object_id(event_id), object_id(user_id)
        if event is None or user is None:
            return None
        # One conditional update: RSVPed and not over; the arrival goes with the RSVP, and the
        # first waiting users take the seat it frees.
        promoted = await self._promoting(
            event, {"_id": event, "rsvps": user, **_not_over(window)},
            [{"$set": {"rsvps": pulled("rsvps", user), "arrivals": pulled("arrivals", user),
                       "organizer_check_ins": {"$filter": {"input": _CHECK_INS,
                                                           "cond": {"$ne": ["$$this.user_id", user]}}}}}])
        if promoted is None:
            return None
        await self._users.update_one({"_id": user}, [{"$set": {"rsvped_events": pulled("rsvped_events", event)}}])
        record = await self._one(event, user)
        return None if record is None else {**record, "promoted": promoted}

    async def record_arrival(self, event_id, user_id, window, opens_before, checked_in_by=None):
        event, user = object_id(event_id), object_id(user_id)
        if event is None or user is None:
            return False
        changes = {"arrivals": pushed("arrivals", user)}
        if checked_in_by is not None:
            # How it was made, in the same update as the arrival itself.
            changes["organizer_check_ins"] = pushed(
                "organizer_check_ins", {"user_id": user, "by": object_id(checked_in_by), "at": window.now})
        # RSVPed, not arrived yet, open (started at most opens_before from now) and not over: all
        # in the filter of the one update that records the arrival.
        arrived = await self._events.update_one(
            {"_id": event, "rsvps": user, "arrivals": {"$ne": user}, **_LIVE,
             "date": {"$lte": window.now + opens_before}, **_not_over(window)},
            [{"$set": changes}])
        return arrived.matched_count == 1

    async def add_photo(self, event_id, url, uploaded_by, uploaded_at, max_photos):
        event, user = object_id(event_id), object_id(uploaded_by)
        if event is None or user is None or max_photos < 1:
            return None
        # One conditional update: the uploader organizes the event or has RSVPed, and the gallery
        # has room (it has no entry at position max_photos - 1); both arrays get the photo in it,
        # so they cannot disagree.
        stored = await self._events.update_one(
            {"_id": event, "$or": [{"organizer_id": user}, {"rsvps": user}], **_LIVE,
             f"photo_gallery.{max_photos - 1}": {"$exists": False}},
            [{"$set": {"photo_gallery": pushed("photo_gallery", url),
                       "photos": pushed("photos", {"url": url, "uploaded_by": user, "uploaded_at": uploaded_at})}}])
        if stored.matched_count != 1:
            return None
        return await self._one(event, user)


def _by_distance(events):
    return sorted(events, key=lambda event: (event["distance_m"], event["id"]))


def _slice(array, start, end):
    """Aggregation: the array's items at positions start to end (excluded). $slice wants a
    positive count, so an empty range is an empty array."""
    return {"$slice": [array, start, end - start]} if end > start else {"$literal": []}


def _attendee(user, username, index, arrived, check_in, joined_at):
    """An attendee record from what `attendees` read of one user."""
    shown = None
    if arrived:
        shown = {"method": "geofence", "by": None, "at": None} if check_in is None else \
            {"method": "organizer", "by": id_text(check_in.get("by")), "at": aware(check_in.get("at"))}
    status = "waitlisted" if index >= 0 else "arrived" if arrived else "going"
    return {"user_id": id_text(user), "username": username, "status": status,
            "position": index + 1 if index >= 0 else None, "joined_at": aware(joined_at), "check_in": shown}


def _photo_record(url, entry):
    return {"url": url, "uploaded_by": id_text(entry.get("uploaded_by")),
            "uploaded_at": aware(entry.get("uploaded_at"))}
