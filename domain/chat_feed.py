"""The room feed: each room's stored batches delivered in stored order, whichever process stored
them and in whatever order they arrive, and replays that meet that delivery exactly.

A room's log holds messages and changes to them (edits, deletions), with ids from one sequence
(domain/repositories.py, `Messages`); a batch is the frames announcing its entries
(domain/chat.py `entry_frame`: new_message, message_edited, message_deleted). "Message" below
means any entry of the log: the chain, the gap fills and the replays' reach are over all of them.
A gap fill renders what the store holds with the same `entry_frame` as the live path, so the frames
are the same, but for one thing: a message read from the store is as it is now, so a message
edited or deleted since shows that already, and its change frames follow (applied again, they
change nothing).

How one order per room holds across processes. The store draws a batch's ids above the room's
newest message inside one atomic step (SQLite: the write transaction, under the file's write lock;
MongoDB: under a lease on the event's head document, see storage/mongo/messages.py), and reads
that newest id in the same step: the batch's `previous_id`. So the stored messages of a room form
one chain, each batch naming the last message before it, whatever the number of processes writing
at once. Batches may reach a process in another order: two processes store A then B, B's process
publishes first, or Redis drops a message while a connection is down. The feed delivers a batch
only when its `previous_id` is the last message it delivered (`last_id`); a batch from further
on waits, and the missing part is read from the store (`Messages.after(last_id)`), which already
holds it: a batch is published only after it is stored, and the store never shows a message
without every smaller id of its room. A batch whose last message was delivered already (read
from the store, or our own coming back through Redis) is dropped. Every process therefore
delivers each stored message once, in id order: the stored order. Nothing in this depends on
Redis keeping order or delivering at all: Redis only makes delivery prompt.

Replays: one task per room runs, one after the other, the deliveries of what has arrived and the
replays asked for (the last RECENT_COUNT messages, or everything after `since`). A replay is
read from the store; if it reaches past `last_id` (the store has messages this process has not
delivered yet: in flight from another process, or `since` names one a client saw on another
process), the room is first brought up to it from the store. The replay is then handed to its
subscriber between two deliveries, when it ends exactly at `last_id`, or the messages the
catch-up delivered after its end are added to it. So a subscriber gets each message once: in
its replay, or delivered after it.

The feed follows only the rooms with members in this process (`following(event_id)`), from the
first replay on; a batch for any other room is ignored.
"""
import asyncio
import dataclasses
import logging

from domain.chat import MAX_CATCH_UP, RECENT_COUNT, change_json, entry_frame, entry_id, message_json, settle
from domain.errors import Conflict, InvalidInput, NotFound, Unavailable

log = logging.getLogger("chat")

# Messages read from the store at a time when the room catches up.
CATCH_UP_PAGE = 500
# Why a room may not be caught up yet (the store not answering): tried again after this long.
RETRY_SECONDS = 1.0
# How long a batch that arrived ahead of the chain waits for the missing one before it is read
# from the store. Two processes storing one after the other publish at nearly the same moment,
# so the missing batch is usually a Redis hop (well under a millisecond) away: waiting for it
# costs nothing that delivering in order would not cost anyway, and reading it saves a database
# read. Only a batch Redis lost pays the wait.
GAP_WAIT_SECONDS = 0.02


def _later(a, b):
    """Whether id `a` comes after id `b` (None: before everything). Ids of both stores are
    lowercase hex of one length, so they compare as strings."""
    return a is not None and (b is None or a > b)


@dataclasses.dataclass(eq=False)
class _Replay:
    since: str
    subscribe: object
    result: asyncio.Future


@dataclasses.dataclass(eq=False)
class _Room:
    last_id: str = None
    known: bool = False  # last_id read from the store
    arrived: list = dataclasses.field(default_factory=list)  # (previous_id, items) not yet looked at
    waiting: dict = dataclasses.field(default_factory=dict)  # previous_id -> items, ahead of last_id
    behind: bool = False  # the store may hold messages not delivered here (Redis came back)
    replays: list = dataclasses.field(default_factory=list)
    task: asyncio.Task = None
    arrival: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # set by `offer`


