"""Chat history: who may chat in an event, the rule for a message's text, and the message log.

Messages keep the old backend's `messages` shape (`event_id`, `user_id`, `username`, `text`,
`timestamp`) plus `client_msg_id` when the sender gave one. A room's order is the order of
`_id`: this process hands out ids that only grow (`MessageLog._next_id`), in the order the
messages are stored, so "everything after message X" is `_id > X`.

Contract of the log, enforced by one writer task per busy room (`MessageLog._write`):
- a message is published only after it is stored, and a room's messages are published in
  the order of their ids;
- a replay (the recent messages, or everything after one) and the subscription it hands them
  to happen between two published batches, never during one, so a subscriber gets each
  message exactly once: in the replay, or published after it;
- a `client_msg_id` is stored once per sender and room (a unique index backs this across
  restarts); sending it again gives back the stored message instead of a second one.
"""
import asyncio
import dataclasses
import logging

from domain import store as db
from domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, Unavailable
from domain.events import organizer_or_rsvped, parse_event_id
from domain.times import to_iso, utcnow

log = logging.getLogger("chat")

MAX_TEXT_CHARS = 2000
RECENT_COUNT = 50
# A replay from `since` is sent in one frame; past this many messages the client is told to
# read the history page by page instead.
MAX_CATCH_UP = 500
# One insert_many per batch; a batch is whatever queued while the previous one was written.
MAX_BATCH = 500
DUPLICATE_KEY = 11000
NOT_STORED = "The message was not stored; send it again with the same client_msg_id."


def clean_text(text):
    """The text as stored: trimmed, 1 to MAX_TEXT_CHARS characters."""
    trimmed = text.strip()
    if not 1 <= len(trimmed) <= MAX_TEXT_CHARS:
        raise InvalidInput(f"A message is 1 to {MAX_TEXT_CHARS} characters after trimming spaces.",
                           code="invalid_text")
    if not _storable(trimmed):
        raise InvalidInput("The text is not valid Unicode (a lone surrogate).", code="invalid_text")
    return trimmed


def _storable(text):
    # JSON lets a client send "\ud800", which no database can store: refused here, alone,
    # rather than failing the batch it would be written with.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_json(doc):
    """The contract's Message object."""
    timestamp = doc.get("timestamp") or doc["_id"].generation_time  # old documents may lack one
    message = {
        "id": str(doc["_id"]),
        "event_id": str(doc["event_id"]),
        "user_id": str(doc.get("user_id", "")),
        "username": doc.get("username") or "",
        "text": doc.get("text") or "",
        "timestamp": to_iso(timestamp),
    }
    if doc.get("client_msg_id") is not None:
        message["client_msg_id"] = doc["client_msg_id"]
    return message


async def chat_event_id(store, event_text_id, user_id):
    """The id of the event whose chat `user_id` may use: its organizer's or an RSVPed user's."""
    event_id = parse_event_id(event_text_id)
    if await store.events.find_one({"_id": event_id, **organizer_or_rsvped(user_id)}, {"_id": 1}):
        return event_id
    if await store.events.find_one({"_id": event_id}, {"_id": 1}) is None:
        raise NotFound("There is no such event.", code="event_not_found")
    raise Forbidden("Only the organizer and RSVPed users can read and write this chat.", code="not_a_member")


@dataclasses.dataclass(eq=False)
class _Post:
    author_id: object
    username: str
    text: str
    client_msg_id: str
    result: asyncio.Future
    doc: dict = None

    @property
    def key(self):
        return None if self.client_msg_id is None else (self.author_id, self.client_msg_id)


@dataclasses.dataclass(eq=False)
class _Replay:
    since: object
    subscribe: object
    result: asyncio.Future


@dataclasses.dataclass(eq=False)
class _Room:
    posts: list = dataclasses.field(default_factory=list)
    replays: list = dataclasses.field(default_factory=list)
    task: asyncio.Task = None


