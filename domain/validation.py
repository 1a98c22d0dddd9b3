"""Request validation against the JSON Schemas in schemas/, each compiled once per process.

Schema files name themselves by `$id` (their file name) and refer to each other by it, so the
same files serve validation here and the OpenAPI document's components.
"""
import difflib
import functools
import itertools
import json
import math
import pathlib

import jsonschema
import jsonschema._utils  # equal(): JSON equality as the enum keyword has it (1 != true)
import referencing
from jsonschema.exceptions import ValidationError

from domain.errors import InvalidInput
from domain.times import ISO_TIME_RULE

SCHEMA_DIR = pathlib.Path(__file__).resolve().parent.parent / "schemas"
# Enough to fix a request; a body with thousands of mistakes gets the first ones, not an echo.
MAX_REPORTED_ERRORS = 20
MAX_MESSAGE_LENGTH = 200
# A field name longer than this is shortened in an error's path: the path names the field, it
# does not echo a megabyte-long key back.
MAX_PATH_PART = 64


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


def _too_long(keyword, is_over):
    """maxItems and maxLength without building jsonschema's message, which is the repr of the whole
    array or string: ~20 ms of the loop for a 100,000-position array."""
    def check(validator, limit, instance, schema):
        if is_over(validator, instance, limit):
            yield ValidationError(_wording(keyword, limit, schema))
    return check


def _listed(types):
    return types if isinstance(types, list) else [types]


def _type(validator, types, instance, schema):
    types = _listed(types)
    if not any(validator.is_type(instance, kind) for kind in types):
        yield ValidationError(_wording("type", types, schema))


def _enum(validator, choices, instance, schema):
    if not any(jsonschema._utils.equal(choice, instance) for choice in choices):
        yield ValidationError(_wording("enum", choices, schema))


def _required(validator, required, instance, schema):
    # The error's path is the missing field's own, as it is for a field that is there but wrong.
    if validator.is_type(instance, "object"):
        for name in required:
            if name not in instance:
                yield ValidationError("is required", path=[name])


def _additional_properties(validator, allowed, instance, schema):
    """One error per unknown field, at its own path, with the known field it most likely meant."""
    if allowed is not False or not validator.is_type(instance, "object"):
        yield from jsonschema.Draft202012Validator.VALIDATORS["additionalProperties"](
            validator, allowed, instance, schema)
        return
    known = schema.get("properties", {})
    writable = [name for name, field in known.items() if not field.get("readOnly")]
    for name in instance:
        if name not in known:
            meant = closest_name(name, writable)
            yield ValidationError(f"unknown field; did you mean {meant}?" if meant else "unknown field", path=[name])


def _worded(keyword, check=None):
    """`keyword`'s check (or `check`), its error worded for people: the rule, never the value."""
    check = check or jsonschema.Draft202012Validator.VALIDATORS[keyword]

    def worded(validator, value, instance, schema):
        if next(check(validator, value, instance, schema), None) is not None:
            yield ValidationError(_wording(keyword, value, schema))
    return worded


# The messages say what the field must be, from the schema alone, and never quote the value
# sent: the client has it; a quoted password, reset token or email lands in client logs, crash
# reports and screenshots; and quoting a 100,000-position array costs the loop more than parsing
# it. So no secret field needs a list of its own, and no message is longer for a longer value.
_TYPE_WORDS = {"string": "a string", "number": "a number", "integer": "a whole number", "boolean": "true or false",
               "object": "an object", "array": "a list", "null": "null"}
_PLURAL = {"characters": "character", "items": "item", "fields": "field"}


def _amount(count, unit):
    return f"{count} {_PLURAL[unit] if count == 1 else unit}"


def _number(value):
    return str(int(value)) if float(value).is_integer() else str(value)


def _range(schema):
    kind = "a whole number" if "integer" in _listed(schema.get("type", [])) else "a number"
    if "minimum" in schema and "maximum" in schema:
        return f"must be {kind} from {_number(schema['minimum'])} to {_number(schema['maximum'])}"
    if "minimum" in schema:
        return f"must be {kind} of at least {_number(schema['minimum'])}"
    return f"must be {kind} of at most {_number(schema['maximum'])}"


_WORDING = {
    "type": lambda types, schema: "must be " + " or ".join(_TYPE_WORDS.get(kind, kind) for kind in types),
    "enum": lambda choices, schema: "must be one of " + ", ".join(json.dumps(choice) for choice in choices),
    "const": lambda value, schema: f"must be {json.dumps(value)}",
    "minLength": lambda limit, schema: f"must be at least {_amount(limit, 'characters')}" if limit > 1
    else "must not be empty",
    "maxLength": lambda limit, schema: f"must be at most {_amount(limit, 'characters')}",
    "minItems": lambda limit, schema: f"must have at least {_amount(limit, 'items')}",
    "maxItems": lambda limit, schema: f"must have at most {_amount(limit, 'items')}",
    "minProperties": lambda limit, schema: f"must have at least {_amount(limit, 'fields')}" + (
        " besides the read-only ones" if any(rule.get("readOnly") for rule in schema.get("properties", {}).values())
        else ""),
    "minimum": lambda limit, schema: _range(schema),
    "maximum": lambda limit, schema: _range(schema),
    "format": lambda name, schema: f"must be {ISO_TIME_RULE}" if name == "date-time" else f"must be a valid {name}",
    # Never the pattern itself: a regular expression teaches few people what to send.
    "pattern": lambda pattern, schema: schema[PATTERN_WORDING],
}
# Every `pattern` in schemas/ says in words what it asks for, under this key (an OpenAPI
# specification extension: tools that do not know it ignore it, as JSON Schema does).
PATTERN_WORDING = "x-pattern-message"


