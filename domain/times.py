"""Times: always aware UTC inside, ISO 8601 with `Z` on the wire."""
import datetime

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = datetime.timedelta(milliseconds=1)
# How every refusal of an input time words the rule, in a body or a query string alike.
ISO_TIME_RULE = "an ISO 8601 time with Z or an offset, e.g. 2026-12-03T07:33:43Z"


def utcnow():
    # Stores keep milliseconds (domain/repositories.py); truncating here makes a stored time
    # equal to the one we return.
    now = datetime.datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(moment):
    """The moment in UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_iso(moment):
    if moment is None:
        return None
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text):
    """An aware UTC datetime from ISO 8601 text with an offset; None when the text is not one,
    including times whose UTC equivalent falls outside years 1-9999 (0001-01-01T00:00+01:00)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        if moment.tzinfo is None:
            return None
        return as_utc(moment).replace(microsecond=moment.microsecond // 1000 * 1000)
    except (ValueError, OverflowError):
        return None


def epoch_ms(moment):
    """Whole milliseconds since 1970 (negative before): how cursors and SQLite write a time."""
    return (as_utc(moment) - EPOCH) // _MILLISECOND


def from_epoch_ms(milliseconds):
    """The time `epoch_ms` wrote; OverflowError beyond years 1-9999."""
    return EPOCH + datetime.timedelta(milliseconds=milliseconds)
