"""Events, their RSVPs, waitlists, arrivals and photos, and discovery, in SQLite.

Race safety: each rule that depends on an event's current state is the WHERE clause of the one
UPDATE (or DELETE) that changes the event's row; the rows it counts (rsvps, waitlist, arrivals,
photos) are written in the same transaction only when that statement matched. `BEGIN IMMEDIATE`
makes the pair one step for every process on the file; a promotion (`_promote`) runs in the
transaction of the release or capacity change that freed the seats, so no other write sees the
seats free with anyone still waiting.
"""
from domain import geo, repositories
from storage.sqlite import search
from storage.sqlite.columns import from_json, from_ms, ms_delta, to_json, to_ms
from storage.sqlite.database import Repository
from storage.sqlite.ids import new_id

TIME_FIELDS = frozenset({"date", "end_date", "created_at", "updated_at", "cancelled_at"})
GEOJSON_FIELDS = frozenset({"location", "geofence"})

SUMMARY = """SELECT id, title, description, date, end_date, category, location_address, location,
        geofence_radius, geofence, capacity, organizer_id, created_at, updated_at, waitlist_enabled,
        cancelled_at, sequence, rsvp_count, arrival_count, photo_count, waitlist_count,
        EXISTS (SELECT 1 FROM rsvps WHERE event_id = events.id AND user_id = :viewer),
        EXISTS (SELECT 1 FROM arrivals WHERE event_id = events.id AND user_id = :viewer),
        (SELECT count(*) FROM waitlist AS mine JOIN waitlist AS ahead
            ON ahead.event_id = mine.event_id AND ahead.ticket <= mine.ticket
            WHERE mine.event_id = events.id AND mine.user_id = :viewer)
    FROM events"""

# The seats an event has: its capacity, and never more than MAX_RSVPS.
SEATS = "min(coalesce(capacity, :max_rsvps), :max_rsvps)"

# "Not over at now": it ends at end_date, or default_duration after date without one. Both
# sides are integers here, so an event dated in year 1 or 9999 cannot overflow anything.
NOT_OVER = "(end_date > :now OR (end_date IS NULL AND date > :started_after))"
LIVE = "cancelled_at IS NULL"

# Events whose location may lie in one box; `filters` appends the query's other conditions.
NEARBY_CANDIDATES = """SELECT events.seq, events.id, events.lng, events.lat
    FROM event_locations JOIN events ON events.seq = event_locations.seq
    WHERE event_locations.max_lng >= :min_lng AND event_locations.min_lng <= :max_lng
        AND event_locations.max_lat >= :min_lat AND event_locations.min_lat <= :max_lat"""

# A nearby search looks this far past its start first, then four times as far each round until
# it has a page (or reaches the radius): in a dense city the page is a few hundred metres away,
# and measuring every event within 10 km of it would take the whole page budget.
FIRST_REACH_M = 100.0
REACH_GROWTH = 4.0


def event_record(row):
    (event_id, title, description, date, end_date, category, location_address, location,
     geofence_radius, geofence, capacity, organizer_id, created_at, updated_at, waitlist_enabled,
     cancelled_at, sequence, rsvp_count, arrival_count, photo_count, waitlist_count, is_rsvped, has_arrived,
     waitlist_position) = row
    return {
        "id": event_id, "title": title, "description": description,
        "date": from_ms(date), "end_date": from_ms(end_date), "category": category,
        "location_address": location_address, "location": from_json(location),
        "geofence_radius": geofence_radius, "geofence": from_json(geofence), "capacity": capacity,
        "organizer_id": organizer_id, "created_at": from_ms(created_at), "updated_at": from_ms(updated_at),
        "waitlist_enabled": waitlist_enabled != 0,  # NULL: an event made before waitlists, on
        "cancelled_at": from_ms(cancelled_at), "sequence": sequence,
        "rsvp_count": rsvp_count, "arrival_count": arrival_count, "photo_count": photo_count,
        "waitlist_count": waitlist_count, "is_rsvped": bool(is_rsvped), "has_arrived": bool(has_arrived),
        "waitlist_position": waitlist_position or None,
    }