def _wording(keyword, value, schema):
    return _WORDING[keyword](value, schema)


_CappedValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {
    "type": _type,
    "enum": _enum,
    "required": _required,
    "additionalProperties": _additional_properties,
    "items": _items,
    "anyOf": _any_of,
    "maxItems": _too_long("maxItems", _array_over),
    "maxLength": _too_long("maxLength", _string_over),
    "prefixItems": _within_length("prefixItems", "maxItems", _array_over),
    "pattern": _worded("pattern", _within_length("pattern", "maxLength", _string_over)),
    "format": _worded("format", _within_length("format", "maxLength", _string_over)),
    **{keyword: _worded(keyword) for keyword in ("const", "minLength", "minItems", "minProperties", "minimum",
                                                 "maximum")},
})


def closest_name(name, known, aliases=None):
    """The name in `known` that `name` most likely meant: its alias (`radius` -> `radius_km`),
    else the closest spelling, ignoring case; None when nothing is close."""
    meant = (aliases or {}).get(name.lower())
    if meant in known:
        return meant
    if len(name) > MAX_PATH_PART:
        return None
    by_lower = {candidate.lower(): candidate for candidate in known}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


class Validator:
    def __init__(self, schemas):
        self.schemas = schemas
        registry = referencing.Registry().with_resources(
            (f"{name}.json", referencing.Resource.from_contents(schema, referencing.jsonschema.DRAFT202012))
            for name, schema in schemas.items())
        self._validators = {}
        self._read_only = {}
        for name, schema in schemas.items():
            _CappedValidator.check_schema(schema)
            _check_patterns_worded(name, schema)
            self._validators[name] = _CappedValidator(
                schema, registry=registry, format_checker=_CappedValidator.FORMAT_CHECKER)
            self._read_only[name] = frozenset(
                field for field, rule in schema.get("properties", {}).items() if rule.get("readOnly"))

    def validate_request(self, name, document):
        """validate() for a document a client sent: without its read-only fields.

        A top-level field the schema marks `readOnly` (the server's own: an event's id, organizer,
        counts) is dropped unchecked, as if it had not been sent, so that an object can be sent back
        as it was fetched; dropped, it cannot change anything, whatever its value. Any other field
        the schema does not know is still refused."""
        ignored = self._read_only[name]
        if ignored and isinstance(document, dict):
            document = {field: value for field, value in document.items() if field not in ignored}
        return self.validate(name, document)

    def validate(self, name, document):
        """Returns the document when it fits schemas/<name>.json, else raises InvalidInput listing why."""
        # The first errors only: a body with thousands of mistakes is not walked to its end.
        found = itertools.islice(self._validators[name].iter_errors(document), MAX_REPORTED_ERRORS)
        errors = sorted(found, key=lambda e: list(e.absolute_path))
        if errors:
            raise InvalidInput("The request does not match the expected shape.",
                               errors=[_describe(e) for e in errors], code="validation_failed")
        return document


def _check_patterns_worded(name, node):
    """Refuses a schema with a `pattern` that does not say in words what it asks for."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str) and not isinstance(node.get(PATTERN_WORDING), str):
            raise ValueError(f"schemas/{name}.json: a pattern without its {PATTERN_WORDING}")
        node = list(node.values())
    for child in node if isinstance(node, list) else ():
        _check_patterns_worded(name, child)


def _describe(error):
    if error.validator == "anyOf" and error.context:
        if all(alternative.validator == "type" for alternative in error.context):
            # Of none of the types: "must be an object or null", not the first type alone.
            types = [kind for alternative in error.context for kind in _listed(alternative.validator_value)]
            error.message = _wording("type", types, error.schema)
        else:
            # The alternative the value went furthest into is the one meant (a polygon, not null).
            error = max(error.context, key=lambda alternative: len(alternative.absolute_path))
    path = "".join(f"/{shortened_name(part)}" for part in error.absolute_path)
    return {"path": path or "/", "message": error.message[:MAX_MESSAGE_LENGTH]}


def shortened_name(part):
    """A field or parameter name as an error shows it: whole, unless it is longer than any real one."""
    part = str(part)
    return part if len(part) <= MAX_PATH_PART else part[:MAX_PATH_PART] + "…"
