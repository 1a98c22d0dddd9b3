"""Chat history: who may chat in an event, the rule for a message's text, and the message log.

A message record (domain/repositories.py, `Messages`): id, event_id, user_id, username, text,
timestamp, client_msg_id. A room's order is the order of ids, which the store hands out
increasing in the order messages are stored, so "everything after message X" is `after(X)`.

Contract of the log, enforced by one writer task per busy room in a process (`MessageLog._write`):
- a batch is published only after it is stored, with the id of the room's message stored just
  before it (read by the store in the same atomic step that drew the batch's ids), and one
  process publishes a room's batches in the order of their ids;
- a `client_msg_id` is stored once per sender and room (`Messages.append` keeps that across
  restarts); sending it again gives back the stored message instead of a second one.
Delivery in one order on every process, and replays that meet it exactly, are the room feed's
(domain/chat_feed.py), which follows that chain of "stored just before" ids.
"""
import asyncio
import dataclasses
import logging
import re

from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, StoreUnavailable, Unavailable
from domain.paging import ID_PATTERN
from domain.times import to_iso, utcnow

log = logging.getLogger("chat")

MAX_TEXT_CHARS = 2000
RECENT_COUNT = 50
# A replay from `since` is sent in one frame; past this many messages the client is told to
# read the history page by page instead.
MAX_CATCH_UP = 500
# One append per batch; a batch is whatever queued while the previous one was written.
MAX_BATCH = 500
NOT_STORED = "The message was not stored; send it again with the same client_msg_id."
NOT_A_MEMBER = "Only the organizer and RSVPed users can read and write this chat."


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


def message_json(message):
    """The contract's Message object from a message record."""
    shown = {
        "id": message["id"],
        "event_id": message["event_id"],
        "user_id": message["user_id"] or "",
        "username": message["username"] or "",
        "text": message["text"] or "",
        "timestamp": to_iso(message["timestamp"]),
    }
    if message["client_msg_id"] is not None:
        shown["client_msg_id"] = message["client_msg_id"]
    return shown


async def check_chat_member(store, event_id, user_id):
    """Raises NotFound or Forbidden unless `user_id` may use the event's chat: its organizer
    or an RSVPed user."""
    member = await store.events.is_member(event_id, user_id)
    if member is None:
        raise NotFound("There is no such event.", code="event_not_found")
    if not member:
        raise Forbidden(NOT_A_MEMBER, code="not_a_member")


@dataclasses.dataclass(eq=False)
class _Post:
    author_id: str
    username: str
    text: str
    client_msg_id: str
    result: asyncio.Future

    @property
    def key(self):
        return None if self.client_msg_id is None else (self.author_id, self.client_msg_id)


@dataclasses.dataclass(eq=False)
class _Room:
    posts: list = dataclasses.field(default_factory=list)
    task: asyncio.Task = None


class MessageLog:
    """Each room's messages: stored in batches, published in stored order.

    `publish(event_id, messages, previous_id)` is called with each stored batch (Message
    objects, in order) and the id of the room's message stored just before it (None: the
    first), before anything else happens in the room; it must not block.
    """

    def __init__(self, store, publish, clock=utcnow, batch_size=MAX_BATCH):
        self.store = store
        self.publish = publish
        self.clock = clock
        self.batch_size = batch_size
        self._rooms = {}

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

    def discard(self, event_id):
        """Drops what the room has queued (its event is gone); a batch being written finishes."""
        room = self._rooms.get(event_id)
        if room is None:
            return
        gone = NotFound("The event was deleted.", code="event_not_found")
        for post in room.posts:
            _settle(post.result, error=gone)
        room.posts = []

    async def drain(self):
        """Returns once everything queued is stored and published (at shutdown)."""
        while self._rooms:
            await asyncio.gather(*[room.task for room in self._rooms.values()], return_exceptions=True)

    # --- reading -------------------------------------------------------------------------

    async def page(self, event_id, limit, cursor=None):
        """A page of history, newest first: {items, next_cursor}."""
        if cursor is not None and not re.fullmatch(ID_PATTERN, cursor):
            raise InvalidInput("The cursor is not one this server handed out.", code="invalid_cursor",
                               errors=[{"path": "cursor", "message": "is not a cursor this server handed out"}])
        messages = await self.store.messages.before(event_id, cursor, limit + 1)
        items = [message_json(message) for message in messages[:limit]]
        return {"items": items, "next_cursor": items[-1]["id"] if len(messages) > limit else None}

    # --- the writer ----------------------------------------------------------------------

    def _room(self, event_id):
        room = self._rooms.get(event_id)
        if room is None:
            room = self._rooms[event_id] = _Room()
            room.task = asyncio.ensure_future(self._write(event_id, room))
        return room

    async def _write(self, event_id, room):
        """The room's one writer in this process: batch after batch."""
        try:
            while room.posts:
                batch, room.posts = room.posts[:self.batch_size], room.posts[self.batch_size:]
                await self._store(event_id, batch)
        finally:
            # No await between the loop's last check and here, so nothing queued is left behind.
            del self._rooms[event_id]

    async def _store(self, event_id, posts):
        fresh = _first_of_each_key(posts)
        now = self.clock()
        drafts = [{"user_id": post.author_id, "username": post.username, "text": post.text, "timestamp": now,
                   "client_msg_id": post.client_msg_id} for post in fresh]
        try:
            results = await self.store.messages.append(event_id, drafts)
        except (NotFound, Conflict) as refusal:
            # The event was deleted, or cancelled (its chat stays readable but takes no new
            # messages), while the batch waited: nothing to send again.
            for post in posts:
                _settle(post.result, error=refusal)
            return
        except Exception as error:
            # The batch was not stored (on MongoDB, perhaps part of it): each sender is told to
            # send again with the same client_msg_id, which never stores a message twice, and
            # the room goes on with its next batch.
            if not isinstance(error, StoreUnavailable):
                log.error("chat storage failed", exc_info=error)
            for post in posts:
                _settle(post.result, error=Unavailable(NOT_STORED))
            return
        stored, known = [], {}
        for post, result in zip(fresh, results):
            if result is None:
                log.error("the database refused a chat message")
                continue
            record, repeated = result
            message = message_json(record)
            if not repeated:
                stored.append((post, message))
            if post.key is not None:
                known[post.key] = message
        try:
            if stored:
                self.publish(event_id, [message for _, message in stored], results.previous_id)
        except Exception:
            log.exception("publishing chat messages failed")  # they are stored: history has them
        for post, message in stored:
            _settle(post.result, (message, False))
        # What is left repeats a client_msg_id: of an earlier message, or of one in this batch.
        for post in posts:
            if post.key in known:
                _settle(post.result, (known[post.key], True))
            else:
                _settle(post.result, error=Unavailable(NOT_STORED))


def _first_of_each_key(posts):
    """The posts but those repeating a client_msg_id earlier in the batch: `append` takes no
    two drafts with one (user_id, client_msg_id)."""
    fresh, keys = [], set()
    for post in posts:
        if post.key is not None:
            if post.key in keys:
                continue
            keys.add(post.key)
        fresh.append(post)
    return fresh


def _settle(future, value=None, error=None):
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