def stored_value(field, value):
    """The column value of an event field."""
    if field in TIME_FIELDS:
        return to_ms(value)
    if field in GEOJSON_FIELDS:
        return to_json(value)
    return value


def stored_columns(fields):
    """{column: value} for event fields; a location also sets the coordinates it holds."""
    columns = {}
    for field, value in fields.items():
        if field not in repositories.Events.FIELDS:
            raise ValueError(f"{field!r} is not an event field")
        columns[field] = stored_value(field, value)
        if field == "location":
            columns["lng"], columns["lat"] = value["coordinates"] if value is not None else (None, None)
    return columns


def window_parameters(window):
    now = to_ms(window.now)
    return {"now": now, "started_after": now - ms_delta(window.default_duration)}


class Events(Repository, repositories.Events):
    async def add(self, fields):
        return await self._database.write(_add, {field: fields.get(field) for field in self.FIELDS})

    async def get(self, event_id, viewer_id=None):
        return await self._database.read(_get, event_id, viewer_id)

    async def find(self, query, viewer_id=None):
        if query.near is None:
            return await self._database.read(_find_by_date, query, viewer_id)
        return await self._database.read(_find_nearest, query, viewer_id)

    async def update(self, event_id, organizer_id, changes, expected):
        return await self._database.write(_update, event_id, organizer_id, changes, expected, self.MAX_RSVPS)

    async def delete(self, event_id, organizer_id):
        return await self._database.write(_delete, event_id, organizer_id)

    async def take_seat(self, event_id, user_id, window):
        return await self._database.write(_take_seat, event_id, user_id, window_parameters(window), self.MAX_RSVPS)

    async def join_waitlist(self, event_id, user_id, window):
        return await self._database.write(_join_waitlist, event_id, user_id, window_parameters(window),
                                          self.MAX_RSVPS, self.MAX_WAITLIST)

    async def leave_waitlist(self, event_id, user_id):
        return await self._database.write(_leave_waitlist, event_id, user_id)

    async def release_seat(self, event_id, user_id, window):
        return await self._database.write(_release_seat, event_id, user_id, window_parameters(window), self.MAX_RSVPS)

    async def record_arrival(self, event_id, user_id, window, opens_before, checked_in_by=None):
        return await self._database.write(_record_arrival, event_id, user_id, window_parameters(window),
                                          ms_delta(opens_before), checked_in_by)

    async def attendees(self, event_id, status, after_id, limit, user_id=None):
        return await self._database.read(_attendees, event_id, status, after_id, limit, user_id)

    async def is_member(self, event_id, user_id):
        return await self._database.read(_is_member, event_id, user_id)

    async def add_photo(self, event_id, url, uploaded_by, uploaded_at, max_photos):
        return await self._database.write(_add_photo, event_id, url, uploaded_by, to_ms(uploaded_at), max_photos)

    async def photos(self, event_id, before, limit):
        return await self._database.read(_photos, event_id, before, limit)

    async def attending(self, user_id, since, limit):
        return await self._database.read(_attending, user_id, to_ms(since), limit)


# --- reading ---------------------------------------------------------------------------------

def _get(connection, event_id, viewer_id):
    row = connection.execute(f"{SUMMARY} WHERE id = :event", {"event": event_id, "viewer": viewer_id}).fetchone()
    return None if row is None else event_record(row)


def _attending(connection, user_id, since, limit):
    # rsvps_by_user finds the user's RSVPs; their events are then sorted, a few hundred at most.
    rows = connection.execute(
        f"""{SUMMARY} WHERE id IN (SELECT event_id FROM rsvps WHERE user_id = :viewer) AND date >= :since
            ORDER BY date, id LIMIT :limit""", {"viewer": user_id, "since": since, "limit": limit})
    return [event_record(row) for row in rows]


