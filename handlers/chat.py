"""Live chat over WebSocket at /ws/chat/<event_id>: the handshake, per-connection limits, frames.

Chat is five units: this transport (who may connect, what a frame may be, how a connection
ends), the room hub (handlers/chat_hub.py: this process's members and fan-out), the message log
(domain/chat.py: storage and order), the room feed (domain/chat_feed.py: delivery in stored order
and exact replays, whichever process stored a batch) and the broker (handlers/chat_broker.py:
this process alone, or every process through Redis, cluster/chat_broker.py). `ChatService` holds
the live state of the process that ties them together: the open sockets by user and by event.
What the chat's socket shares with the other user-level sockets (handshake checks, the per-user
registry and cap, token endings, pings, bounded writes) is in handlers/sockets.py.
"""
import asyncio
import datetime
import functools
import json
import logging

from domain.chat import (MAX_CATCH_UP, MAX_TEXT_CHARS, NOT_A_MEMBER, RECENT_COUNT, REMOVED, MessageLog,
                         check_chat_member)
from domain.chat_feed import RoomFeed
from domain.errors import DomainError, Forbidden, InvalidInput, NotFound, StoreUnavailable, Unavailable
from domain.ratelimit import SharedLimitsDown, TokenBucketLimiter
from domain.repositories import chat_refusal
from domain.times import utcnow
from handlers.chat_broker import LocalBroker
from handlers.chat_hub import RoomHub, encode_json
from handlers.sockets import (CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, HANDSHAKE_QUERY, MAX_FRAME_BYTES,
                              RETRY_PROTOCOL, SHUTDOWN_REASON, UserSocket, UserSockets)

log = logging.getLogger("chat")

CLOSE_NOT_A_MEMBER, CLOSE_EVENT_DELETED = 4403, 4404
FRAME_SCHEMAS = {"join_chat": "ChatJoin", "leave_chat": "ChatLeave", "send_message": "ChatSend",
                 "edit_message": "ChatEdit", "delete_message": "ChatDelete", "mark_read": "ChatMarkRead",
                 "typing": "ChatTyping"}
SEND_FIELDS = frozenset(("type", "text", "client_msg_id"))
MAX_CLIENT_MSG_ID = 64  # as in schemas/ChatSend.json
IDLE, JOINING, JOINED = "idle", "joining", "joined"
# A typing indicator: shown by the others for TYPING_EXPIRES seconds unless renewed; at most one
# relayed per connection per TYPING_EVERY seconds (the ones between are absorbed), so a client
# may send one per keystroke and the room still gets one every few seconds.
TYPING_EXPIRES, TYPING_EVERY = 6, 3


def _frame_error(code, message, **extra):
    return DomainError(message, code, **extra)