class RoomFeed:
    """`deliver(event_id, frames)`: hands frames (`entry_frame`s, in stored order) to the room's
    members in this process; it must not block. `following(event_id)`: whether this process still
    has members in the room (the feed forgets a room when it has none). `read_from_store()`: told
    each time a room reads from the store what did not arrive in order."""

    def __init__(self, store, deliver, following, read_from_store=lambda: None):
        self.store = store
        self.deliver = deliver
        self.following = following
        self.read_from_store = read_from_store  # called each time a room catches up (metrics)
        self._rooms = {}

    def offer(self, event_id, previous_id, items):
        """A stored batch of the room (`items`: frames in id order, `previous_id` the id stored
        just before the first), from this process or another, in any order, possibly twice."""
        room = self._rooms.get(event_id)
        if room is None or not items:
            return
        if room.task is None and room.known and previous_id == room.last_id:
            self._deliver(event_id, room, items)  # the usual case, without a hop through the task
            return
        room.arrived.append((previous_id, items))
        room.arrival.set()
        self._run(event_id, room)

    async def replay(self, event_id, since, subscribe):
        """Calls `subscribe({messages, changes})` between two deliveries of the room: with the
        last RECENT_COUNT messages (oldest first) as they are now, or, given the id `since` of an
        entry (a message or a change), every message after it as it is now and, in order, the
        changes after it to messages at or before it (`changes`, as their frames). A `since` that
        is not an entry of this room fails, as does a gap longer than MAX_CATCH_UP entries: a
        replay never silently leaves a hole."""
        if since is not None and not await self.store.messages.exists(event_id, since):
            raise InvalidInput("`since` is not a message (nor a change) of this chat.", code="unknown_since")
        result = asyncio.get_running_loop().create_future()
        room = self._rooms.get(event_id)
        if room is None:
            room = self._rooms[event_id] = _Room()
        room.replays.append(_Replay(since, subscribe, result))
        self._run(event_id, room)
        await result

    def follows(self, event_id):
        """Whether batches of the room are wanted here (others are ignored by `offer`)."""
        return event_id in self._rooms

    def catch_up(self):
        """Every followed room reads what the store holds past its last delivery (after Redis
        came back: what was published while it was away never arrived)."""
        for event_id, room in self._rooms.items():
            room.behind = True
            self._run(event_id, room)

    def release(self, event_id):
        """The room has no members here any more: forgotten unless a replay is under way."""
        room = self._rooms.get(event_id)
        if room is not None and room.task is None and not room.replays:
            del self._rooms[event_id]

    def discard(self, event_id):
        """The event is gone: the room's replays fail, the room is forgotten."""
        room = self._rooms.pop(event_id, None)
        if room is None:
            return
        for replay in room.replays:
            settle(replay.result, error=NotFound("The event was deleted.", code="event_not_found"))
        room.replays = []
        if room.task is not None:
            room.task.cancel()

    # --- the room's task ---------------------------------------------------------------------

    def _run(self, event_id, room):
        if room.task is None:
            room.task = asyncio.ensure_future(self._work(event_id, room))

    async def _work(self, event_id, room):
        try:
            while True:
                if not room.known:
                    room.last_id, room.known = await self._newest_entry(event_id), True
                self._take_arrived(event_id, room)
                if room.waiting and not room.behind:
                    await self._wait_for_gap(event_id, room)
                if room.waiting or room.behind:
                    room.behind = False
                    await self._read_on(event_id, room)
                    self._take_arrived(event_id, room)
                if room.replays:
                    replays, room.replays = room.replays, []
                    try:
                        await self._replay(event_id, room, replays)
                    except BaseException as error:
                        # Taken out of room.replays, these are settled by no one else: a replay
                        # left waiting would hold its socket in JOINING for good.
                        _settle_all(replays, self._failure(event_id, room, error))
                        raise
                if not (room.arrived or room.replays or room.waiting or room.behind):
                    break
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The store did not answer: replays waiting fail (their clients are told to try
            # again), batches stay queued and the room tries again shortly.
            log.warning("chat room %s could not be read: %s", event_id, error)
            for replay in room.replays:
                settle(replay.result, error=error)
            room.replays = []
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retry, event_id, room)
        finally:
            room.task = None
        if self._rooms.get(event_id) is room and not room.replays and not self.following(event_id):
            del self._rooms[event_id]

    def _failure(self, event_id, room, error):
        """What a replay cut short by `error` fails with: the error itself, or on cancellation
        (the room's task stopped by `discard`) the event's deletion, or else unavailability."""
        if isinstance(error, Exception):
            return error
        if self._rooms.get(event_id) is not room:
            return NotFound("The event was deleted.", code="event_not_found")
        return Unavailable("The chat cannot be reached right now. Try again shortly.")

    def _retry(self, event_id, room):
        if self._rooms.get(event_id) is room and (room.arrived or room.waiting or room.behind):
            self._run(event_id, room)

    async def _wait_for_gap(self, event_id, room):
        """Up to GAP_WAIT_SECONDS for the batches that close the gap to arrive."""
        loop = asyncio.get_running_loop()
        until = loop.time() + GAP_WAIT_SECONDS
        while room.waiting and loop.time() < until:
            room.arrival.clear()
            try:
                await asyncio.wait_for(room.arrival.wait(), until - loop.time())
            except asyncio.TimeoutError:
                pass
            self._take_arrived(event_id, room)

    def _take_arrived(self, event_id, room):
        """Delivers what continues the chain from last_id; keeps what is further on."""
        arrived, room.arrived = room.arrived, []
        for previous_id, items in arrived:
            if not _later(entry_id(items[-1]), room.last_id):
                continue  # delivered already
            room.waiting[previous_id] = items
        while room.last_id in room.waiting:
            self._deliver(event_id, room, room.waiting.pop(room.last_id))
        for previous_id in [key for key, items in room.waiting.items()
                            if not _later(entry_id(items[-1]), room.last_id)]:
            del room.waiting[previous_id]

    def _deliver(self, event_id, room, items):
        room.last_id = entry_id(items[-1])
        self.deliver(event_id, items)

    async def _read_on(self, event_id, room):
        """Delivers from the store everything that follows last_id."""
        self.read_from_store()
        while True:
            records = await self.store.messages.after(event_id, room.last_id, CATCH_UP_PAGE)
            if records:
                self._deliver(event_id, room, [entry_frame(record) for record in records])
            if len(records) < CATCH_UP_PAGE:
                return

    async def _replay(self, event_id, room, replays):
        # Failures (too_far_behind, the database) go to the replays that asked; the chat
        # transport says what they mean to its clients.
        histories = {}
        for since in {replay.since for replay in replays}:
            try:
                histories[since] = await self._history(event_id, since)
            except Exception as error:
                histories[since] = error
        reach = max((history[1] for history in histories.values() if not isinstance(history, Exception)),
                    default=None, key=lambda value: value or "")
        if _later(reach, room.last_id):
            await self._read_on(event_id, room)
        for replay in replays:
            history = histories[replay.since]
            if isinstance(history, Exception):
                settle(replay.result, error=history)
                continue
            history, end = history
            if _later(room.last_id, end):
                # Delivered by the catch-up above, after what this replay read: added to it.
                later = await self.store.messages.after(event_id, end, MAX_CATCH_UP + 1)
                history = _replayed([record for record in later if not _later(record["id"], room.last_id)],
                                    history)
            try:
                replay.subscribe(history)
            except Exception as error:
                # The subscriber's own failure goes back to it; the room goes on.
                settle(replay.result, error=error)
                continue
            settle(replay.result, None)

    async def _newest_entry(self, event_id):
        """The id of the room's newest entry: its newest message, or a change after it."""
        newest = await self.store.messages.latest(event_id, 1)
        last_id = newest[-1]["id"] if newest else None
        while last_id is not None:
            later = await self.store.messages.after(event_id, last_id, CATCH_UP_PAGE)
            if not later:
                break
            last_id = later[-1]["id"]
        return last_id

    async def _history(self, event_id, since):
        """(the replay, the id of the last entry it covers)."""
        if since is None:
            return await self._recent(event_id)
        entries = await self.store.messages.after(event_id, since, MAX_CATCH_UP + 1)
        if len(entries) > MAX_CATCH_UP:
            raise Conflict(f"More than {MAX_CATCH_UP} messages were missed: read them with "
                           "GET /api/v1/events/<id>/messages, then join without `since`.",
                           code="too_far_behind")
        return _replayed(entries, {"messages": [], "changes": []}), (entries[-1]["id"] if entries else since)

    async def _recent(self, event_id):
        """The last RECENT_COUNT messages as they are now, and the room's newest entry: their
        newest, or what the log holds after it (changes to them, or a message stored
        meanwhile). When changes follow, the messages, read before those changes, are read again
        (up to that newest entry): a change stored between the two reads is then shown in its
        message rather than lost. A change after that entry that the second read already shows
        is also delivered after the replay: applying it twice changes nothing."""
        messages = await self.store.messages.latest(event_id, RECENT_COUNT)
        reach = messages[-1]["id"] if messages else None
        entries = [] if reach is None else await self.store.messages.after(event_id, reach, MAX_CATCH_UP)
        if entries:
            reach = entries[-1]["id"]
            if any(entry["kind"] != "message" for entry in entries):
                messages = await self.store.messages.latest(event_id, RECENT_COUNT + len(entries))
            else:
                messages = messages + entries
            messages = [message for message in messages if not _later(message["id"], reach)][-RECENT_COUNT:]
        return {"messages": [message_json(message) for message in messages], "changes": []}, reach


def _replayed(entries, history):
    """`history` ({messages, changes}) followed by the log's `entries` (one read, oldest first):
    their messages as they are now, and the changes to messages not among them. A message read
    with its changes shows them already; an edit whose message was deleted since has lost its
    text, and the deletion follows it."""
    messages = [message_json(entry) for entry in entries if entry["kind"] == "message"]
    shown = {message["id"] for message in messages}
    changes = [change_json(entry) for entry in entries if entry["kind"] != "message"
               and entry["message_id"] not in shown and not (entry["kind"] == "edit" and entry["text"] is None)]
    return {"messages": history["messages"] + messages, "changes": history["changes"] + changes}


def _settle_all(replays, error):
    for replay in replays:
        settle(replay.result, error=error)

