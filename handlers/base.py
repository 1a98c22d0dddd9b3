"""The handler base every endpoint shares: body limits, JSON in and out, authentication, errors."""
import asyncio
import ipaddress
import json
import logging
import re
import uuid

import tornado.web

from domain.errors import Forbidden, InvalidInput, NotAuthenticated, TooLarge, UnsupportedMediaType
from handlers.errors import error_response, write_error_response
from handlers.logs import request_id_var
from handlers.query import refuse_unknown_query

log = logging.getLogger("handlers")

_REQUEST_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# ASCII digits only: str.isdigit() and int() also take "²" and other Unicode digits.
_CONTENT_LENGTH = re.compile(r"[0-9]+")
# More JSON values than any request needs (an event with the largest venue polygon, 5 rings of
# 1,000 positions, has ~21,000 counting its description's commas). Parsing 1 MiB of tiny values
# takes the loop 50-100 ms; counted before parsing, 25,000 of them take a few. Object members
# cost the parser ~7 times a list item: no body has more than a few dozen, but a colon in the
# 5,000 characters of a description counts as one too.
MAX_BODY_VALUES = 25_000
MAX_BODY_MEMBERS = 6_000
# Bodies above this are parsed off the loop by large_json_body (16 kB parse and validate in ~1 ms).
OFF_LOOP_BODY_BYTES = 16 * 1024


def address_in(address, networks):
    """Whether an address is one of the listed addresses or networks (e.g. 10.0.0.0/8)."""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(entry, strict=False) for entry in networks)


def client_address(request, trusted_proxies):
    """The client's address: X-Forwarded-For is believed only when a trusted proxy sent it."""
    address = request.remote_ip
    if not address_in(address, trusted_proxies):
        return address
    # Walk the chain from the nearest hop; the first hop that is not a trusted proxy is the client.
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        address = hop
        if not address_in(hop, trusted_proxies):
            break
    return address


def bearer_token(request):
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def implemented_methods(handler_class):
    """The HTTP methods a handler class answers (lower case), CORS preflight aside."""
    return [m.lower() for m in handler_class.SUPPORTED_METHODS if m != "OPTIONS"
            and getattr(handler_class, m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())]


def client_protocol(request, trusted_proxies):
    """http or https as the client connected: X-Forwarded-Proto is believed only from a trusted proxy."""
    if not address_in(request.remote_ip, trusted_proxies):
        return request.protocol
    # The nearest proxy's value is the last one; it is the one that proxy vouches for.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    return forwarded if forwarded in ("http", "https") else request.protocol


def _refuse_constant(name):
    # Python's json reads NaN and Infinity, which JSON does not have and no range check refuses.
    raise ValueError(f"{name} is not JSON")


