"""How domain values are kept in SQLite columns: times as INTEGER milliseconds since the Unix
epoch (UTC), which holds every time of years 1 to 9999 exactly (`domain.times.epoch_ms`, the
same conversion cursors use); GeoJSON as JSON text."""
import datetime
import json

from domain.times import epoch_ms, from_epoch_ms

_MILLISECOND = datetime.timedelta(milliseconds=1)


def to_ms(moment):
    """Milliseconds since the epoch (floored) of a time; a naive one is taken as UTC."""
    return None if moment is None else epoch_ms(moment)


def from_ms(milliseconds):
    """The aware UTC datetime of a stored time."""
    return None if milliseconds is None else from_epoch_ms(milliseconds)


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
    return duration // _MILLISECOND