class MessageLog:
    """Each room's messages: stored in batches, published in stored order, replayed exactly.

    `publish(event_id, messages)` is called with each stored batch (Message objects, in
    order) before anything else happens in the room; it must not block.
    """

    def __init__(self, store, publish, clock=utcnow, batch_size=MAX_BATCH):
        self.store = store
        self.publish = publish
        self.clock = clock
        self.batch_size = batch_size
        self._rooms = {}
        self._last_id = None
        self._floor_loaded = False

    # --- posting -------------------------------------------------------------------------

    def post(self, event_id, author_id, username, text, client_msg_id=None):
        """Queues a message; the future gives (message, repeated) once it is stored and
        published, `repeated` being True when `client_msg_id` named an earlier message,
        which is then the message given. Bad text raises InvalidInput at once."""
        text = clean_text(text)
        if client_msg_id is not None and not _storable(client_msg_id):
            raise InvalidInput("client_msg_id is not valid Unicode (a lone surrogate).", code="invalid_frame")
        result = asyncio.get_running_loop().create_future()
        self._room(event_id).posts.append(_Post(author_id, username, text, client_msg_id, result))
        return result

    async def replay(self, event_id, since, subscribe):
        """Calls `subscribe(messages)` between two published batches of the room, with the last
        RECENT_COUNT messages (oldest first) or, given a message id `since`, every message
        after it. A `since` that is not a message of this room fails, as does a gap longer
        than MAX_CATCH_UP: a replay never silently leaves a hole."""
        since_id = None
        if since is not None:
            since_id = db.parse_id(since)
            if since_id is None or not await self.store.messages.find_one(
                    {"_id": since_id, "event_id": event_id}, {"_id": 1}):
                raise InvalidInput("`since` is not a message of this chat.", code="unknown_since")
        result = asyncio.get_running_loop().create_future()
        self._room(event_id).replays.append(_Replay(since_id, subscribe, result))
        await result

    def discard(self, event_id):
        """Drops what the room has queued (its event is gone); a batch being written finishes."""
        room = self._rooms.get(event_id)
        if room is None:
            return
        gone = NotFound("The event was deleted.", code="event_not_found")
        for item in room.posts + room.replays:
            _settle(item.result, error=gone)
        room.posts, room.replays = [], []

    async def drain(self):
        """Returns once everything queued is stored and published (at shutdown)."""
        while self._rooms:
            await asyncio.gather(*[room.task for room in self._rooms.values()], return_exceptions=True)

    # --- reading -------------------------------------------------------------------------

    async def page(self, event_id, limit, cursor=None):
        """A page of history, newest first: {items, next_cursor}."""
        query = {"event_id": event_id}
        if cursor is not None:
            before = db.parse_id(cursor)
            if before is None:
                raise InvalidInput("The cursor is not one this server handed out.", code="invalid_cursor",
                                   errors=[{"path": "cursor", "message": "is not a cursor this server handed out"}])
            query["_id"] = {"$lt": before}
        docs = await self.store.messages.find(query).sort("_id", db.DESCENDING).limit(limit + 1).to_list(None)
        items = [message_json(doc) for doc in docs[:limit]]
        return {"items": items, "next_cursor": items[-1]["id"] if len(docs) > limit else None}

    async def _history(self, event_id, since_id):
        if since_id is None:
            docs = await self.store.messages.find({"event_id": event_id}).sort(
                "_id", db.DESCENDING).limit(RECENT_COUNT).to_list(None)
            docs.reverse()
        else:
            docs = await self.store.messages.find({"event_id": event_id, "_id": {"$gt": since_id}}).sort(
                "_id", db.ASCENDING).limit(MAX_CATCH_UP + 1).to_list(None)
            if len(docs) > MAX_CATCH_UP:
                raise Conflict(f"More than {MAX_CATCH_UP} messages were missed: read them with "
                               "GET /api/v1/events/<id>/messages, then join without `since`.",
                               code="too_far_behind")
        return [message_json(doc) for doc in docs]

    # --- the writer ----------------------------------------------------------------------

    def _room(self, event_id):
        room = self._rooms.get(event_id)
        if room is None:
            room = self._rooms[event_id] = _Room()
            room.task = asyncio.ensure_future(self._write(event_id, room))
        return room

    async def _write(self, event_id, room):
        """The room's one writer: batches of posts and of replays, one after the other."""
        try:
            while room.posts or room.replays:
                if room.posts:
                    batch, room.posts = room.posts[:self.batch_size], room.posts[self.batch_size:]
                    await self._store(event_id, batch)
                if room.replays:
                    replays, room.replays = room.replays, []
                    await self._replay(event_id, replays)
        finally:
            # No await between the loop's last check and here, so nothing queued is left behind.
            del self._rooms[event_id]

    async def _store(self, event_id, posts):
        try:
            await self._load_id_floor()
            fresh = self._documents(event_id, posts)
            stored, originals = await self._insert(event_id, fresh)
        except Exception as error:
            for post in posts:
                _settle(post.result, error=_as_domain_error(error))
            return
        messages = [message_json(post.doc) for post in stored]
        try:
            self.publish(event_id, messages)
        except Exception:
            log.exception("publishing chat messages failed")  # they are stored: history has them
        for post, message in zip(stored, messages):
            _settle(post.result, (message, False))
        # What is left repeats a client_msg_id: of an earlier message, or of one in this batch.
        known = {**originals, **{post.key: post.doc for post in stored if post.key is not None}}
        for post in posts:
            if post.key in known:
                _settle(post.result, (message_json(known[post.key]), True))
            else:
                _settle(post.result, error=Unavailable(NOT_STORED))

    def _documents(self, event_id, posts):
        """Gives a document to each post but those repeating a client_msg_id earlier in the batch."""
        now = self.clock()
        fresh, keys = [], set()
        for post in posts:
            if post.key is not None:
                if post.key in keys:
                    continue
                keys.add(post.key)
            post.doc = {"_id": self._next_id(), "event_id": event_id, "user_id": post.author_id,
                        "username": post.username, "text": post.text, "timestamp": now}
            if post.client_msg_id is not None:
                post.doc["client_msg_id"] = post.client_msg_id
            fresh.append(post)
        return fresh

    async def _insert(self, event_id, posts):
        """Inserts the batch; returns (stored posts, {key: stored document} for the posts whose
        client_msg_id was already stored)."""
        if not posts:
            return [], {}
        try:
            await self.store.messages.insert_many([post.doc for post in posts], ordered=False)
            return posts, {}
        except db.BulkWriteError as e:
            failures = {error["index"]: error.get("code") for error in e.details.get("writeErrors", [])}
        for index, code in failures.items():
            if code != DUPLICATE_KEY:
                log.error("the database refused a chat message (code %s)", code)
                _settle(posts[index].result, error=Unavailable(NOT_STORED))
        repeated = [posts[index] for index, code in failures.items() if code == DUPLICATE_KEY]
        stored = [post for index, post in enumerate(posts) if index not in failures]
        return stored, await self._originals(event_id, repeated)

    async def _originals(self, event_id, posts):
        if not posts:
            return {}
        found = await self.store.messages.find({"event_id": event_id, "$or": [
            {"user_id": post.author_id, "client_msg_id": post.client_msg_id} for post in posts]}).to_list(None)
        return {(doc["user_id"], doc["client_msg_id"]): doc for doc in found}

    async def _replay(self, event_id, replays):
        histories = {}
        for since_id in {replay.since for replay in replays}:
            try:
                histories[since_id] = await self._history(event_id, since_id)
            except Exception as error:
                histories[since_id] = _as_domain_error(error)
        for replay in replays:
            history = histories[replay.since]
            if isinstance(history, DomainError):
                _settle(replay.result, error=history)
                continue
            try:
                replay.subscribe(history)
            except Exception as error:
                log.exception("a chat subscriber failed")
                _settle(replay.result, error=_as_domain_error(error))
                continue
            _settle(replay.result, None)

    # --- ids -----------------------------------------------------------------------------

    async def _load_id_floor(self):
        """Ids must sort after every stored message, also after a restart within the same second
        or with a clock that went back, so the newest stored id is the floor."""
        if self._floor_loaded:
            return
        newest = await self.store.messages.find_one({}, {"_id": 1}, sort=[("_id", db.DESCENDING)])
        if newest and (self._last_id is None or newest["_id"] > self._last_id):
            self._last_id = newest["_id"]
        self._floor_loaded = True

    def _next_id(self):
        candidate = db.ObjectId()
        if self._last_id is not None and candidate <= self._last_id:
            candidate = db.ObjectId((int.from_bytes(self._last_id.binary, "big") + 1).to_bytes(12, "big"))
        self._last_id = candidate
        return candidate


def _settle(future, value=None, error=None):
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _as_domain_error(error):
    if isinstance(error, DomainError):
        return error
    if not isinstance(error, db.UNAVAILABLE_ERRORS):
        log.error("chat storage failed", exc_info=error)
    return Unavailable("The chat cannot be reached right now. Try again shortly.", code="unavailable")
