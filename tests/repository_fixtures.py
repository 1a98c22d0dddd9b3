"""Sample data for the repository contract suite (tests/test_repositories.py): the same records,
places and times for every store, so that every store is held to the same answers.

Times are fixed, never the clock: every repository method that judges time is handed its `now`.
"""
import datetime
import math

from domain.geo import EARTH_RADIUS_M
from domain.repositories import EventWindow
from domain.times import UTC

# "Now" for the tests; events are dated around it.
NOW = datetime.datetime(2030, 6, 1, 18, 0, tzinfo=UTC)
CREATED = datetime.datetime(2030, 5, 1, 9, 30, 15, 123000, tzinfo=UTC)
# Far enough ahead that no store forgets these before the suite ends.
FAR_FUTURE = datetime.datetime(2100, 1, 1, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)
MINUTE = datetime.timedelta(minutes=1)
MILLISECOND = datetime.timedelta(milliseconds=1)
DEFAULT_DURATION = 3 * HOUR

PARIS = (2.3522, 48.8566)
LONDON = (-0.1276, 51.5072)

PASSWORD_HASH = "$2b$04$abcdefghijklmnopqrstuuVY5x0cNb8zE0yGd7yO4r6Fj3s4qWqK"


def window(now=NOW, default_duration=DEFAULT_DURATION):
    return EventWindow(now=now, default_duration=default_duration)


def some_id(n):
    """A well-formed id that no store generated: for users the repository under test does not
    need to know (organizers, RSVPing users)."""
    return f"{0xabc0000000000000000000 + n:024x}"


def point(lng, lat):
    return {"type": "Point", "coordinates": [lng, lat]}


def event_fields(organizer_id, **changes):
    """Every field of Events.FIELDS: a music event in Paris at NOW, without end date or capacity."""
    fields = {
        "title": "Rooftop jazz",
        "description": "Live quartet at sunset.",
        "date": NOW,
        "end_date": None,
        "category": "music",
        "location_address": "1 Rue de Rivoli, Paris",
        "location": point(*PARIS),
        "geofence_radius": 150,
        "geofence": None,
        "capacity": None,
        "organizer_id": organizer_id,
        "created_at": CREATED,
        "updated_at": CREATED,
        "waitlist_enabled": True,
        "cancelled_at": None,
    }
    fields.update(changes)
    return fields


def square_around(lng, lat, half_side_deg=0.001):
    """A GeoJSON Polygon: a small square centred on (lng, lat), closed."""
    d = half_side_deg
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def destination(lng, lat, bearing_deg, meters):
    """The point `meters` from (lng, lat) along the great circle starting at bearing_deg, on the
    sphere of domain.geo.EARTH_RADIUS_M."""
    phi, lam = math.radians(lat), math.radians(lng)
    angle, bearing = meters / EARTH_RADIUS_M, math.radians(bearing_deg)
    phi2 = math.asin(math.sin(phi) * math.cos(angle) + math.cos(phi) * math.sin(angle) * math.cos(bearing))
    lam2 = lam + math.atan2(math.sin(bearing) * math.sin(angle) * math.cos(phi),
                            math.cos(angle) - math.sin(phi) * math.sin(phi2))
    return (math.degrees(lam2) + 540.0) % 360.0 - 180.0, math.degrees(phi2)


# Events around Paris at (bearing, meters): inside a 10 km search, in no particular order, two
# of them at one venue (a tie), and some beyond the radius.
PARIS_NEIGHBOURHOOD = {
    "bastille": (100, 1_800),
    "montmartre": (350, 4_200),
    "la defense": (290, 8_900),
    "orly": (175, 13_500),
    "versailles": (245, 17_100),
    "louvre": (270, 350),
    "chatelet a": (140, 600),
    "chatelet b": (140, 600),
    "vincennes": (95, 7_300),
    "saint-denis": (5, 9_400),
}


def draft(user_id, text, client_msg_id=None, username=None, timestamp=NOW):
    """A chat message draft as Messages.append takes it."""
    return {"user_id": user_id, "username": username or f"user-{user_id[-4:]}", "text": text,
            "timestamp": timestamp, "client_msg_id": client_msg_id}


def activity(actor_id, timestamp, type="event_created", event_id=None, summary="created an event",
             actor_name=None, target_user_id=None):
    """An activity as Activities.add takes it (every field but id)."""
    return {"type": type, "actor_id": actor_id, "actor_name": actor_name or f"user-{actor_id[-4:]}",
            "event_id": event_id, "target_user_id": target_user_id, "summary": summary,
            "timestamp": timestamp}