def _filters(connection, query):
    """(SQL conditions, parameters) of the query's filters but the centre, radius and cursor."""
    conditions, parameters = ([] if query.include_cancelled else [LIVE]), {}
    if query.category:
        conditions.append("category = :category")
        parameters["category"] = query.category
    if query.date_from:
        conditions.append("date >= :date_from")
        parameters["date_from"] = to_ms(query.date_from)
    if query.date_to:
        conditions.append("date <= :date_to")
        parameters["date_to"] = to_ms(query.date_to)
    if query.organizer_id:
        conditions.append("organizer_id = :organizer_id")
        parameters["organizer_id"] = query.organizer_id
    if query.text:
        # The trigram index narrows the events to its candidates; contains_text alone decides.
        # It cannot narrow a text of fewer than 3 characters, nor one that more than
        # search.MAX_CANDIDATES events hold: those scan as before, calling contains_text on
        # each event the other conditions keep until the page is full. For a common text that
        # is a few rows; a short text, or a common one that the other filters (or the cursor)
        # exclude, can make it call contains_text on every event: a known cost.
        candidates = search.candidates(connection, query.text)
        if candidates is not None:
            conditions.append("events.seq IN (SELECT value FROM json_each(:text_candidates))")
            parameters["text_candidates"] = candidates
        conditions.append("(contains_text(:text, title) OR contains_text(:text, description))")
        parameters["text"] = query.text
    return conditions, parameters


def _find_by_date(connection, query, viewer_id):
    conditions, parameters = _filters(connection, query)
    if query.cursor is not None:
        conditions.append("(date, id) > (:after_date, :after_id)")
        parameters.update(after_date=to_ms(query.cursor.moment()), after_id=query.cursor.last_id)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = connection.execute(f"{SUMMARY} {where} ORDER BY date, id LIMIT :limit",
                              {**parameters, "viewer": viewer_id, "limit": query.limit + 1})
    return [event_record(row) for row in rows]


def _find_nearest(connection, query, viewer_id):
    """The R*Tree finds the events inside the bounding boxes of a circle (with the other filters
    in the same statement); each is then measured exactly, as `geo.find_nearest` measures, so
    the distances, the order and the cursor's ties are the ones the other stores give."""
    mark, start = None, 0.0
    if query.cursor is not None:
        if query.cursor.position > query.radius_m:
            return []
        mark = (query.cursor.position, query.cursor.last_id)
        start = max(0.0, query.cursor.position)
    conditions, parameters = _filters(connection, query)
    statement = " AND ".join([NEARBY_CANDIDATES, *conditions])
    wanted = query.limit + 1
    for reach in _reaches(start, query.radius_m):
        hits = _measured(connection, statement, parameters, query, reach, mark)
        # Everything within `reach` was measured: when that fills a page, nothing farther is on it.
        if len(hits) >= wanted or reach >= query.radius_m:
            break
    nearest = sorted(hits)[:wanted]
    rows = connection.execute(f"{SUMMARY} WHERE seq IN (SELECT value FROM json_each(:seqs))",
                              {"seqs": to_json([seq for _, _, seq in nearest]), "viewer": viewer_id})
    by_id = {record["id"]: record for record in map(event_record, rows)}
    return [{**by_id[event_id], "distance_m": distance} for distance, event_id, _ in nearest]


def _measured(connection, statement, parameters, query, reach, mark):
    """(distance, id, seq) of the events within `reach` of the query's centre, after `mark`."""
    lng, lat = query.near
    # What find_nearest keeps: inside the boxes of the whole radius, then within the distance.
    radius_boxes = geo.bounding_boxes(lng, lat, query.radius_m)
    hits, seen = [], set()
    for min_lng, min_lat, max_lng, max_lat in geo.bounding_boxes(lng, lat, reach):
        box = {"min_lng": min_lng, "min_lat": min_lat, "max_lng": max_lng, "max_lat": max_lat}
        for seq, event_id, event_lng, event_lat in connection.execute(statement, {**parameters, **box}):
            if seq in seen or not geo.in_boxes(radius_boxes, event_lng, event_lat):
                continue
            seen.add(seq)
            distance = geo.distance_m(lng, lat, event_lng, event_lat)
            if distance <= reach and (mark is None or (distance, event_id) > mark):
                hits.append((distance, event_id, seq))
    return hits


