"""Geometry for events: great-circle distances, nearby search, geofences.

Pure functions over GeoJSON-shaped values ([lng, lat] in degrees); no database, no framework.
`distance_m` and `bounding_boxes` are how a store without geo operators (SQLite) measures a
nearby search as MongoDB's `$geoNear` does; `find_nearest` is that search over a list, the
reference the benchmarks and tests hold it to; `Geofence` decides arrivals.
"""

import math

import numpy
import shapely
from shapely.validation import explain_validity

from domain.errors import InvalidInput

# MongoDB's 2dsphere radius (kRadiusOfEarthInMeters), not the mean radius, so that every store
# and $geoNear find the same events at the same distances.
EARTH_RADIUS_M = 6378100.0

# Widens the prefilter boxes (about 0.1 mm) so that float rounding can never make the box drop
# a point that the exact distance keeps.
_BOX_MARGIN_DEG = 1e-9
# Past this, asin's slope makes the box's half-width too sensitive to rounding to trust;
# the cap then nearly reaches a pole anyway, so it takes every longitude.
_ASIN_SAFE_LIMIT = 1.0 - 1e-9


def distance_m(lng1, lat1, lng2, lat2):
    """Great-circle distance in meters between two points given in degrees."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    half_dlam = math.radians(lng2 - lng1) / 2.0
    cos_product = math.cos(phi1) * math.cos(phi2)
    # The haversine and its complement (1 - haversine) are each a sum of non-negative terms, so
    # neither loses digits to subtraction, and atan2 of their roots stays accurate all the way
    # to the antipode, where asin(sqrt(haversine)) would not.
    haversine = math.sin((phi2 - phi1) / 2.0) ** 2 + cos_product * math.sin(half_dlam) ** 2
    complement = math.sin((phi1 + phi2) / 2.0) ** 2 + cos_product * math.cos(half_dlam) ** 2
    return 2.0 * EARTH_RADIUS_M * math.atan2(math.sqrt(haversine), math.sqrt(complement))


def bounding_boxes(lng, lat, radius_m):
    """Boxes (min_lng, min_lat, max_lng, max_lat) in degrees that hold every point within
    radius_m of (lng, lat): two when the circle crosses the antimeridian, else one."""
    angle = radius_m / EARTH_RADIUS_M
    angle_deg = math.degrees(angle) + _BOX_MARGIN_DEG
    min_lat = lat - angle_deg
    max_lat = lat + angle_deg
    if min_lat <= -90.0 or max_lat >= 90.0:
        return [_all_longitudes(min_lat, max_lat)]
    # The widest longitude reached by a cap of angular radius r at latitude phi.
    sin_half_width = math.sin(angle) / math.cos(math.radians(lat))
    if sin_half_width >= _ASIN_SAFE_LIMIT:
        return [_all_longitudes(min_lat, max_lat)]
    half_width = math.degrees(math.asin(sin_half_width)) + _BOX_MARGIN_DEG
    min_lng = lng - half_width
    max_lng = lng + half_width
    if min_lng < -180.0:
        return [(min_lng + 360.0, min_lat, 180.0, max_lat), (-180.0, min_lat, max_lng, max_lat)]
    if max_lng > 180.0:
        return [(min_lng, min_lat, 180.0, max_lat), (-180.0, min_lat, max_lng - 360.0, max_lat)]
    return [(min_lng, min_lat, max_lng, max_lat)]


def _all_longitudes(min_lat, max_lat):
    return (-180.0, max(min_lat, -90.0), 180.0, min(max_lat, 90.0))


def in_boxes(boxes, lng, lat):
    """Whether (lng, lat) lies in any of the boxes from `bounding_boxes`."""
    for min_lng, min_lat, max_lng, max_lat in boxes:
        if min_lat <= lat <= max_lat and min_lng <= lng <= max_lng:
            return True
    return False


def find_nearest(docs, lng, lat, radius_m, limit=None):
    """(distance_m, doc) for each doc whose `location` Point lies within radius_m of (lng, lat),
    nearest first, ties broken by doc["id"]. Docs without a location are skipped, as a
    2dsphere index skips them. This is the set and order `$geoNear` (spherical, maxDistance
    radius_m) returns when both use the same Earth radius; see EARTH_RADIUS_M."""
    boxes = bounding_boxes(lng, lat, radius_m)
    # All boxes span the same latitudes; testing those inline first rejects most docs cheaply.
    _, min_lat, _, max_lat = boxes[0]
    found = []
    for doc in docs:
        location = doc.get("location")
        if location is None:
            continue
        doc_lng, doc_lat = location["coordinates"]
        if min_lat <= doc_lat <= max_lat and in_boxes(boxes, doc_lng, doc_lat):
            distance = distance_m(lng, lat, doc_lng, doc_lat)
            if distance <= radius_m:
                found.append((distance, doc))
    _sort_nearest_first(found)
    return found if limit is None else found[:limit]


def _sort_nearest_first(hits):
    # Sorting on (distance, id) pairs is slower than on distances alone, and ties are rare
    # (events at one venue), so break ties by id only when there are some.
    hits.sort(key=_distance_of)
    if any(a[0] == b[0] for a, b in zip(hits, hits[1:])):
        hits.sort(key=_distance_then_id)


def _distance_of(hit):
    return hit[0]


def _distance_then_id(hit):
    return hit[0], hit[1]["id"]


class LocalProjection:
    """Azimuthal equidistant projection of the sphere centered on one point: meters east (x)
    and north (y). Distances and bearings from the center are exact; between other points of a
    venue-sized shape (a few km across) they are off by less than a millionth."""

    __slots__ = ("_lng", "_lat", "_sin_lat", "_cos_lat")

    def __init__(self, lng, lat):
        self._lng = lng
        self._lat = lat
        self._sin_lat = math.sin(math.radians(lat))
        self._cos_lat = math.cos(math.radians(lat))

    def xy(self, lng, lat):
        distance = distance_m(self._lng, self._lat, lng, lat)
        if distance == 0.0:
            return 0.0, 0.0
        phi = math.radians(lat)
        dlam = math.radians(lng - self._lng)
        east = math.cos(phi) * math.sin(dlam)
        north = self._cos_lat * math.sin(phi) - self._sin_lat * math.cos(phi) * math.cos(dlam)
        # (east, north) is the bearing scaled by sin(distance), which is 0 only at the antipode,
        # where every bearing is equally right.
        sin_angle = math.hypot(east, north)
        if sin_angle == 0.0:
            return 0.0, -distance
        scale = distance / sin_angle
        return east * scale, north * scale

    def polygon(self, polygon):
        """The shapely Polygon (in degrees) projected to meters."""
        return shapely.Polygon(
            self._ring(polygon.exterior), [self._ring(ring) for ring in polygon.interiors]
        )

    def _ring(self, ring):
        """`xy` of every position at once: a venue ring has up to 1,000 of them, and projecting
        them one by one held the event loop ~15 us each (75 ms for five rings)."""
        lng, lat = numpy.asarray(ring.coords).T
        phi = numpy.radians(lat)
        half_dlam = numpy.radians(lng - self._lng) / 2.0
        phi_center = math.radians(self._lat)
        cos_product = math.cos(phi_center) * numpy.cos(phi)
        haversine = numpy.sin((phi - phi_center) / 2.0) ** 2 + cos_product * numpy.sin(half_dlam) ** 2
        complement = numpy.sin((phi_center + phi) / 2.0) ** 2 + cos_product * numpy.cos(half_dlam) ** 2
        distance = 2.0 * EARTH_RADIUS_M * numpy.arctan2(numpy.sqrt(haversine), numpy.sqrt(complement))
        dlam = numpy.radians(lng - self._lng)
        east = numpy.cos(phi) * numpy.sin(dlam)
        north = self._cos_lat * numpy.sin(phi) - self._sin_lat * numpy.cos(phi) * numpy.cos(dlam)
        sin_angle = numpy.hypot(east, north)
        # As in xy: the center itself is (0, 0), its antipode straight south.
        antipode = sin_angle == 0.0
        scale = distance / numpy.where(antipode, 1.0, sin_angle)
        x = numpy.where(antipode, 0.0, east * scale)
        y = numpy.where(antipode, -distance, north * scale)
        center = distance == 0.0
        return numpy.column_stack((numpy.where(center, 0.0, x), numpy.where(center, 0.0, y)))


class Geofence:
    """Where an arrival counts for one event. Build it with `for_event` and keep it for the
    event's lifetime: a polygon fence projects and prepares its geometry once, at construction."""

    __slots__ = ()

    @staticmethod
    def for_event(location, radius_m, polygon=None):
        """The event's fence: its venue polygon when it has one (GeoJSON), else the circle of
        radius_m around its location (a GeoJSON Point)."""
        lng, lat = location["coordinates"]
        if polygon is None:
            return CircleGeofence(lng, lat, radius_m)
        return PolygonGeofence(lng, lat, parse_polygon(polygon))

    def distance_outside_m(self, lng, lat):
        """0.0 inside the fence (boundary included), else meters to the fence."""
        raise NotImplementedError

    def admits(self, lng, lat, accuracy_m, accuracy_cap_m):
        """(arrived, distance outside in meters). A reported position may be off by its accuracy,
        so a point that close outside counts; the cap stops a claimed 10 km accuracy from
        admitting anyone anywhere."""
        distance = self.distance_outside_m(lng, lat)
        tolerance = max(0.0, min(accuracy_m or 0.0, accuracy_cap_m))
        return distance <= tolerance, distance


