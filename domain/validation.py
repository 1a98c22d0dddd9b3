"""Request validation against the JSON Schemas in schemas/, each compiled once per process.

Schema files name themselves by `$id` (their file name) and refer to each other by it, so the
same files serve validation here and the OpenAPI document's components.
"""
import functools
import itertools
import json
import math
import pathlib
import reprlib

import jsonschema
import jsonschema._utils  # equal(): JSON equality as the enum keyword has it (1 != true)
import referencing
from jsonschema.exceptions import ValidationError

from domain.errors import InvalidInput

SCHEMA_DIR = pathlib.Path(__file__).resolve().parent.parent / "schemas"
# Enough to fix a request; a body with thousands of mistakes gets the first ones, not an echo.
MAX_REPORTED_ERRORS = 20
MAX_MESSAGE_LENGTH = 200


def load_schemas(directory=SCHEMA_DIR):
    """{name: schema} for every schemas/*.json, name being the file name without .json."""
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if schema.get("$id") != path.name:
            raise ValueError(f"{path}: $id must be {path.name!r}")
        schemas[path.stem] = schema
    return schemas


@functools.cache
def schema_validator(directory=SCHEMA_DIR):
    """The Validator of the schemas in `directory`, loaded and checked on the first call only:
    the files do not change while the process runs, and checking them all takes a while."""
    return Validator(load_schemas(directory))


def _within_length(keyword, limit_keyword, is_over):
    """`keyword`, skipped on a value already over its own size cap: that cap refuses the value, and
    the skipped work is what an attacker wants done (a 100,000-vertex ring checked point by point,
    a backtracking pattern run over a megabyte)."""
    check = jsonschema.Draft202012Validator.VALIDATORS[keyword]

    def capped(validator, value, instance, schema):
        if limit_keyword in schema and is_over(validator, instance, schema[limit_keyword]):
            return
        yield from check(validator, value, instance, schema)
    return capped


def _array_over(validator, instance, limit):
    return validator.is_type(instance, "array") and len(instance) > limit


def _string_over(validator, instance, limit):
    return validator.is_type(instance, "string") and len(instance) > limit


# Keywords a schema may use and still be checked by a plain predicate (see _fast_check).
_FAST_KEYWORDS = {"type", "minimum", "maximum", "minItems", "maxItems", "prefixItems", "items", "title", "description"}
_fast_checks = {}


def _fast_check(schema):
    """A predicate true exactly when `schema` holds, for the small schemas geometry is made of
    (arrays of bounded numbers); None for any other schema. jsonschema spends ~30 us walking one
    [lng, lat] position: a 5,000-position venue polygon took 160 ms of the event loop, valid or not."""
    if not isinstance(schema, dict) or set(schema) - _FAST_KEYWORDS:
        return None
    if schema.get("type") == "number":
        low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
        # type(), not isinstance: JSON's true and false are not numbers (bool is an int subclass).
        return lambda value: type(value) in (int, float) and low <= value <= high
    if schema.get("type") != "array":
        return None
    shortest, longest = schema.get("minItems", 0), schema.get("maxItems", math.inf)
    prefix = [_fast_check(item) for item in schema.get("prefixItems", [])]
    rest = _fast_check(schema["items"]) if "items" in schema else (lambda value: True)
    if None in prefix or rest is None:
        return None

    def check(value):
        if type(value) is not list or not shortest <= len(value) <= longest:
            return False
        for fits, item in zip(prefix, value):
            if not fits(item):
                return False
        for index in range(len(prefix), len(value)):
            if not rest(value[index]):
                return False
        return True
    return check


def _cached_fast_check(schema):
    cached = _fast_checks.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _fast_checks[id(schema)] = (schema, _fast_check(schema))
    return cached[1]


def _items(validator, items, instance, schema):
    """`items`, capped like the others, and with the items a plain predicate accepts skipped: only
    the ones it refuses are walked by jsonschema, for their error messages."""
    if not validator.is_type(instance, "array") or ("maxItems" in schema and len(instance) > schema["maxItems"]):
        return
    fits = _cached_fast_check(items)
    prefix = len(schema.get("prefixItems", []))
    if items is False or fits is None:
        yield from jsonschema.Draft202012Validator.VALIDATORS["items"](validator, items, instance, schema)
        return
    for index in range(prefix, len(instance)):
        if not fits(instance[index]):
            yield from validator.descend(instance=instance[index], schema=items, path=index)


