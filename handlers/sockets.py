"""What every user-level WebSocket shares (the chat, the notifications): the handshake's checks and
authentication, the per-user registry of open sockets and handshakes in progress, the cap on
connections per user, the ending of sockets whose token is revoked or expires (4401), pings,
frame size, and bounded writes (a client that does not read is closed with 1013).

Every refusal of a handshake is a plain HTTP answer with the JSON error body, before the upgrade.

An idle socket costs little (a crowd of 50,000 is held in one process): once upgraded, it keeps no
coroutine of its handshake, no request, no timer of its own. Pings and token expiries run from
one timer per registry (`Heartbeat`, `TokenExpiries`), not from a task and a timer per socket.
"""
import asyncio
import contextlib
import heapq
import itertools
import logging
import time

import tornado.httputil
import tornado.iostream
import tornado.websocket

from domain.errors import Forbidden, InvalidInput, NotAuthenticated, RateLimited
from domain.ratelimit import SharedLimitsDown
from handlers.base import bearer_token, client_address
from handlers.chat_hub import TOO_SLOW_REASON
from handlers.errors import error_response, write_error_response
from handlers.query import refuse_unknown_query

log = logging.getLogger("sockets")

MAX_FRAME_BYTES = 64 * 1024
CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, CLOSE_TOKEN_REVOKED = 1001, 1013, 4401
# Closes that ask the client to come back carry, after the reason, `; retry_after=<seconds>`: the
# least it should wait, to which it adds a random delay of up to as much again, so that a whole
# crowd closed at once (a restart) does not come back in the same second. A restart takes a few
# seconds; a client too slow for its room is likely to be so again at once.
SHUTDOWN_RETRY_SECONDS = 5
SHUTDOWN_REASON = f"server shutting down; retry_after={SHUTDOWN_RETRY_SECONDS}"
RETRY_PROTOCOL = f"""**Reconnecting.** The close frames that invite the client back, 1001 and 1013, carry in their
reason the least delay before trying again: the reason ends with `; retry_after=<seconds>`
(`server shutting down; retry_after={SHUTDOWN_RETRY_SECONDS}`, `{TOO_SLOW_REASON}`). Wait that
long plus a random delay of up to as much again (jitter: after a restart every client comes
back, and they must not all come back in the same second); after a connection lost without a
close frame, wait a random 1 to 5 s, doubling the upper bound after each failed attempt up to
60 s. A refused handshake (429, 503) is retried the same way: after its `Retry-After` header
(seconds) when it has one, else as after a 1001."""
# The handshake's query, as the REST operations declare theirs in `docs`: anything else is a 400
# (e.g. `since`, which belongs in the chat's join_chat frame, would otherwise be dropped unnoticed).
HANDSHAKE_QUERY = (("token", {"type": "string"}, "The bearer token, for clients that cannot send headers."),)


# The heartbeat wakes this often and pings the sockets of one slice of the ping interval: 50,000
# sockets pinged every 30 s are ~420 pings a wake-up, a few ms of the loop.
HEARTBEAT_TICK_SECONDS = 0.25


class Heartbeat:
    """Pings every socket once per `interval` and closes the ones whose pong has not come back by
    the next ping (as Tornado's per-socket ping task did, at ~1 KiB a socket): the sockets are
    spread over slices of the interval, and one timer visits a slice per tick."""

    def __init__(self, interval):
        self.slices = [set() for _ in range(max(1, round(interval / HEARTBEAT_TICK_SECONDS)))]
        self.tick = interval / len(self.slices)
        self.turn = 0
        self.size = 0
        self.timer = None

    def add(self, socket):
        # In the slice visited last: its first ping comes one interval after it opened.
        socket.heartbeat_slice = (self.turn - 1) % len(self.slices)
        self.slices[socket.heartbeat_slice].add(socket)
        self.size += 1
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.tick, self._beat)

    def discard(self, socket):
        if socket.heartbeat_slice is not None:
            self.slices[socket.heartbeat_slice].discard(socket)
            socket.heartbeat_slice = None
            self.size -= 1

    def _beat(self):
        try:
            for socket in list(self.slices[self.turn]):
                connection = socket.ws_connection
                if connection is None or connection.is_closing():
                    continue
                if socket.awaiting_pong:
                    socket.close(1000, "ping timed out")
                    continue
                socket.awaiting_pong = True
                try:
                    connection.write_ping(b"")
                except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
                    pass  # gone meanwhile: its on_close takes it out
        finally:
            # Whatever one socket did, the others keep their heartbeat.
            self.turn = (self.turn + 1) % len(self.slices)
            self.timer = asyncio.get_running_loop().call_later(self.tick, self._beat) if self.size else None


