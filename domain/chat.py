"""Chat history: who may chat in an event, the rule for a message's text, and the message log.

A room's log (domain/repositories.py, `Messages`) holds its messages and the changes to them
(edits, deletions), each an entry with an id from one sequence. A room's order is the order of
ids, which the store hands out increasing in the order entries are stored, so "everything
after entry X" is `after(X)`.

Contract of the log, enforced by one writer task per busy room in a process (`MessageLog._write`):
- a batch (of messages, or of changes) is published only after it is stored, as the frames
  `new_message`, `message_edited`, `message_deleted`, with the id of the room's entry stored
  just before it (read by the store in the same atomic step that drew the batch's ids), and
  one process publishes a room's batches in the order of their ids;
- a `client_msg_id` is stored once per sender and room (`Messages.append` keeps that across
  restarts); sending it again gives back the stored message instead of a second one.
Delivery in one order on every process, and replays that meet it exactly, are the room feed's
(domain/chat_feed.py), which follows that chain of "stored just before" ids, messages and
changes alike.
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
REMOVED = "The organizer removed you from this chat."
# GET /api/v1/users/me/chats: the user's newest events, and how far each unread count is counted
# (a count of the index range after the marker, stopped here, so it costs at most this much).
MAX_CHATS = 200
MAX_UNREAD_COUNT = 999


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
    """The contract's Message object from a message record: a deleted one is a tombstone, its
    text empty."""
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
    if message.get("edited_at") is not None:
        shown["edited_at"] = to_iso(message["edited_at"])
    if message.get("deleted_at") is not None:
        shown["deleted"] = True
        shown["deleted_at"] = to_iso(message["deleted_at"])
    return shown


def entry_frame(record):
    """The server frame announcing a log entry: new_message, message_edited or message_deleted.
    The one rendering of the live path (MessageLog) and of reads from the store (the room feed's
    gap fills), so both give the same frames."""
    if record.get("kind", "message") == "message":
        return {"type": "new_message", "message": message_json(record)}
    return change_json(record)


def entry_id(frame):
    """The id of the log entry a frame of `entry_frame` announces: the room feed's chain."""
    return frame["message"]["id"] if frame["type"] == "new_message" else frame["id"]


def change_json(change):
    """The server frame of a change record: message_edited or message_deleted."""
    if change["kind"] == "edit":
        return {"type": "message_edited", "id": change["id"], "event_id": change["event_id"],
                "message_id": change["message_id"], "text": change["text"] or "",
                "edited_at": to_iso(change["timestamp"])}
    return {"type": "message_deleted", "id": change["id"], "event_id": change["event_id"],
            "message_id": change["message_id"], "deleted_by": change["user_id"] or "",
            "deleted_at": to_iso(change["timestamp"])}


async def chats_of(store, user_id):
    """The user's event chats (GET /api/v1/users/me/chats), those with the newest message first,
    then the silent ones, newest event first."""
    chats = await store.messages.chats(user_id, MAX_CHATS, MAX_UNREAD_COUNT)
    items = [{"event_id": chat["event_id"], "title": chat["title"] or "", "last_read_id": chat["last_read_id"],
              "unread_count": chat["unread_count"],
              "last_message": None if chat["last_message"] is None else message_json(chat["last_message"])}
             for chat in chats]
    items.sort(key=lambda chat: chat["last_message"]["id"] if chat["last_message"] else "", reverse=True)
    return {"items": items}


async def check_chat_member(store, event_id, user_id):
    """Raises NotFound or Forbidden unless `user_id` may use the event's chat: its organizer
    or an RSVPed user, not removed from the chat by the organizer (domain/moderation.py).
    Returns the end of the user's mute, or None."""
    member = await store.events.is_member(event_id, user_id)
    if member is None:
        raise NotFound("There is no such event.", code="event_not_found")
    if not member:
        raise Forbidden(NOT_A_MEMBER, code="not_a_member")
    standing = await store.messages.standing(event_id, user_id, utcnow())
    if standing["removed"]:
        raise Forbidden(REMOVED, code="removed_from_chat")
    return standing["muted_until"]


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
class _Change:
    kind: str
    message_id: str
    author_id: str
    text: str
    result: asyncio.Future


@dataclasses.dataclass(eq=False)
class _Room:
    posts: list = dataclasses.field(default_factory=list)
    task: asyncio.Task = None


