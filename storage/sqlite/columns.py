"""How domain values are kept in SQLite columns: times as INTEGER milliseconds since the Unix
epoch (UTC), which holds every time of years 1 to 9999 exactly; GeoJSON as JSON text."""
import datetime
import json

from domain.times import UTC

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = datetime.timedelta(milliseconds=1)


def to_ms(moment):
    """Milliseconds since the epoch (floored) of an aware datetime; a naive one is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Subtracting aware datetimes never converts either to another zone, so years 1 and 9999
    # cannot overflow here.
    return (moment - EPOCH) // MILLISECOND


def from_ms(milliseconds):
    """The aware UTC datetime of a stored time."""
    if milliseconds is None:
        return None
    return EPOCH + datetime.timedelta(milliseconds=milliseconds)


def to_json(value):
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"))


def from_json(text):
    if text is None:
        return None
    return json.loads(text)


def ms_delta(duration):
    """A timedelta as whole milliseconds."""
    return duration // MILLISECOND
