"""Notifications: the stored list (GET /api/v1/notifications, POST /api/v1/notifications/read) and
the live push over WebSocket at /ws/notifications.

The socket is push-only: it carries `{"type": "notification", "notification": {...}}` frames, each
for a notification already stored (domain/notifications.py stores first, then pushes), so a client
that was offline reads what it missed from the list. Its handshake, cap, token endings, pings and
bounded writes are the chat's (handlers/sockets.py).
"""
import asyncio

from domain import notifications
from domain.errors import Unavailable
from domain.paging import ID_PATTERN
from handlers.base import BaseHandler
from handlers.chat_hub import encode_json
from handlers.docs import operation
from handlers.paging import page_query, page_request
from handlers.sockets import CLOSE_GOING_AWAY, HANDSHAKE_QUERY, UserSocket, UserSockets


class LocalNotificationHub:
    """Pushes to the sockets of this process. With several processes, cluster/pushes.py wraps it
    and the notifier pushes through that (the same `push`)."""

    def __init__(self, sockets, max_buffer_bytes):
        self.sockets = sockets
        self.max_buffer_bytes = max_buffer_bytes

    def push(self, user_id, notification):
        sockets = self.sockets.by_user.get(user_id)
        if not sockets:
            return
        text = encode_json({"type": "notification", "notification": notification})
        for socket in list(sockets):
            socket.send_text(text)


class NotificationService:
    """The live side of notifications in this process: the open sockets and the hub."""

    def __init__(self, settings, notifier):
        self.settings = settings
        self.accepting = True
        self.sockets = UserSockets("notification")
        self.hub = LocalNotificationHub(self.sockets, settings.chat_max_buffer_bytes)
        self.notifier = notifier
        notifier.push = self.hub.push

    def check_admission(self, user_id):
        if not self.accepting:
            raise Unavailable("The server is restarting; connect again shortly.", code="shutting_down")
        self.sockets.check_admission(user_id, self.settings.chat_max_connections_per_user)

    async def shutdown(self, timeout=5.0):
        """Stores the notifications being written, then closes every socket with 1001."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.notifier.background.drain(timeout)
        for user_id in list(self.sockets.by_user):
            for socket in self.sockets.of_user(user_id):
                socket.close(CLOSE_GOING_AWAY, "server shutting down")
        while self.sockets.by_user and loop.time() < deadline:
            await asyncio.sleep(0.05)


class NotificationSocket(UserSocket):
    """One client's live notifications."""

    what = "notification socket"

    def initialize(self, services, route=None):
        super().initialize(services, route)
        self.live = services.notifications

    async def get(self):
        self._check_request()
        token = self._claim_token()
        with self.live.sockets.handshaking(self):
            user = await self._authenticated(token)
            await self.live.sockets.claim_slot(self, self.services.settings.chat_max_connections_per_user)
        try:
            if self.refusal is not None:
                raise self.refusal
            self.current_user = {"id": self.user_id, "username": user["username"] or ""}
            # No await from here to open(), which registers the socket: the cap holds.
            self.live.check_admission(self.user_id)
            await super().get()  # returns when the connection ends
        finally:
            self.live.sockets.release_slot(self)

    def open(self):
        self.set_nodelay(True)
        self.live.sockets.add(self)
        self._expire_with_token()

    def on_close(self):
        self._stop_expiry()
        self.live.sockets.discard(self)

    def close(self, code=None, reason=None):
        super().close(code, reason)
        # Out of the registry now, not when the client answers the close (a stuck one never does).
        self.live.sockets.discard(self)

    def on_message(self, message):
        self.send_text(encode_json({"type": "error", "code": "push_only",
                                    "message": "This socket only pushes notifications; it takes no frames."}))

    def send_text(self, text):
        self._send_bounded(text, self.live.hub.max_buffer_bytes)


class NotificationsHandler(BaseHandler):
    docs = {"get": operation("The caller's notifications, newest first, with the unread count",
                             response="NotificationPage", query=page_query(ID_PATTERN),
                             description="Everything pushed on /ws/notifications is stored here first: read "
                                         "this after a reconnect for what was missed. Kept 90 days.")}

    async def get(self):
        limit, cursor = page_request(self)
        self.reply(await notifications.notification_page(self.services.store, self.current_user["id"],
                                                         limit, cursor))


class NotificationsReadHandler(BaseHandler):
    docs = {"post": operation("Marks the caller's notifications up to one (included) as read",
                              request="NotificationsReadRequest", response="NotificationsRead", errors=[404],
                              description="`up_to` is the id of one of the caller's notifications: it and every "
                                          "older one are marked read (send the newest id shown to mark all). "
                                          "Any other id, another user's included, is a 404.")}

    async def post(self):
        body = self.json_body("NotificationsReadRequest")
        self.reply(await notifications.mark_read(self.services.store, self.current_user["id"], body["up_to"]))


NOTIFICATIONS_PROTOCOL = {
    "path": "/ws/notifications",
    "parameters": [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
                   for name, schema, text in HANDSHAKE_QUERY],
    "client_frames": {},
    "server_frames": {"notification": {"$ref": "#/components/schemas/NotificationFrame"},
                      "error": {"$ref": "#/components/schemas/NotificationError"}},
    "description": """## Live notifications: WebSocket `/ws/notifications`

**Handshake.** `GET /ws/notifications?token=<jwt>` (or `Authorization: Bearer <jwt>`), refused as
the chat's is, with a plain HTTP answer and the JSON error body before any upgrade: 401 (no, bad,
expired or revoked token), 403 `origin_not_allowed`, 429 `too_many_connections` (at most
`chat_max_connections_per_user` notification sockets per user, counted apart from the chat's),
503 `shutting_down`, 400 `websocket_required` / `unknown_query_parameter`. Pings, the 64 KiB frame
limit and the slow-client rule (1013) are the chat's.

**Frames.** Push-only: `{"type": "notification", "notification": <Notification>}` for each
notification stored for the user (`rsvp_promoted`, `waitlist_position`, `event_changed`,
`event_cancelled`), as soon as it is stored. Every one is also in `GET /api/v1/notifications`: after
a reconnect, read the list for what came meanwhile. A frame from the client is answered with
`{"type": "error", "code": "push_only", "message"}`; the connection stays open.

**Close codes.** 1001 server shutting down; 1009 a frame over 64 KiB; 1013 the client does not
read fast enough; 4401 the token was revoked (logout, password reset) or has expired (`token
expired`). A logout that lands while a handshake is in progress refuses it (401).
""",
}

ROUTES = [
    (r"/api/v1/notifications", NotificationsHandler),
    (r"/api/v1/notifications/read", NotificationsReadHandler),
    (r"/ws/notifications", NotificationSocket),
]