class ChatService:
    """The live side of chat in this process: open sockets by user and by event, the rooms,
    the message log, and their figures in the server's metrics."""

    def __init__(self, settings, store, metrics, redis=None):
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.hub = RoomHub(settings.chat_max_buffer_bytes)
        self.feed = RoomFeed(store, self._deliver, self._following, metrics.chat_catch_ups.inc)
        if redis is None:
            self.broker = LocalBroker(self.feed, self.hub, self._tell)
        else:
            from cluster.chat_broker import RedisBroker  # only with REDIS_URL: several processes
            self.broker = RedisBroker(redis, self.feed, self.hub, metrics, self._tell)
        self.log = MessageLog(store, self.broker.publish)
        self.accepting = True
        # By user, and the handshakes in progress: an ending that lands during one (logout, RSVP
        # cancelled, event deleted) refuses it when it resumes.
        self.sockets = UserSockets("chat")
        self._by_event = {}
        self._refilling = {}  # user id -> frame buckets of closed sockets, kept until full again

    def _deliver(self, event_id, frames):
        for frame in frames:
            self.hub.broadcast(event_id, frame)
        self.metrics.chat_messages_out.inc(len(frames) * len(self.hub.members(event_id)))

    def _following(self, event_id):
        return self.hub.online_count(event_id) > 0

    async def online_counts(self, event_ids):
        """{event id: users in the event's live chat now, in every process}."""
        return await self.broker.online_counts(event_ids)

    def user_joined(self, socket):
        self.broker.joined(socket.event_id, {"id": socket.user_id, "username": socket.username})

    def user_left(self, socket):
        self.broker.left(socket.event_id, {"id": socket.user_id, "username": socket.username})
        if not self._following(socket.event_id):
            self.feed.release(socket.event_id)

    # --- admission and bookkeeping ------------------------------------------------------

    def check_accepting(self):
        if not self.accepting:
            raise Unavailable("The server is restarting; connect again shortly.", code="shutting_down")

    def check_admission(self, user_id):
        self.check_accepting()
        self.sockets.check_admission(user_id, self.settings.chat_max_connections_per_user)

    async def admit_shared(self, socket):
        """With several processes (shared limits set), during the handshake: the user's connections
        counted on all of them, and a frame bucket one of the user's sockets left on any of them,
        taken into this process's refilling ones for frame_limiter. Per connection, as in one
        process: a user's frames are bounded by the cap times the rate, wherever they connect, and
        a reconnect, to any process, does not refill a bucket."""
        shared = self.sockets.shared
        if shared is None:
            return
        await self.sockets.claim_slot(socket, self.settings.chat_max_connections_per_user)
        try:
            level = await shared.take_spent_bucket(socket.user_id, self.settings.chat_burst,
                                                   self.settings.chat_messages_per_second)
        except SharedLimitsDown:
            return  # the buckets left in this process only, meanwhile
        if level is not None:
            limiter = TokenBucketLimiter(self.settings.chat_burst, self.settings.chat_messages_per_second)
            limiter.set_level("frames", level)
            self._keep_refilling(socket.user_id, limiter)

    def frame_limiter(self, user_id):
        """The frame bucket of a new socket: one that a closed socket of the user left, while it
        refills, so that reconnecting does not refill it (a flood would be a reconnect loop)."""
        spent = self._refilling.get(user_id)
        if not spent:
            return TokenBucketLimiter(self.settings.chat_burst, self.settings.chat_messages_per_second)
        limiter = spent.pop()
        if not spent:
            del self._refilling[user_id]
        return limiter

    def _hand_over(self, user_id, limiter):
        """A closed socket's bucket, to the user's next socket: on any process with several."""
        shared = self.sockets.shared
        level = limiter.level("frames")
        # Kept here when Redis is away, so that a reconnect loop to this process still finds it.
        if shared is None or not shared.reachable or level >= self.settings.chat_burst:
            self._keep_refilling(user_id, limiter)
        else:
            shared.keep_spent_bucket(user_id, level, self.settings.chat_burst, self.settings.chat_messages_per_second)

    def _keep_refilling(self, user_id, limiter):
        self._refilling.setdefault(user_id, []).append(limiter)
        full_after = self.settings.chat_burst / self.settings.chat_messages_per_second
        asyncio.get_running_loop().call_later(full_after, self._forget_limiter, user_id, limiter)

    def _forget_limiter(self, user_id, limiter):
        spent = self._refilling.get(user_id, [])
        if limiter in spent:
            spent.remove(limiter)
            if not spent:
                del self._refilling[user_id]

    def opened(self, socket):
        self.sockets.add(socket)
        self._by_event.setdefault(socket.event_id, set()).add(socket)
        self.metrics.open_websockets.inc()
        self.metrics.rooms.set(len(self._by_event))

    def closed(self, socket):
        self.sockets.discard(socket)
        sockets = self._by_event.get(socket.event_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._by_event[socket.event_id]
        self._hand_over(socket.user_id, socket.limiter)
        self.metrics.open_websockets.dec()
        self.metrics.rooms.set(len(self._by_event))

    # --- read markers ------------------------------------------------------------------

    async def mark_read(self, event_id, user_id, message_id):
        """Stores the user's marker, then tells each of their sockets in the event, on every
        process (the other devices too), where it stands now: `read_marker`, not a room frame."""
        marker = await self.store.messages.mark_read(event_id, user_id, message_id)
        if marker is None:
            raise NotFound("There is no such message in this chat.", code="message_not_found", message_id=message_id)
        self.broker.to_user(event_id, user_id, {"type": "read_marker", "event_id": event_id, "last_read_id": marker})

    def _tell(self, event_id, user_id, payload):
        """The brokers' delivery of a frame to the user's sockets in the event, in this process."""
        frame = None
        for socket in self._sockets_in(event_id, user_id):
            frame = frame or encode_json(payload)
            socket.write_frame(frame)

    def _sockets_in(self, event_id, user_id):
        """The user's open sockets in the event's chat, in this process."""
        return [socket for socket in self.sockets.of_user(user_id) if socket.event_id == event_id]

    # --- endings ------------------------------------------------------------------------

    def close_member(self, event_id, user_id, reason="RSVP cancelled", refusal=None):
        """Events' RSVP-cancelled listener (and moderation's removal, see `moderated`): the user's
        sockets in that event close (4403), their handshakes in progress are refused (403)."""
        for socket in self._sockets_in(event_id, user_id):
            socket.close(CLOSE_NOT_A_MEMBER, reason)
        for socket in self.sockets.handshakes:
            if socket.user_id == user_id and socket.event_id == event_id:
                socket.refuse(refusal or Forbidden(NOT_A_MEMBER, code="not_a_member"))

    def moderated(self, event_id, user_id, action, until):
        """Moderation's listener: a removed user's sockets in the event close as in close_member
        (reason `removed from chat`); a muted or unmuted user's sockets learn until when (the
        store refuses their messages by itself; the sockets stop relaying their typing)."""
        if action == "remove":
            self.close_member(event_id, user_id, "removed from chat", Forbidden(REMOVED, code="removed_from_chat"))
        elif action in ("mute", "unmute"):
            for socket in self._sockets_in(event_id, user_id):
                socket.muted_until = until

    def close_event(self, event_id):
        """Events' deletion listener: drops the room's queued messages and closes its sockets (4404);
        handshakes in progress are refused (404)."""
        self.log.discard(event_id)
        self.feed.discard(event_id)
        self._close_sockets_of(event_id, CLOSE_EVENT_DELETED, "event deleted")
        for socket in self.sockets.handshakes:
            if socket.event_id == event_id:
                socket.refuse(NotFound("There is no such event.", code="event_not_found"))

    async def recheck_members(self):
        """After RSVP cancellations, removals and deletions on other processes may have been missed
        (Redis was away): closes what they would have closed, as the store tells it now."""
        for event_id, sockets in list(self._by_event.items()):
            for socket in list(sockets):
                try:
                    await check_chat_member(self.store, event_id, socket.user_id)
                except NotFound:
                    self.close_event(event_id)
                    break
                except Forbidden as refusal:
                    removed = refusal.code == "removed_from_chat"
                    socket.close(CLOSE_NOT_A_MEMBER, "removed from chat" if removed else "RSVP cancelled")

    async def shutdown(self, timeout=5.0):
        """Stops admitting connections and messages, stores and publishes everything queued,
        then closes every socket with 1001 and waits up to `timeout` seconds in all for the
        closing handshakes, so the last echoes leave the process. An acknowledged message is
        always stored; an unacknowledged one is the client's to send again."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self.log.drain(), timeout)
        except asyncio.TimeoutError:
            log.warning("chat messages still queued at shutdown after %.0f s", timeout)
        for event_id in list(self._by_event):
            self._close_sockets_of(event_id, CLOSE_GOING_AWAY, SHUTDOWN_REASON)
        while self.sockets.by_user and loop.time() < deadline:
            await asyncio.sleep(0.05)

    def _close_sockets_of(self, event_id, code, reason):
        # The whole room at once, without a user_left per member to those still there.
        self.hub.close_room(event_id, code, reason)
        self.broker.room_closed(event_id)
        self.feed.release(event_id)
        for socket in list(self._by_event.get(event_id, ())):
            socket.close(code, reason)  # those that never joined; a no-op for the others


class ChatSocket(UserSocket):
    """One client's connection to one event's chat."""

    what = "chat"

    def initialize(self, services, route=None):
        super().initialize(services, route)
        self.chat = services.chat
        self.state = IDLE
        self.muted_until = None  # as far as this process knows: the store decides for messages
        self.typing_quiet_until = 0.0

    # --- the handshake: every refusal is an HTTP answer before the upgrade ---------------

    async def get(self, event_id):
        # The event id first: an RSVP cancel or deletion during the awaits finds the handshake by it.
        self.event_id = event_id
        self._check_request()
        self.chat.check_accepting()
        claims = self._claim_token()
        try:
            with self.chat.sockets.handshaking(self):
                user = await self._authenticated(claims)
                # Known from the start, so that a user muted before connecting types to no one.
                self.muted_until = await check_chat_member(self.services.store, event_id, user["id"])
                await self.chat.admit_shared(self)
            if self.refusal is not None:
                raise self.refusal
            self.username = user["username"] or ""
            self.current_user = {"id": self.user_id, "username": self.username}  # not the whole record
            # From the end of the awaits to open(), which registers the socket, nothing awaits: the
            # cap holds and no ending can slip between the handshake's registry and the open sockets'.
            self.chat.check_admission(self.user_id)
            await super().get(event_id)
        finally:
            self.chat.sockets.handshake_ended(self)

    # --- the connection ------------------------------------------------------------------

    def open(self, event_id):
        self.set_nodelay(True)  # chat frames are small and latency matters more than packets
        # A bucket of its own: one shared limiter would scan all its keys past 10,000 of them.
        self.limiter = self.chat.frame_limiter(self.user_id)
        self.chat.opened(self)

    def on_close(self):
        self._leave_room()
        self.chat.closed(self)

    def close(self, code=None, reason=None):
        if code == CLOSE_TOO_SLOW and self.ws_connection is not None:
            self.chat.metrics.slow_consumers_dropped.inc()  # by the hub, or by _send
        super().close(code, reason)
        # Out of the room now, not when the client answers the close (a stuck one never does);
        # on the next turn of the loop, as the hub may be closing us from inside a fan-out.
        asyncio.get_running_loop().call_soon(self._leave_room)

    def on_message(self, message):
        frame = _json_object(message)
        client_msg_id = frame.get("client_msg_id") if frame is not None else None
        client_msg_id = client_msg_id if isinstance(client_msg_id, str) else None
        try:
            wait = self.limiter.hit("frames")
            if wait:
                self.chat.metrics.rate_limit_refusals.labels(self.route_name).inc()
                raise _frame_error("rate_limited", "Too many frames; slow down.", retry_after=round(wait, 3))
            self._dispatch(frame)
        except DomainError as error:
            self._send_error(error, client_msg_id)

    def _dispatch(self, frame):
        if frame is None or not isinstance(frame.get("type"), str):
            raise _frame_error("invalid_frame", "A frame is a JSON object with a string `type`.")
        schema = FRAME_SCHEMAS.get(frame["type"])
        if schema is None:
            raise _frame_error("unknown_type", f"Unknown frame type; known ones: {', '.join(FRAME_SCHEMAS)}.")
        try:
            if not _plainly_valid_send(frame):
                self.services.validator.validate_request(schema, frame)
        except InvalidInput as e:
            raise InvalidInput("The frame does not have the expected shape.",
                               errors=e.extra.get("errors"), code="invalid_frame") from None
        getattr(self, "_on_" + frame["type"])(frame)

    def _on_join_chat(self, frame):
        if self.state != IDLE:
            raise _frame_error("already_joined", "This connection has joined already; send leave_chat first.")
        self.state = JOINING
        joining = asyncio.ensure_future(self.chat.feed.replay(self.event_id, frame.get("since"), self._subscribe))
        joining.add_done_callback(self._join_settled)

    def _subscribe(self, history):
        # Called by the room feed between two delivered batches, so the replay and what the
        # room delivers from now on meet without a gap or an overlap.
        if self.state != JOINING or self.ws_connection is None:
            return
        self.state = JOINED
        first = self.chat.hub.join(self.event_id, self, self.user_id)
        self._send({"type": "recent_messages", **history})
        if first:
            self.chat.user_joined(self)

    def _join_settled(self, joining):
        error = None if joining.cancelled() else joining.exception()
        if error is None:
            return
        if self.state == JOINING:
            self.state = IDLE
        self._send_error(error)

    def _on_leave_chat(self, frame):
        if self.state == IDLE:
            raise _frame_error("not_joined", "This connection has not joined the chat.")
        self._leave_room()

    def _check_writing(self, not_joined):
        """A frame that writes to the room's log needs a join, and a server not shutting down."""
        if self.state == IDLE:
            raise _frame_error("not_joined", not_joined)
        if not self.chat.accepting:
            raise Unavailable("The server is restarting; send it again once reconnected.", code="shutting_down")

    def _on_send_message(self, frame):
        self._check_writing("Send join_chat before send_message.")
        client_msg_id = frame.get("client_msg_id")
        posted = self.chat.log.post(self.event_id, self.user_id, self.username, frame["text"], client_msg_id)
        self.chat.metrics.chat_messages_in.inc()
        posted.add_done_callback(functools.partial(self._posted, client_msg_id))

    def _posted(self, client_msg_id, posted):
        error = posted.exception()
        if error is not None:
            if getattr(error, "code", None) == "muted":  # muted by another process, perhaps
                self.muted_until = utcnow() + datetime.timedelta(seconds=error.extra["retry_after"])
            self._send_error(error, client_msg_id)
            return
        message, repeated = posted.result()
        if repeated:  # a retry: the original goes back to the sender only; the room has it
            self._send({"type": "new_message", "message": message})

    def _on_edit_message(self, frame):
        self._change("edit", frame["id"], frame["text"])

    def _on_delete_message(self, frame):
        self._change("delete", frame["id"])

    def _change(self, kind, message_id, text=None):
        # Through the message log, like a send: stored, then published in the room's one order.
        self._check_writing("Send join_chat before changing a message.")
        changed = self.chat.log.change(self.event_id, kind, message_id, self.user_id, text)
        changed.add_done_callback(functools.partial(self._changed, message_id))

    def _changed(self, message_id, changed):
        error = changed.exception()
        if error is not None:
            self._send_error(error, message_id=message_id)
            return
        frame, repeated = changed.result()
        if repeated:  # a retry: the change it repeats goes back to the sender only
            self._send(frame)

    def _on_typing(self, frame):
        # Not stored and not in the room's order: relayed to every process, to everyone but the typist.
        if self.state == IDLE:
            raise _frame_error("not_joined", "Send join_chat before typing.")
        refusal = chat_refusal({"kind": "typing"}, self.muted_until, False, utcnow())
        if refusal is not None:
            raise refusal
        now = asyncio.get_running_loop().time()
        if self.state != JOINED or now < self.typing_quiet_until:
            return  # absorbed: the others' indicator is still running
        self.typing_quiet_until = now + TYPING_EVERY
        typing = {"type": "typing", "user": {"id": self.user_id, "username": self.username},
                  "expires_in": TYPING_EXPIRES}
        self.chat.broker.relay(self.event_id, typing, skip=self)  # to the room's members in every process

    def _on_mark_read(self, frame):
        marking = asyncio.ensure_future(self.chat.mark_read(self.event_id, self.user_id, frame["id"]))
        marking.add_done_callback(self._marked)

    def _marked(self, marking):
        error = None if marking.cancelled() else marking.exception()
        if error is not None:
            self._send_error(error)

    # --- writing ---------------------------------------------------------------------------

    def _leave_room(self):
        joined, self.state = self.state == JOINED, IDLE
        if joined and self.chat.hub.leave(self.event_id, self):
            self.chat.user_left(self)

    def _send_error(self, error, client_msg_id=None, message_id=None):
        if not isinstance(error, DomainError):
            log.error("chat frame failed", exc_info=error)
        # Frames have one code for every backing-service failure (schemas/ChatError.json).
        if isinstance(error, StoreUnavailable) or not isinstance(error, DomainError):
            error = Unavailable("The chat cannot be reached right now. Try again shortly.")
        if error.code == "unavailable":
            self.chat.metrics.database_errors.labels(self.route_name).inc()
        frame = {"type": "error", "code": error.code, "message": error.message, **error.extra}
        if client_msg_id is not None:
            frame["client_msg_id"] = client_msg_id
        if message_id is not None:  # the error may be shared by the changes of a batch
            frame["message_id"] = message_id
        self._send(frame)

    def _send(self, payload):
        """Writes to this connection alone, bounded like the hub's writes."""
        self.write_frame(encode_json(payload))

    def write_frame(self, text):
        self._send_bounded(text, self.chat.hub.max_buffer_bytes)


def _json_object(message):
    if isinstance(message, bytes):
        return None
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        return None
    return frame if isinstance(frame, dict) else None


def _plainly_valid_send(frame):
    """True for a send_message frame that schemas/ChatSend.json certainly accepts. Most frames
    are these, and checking them by hand saves the schema's ~30 µs a frame; any other frame
    goes through the schema, which also says what is wrong with it."""
    if frame["type"] != "send_message" or not frame.keys() <= SEND_FIELDS or not isinstance(frame.get("text"), str):
        return False
    if "client_msg_id" not in frame:
        return True
    client_msg_id = frame["client_msg_id"]
    return isinstance(client_msg_id, str) and 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID


CHAT_PROTOCOL = {
    "path": "/ws/chat/{event_id}",
    "parameters": [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
                   for name, schema, text in HANDSHAKE_QUERY],
    "client_frames": {name: {"$ref": f"#/components/schemas/{schema}"} for name, schema in FRAME_SCHEMAS.items()},
    "server_frames": {name: {"$ref": f"#/components/schemas/{schema}"} for name, schema in (
        ("recent_messages", "ChatRecentMessages"), ("user_joined", "ChatUserJoined"),
        ("user_left", "ChatUserLeft"), ("new_message", "ChatNewMessage"), ("message_edited", "ChatMessageEdited"),
        ("message_deleted", "ChatMessageDeleted"), ("read_marker", "ChatReadMarker"), ("typing", "ChatUserTyping"),
        ("error", "ChatError"))},
    "description": f"""## Live chat: WebSocket `/ws/chat/{{event_id}}`

**Handshake.** `GET /ws/chat/{{event_id}}?token=<jwt>` (or `Authorization: Bearer <jwt>`) with the
usual WebSocket upgrade headers. Refusals are plain HTTP answers with the JSON error body, before
any upgrade: 401 (no, bad, expired or revoked token), 403 (neither the organizer nor RSVPed:
`not_a_member`; removed from the chat by the organizer: `removed_from_chat`; or a browser
`Origin` that is not allowed: `origin_not_allowed`), 404 (unknown
event), 429 (`too_many_connections`: the per-user cap on open chat sockets; `Retry-After`), 503
(`shutting_down`; `server_full`: the server holds all the connections it can, `Retry-After`; or
the database is unavailable), 400 (`websocket_required`: not an upgrade request;
`unknown_query_parameter`: a query parameter other than `token`). Requests without
`Origin` (native apps) are allowed. No compression. The server pings every
`chat_ping_interval_seconds` (default 30 s) and closes a connection whose pong does not come back
within that time.

**Frames** are JSON text objects with a `type` (schemas: `ChatJoin`, `ChatLeave`, `ChatSend`,
`ChatEdit`, `ChatDelete`, `ChatMarkRead`, `ChatTyping` from the client; `ChatRecentMessages`,
`ChatUserJoined`, `ChatUserLeft`, `ChatNewMessage`, `ChatMessageEdited`, `ChatMessageDeleted`,
`ChatReadMarker`, `ChatUserTyping`, `ChatError` from the server).

- `{{"type": "join_chat", "since": "<entry id>"?}}` → `recent_messages` to this connection: the
  last {RECENT_COUNT} messages oldest first, as they are now (`edited_at`; a deleted message is a
  tombstone: `deleted`, `deleted_at`, empty text), or with `since` every message after that entry
  as it is now, and in `changes` (oldest first) the `message_edited` / `message_deleted` frames
  after `since` of the messages at or before it, which the client already has (at most
  {MAX_CATCH_UP} entries in all; beyond that `too_far_behind`: read
  `GET /api/v1/events/{{event_id}}/messages` and join without `since`). `since` is the id of the
  last entry the client saw: a message's (`new_message`) or a change's (`message_edited`,
  `message_deleted`: their `id`), all from one increasing sequence. Then `user_joined` to the
  room if this is the user's first connection there. A `since` that is not an entry of this chat
  is refused (`unknown_since`): recovery never silently skips anything.
- `{{"type": "leave_chat"}}` → `user_left` to the room if it was the user's last connection there;
  the connection stays open.
- `{{"type": "send_message", "text": "...", "client_msg_id": "..."?}}` → stored, then `new_message`
  to everyone joined, the sender included; that echo (with `client_msg_id`) is the
  acknowledgement. Text is 1 to {MAX_TEXT_CHARS} characters after trimming. Sending a
  `client_msg_id` again (a retry after a lost echo, also after a reconnect) echoes the stored
  message to the sender only and stores nothing. `client_msg_id` is unique per sender and event.
  Sends are accepted from `join_chat` on, before its answer too.
- `{{"type": "edit_message", "id": "<message id>", "text": "..."}}` (your own messages) → stored,
  then `message_edited` {{id (the change's), message_id, text, edited_at}} to everyone joined, the
  sender included (the acknowledgement). An edit already done (the message has that text: a
  retry) sends the earlier `message_edited` to the sender only and stores nothing.
- `{{"type": "delete_message", "id": "<message id>"}}` (your own; the event's organizer may delete
  any) → stored, then `message_deleted` {{id, message_id, deleted_by, deleted_at}} to everyone
  joined. The message stays in history as a tombstone; its text, and its edits' texts, are
  erased. Deleting it again sends the earlier `message_deleted` to the sender only.
- `{{"type": "mark_read", "id": "<entry id>"}}` → the user's read marker in this chat (kept by the
  server, the same on every device; it never moves back) → `read_marker` {{event_id,
  last_read_id}} to each of the user's connections to this chat. `GET /api/v1/users/me/chats`
  lists the user's chats with the messages unread after their marker. Allowed before `join_chat`.
- `{{"type": "typing"}}` → `typing` {{user: {{id, username}}, expires_in: {TYPING_EXPIRES}}} to the others
  joined, not to the typist: show it for `expires_in` seconds unless renewed (a `new_message` from
  that user ends it). Not stored, not replayed, outside the room's order. At most one is relayed
  per connection every {TYPING_EVERY} s; those between are absorbed without an answer, so a client may
  send one per keystroke (they still count against the frame rate limit). A muted user's are
  refused (`muted`).

**Order.** Every member receives a room's `new_message`, `message_edited` and `message_deleted`
frames in one order, the order in which they were stored (their ids increase in that order),
whichever server process each member is connected to. `recent_messages` and the frames after it
meet exactly: nothing missed, nothing twice, also when a client reconnects with `since` to another
process. `online_count` counts each user once, however many connections and processes they use.

**Errors** (`{{"type": "error", "code", "message"}}`, plus `client_msg_id` when a send was
refused, `errors` for a malformed frame, `retry_after` in seconds for `rate_limited`); the
connection stays open: `invalid_frame` (not a JSON object, or not the frame's shape),
`unknown_type`, `not_joined`, `already_joined`, `rate_limited` (a token bucket per connection:
sustained rate and burst from settings; every frame counts; a new connection takes over the
bucket a closed one of the same user left, until it has refilled), `invalid_text`, `unknown_since`,
`too_far_behind`, `unavailable` (not stored: send it again with the same `client_msg_id`),
`shutting_down`, `event_not_found`, `event_cancelled` (a send, edit or deletion in the chat of a
cancelled event, which stays readable); for edit_message, delete_message and mark_read (with
`message_id`): `message_not_found` (no such message in this chat), `not_your_message` (someone
else's message; only the organizer may delete those), `message_deleted` (an edit of a deleted
message), `unchanged` (an edit to the text the message has had from the start); `muted` (with
`muted_until` and `retry_after`, the time left: the organizer muted the sender, who can read
but not send or edit), `removed_from_chat`.

**Close codes.** 1001 server shutting down (queued messages are stored and echoed first: no
acknowledged message is lost; the reason says when to come back, see Reconnecting); 1009 a frame
over {MAX_FRAME_BYTES // 1024} KiB; 1013 the client does not read fast enough (its unsent backlog
passed the `chat_max_buffer_bytes` setting; the reason says when to come back);
4401 the token was revoked (logout, password reset) or has expired (reason `token expired`: the
socket lives no longer than the token it was opened with; connect again with a fresh token and
`join_chat` with `since` the last message seen, which misses nothing); 4403 the user cancelled
their RSVP (and is not the organizer), or the organizer removed them from the chat (reason
`removed from chat`; until allowed back, the handshake is refused with 403 `removed_from_chat`);
4404 the event was deleted. A logout, password reset, RSVP
cancel or deletion that lands while a handshake is in progress refuses it (401, 403, 404).

{RETRY_PROTOCOL} Then `join_chat` with `since` the id of the last message received:
nothing is missed, nothing comes twice.
""",
}

ROUTES = [(r"/ws/chat/(?P<event_id>[^/]+)", ChatSocket)]
