"""What the tests' MongoDB double lacks and the MongoDB adapter uses, added as MongoDB's manual
describes it, so that the adapter runs whole in every test run, not only where a real server is
(TEST_MONGO_URI): the $geoNear stage, and createIndexes' commitQuorum option.

createIndexes: mongomock's create_indexes takes no command options and drops every index option
but a few (partialFilterExpression among them); this one keeps each index's options, as
create_index does, and takes commitQuorum, building as a replica set whose members are all up
would (its meaning for a standalone is tested on the wire in tests/test_mongo_store.py).

$geoNear. What it keeps of the real stage: it must be the first stage; it fails as MongoDB does
without a 2dsphere index on `key` (NoQueryExecutionPlans, code 291); it applies `query`; it keeps the
documents whose `location` is at least `minDistance` and at most `maxDistance` metres away;
it writes each distance to `distanceField`; and it emits them nearest first. Distances are
great-circle ones on the 6378100 m sphere, which `spherical: true` over a 2dsphere index uses
and domain.geo.distance_m computes. What the manual leaves open, the double makes adversarial:
documents at equal distances come in a random order, so code that relies on an order MongoDB
does not promise fails here. What it does not model: the index's approximate cover (the
adapter's slack for it is argued in storage/mongo/events.py) and the stage's streaming (only
the results count here, not what the server reads).

Two aggregation expressions the waitlist's promotion uses: `$slice` whose position and count are
expressions (mongomock takes integer literals only; MongoDB evaluates them, and refuses a count
that is not positive), and `$indexOfArray` (absent from mongomock): the first index at which the
array holds the value, else -1; a null or missing array gives null.

Two set expressions the attendee lists use, absent from mongomock: `$setIntersection` (the values
in every array) and `$setDifference` (those of the first array not in the second), each without
duplicates, null when an argument is null or missing. Their order the manual leaves open, so the
double returns them shuffled.
"""
import random
import uuid

import mongomock.aggregate
import mongomock.collection
from pymongo.errors import OperationFailure

from domain.geo import distance_m

_aggregate = mongomock.collection.Collection.aggregate


def _geo_near(collection, stage):
    key = stage.get("key", "location")
    if not any(spec["key"] == [(key, "2dsphere")] for spec in collection.index_information().values()):
        raise OperationFailure("$geoNear requires a 2d or 2dsphere index, but none were found", code=291)
    lng, lat = stage["near"]["coordinates"]
    nearest, farthest = stage.get("minDistance", 0.0), stage.get("maxDistance", float("inf"))
    found = []
    for document in collection.find(stage.get("query", {})):
        location = document.get(key) or {}
        if location.get("type") != "Point":
            continue
        distance = distance_m(lng, lat, *location["coordinates"])
        if nearest <= distance <= farthest:
            found.append({**document, stage["distanceField"]: distance})
    random.shuffle(found)
    return sorted(found, key=lambda document: document[stage["distanceField"]])  # stable: ties stay shuffled


def aggregate(self, pipeline, *args, **kwargs):
    if not pipeline or "$geoNear" not in pipeline[0]:
        return _aggregate(self, pipeline, *args, **kwargs)
    # The rest of the pipeline runs on mongomock's own stages, over the stage's output in its order.
    scratch = self.database[f"geo_near_{uuid.uuid4().hex}"]
    try:
        found = _geo_near(self, pipeline[0]["$geoNear"])
        if found:
            scratch.insert_many(found)
        return iter(list(_aggregate(scratch, pipeline[1:], *args, **kwargs)))
    finally:
        scratch.drop()


def create_indexes(self, indexes, session=None, commitQuorum=None):  # noqa: N803 (the command's name)
    built = []
    for index in indexes:
        options = dict(index.document)
        built.append(self.create_index(list(options.pop("key").items()), session=session, **options))
    return built


_array_operator = mongomock.aggregate._Parser._handle_array_operator


def _handle_array_operator(parser, operator, value):
    if operator == "$slice" and isinstance(value, list):
        value = [value[0], *(parser.parse(argument) for argument in value[1:])]
    if operator == "$indexOfArray":
        array, searched = parser.parse(value[0]), parser.parse(value[1])
        if array is None:
            return None
        return next((index for index, item in enumerate(array) if item == searched), -1)
    return _array_operator(parser, operator, value)


mongomock.aggregate._Parser._handle_array_operator = _handle_array_operator

_set_operator = mongomock.aggregate._Parser._handle_set_operator


def _handle_set_operator(parser, operator, values):
    if operator not in ("$setIntersection", "$setDifference"):
        return _set_operator(parser, operator, values)
    arrays = [parser.parse(value) for value in values]
    if any(array is None for array in arrays):
        return None
    first, others = arrays[0], arrays[1:]
    if operator == "$setIntersection":
        kept = [value for value in first if all(value in other for other in others)]
    else:
        kept = [value for value in first if value not in others[0]]
    result = []
    for value in kept:
        if value not in result:
            result.append(value)
    random.shuffle(result)
    return result


mongomock.aggregate._Parser._handle_set_operator = _handle_set_operator
mongomock.collection.Collection.aggregate = aggregate
mongomock.collection.Collection.create_indexes = create_indexes
