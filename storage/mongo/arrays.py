"""The old backend's arrays (users' `following`, `followers`, `created_events`, `rsvped_events`;
events' `rsvps`, `arrivals`, `photo_gallery`, `photos`): the one rule for reading and changing
them, since its documents may hold any of them as null, or lack them.

MongoDB's $push, $addToSet and $pull refuse a field that holds null ("Cannot apply $addToSet to
non-array field", "Cannot apply $pull to a non-array value"), and $size and $in refuse a null
operand. So every read of such an array goes through `array`, which reads null or absent as
empty, and every change is an update pipeline stage (MongoDB 4.2) that rewrites the field from
`array`: the array is made and changed in the one update, on the one document, under the rest of
that update's conditions, so no write fails on an old document after another one has been made.
A field it changes is an array afterwards, also where it was absent. Values go in as $literal,
so that none is read as a field path or an operator.
"""


def array(field):
    """Aggregation: the document's `field`, an empty array where it is null or absent."""
    return {"$ifNull": [f"${field}", []]}


def pushed(field, *values):
    """Aggregation: `field` with `values` appended, as $push appends them."""
    return {"$concatArrays": [array(field), {"$literal": list(values)}]}


def added(field, value):
    """Aggregation: `field` with `value` appended unless it holds it already, as $addToSet."""
    return {"$cond": [{"$in": [{"$literal": value}, array(field)]}, array(field), pushed(field, value)]}


def pulled(field, value):
    """Aggregation: `field` without any item equal to `value`, as $pull removes them."""
    return {"$filter": {"input": array(field), "cond": {"$ne": ["$$this", {"$literal": value}]}}}