def _reaches(start, radius):
    """The distances a nearby search reaches out to, round by round; the last is the radius."""
    step = FIRST_REACH_M
    while start + step < radius:
        yield start + step
        step *= REACH_GROWTH
    yield radius


def _is_member(connection, event_id, user_id):
    row = connection.execute(
        """SELECT organizer_id = :user OR EXISTS (SELECT 1 FROM rsvps WHERE event_id = :event AND user_id = :user)
           FROM events WHERE id = :event""", {"event": event_id, "user": user_id}).fetchone()
    return None if row is None else bool(row[0])


# An event's RSVPs with their arrivals, as attendees (the status is filled in by `_attendees`).
RSVPED = """SELECT rsvps.user_id, rsvps.rsvped_at, NULL, arrivals.user_id IS NOT NULL, arrivals.arrived_at,
        arrivals.checked_in_by
    FROM rsvps LEFT JOIN arrivals ON arrivals.event_id = rsvps.event_id AND arrivals.user_id = rsvps.user_id
    WHERE rsvps.event_id = :event"""
# Its waitlist, each with their place in line: the whole line is numbered (at most MAX_WAITLIST
# rows, by its primary key), then cut at the cursor.
WAITING = """SELECT user_id, joined_at, position, 0, NULL, NULL FROM (
        SELECT user_id, joined_at, row_number() OVER (ORDER BY ticket) AS position
        FROM waitlist WHERE event_id = :event)
    WHERE 1"""


def _attendees(connection, event_id, status, after_id, limit, user_id):
    if connection.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is None:
        return None
    parameters = {"event": event_id, "after": after_id or "", "only": user_id, "limit": limit}
    cut = " AND user_id > :after" + (" AND user_id = :only" if user_id is not None else "")
    parts = []
    if status in (None, "going", "arrived"):
        arrived = {None: "", "going": " AND arrivals.user_id IS NULL", "arrived": " AND arrivals.user_id IS NOT NULL"}
        parts.append(RSVPED + arrived[status] + cut.replace("user_id", "rsvps.user_id"))
    if status in (None, "waitlisted"):
        parts.append(WAITING + cut)
    # Each part reads a page at most, through its (event_id, user_id) key, before they are merged.
    pages = " UNION ALL ".join(f"SELECT * FROM ({part} ORDER BY 1 LIMIT :limit)" for part in parts)
    rows = connection.execute(
        f"""SELECT page.*, users.username FROM ({pages}) AS page LEFT JOIN users ON users.id = page.user_id
            ORDER BY page.user_id LIMIT :limit""", parameters)
    return [_attendee(*row) for row in rows]


def _attendee(user_id, joined_at, position, arrived, arrived_at, checked_in_by, username):
    check_in = None
    if arrived:
        check_in = {"method": "geofence" if checked_in_by is None else "organizer", "by": checked_in_by,
                    "at": from_ms(arrived_at)}
    status = "waitlisted" if position is not None else "arrived" if arrived else "going"
    return {"user_id": user_id, "username": username, "status": status, "position": position,
            "joined_at": from_ms(joined_at), "check_in": check_in}