class TokenExpiries:
    """Closes each socket when its token expires (4401, `token expired`), from one timer set for
    the earliest: a heap of (expiry, key), and the sockets still waiting by key. A closed socket's
    entry stays in the heap until it comes up or the heap is rebuilt, without the socket."""

    def __init__(self):
        self.heap = []
        self.waiting = {}
        self.keys = itertools.count()
        self.timer = None

    def add(self, socket):
        key = socket.expiry_key = next(self.keys)
        self.waiting[key] = socket
        heapq.heappush(self.heap, (socket.token_expires_at, key))
        if self.heap[0][1] == key:
            self._arm()

    def discard(self, socket):
        if self.waiting.pop(socket.expiry_key, None) is not None and len(self.heap) > 2 * len(self.waiting) + 64:
            self.heap = [entry for entry in self.heap if entry[1] in self.waiting]
            heapq.heapify(self.heap)

    def _arm(self):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        if self.heap:
            self.timer = asyncio.get_running_loop().call_later(max(0.0, self.heap[0][0] - time.time()), self._expire)

    def _expire(self):
        now = time.time()
        try:
            while self.heap and self.heap[0][0] <= now:
                socket = self.waiting.pop(heapq.heappop(self.heap)[1], None)
                if socket is not None:
                    # The socket lives no longer than its token: REST answers token_expired from then on.
                    socket.close(CLOSE_TOKEN_REVOKED, "token expired")
        finally:
            self._arm()


