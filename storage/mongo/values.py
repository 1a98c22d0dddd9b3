"""How domain values cross into MongoDB and back: ids are 24-hex `str` outside and ObjectIds
inside (the old backend's documents hold ObjectIds), times are aware UTC outside."""
import datetime
import re

import bson

from domain.times import as_utc

_ID = re.compile(r"[0-9a-f]{24}")


def object_id(text):
    """The ObjectId a domain id names, or None for a text that is not an id, which finds nothing.
    Upper-case hex is not an id either: ids are lower case, as every store hands them out."""
    if isinstance(text, str) and _ID.fullmatch(text):
        return bson.ObjectId(text)
    return None


def stored_id(text):
    """The ObjectId to store for an id the domain hands over (None stays None). A text that is
    not an id cannot refer to anything: storing it would be a bug in the caller."""
    if text is None:
        return None
    value = object_id(text)
    if value is None:
        raise ValueError(f"not an id: {text!r}")
    return value


def id_text(value):
    """The domain's id of a stored id (None stays None)."""
    return None if value is None else str(value)


def aware(moment):
    """A stored time as an aware UTC datetime: a client without tz_aware hands back naive ones.
    Anything else the old backend may have stored (a date as a string) reads as no time, never
    as a failure; `python -m storage.check` reports it."""
    return as_utc(moment) if isinstance(moment, datetime.datetime) else None