def _photos(connection, event_id, before, limit):
    row = connection.execute("SELECT photo_count FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    end = row[0] if before is None else min(row[0], before)
    start = max(0, end - limit)
    rows = connection.execute(
        """SELECT url, uploaded_by, uploaded_at FROM photos
           WHERE event_id = ? AND position >= ? AND position < ? ORDER BY position DESC""",
        (event_id, start, end))
    photos = [{"url": url, "uploaded_by": uploaded_by, "uploaded_at": from_ms(uploaded_at)}
              for url, uploaded_by, uploaded_at in rows]
    return photos, start


# --- writing ---------------------------------------------------------------------------------

def _add(connection, fields):
    columns = {"id": new_id(), **stored_columns(fields)}
    names = ", ".join(columns)
    connection.execute(f"INSERT INTO events ({names}) VALUES ({', '.join(':' + name for name in columns)})", columns)
    return columns["id"]


def _update(connection, event_id, organizer_id, changes, expected, max_rsvps):
    parameters = {"event": event_id, "organizer": organizer_id}
    conditions = ["id = :event", "organizer_id = :organizer", LIVE]
    for field, value in expected.items():
        if field not in repositories.Events.FIELDS:
            raise ValueError(f"{field!r} is not an event field")
        # IS: None expects NULL; a dict compares by its JSON, as it was stored.
        conditions.append(f"{field} IS :expected_{field}")
        parameters[f"expected_{field}"] = stored_value(field, value)
    assignments = []
    for column, value in stored_columns(changes).items():
        assignments.append(f"{column} = :new_{column}")
        parameters[f"new_{column}"] = value
    if changes.get("capacity") is not None:
        conditions.append("rsvp_count <= :new_capacity")
    where = " AND ".join(conditions)
    assignments.append("sequence = sequence + 1")
    # The R*Tree follows a new location by the event_moved trigger.
    changed = connection.execute(f"UPDATE events SET {', '.join(assignments)} WHERE {where}", parameters)
    if changed.rowcount != 1:
        return None
    # Only the capacity decides how many seats there are. The promoted got them at the update's time.
    if "capacity" not in changes:
        return []
    return _promote(connection, event_id, max_rsvps, to_ms(changes.get("updated_at")))


def _delete(connection, event_id, organizer_id):
    deleted = connection.execute("DELETE FROM events WHERE id = ? AND organizer_id = ?", (event_id, organizer_id))
    if deleted.rowcount != 1:
        return False
    for table in ("rsvps", "waitlist", "arrivals", "photos", "messages", "chat_reads", "chat_restrictions",
                  "chat_moderation"):
        connection.execute(f"DELETE FROM {table} WHERE event_id = ?", (event_id,))
    return True


def _take_seat(connection, event_id, user_id, window, max_rsvps):
    parameters = {"event": event_id, "user": user_id, "max_rsvps": max_rsvps, **window}
    taken = connection.execute(
        f"""UPDATE events SET rsvp_count = rsvp_count + 1
            WHERE id = :event AND {LIVE} AND rsvp_count < {SEATS} AND waitlist_count = 0 AND {NOT_OVER}
                AND NOT EXISTS (SELECT 1 FROM rsvps WHERE event_id = :event AND user_id = :user)""", parameters)
    if taken.rowcount != 1:
        return None
    connection.execute("INSERT INTO rsvps (event_id, user_id, rsvped_at) VALUES (?, ?, ?)",
                       (event_id, user_id, window["now"]))
    return _get(connection, event_id, user_id)


def _join_waitlist(connection, event_id, user_id, window, max_rsvps, max_waitlist):
    parameters = {"event": event_id, "user": user_id, "max_rsvps": max_rsvps, "max_waitlist": max_waitlist,
                  **window}
    joined = connection.execute(
        f"""UPDATE events SET waitlist_count = waitlist_count + 1
            WHERE id = :event AND {LIVE} AND capacity IS NOT NULL AND waitlist_enabled IS NOT 0
                AND rsvp_count >= {SEATS} AND waitlist_count < :max_waitlist AND {NOT_OVER}
                AND NOT EXISTS (SELECT 1 FROM rsvps WHERE event_id = :event AND user_id = :user)
                AND NOT EXISTS (SELECT 1 FROM waitlist WHERE event_id = :event AND user_id = :user)""", parameters)
    if joined.rowcount != 1:
        return None
    connection.execute(
        """INSERT INTO waitlist (event_id, ticket, user_id, joined_at)
           SELECT :event, coalesce(max(ticket), 0) + 1, :user, :now FROM waitlist WHERE event_id = :event""",
        parameters)
    return _get(connection, event_id, user_id)


def _leave_waitlist(connection, event_id, user_id):
    left = connection.execute("DELETE FROM waitlist WHERE event_id = ? AND user_id = ?", (event_id, user_id))
    if left.rowcount != 1:
        return None
    connection.execute("UPDATE events SET waitlist_count = waitlist_count - 1 WHERE id = ?", (event_id,))
    return _get(connection, event_id, user_id)


def _promote(connection, event_id, max_rsvps, now):
    """Moves the first waiting users into the event's free seats, RSVPed at `now` (milliseconds), in
    the caller's transaction; returns their ids in line order."""
    promoted = [user_id for (user_id,) in connection.execute(
        f"""SELECT user_id FROM waitlist WHERE event_id = :event ORDER BY ticket
            LIMIT max(0, coalesce(
                (SELECT {SEATS} - rsvp_count FROM events WHERE id = :event AND {LIVE}), 0))""",
        {"event": event_id, "max_rsvps": max_rsvps})]
    if promoted:
        connection.executemany("DELETE FROM waitlist WHERE event_id = ? AND user_id = ?",
                               [(event_id, user_id) for user_id in promoted])
        connection.executemany("INSERT INTO rsvps (event_id, user_id, rsvped_at) VALUES (?, ?, ?)",
                               [(event_id, user_id, now) for user_id in promoted])
        connection.execute("""UPDATE events SET rsvp_count = rsvp_count + :moved, waitlist_count = waitlist_count - :moved
                              WHERE id = :event""", {"event": event_id, "moved": len(promoted)})
    return promoted


def _release_seat(connection, event_id, user_id, window, max_rsvps):
    parameters = {"event": event_id, "user": user_id, **window}
    released = connection.execute(
        f"""DELETE FROM rsvps WHERE event_id = :event AND user_id = :user
                AND EXISTS (SELECT 1 FROM events WHERE id = :event AND {NOT_OVER})""", parameters)
    if released.rowcount != 1:
        return None
    left = connection.execute("DELETE FROM arrivals WHERE event_id = ? AND user_id = ?", (event_id, user_id))
    connection.execute("UPDATE events SET rsvp_count = rsvp_count - 1, arrival_count = arrival_count - ? WHERE id = ?",
                       (left.rowcount, event_id))
    promoted = _promote(connection, event_id, max_rsvps, window["now"])
    return {**_get(connection, event_id, user_id), "promoted": promoted}


def _record_arrival(connection, event_id, user_id, window, opens_before, checked_in_by):
    parameters = {"event": event_id, "user": user_id, "opens_until": window["now"] + opens_before, **window}
    arrived = connection.execute(
        f"""UPDATE events SET arrival_count = arrival_count + 1
            WHERE id = :event AND {LIVE} AND date <= :opens_until AND {NOT_OVER}
                AND EXISTS (SELECT 1 FROM rsvps WHERE event_id = :event AND user_id = :user)
                AND NOT EXISTS (SELECT 1 FROM arrivals WHERE event_id = :event AND user_id = :user)""", parameters)
    if arrived.rowcount != 1:
        return False
    connection.execute("INSERT INTO arrivals (event_id, user_id, arrived_at, checked_in_by) VALUES (?, ?, ?, ?)",
                       (event_id, user_id, window["now"], checked_in_by))
    return True


def _add_photo(connection, event_id, url, uploaded_by, uploaded_at, max_photos):
    counted = connection.execute(
        f"""UPDATE events SET photo_count = photo_count + 1
           WHERE id = :event AND {LIVE} AND photo_count < :max_photos
               AND (organizer_id = :user OR EXISTS (SELECT 1 FROM rsvps WHERE event_id = :event AND user_id = :user))
           RETURNING photo_count""", {"event": event_id, "user": uploaded_by, "max_photos": max_photos}).fetchall()
    if not counted:
        return None
    connection.execute("INSERT INTO photos (event_id, position, url, uploaded_by, uploaded_at) VALUES (?, ?, ?, ?, ?)",
                       (event_id, counted[0][0] - 1, url, uploaded_by, uploaded_at))
    return _get(connection, event_id, uploaded_by)
