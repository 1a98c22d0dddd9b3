"""Request validation against the JSON Schemas in schemas/, each compiled once at start.

Schema files name themselves by `$id` (their file name) and refer to each other by it, so the
same files serve validation here and the OpenAPI document's components.
"""
import json
import pathlib

import jsonschema
import referencing

from domain.errors import InvalidInput

SCHEMA_DIR = pathlib.Path(__file__).resolve().parent.parent / "schemas"


def load_schemas(directory=SCHEMA_DIR):
    """{name: schema} for every schemas/*.json, name being the file name without .json."""
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if schema.get("$id") != path.name:
            raise ValueError(f"{path}: $id must be {path.name!r}")
        schemas[path.stem] = schema
    return schemas


class Validator:
    def __init__(self, schemas):
        self.schemas = schemas
        registry = referencing.Registry().with_resources(
            (f"{name}.json", referencing.Resource.from_contents(schema, referencing.jsonschema.DRAFT202012))
            for name, schema in schemas.items())
        self._validators = {}
        for name, schema in schemas.items():
            jsonschema.Draft202012Validator.check_schema(schema)
            self._validators[name] = jsonschema.Draft202012Validator(
                schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    def validate(self, name, document):
        """Returns the document when it fits schemas/<name>.json, else raises InvalidInput listing why."""
        errors = sorted(self._validators[name].iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            raise InvalidInput("The request does not match the expected shape.",
                               errors=[_describe(e) for e in errors], code="validation_failed")
        return document


def _describe(error):
    path = "".join(f"/{part}" for part in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unexpected = sorted(k for k in error.instance if k not in allowed)
        return {"path": f"{path}/{unexpected[0]}" if unexpected else path or "/",
                "message": f"unknown field: {', '.join(unexpected)}"}
    message = error.message
    if len(message) > 200:  # jsonschema quotes the whole offending value; keep the answer short
        message = f"{error.validator} {error.validator_value!r} failed"[:200]
    return {"path": path or "/", "message": message}
