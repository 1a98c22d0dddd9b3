"""Request validation against the JSON Schemas in schemas/, each compiled once per process.

Schema files name themselves by `$id` (their file name) and refer to each other by it, so the
same files serve validation here and the OpenAPI document's components.
"""
import functools
import json
import pathlib

import jsonschema
import referencing

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


_CappedValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {
    "items": _within_length("items", "maxItems", _array_over),
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
        errors = sorted(self._validators[name].iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            raise InvalidInput("The request does not match the expected shape.",
                               errors=[_describe(e) for e in errors[:MAX_REPORTED_ERRORS]], code="validation_failed")
        return document


def _describe(error):
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