class UserSockets:
    """One kind of socket's open connections by user, and its handshakes in progress; their pings
    and the ends of their tokens."""

    def __init__(self, what):
        self.what = what  # "chat", "notification": for messages
        self.by_user = {}
        # Sockets between the first await of their handshake and open(): an ending that lands
        # meanwhile (logout, ...) refuses them when they resume, as they are not in by_user yet.
        self.handshakes = set()
        # With several processes, the connections counted across them (cluster/limits.py).
        self.shared = None  # domain.ratelimit.SharedLimits
        self.heartbeat = None  # made by the first socket, which knows the ping interval
        self.expiries = TokenExpiries()

    def check_admission(self, user_id, cap):
        if len(self.by_user.get(user_id, ())) >= cap:
            raise self._too_many(cap)

    def _too_many(self, cap):
        return RateLimited(5, f"At most {cap} {self.what} connections per user can be open at once.",
                           code="too_many_connections")

    async def claim_slot(self, socket, cap):
        """With several processes, during the handshake: counts the socket among the user's
        connections on all of them (429 past `cap`) until it closes, or its handshake ends
        without opening it (`handshake_ended`)."""
        if self.shared is None:
            return
        try:
            granted = await self.shared.acquire_connection(self.what, socket.user_id, cap)
        except SharedLimitsDown:
            granted = True  # the in-process cap (check_admission) holds until Redis is back
        if not granted:
            raise self._too_many(cap)
        socket.holds_slot = True

    def handshake_ended(self, socket):
        """From the end of a handshake's get(), which returns at the upgrade: a socket that did
        not open gives its slot back now, an open one when it closes (`discard`)."""
        if socket not in self.by_user.get(socket.user_id, ()):
            self.release_slot(socket)

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
        """From the socket's open(): registered, pinged, and closed when its token expires."""
        self.by_user.setdefault(socket.user_id, set()).add(socket)
        if self.heartbeat is None:
            self.heartbeat = Heartbeat(socket.ping_interval)
        self.heartbeat.add(socket)
        self.expiries.add(socket)

    def discard(self, socket):
        sockets = self.by_user.get(socket.user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.by_user[socket.user_id]
        if self.heartbeat is not None:
            self.heartbeat.discard(socket)
        self.expiries.discard(socket)
        self.release_slot(socket)

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
    `_claim_token` and `_authenticated` in get(), register in their `UserSockets` in open() and
    leave it in on_close()."""

    what = "socket"  # for messages: "This origin may not open the <what>."

    def initialize(self, services, route=None):
        self.services = services
        self.route_name = route
        self.refusal = None  # an ending that landed during the handshake (UserSockets.handshaking)
        self.holds_slot = False  # counted in the connections shared by several processes
        self.heartbeat_slice = None  # for Heartbeat
        self.awaiting_pong = False
        self.expiry_key = None  # for TokenExpiries

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
        """The request's token, decoded before any await: its claims."""
        token = bearer_token(self.request) or self.get_query_argument("token", "")
        if not token:
            raise NotAuthenticated("Authentication is required: ?token=<jwt> or Authorization: Bearer <jwt>.")
        # Who and which token, before the first await: a logout or password reset that lands
        # during the handshake's awaits finds it by them.
        claims = self.services.accounts.tokens.decode(token)
        self.user_id, self.token_id, self.token_issued_at = claims["sub"], claims["jti"], claims["iat"]
        return claims

    async def _authenticated(self, claims):
        """The user record, after the rest of the token's check (revocation); the caller holds
        the handshake in its registry (`handshaking`) around this."""
        user, claims = await self.services.accounts.authenticate_claims(claims)
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

    def get_websocket_protocol(self):
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        # No ping task of Tornado's: the registry's Heartbeat pings.
        params = tornado.websocket._WebSocketParams(max_message_size=self.max_message_size,
                                                    compression_options=self.get_compression_options())
        return LeanProtocol(self, False, params)

    def on_pong(self, data):
        self.awaiting_pong = False

    def _shed_handshake(self):
        """Once open, drops what only the handshake needed (~2 KiB a socket): the request with its
        headers and arguments, Tornado's response state. The request left is the client's address."""
        self.request = UpgradedRequest(self.client_address())
        for name in HANDSHAKE_ONLY:
            self.__dict__.pop(name, None)
        self.__dict__ = dict(self.__dict__)  # a dict does not shrink when keys go; a copy is sized to fit

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
            self.close(CLOSE_TOO_SLOW, TOO_SLOW_REASON)
            return False
        self.write_message(text)
        return True


def unsent_bytes(connection):
    # IOStream has no public accessor for its backlog; _write_buffer is None once closed.
    stream = connection.stream
    return 0 if stream.closed() else len(stream._write_buffer)


# Tornado's attributes of a handler that nothing reads once the socket is open.
HANDSHAKE_ONLY = ("path_args", "path_kwargs", "open_args", "open_kwargs", "_transforms", "_headers",
                  "_write_buffer", "ui")


class UpgradedRequest:
    """What is left of an open socket's request: the client's address (`client_address()`)."""

    __slots__ = ("remote_ip",)
    headers = tornado.httputil.HTTPHeaders()  # shared and empty: the real ones went with the handshake
    connection = None

    def __init__(self, remote_ip):
        self.remote_ip = remote_ip


class LeanProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that the frame loop runs in a task of its own. In Tornado it is
    awaited by the handshake (RequestHandler._execute -> get() -> accept_connection), so every
    coroutine of the handshake, with its locals (the request, the user record), lived as long as
    the socket: ~4 KiB each."""

    # handlers/chat_hub.py writes its prebuilt frames to this class as to WebSocketProtocol13.
    frames_like_protocol13 = True

    async def _receive_frame_loop(self):
        self.handler._shed_handshake()
        self.frame_loop = asyncio.ensure_future(super()._receive_frame_loop())
        self.frame_loop.add_done_callback(_frame_loop_ended)


def _frame_loop_ended(task):
    # Once the handshake's await, which logged what the loop raised; the loop ends its connection.
    if not task.cancelled() and task.exception() is not None:
        log.error("a socket's frame loop failed", exc_info=task.exception())
