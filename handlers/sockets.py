"""What every user-level WebSocket shares (the chat, the notifications): the handshake's checks and
authentication, the per-user registry of open sockets and handshakes in progress, the cap on
connections per user, the ending of sockets whose token is revoked or expires (4401), pings,
frame size, and bounded writes (a client that does not read is closed with 1013).

Every refusal of a handshake is a plain HTTP answer with the JSON error body, before the upgrade.
"""
import asyncio
import contextlib
import logging
import time

import tornado.websocket

from domain.errors import Forbidden, InvalidInput, NotAuthenticated, RateLimited
from domain.ratelimit import SharedLimitsDown
from handlers.base import bearer_token, client_address
from handlers.errors import error_response, write_error_response
from handlers.query import refuse_unknown_query

log = logging.getLogger("sockets")

MAX_FRAME_BYTES = 64 * 1024
CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, CLOSE_TOKEN_REVOKED = 1001, 1013, 4401
# The handshake's query, as the REST operations declare theirs in `docs`: anything else is a 400
# (e.g. `since`, which belongs in the chat's join_chat frame, would otherwise be dropped unnoticed).
HANDSHAKE_QUERY = (("token", {"type": "string"}, "The bearer token, for clients that cannot send headers."),)


class UserSockets:
    """One kind of socket's open connections by user, and its handshakes in progress."""

    def __init__(self, what):
        self.what = what  # "chat", "notification": for messages
        self.by_user = {}
        # Sockets between the first await of their handshake and open(): an ending that lands
        # meanwhile (logout, ...) refuses them when they resume, as they are not in by_user yet.
        self.handshakes = set()
        # With several processes, the connections counted across them (cluster/limits.py).
        self.shared = None  # domain.ratelimit.SharedLimits

    def check_admission(self, user_id, cap):
        if len(self.by_user.get(user_id, ())) >= cap:
            raise self._too_many(cap)

    def _too_many(self, cap):
        return RateLimited(5, f"At most {cap} {self.what} connections per user can be open at once.",
                           code="too_many_connections")

    async def claim_slot(self, socket, cap):
        """With several processes, during the handshake: counts the socket among the user's
        connections on all of them (429 past `cap`) until release_slot, when its get() ends."""
        if self.shared is None:
            return
        try:
            granted = await self.shared.acquire_connection(self.what, socket.user_id, cap)
        except SharedLimitsDown:
            granted = True  # the in-process cap (check_admission) holds until Redis is back
        if not granted:
            raise self._too_many(cap)
        socket.holds_slot = True

    def release_slot(self, socket):
        if socket.holds_slot:
            socket.holds_slot = False
            self.shared.release_connection(self.what, socket.user_id)

    @contextlib.contextmanager
    def handshaking(self, socket):
        """Around the awaits of a handshake: endings that land meanwhile are kept on the
        socket (`refusal`), which the handshake raises once they are done."""
        self.handshakes.add(socket)
        try:
            yield
        finally:
            self.handshakes.discard(socket)

    def add(self, socket):
        self.by_user.setdefault(socket.user_id, set()).add(socket)

    def discard(self, socket):
        sockets = self.by_user.get(socket.user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.by_user[socket.user_id]

    def of_user(self, user_id):
        return list(self.by_user.get(user_id, ()))

    def close_revoked(self, user_id, jti=None, issued_before=None):
        """Accounts' revocation listener: closes the user's sockets opened with those tokens (4401)
        and refuses their handshakes in progress (401)."""
        for socket in self.of_user(user_id):
            if socket.opened_with(jti, issued_before):
                socket.close(CLOSE_TOKEN_REVOKED, "token revoked")
        for socket in self.handshakes:
            if socket.user_id == user_id and socket.opened_with(jti, issued_before):
                socket.refuse(NotAuthenticated("The token has been revoked.", code="token_revoked"))

    async def recheck(self, still_valid):
        """Closes (4401) the open sockets whose token was revoked meanwhile: after endings from
        other processes may have been missed (Redis was away). `still_valid(user_id, jti, iat)`."""
        for socket in [socket for sockets in list(self.by_user.values()) for socket in sockets]:
            if not await still_valid(socket.user_id, socket.token_id, socket.token_issued_at):
                socket.close(CLOSE_TOKEN_REVOKED, "token revoked")


class UserSocket(tornado.websocket.WebSocketHandler):
    """A WebSocket opened by a signed-in user. Subclasses call `_check_request`,
    `_claim_token` and `_authenticated` in get(), and `_expire_with_token` / `_stop_expiry` in open() / on_close()."""

    what = "socket"  # for messages: "This origin may not open the <what>."

    def initialize(self, services, route=None):
        self.services = services
        self.route_name = route
        self.refusal = None  # an ending that landed during the handshake (UserSockets.handshaking)
        self.holds_slot = False  # counted in the connections shared by several processes
        self._expiry = None

    def set_default_headers(self):
        self.clear_header("Server")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    # --- the handshake ---------------------------------------------------------------------

    def _check_request(self):
        """The first checks: an upgrade, no unknown query parameter, an allowed Origin."""
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise InvalidInput("This is a WebSocket endpoint: send an Upgrade: websocket request.",
                               code="websocket_required")
        refuse_unknown_query(self.request.query_arguments, HANDSHAKE_QUERY)
        origin = self.request.headers.get("Origin")
        # Native apps send no Origin; browsers always do, and only listed sites may connect.
        if origin is not None and origin not in self.services.settings.allowed_origins:
            raise Forbidden(f"This origin may not open the {self.what}.", code="origin_not_allowed")

    def _claim_token(self):
        """The request's token, decoded before any await (returned as sent)."""
        token = bearer_token(self.request) or self.get_query_argument("token", "")
        if not token:
            raise NotAuthenticated("Authentication is required: ?token=<jwt> or Authorization: Bearer <jwt>.")
        # Who and which token, before the first await: a logout or password reset that lands
        # during the handshake's awaits finds it by them.
        claims = self.services.accounts.tokens.decode(token)
        self.user_id, self.token_id, self.token_issued_at = claims["sub"], claims["jti"], claims["iat"]
        return token

    async def _authenticated(self, token):
        """The user record, after the full check of the token (revocation included); the caller
        holds the handshake in its registry (`handshaking`) around this."""
        user, claims = await self.services.accounts.authenticate(token)
        self.token_expires_at = claims["exp"]
        return user

    def refuse(self, error):
        """The handshake ends with `error` (a DomainError) once its awaits are done."""
        if self.refusal is None:
            self.refusal = error

    def check_origin(self, origin):
        # get() has already refused origins off the allow-list, with a JSON body; Tornado's own
        # same-host rule must not then refuse an allowed site on another host.
        return True

    @property
    def ping_interval(self):
        return self.services.settings.chat_ping_interval_seconds

    @property
    def max_message_size(self):
        return MAX_FRAME_BYTES

    def get_compression_options(self):
        # Off: hubs write one prebuilt frame to many sockets; compression is per connection.
        return None

    def client_address(self):
        return client_address(self.request, self.services.settings.trusted_proxies)

    def write_error(self, status_code, **kwargs):
        write_error_response(self, status_code, kwargs.get("exc_info"))

    def log_exception(self, typ, value, tb):
        status = error_response(value)[0]
        if status >= 500 and status != 503:
            log.error("unhandled error in the %s socket", self.what, exc_info=(typ, value, tb))

    # --- the connection --------------------------------------------------------------------

    def _expire_with_token(self):
        # The socket lives no longer than its token: REST answers token_expired from then on.
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, self.token_expires_at - time.time()), self.close, CLOSE_TOKEN_REVOKED, "token expired")

    def _stop_expiry(self):
        if self._expiry is not None:
            self._expiry.cancel()

    def opened_with(self, jti, issued_before):
        """True when the socket was opened with the token `jti` or one issued before `issued_before`."""
        return (jti is not None and jti == self.token_id) or (
            issued_before is not None and self.token_issued_at < issued_before)

    def _send_bounded(self, text, max_buffer_bytes):
        """Writes to this connection alone, bounded: a client that does not read what it is sent
        is closed (1013) before it piles up. False when it was not written."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return False
        if unsent_bytes(connection) > max_buffer_bytes:
            self.close(CLOSE_TOO_SLOW, "too slow")
            return False
        self.write_message(text)
        return True


def unsent_bytes(connection):
    # IOStream has no public accessor for its backlog; _write_buffer is None once closed.
    stream = connection.stream
    return 0 if stream.closed() else len(stream._write_buffer)
