"""The OpenAPI 3.1 document, generated from the URL table, each handler's `docs`, and schemas/.

Nothing here is written by hand per route: a route without docs, or docs for a method the
handler does not implement, fails the test suite (tests/test_openapi.py).
"""
import copy
import json
import re

from handlers.base import MAX_BODY_MEMBERS, MAX_BODY_VALUES, BaseHandler
from handlers.docs import operation

ENVELOPE_MESSAGE = {"type": "string", "description": "Human-readable outcome."}
DESCRIPTIONS = {
    200: "OK", 201: "Created", 204: "No content",
    400: "Malformed JSON, a schema violation, or a bad or unknown query parameter",
    401: "Missing, bad, expired or revoked token, or wrong credentials",
    403: "Authenticated but not allowed (role or ownership)", 404: "Unknown resource (including a malformed id)",
    409: "State conflict", 413: "Body too large",
    415: "Unsupported content type (a JSON body needs Content-Type: application/json)",
    422: "Well-formed but refused by the domain", 429: "Rate limited; see Retry-After",
    502: "A backing service failed", 503: "Database or another backing service unavailable",
}
_GROUP = re.compile(r"\((\?P<(?P<name>\w+)>)?[^()]*\)")


def openapi_path(pattern):
    """'/api/v1/events/(?P<event_id>[^/]+)' -> ('/api/v1/events/{event_id}', ['event_id'])."""
    names = []

    def name_group(match):
        names.append(match.group("name") or f"id{len(names) + 1}")
        return "{" + names[-1] + "}"

    path = _GROUP.sub(name_group, pattern.rstrip("$"))
    return path.replace("\\", ""), names


def _schema_ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _components(schemas):
    def rewrite(node):
        if isinstance(node, dict):
            node = {k: rewrite(v) for k, v in node.items() if k != "$id"}
            if isinstance(node.get("$ref"), str) and node["$ref"].endswith(".json"):
                node["$ref"] = f"#/components/schemas/{node['$ref'][:-5]}"
            return node
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node
    return {name: rewrite(copy.deepcopy(schema)) for name, schema in schemas.items()}


def error_statuses(op, has_path_params):
    # 400 for every operation: a query parameter it does not declare is one (unknown_query_parameter).
    statuses = set(op.errors) | {400, 503}
    if op.request or op.multipart:
        statuses.add(413)
    if op.request:
        statuses.add(415)  # a body sent as anything but application/json
    if not op.public:
        statuses.add(401)
    if has_path_params:
        statuses.add(404)
    return sorted(statuses)


def _operation(handler, method, op, path_params):
    doc = {
        "operationId": f"{method}{handler.__name__.removesuffix('Handler')}",
        "summary": op.summary,
        "tags": [handler.__module__.rsplit(".", 1)[-1]],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _schema_ref("ObjectId")}
            for name in path_params
        ] + [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
            for name, schema, text in op.query
        ],
        "responses": {},
    }
    if op.description:
        doc["description"] = op.description
    doc["security"] = [] if op.public else [{"bearerAuth": []}]
    if op.request:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema_ref(op.request)}}}
    if op.multipart:
        doc["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [op.multipart],
            "properties": {op.multipart: {"type": "string", "format": "binary"}}}}}}
    success = _schema_ref(op.response or "Empty")
    if op.envelope:
        success = {"type": "object", "required": ["message", "data"],
                   "properties": {"message": ENVELOPE_MESSAGE, "data": success}}
    doc["responses"][str(op.status)] = {"description": DESCRIPTIONS.get(op.status, "OK"),
                                        "content": {op.content_type: {"schema": success}}}
    for status in error_statuses(op, bool(path_params)):
        response = {"description": DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": _schema_ref("Error")}}}
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
        doc["responses"][str(status)] = response
    return doc


def build_openapi(routes, schemas, websocket=None, notifications_websocket=None):
    """`websocket`: the chat's protocol (under `x-websocket`); `notifications_websocket`: the
    notification socket's (under `x-websocket-notifications`). Their descriptions end the info's."""
    paths = {}
    for pattern, handler in routes:
        if not issubclass(handler, BaseHandler):
            continue  # WebSocket and static routes are described in the document's extensions
        path, params = openapi_path(pattern)
        item = paths.setdefault(path, {})
        for method, op in getattr(handler, "docs", {}).items():
            item[method] = _operation(handler, method, op, params)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Event backend API",
            "version": "1.0.0",
            "description": (
                "REST API and live chat of the events app. Success answers are "
                "`{message, data}`; errors are `{message, code}` (plus `errors: [{path, message}]` "
                "for validation, each message naming the rule broken, never quoting the value sent). A "
                "query parameter an operation does not declare is a 400 `unknown_query_parameter` with "
                "`accepted` and, per parameter, the `suggestion` likely meant. Fields marked `readOnly` (an "
                "event's id, organizer, counts) are ignored in PUT and PATCH bodies, so a fetched object can "
                "be sent back. Times are ISO 8601 UTC with `Z`; ids are 24 lowercase hex characters "
                "(the old backend's ObjectIds); lists take `limit` (1..100) and an opaque `cursor`. "
                "JSON bodies are read only as `Content-Type: application/json` (415 `json_required`) and "
                f"hold at most {MAX_BODY_VALUES:,} values and {MAX_BODY_MEMBERS:,} object members (400 "
                "`body_too_complex`). A client address with `max_connections_per_address` (64 by default) "
                "connections open gets 429 `too_many_connections` on the next one, before any request is "
                "read, and a server that holds as many connections as its open-files limit allows answers "
                "503 `server_full` (`Retry-After`), also before reading anything; headers and bodies must arrive within `header_timeout_seconds` (20) and "
                "`body_timeout_seconds` (120).\n\n"
                + (websocket or {}).get("description", "")
                + "\n" + (notifications_websocket or {}).get("description", "")),
        },
        # Relative: the server that served the document, whatever host, port or proxy it is reached
        # through; the /docs page sends its "try it" requests there.
        "servers": [{"url": "/", "description": "This server"}],
        "paths": paths,
        "components": {
            "schemas": _components(schemas),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
    if websocket:
        document["x-websocket"] = websocket
    if notifications_websocket:
        document["x-websocket-notifications"] = notifications_websocket
    return document


class OpenApiHandler(BaseHandler):
    authentication = "none"
    docs = {"get": operation("This OpenAPI document", response="Empty", public=True, envelope=False)}

    def get(self):
        self.finish(json.dumps(self.services.openapi))


ROUTES = [(r"/api/v1/openapi.json", OpenApiHandler)]