class CircleGeofence(Geofence):
    __slots__ = ("_lng", "_lat", "_radius_m")

    def __init__(self, lng, lat, radius_m):
        self._lng = lng
        self._lat = lat
        self._radius_m = radius_m

    def distance_outside_m(self, lng, lat):
        return max(0.0, distance_m(self._lng, self._lat, lng, lat) - self._radius_m)


class PolygonGeofence(Geofence):
    """A venue outline, held projected around the event's location and prepared: a check is
    one projection and one prepared point-in-polygon test, plus a distance when outside."""

    __slots__ = ("_projection", "_venue")

    def __init__(self, lng, lat, polygon):
        self._projection = LocalProjection(lng, lat)
        self._venue = self._projection.polygon(polygon)
        shapely.prepare(self._venue)

    def distance_outside_m(self, lng, lat):
        point = shapely.Point(self._projection.xy(lng, lat))
        if self._venue.intersects(point):
            return 0.0
        return float(self._venue.distance(point))


def polygon_contains_point(polygon_geojson, point_geojson):
    """Whether the GeoJSON Polygon covers the GeoJSON Point (its boundary counts), judged in the
    same local projection as arrivals. Raises InvalidInput for an invalid polygon."""
    lng, lat = point_geojson["coordinates"]
    venue = LocalProjection(lng, lat).polygon(parse_polygon(polygon_geojson))
    return bool(shapely.intersects_xy(venue, 0.0, 0.0))