# Streaming the body lets us refuse an oversize one from its headers, before it is buffered.
@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    # "required": a valid bearer token or 401; "none": public endpoint.
    authentication = "required"

    def initialize(self, services, route=None):
        self.services = services
        services.inflight += 1
        self._counted = True
        self.config = services.settings
        self.route_name = route
        self._body = bytearray()
        self.claims = None
        self.request_id = self._incoming_request_id() or uuid.uuid4().hex
        self.request.protocol = client_protocol(self.request, self.config.trusted_proxies)
        request_id_var.set(self.request_id)
        self.set_default_headers()  # again, now that the request id and settings are known

    # --- response basics -------------------------------------------------------------------

    def set_default_headers(self):
        self.clear_header("Server")  # no version banner
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        if not hasattr(self, "services"):  # Tornado calls this once before initialize()
            return
        self.set_header("X-Request-ID", self.request_id)
        origin = self.request.headers.get("Origin")
        if origin and origin in self.config.allowed_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_header("Vary", "Origin")

    def _incoming_request_id(self):
        # Accept a proxy's request id so one id follows a request across hops, if it is sane.
        incoming = self.request.headers.get("X-Request-ID", "")
        if 8 <= len(incoming) <= 64 and set(incoming) <= _REQUEST_ID_CHARS:
            return incoming
        return None

    def on_finish(self):
        self._uncount()

    def on_connection_close(self):
        self._uncount()

    def _uncount(self):
        if getattr(self, "_counted", False):
            self._counted = False
            self.services.inflight -= 1

    def compute_etag(self):
        return None  # responses are per user and not cached (Cache-Control: no-store)

    def reply(self, data=None, message="OK", status=200):
        self.set_status(status)
        self.finish(json.dumps({"message": message, "data": data if data is not None else {}}))

    def write_error(self, status_code, **kwargs):
        if status_code == 405:
            self.set_header("Allow", ", ".join(m.upper() for m in implemented_methods(type(self))))
        write_error_response(self, status_code, kwargs.get("exc_info"))

    def log_exception(self, typ, value, tb):
        status = error_response(value)[0]
        if status >= 500 and status != 503:
            log.error("unhandled error in %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))
        elif status == 503:
            log.warning("backing service unavailable: %s", type(value).__name__)

    # --- request ---------------------------------------------------------------------------

    def body_limit(self):
        return self.config.max_body_bytes

    async def prepare(self):
        limit = self.body_limit()
        length = self.request.headers.get("Content-Length", "0")
        if not _CONTENT_LENGTH.fullmatch(length):
            raise InvalidInput("Content-Length must be a number of bytes.", code="malformed_content_length")
        if int(length) > limit:
            raise TooLarge(f"The request body is larger than {limit} bytes.")
        if self.request.method == "OPTIONS":
            return
        if self.authentication == "required":
            await self.authenticate()
        documented = getattr(self, "docs", {}).get(self.request.method.lower())
        if documented is not None:  # else the method is not served: Tornado's 405 follows
            refuse_unknown_query(self.request.query_arguments, documented.query)

    def data_received(self, chunk):
        if len(self._body) + len(chunk) > self.body_limit():
            # Chunked bodies have no Content-Length to refuse up front; stop here, answer 413.
            self.send_error(413, exc_info=(TooLarge, TooLarge(), None))
            return
        self._body += chunk

    @property
    def body(self):
        return bytes(self._body)

    def client_address(self):
        return client_address(self.request, self.config.trusted_proxies)

    def json_body(self, schema):
        """The body as a JSON object, validated against schemas/<schema>.json."""
        if not self._body.strip():
            document = {}
        else:
            # A body a browser can send cross-site without a CORS preflight (text/plain, a form)
            # is not taken for JSON: only application/json, which needs the preflight.
            media_type = self.request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
            if media_type != "application/json":
                raise UnsupportedMediaType("Send the body as JSON, with Content-Type: application/json.",
                                           code="json_required")
            values = sum(self._body.count(separator) for separator in (b",", b"[", b"{"))
            if values > MAX_BODY_VALUES or self._body.count(b":") > MAX_BODY_MEMBERS:
                raise InvalidInput(f"The body holds more JSON values than any request needs ({MAX_BODY_VALUES} "
                                   f"values, {MAX_BODY_MEMBERS} object members at most).", code="body_too_complex")
            try:
                document = json.loads(self._body, parse_constant=_refuse_constant)
            # RecursionError: nested deeper than the parser goes (a body of 100,000 "[").
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise InvalidInput("The body is not valid JSON.", code="malformed_json") from None
        return self.services.validator.validate_request(schema, document)

    async def large_json_body(self, schema):
        """json_body for bodies that can be large (an event with a venue polygon): above
        OFF_LOOP_BODY_BYTES they are parsed and validated in the default executor, where the event
        loop gets the GIL back every 5 ms instead of waiting 10-30 ms for a 200 kB polygon."""
        if len(self._body) <= OFF_LOOP_BODY_BYTES:
            return self.json_body(schema)
        return await asyncio.get_running_loop().run_in_executor(None, self.json_body, schema)

    async def authenticate(self):
        """Bearer tokens only: a token in a REST query string would end up in logs and histories."""
        token = bearer_token(self.request)
        if token is None:
            raise NotAuthenticated("Authentication is required: send Authorization: Bearer <token>.")
        self.current_user, self.claims = await self.services.accounts.authenticate(token)

    def require_role(self, role):
        if self.current_user.get("role") != role:
            raise Forbidden(f"Only users with the {role} role can do this.", code="role_required")

    def options(self, *args, **kwargs):
        self.set_status(204)
        self.finish()


class NotFoundHandler(BaseHandler):
    """Unknown paths get the JSON 404 of the contract."""
    authentication = "none"

    def prepare(self):
        raise tornado.web.HTTPError(404, "no such resource")