class MessageLog:
    """Each room's log: stored in batches, published in stored order.

    `publish(event_id, frames, previous_id)` is called with each stored batch, as the server
    frames that announce it (`new_message`, `message_edited`, `message_deleted`, in stored order,
    see `entry_frame`) and the id of the room's entry stored just before it, before anything else
    happens in the room; it must not block. Replays are the room feed's (domain/chat_feed.py).
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

    def change(self, event_id, kind, message_id, user_id, text=None):
        """Queues an edit ("edit", with its new text) or a deletion ("delete") of a message,
        in the room's one order with its messages. The future gives (frame, repeated) once it is
        stored and published: the message_edited / message_deleted frame, `repeated` being True
        when the change was already done (a retry), the frame then being the earlier change's.
        Refusals (not the author's, no such message, ...) fail the future; bad text raises at once."""
        if kind == "edit":
            text = clean_text(text)
        result = asyncio.get_running_loop().create_future()
        self._room(event_id).posts.append(_Change(kind, message_id, user_id, text, result))
        return result

    def discard(self, event_id):
        """Drops what the room has queued (its event is gone); a batch being written finishes."""
        room = self._rooms.get(event_id)
        if room is None:
            return
        gone = NotFound("The event was deleted.", code="event_not_found")
        for item in room.posts:
            settle(item.result, error=gone)
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
        """The room's one writer: batches of posts and changes, one after the other."""
        try:
            while room.posts:
                batch, room.posts = room.posts[:self.batch_size], room.posts[self.batch_size:]
                for run in _runs(batch):
                    await (self._store if isinstance(run[0], _Post) else self._apply)(event_id, run)
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
                settle(post.result, error=refusal)
            return
        except Exception as error:
            # The batch was not stored (on MongoDB, perhaps part of it): each sender is told to
            # send again with the same client_msg_id, which never stores a message twice, and
            # the room goes on with its next batch.
            if not isinstance(error, StoreUnavailable):
                log.error("chat storage failed", exc_info=error)
            for post in posts:
                settle(post.result, error=Unavailable(NOT_STORED))
            return
        stored, known, refused = [], {}, {}
        for post, result in zip(fresh, results):
            if result is None:
                log.error("the database refused a chat message")
                continue
            if isinstance(result, Exception):  # the sender is muted, or removed from the chat
                refused[post.key or post] = result
                continue
            record, repeated = result
            message = message_json(record)
            if not repeated:
                stored.append((post, message))
            if post.key is not None:
                known[post.key] = message
        try:
            if stored:
                self.publish(event_id, [{"type": "new_message", "message": message} for _, message in stored],
                             results.previous_id)
        except Exception:
            log.exception("publishing chat messages failed")  # they are stored: history has them
        for post, message in stored:
            settle(post.result, (message, False))
        # What is left repeats a client_msg_id: of an earlier message, or of one in this batch.
        for post in posts:
            if post.key in known:
                settle(post.result, (known[post.key], True))
            else:
                settle(post.result, error=refused.get(post.key or post, Unavailable(NOT_STORED)))

    async def _apply(self, event_id, changes):
        drafts = [{"kind": change.kind, "message_id": change.message_id, "user_id": change.author_id,
                   "text": change.text, "timestamp": self.clock()} for change in changes]
        try:
            results = await self.store.messages.change(event_id, drafts)
        except (NotFound, Conflict) as refusal:
            for change in changes:
                settle(change.result, error=refusal)
            return
        except Exception as error:
            if not isinstance(error, StoreUnavailable):
                log.error("chat storage failed", exc_info=error)
            for change in changes:
                settle(change.result, error=Unavailable("The change was not stored; send it again."))
            return
        frames = [None if isinstance(result, Exception) else (change_json(result[0]), result[1]) for result in results]
        try:
            published = [frame for frame, repeated in filter(None, frames) if not repeated]
            if published:
                self.publish(event_id, published, results.previous_id)
        except Exception:
            log.exception("publishing chat changes failed")  # they are stored: replays have them
        for change, result, frame in zip(changes, results, frames):
            if frame is None:
                settle(change.result, error=result)
            else:
                settle(change.result, frame)


def _runs(batch):
    """The batch cut into runs of messages and runs of changes, in order: each run is one write."""
    runs = []
    for item in batch:
        if runs and type(runs[-1][0]) is type(item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


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


def settle(future, value=None, error=None):
    """Settles `future` unless it is already done (a caller may have gone)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