def parse_polygon(geojson, path="/geofence"):
    """A valid shapely Polygon (in degrees) from a GeoJSON Polygon; InvalidInput naming the
    offending part otherwise. `path` is the JSON pointer of the polygon in the request."""
    errors = _polygon_errors(geojson, path)
    if errors:
        raise InvalidInput("The geofence is not a valid GeoJSON Polygon.", errors=errors)
    rings = geojson["coordinates"]
    polygon = shapely.Polygon(rings[0], rings[1:])
    if not polygon.is_valid:
        # explain_validity says e.g. "Self-intersection[0.5 0.5]", the place as [lng lat].
        reason = explain_validity(polygon).replace("[", " at [", 1)
        message = (
            f"The polygon is not valid: {reason}. Its outline must not cross or touch itself, "
            "and holes must lie inside the outline without overlapping it or each other."
        )
        raise InvalidInput(
            "The geofence is not a valid polygon.",
            errors=[{"path": f"{path}/coordinates", "message": message}],
        )
    return polygon


def _polygon_errors(geojson, path):
    if not isinstance(geojson, dict):
        return [{"path": path, "message": "Must be a GeoJSON Polygon object."}]
    if geojson.get("type") != "Polygon":
        return [{"path": f"{path}/type", "message": 'Must be "Polygon".'}]
    rings = geojson.get("coordinates")
    if not isinstance(rings, list) or not rings:
        return [{
            "path": f"{path}/coordinates",
            "message": "Must be a non-empty list of linear rings: the outline, then any holes.",
        }]
    errors = []
    for index, ring in enumerate(rings):
        error = _ring_error(ring, f"{path}/coordinates/{index}")
        if error:
            errors.append(error)
    return errors


def _ring_error(ring, path):
    if not isinstance(ring, list):
        return {"path": path, "message": "Must be a list of [longitude, latitude] positions."}
    if len(ring) < 4:
        return {"path": path, "message": (
            f"A linear ring needs at least 4 positions (3 corners, then the first repeated "
            f"to close it); this one has {len(ring)}."
        )}
    for index, position in enumerate(ring):
        if _plain_position(position):
            continue
        message = _position_error(position)
        if message:
            return {"path": f"{path}/{index}", "message": message}
    if list(ring[0]) != list(ring[-1]):
        return {
            "path": path,
            "message": "The ring is not closed: its last position must repeat its first.",
        }
    return None


def _plain_position(position):
    """The common case of a valid position, checked ~10 times faster than _position_error; False
    only means "look closer"."""
    if type(position) is not list or len(position) != 2:
        return False
    lng, lat = position
    return type(lng) in (int, float) and type(lat) in (int, float) and -180.0 <= lng <= 180.0 and -90.0 <= lat <= 90.0


def _position_error(position):
    if not (
        isinstance(position, (list, tuple))
        and len(position) == 2
        and all(_is_number(value) for value in position)
    ):
        return "Must be [longitude, latitude], two numbers."
    lng, lat = position
    # Written so that NaN fails too.
    if not -180.0 <= lng <= 180.0:
        return f"Longitude {lng} is outside [-180, 180]."
    if not -90.0 <= lat <= 90.0:
        return f"Latitude {lat} is outside [-90, 90]."
    return None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
