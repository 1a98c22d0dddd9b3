"""How a handler documents its operations; the OpenAPI document is generated from these.

A handler class sets `docs = {"post": operation(...), ...}`, one entry per HTTP method it
implements. Schemas are named by their file in schemas/ (without .json).
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Operation:
    summary: str
    request: str = None          # schema of the JSON body, e.g. "RegisterRequest"
    response: str = None         # schema of the envelope's `data`, e.g. "AuthResult"
    status: int = 200            # the success status
    errors: tuple = ()           # the 4xx/5xx statuses this operation can answer, besides the common ones
    query: tuple = ()            # (name, schema dict, description) for each query parameter
    public: bool = False         # True when no bearer token is needed
    multipart: str = None        # for uploads: the multipart field name
    description: str = ""
    envelope: bool = True        # False: the body is the response schema itself, not {message, data}
    content_type: str = "application/json"


def operation(summary, **fields):
    fields["errors"] = tuple(fields.get("errors", ()))
    fields["query"] = tuple(fields.get("query", ()))
    return Operation(summary, **fields)