def _any_of(validator, any_of, instance, schema):
    """jsonschema lists every error of every alternative before reporting that none fits (5,000
    for a polygon with every position wrong), and quotes the whole value in the message. The
    first error of each alternative tells as much."""
    first_errors = []
    for index, alternative in enumerate(any_of):
        error = next(validator.descend(instance, alternative, schema_path=index), None)
        if error is None:
            return
        first_errors.append(error)
    yield ValidationError("is not valid under any of the allowed forms", context=first_errors)


def _too_long(is_over, unit):
    """maxItems and maxLength without quoting the value: jsonschema's message is the repr of the
    whole array or string, ~20 ms of the loop for a 100,000-position array."""
    def check(validator, limit, instance, schema):
        if is_over(validator, instance, limit):
            yield ValidationError(f"is too long (at most {limit} {unit})")
    return check


# A value quoted in an error message is quoted short: jsonschema quotes it whole, and the repr of
# a 100,000-position array where a null or a string belongs takes longer than the 20 ms budget.
_quoting = reprlib.Repr()
_quoting.maxlevel, _quoting.maxlist, _quoting.maxdict, _quoting.maxstring, _quoting.maxother = 2, 4, 4, 60, 60
_short = _quoting.repr


def _type(validator, types, instance, schema):
    types = types if isinstance(types, list) else [types]
    if not any(validator.is_type(instance, kind) for kind in types):
        yield ValidationError(f"{_short(instance)} is not of type {', '.join(map(repr, types))}")


def _enum(validator, choices, instance, schema):
    if not any(jsonschema._utils.equal(choice, instance) for choice in choices):
        yield ValidationError(f"{_short(instance)} is not one of {_short(choices)}")


_CappedValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {
    "type": _type,
    "enum": _enum,
    "items": _items,
    "anyOf": _any_of,
    "maxItems": _too_long(_array_over, "items"),
    "maxLength": _too_long(_string_over, "characters"),
    "prefixItems": _within_length("prefixItems", "maxItems", _array_over),
    "pattern": _within_length("pattern", "maxLength", _string_over),
    "format": _within_length("format", "maxLength", _string_over),
})


class Validator:
    def __init__(self, schemas):
        self.schemas = schemas
        registry = referencing.Registry().with_resources(
            (f"{name}.json", referencing.Resource.from_contents(schema, referencing.jsonschema.DRAFT202012))
            for name, schema in schemas.items())
        self._validators = {}
        for name, schema in schemas.items():
            _CappedValidator.check_schema(schema)
            self._validators[name] = _CappedValidator(
                schema, registry=registry, format_checker=_CappedValidator.FORMAT_CHECKER)

    def validate(self, name, document):
        """Returns the document when it fits schemas/<name>.json, else raises InvalidInput listing why."""
        # The first errors only: a body with thousands of mistakes is not walked to its end.
        found = itertools.islice(self._validators[name].iter_errors(document), MAX_REPORTED_ERRORS)
        errors = sorted(found, key=lambda e: list(e.absolute_path))
        if errors:
            raise InvalidInput("The request does not match the expected shape.",
                               errors=[_describe(e) for e in errors], code="validation_failed")
        return document


def _describe(error):
    if error.validator == "anyOf" and error.context:
        # The alternative the value went furthest into is the one meant (a polygon, not null).
        error = max(error.context, key=lambda alternative: len(alternative.absolute_path))
    path = "".join(f"/{part}" for part in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unexpected = sorted(k for k in error.instance if k not in allowed)
        return {"path": f"{path}/{unexpected[0]}" if unexpected else path or "/",
                "message": f"unknown field: {', '.join(unexpected)}"[:MAX_MESSAGE_LENGTH]}
    message = error.message
    if len(message) > MAX_MESSAGE_LENGTH:  # jsonschema quotes the whole offending value; keep the answer short
        message = f"{error.validator} {error.validator_value!r} failed"[:MAX_MESSAGE_LENGTH]
    return {"path": path or "/", "message": message}
