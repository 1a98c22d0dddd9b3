"""Chat messages in the old backend's `messages` collection: `event_id`, `user_id`, `username`,
`text`, `timestamp`, plus `client_msg_id` when the sender gave one. Messages the old backend
wrote may lack a timestamp: their ObjectId's creation time stands in.

Order: an event's order is `_id` order. Each batch's ids are drawn above the newest id stored
for the event, read just before the batch is written (one indexed find_one), and the read, the
insert and nothing else of the event happen while this process holds the event's lease: its
document in `message_heads` ({_id: event id, owner, until}). So ids increase in the order batches
are stored, across restarts, with a clock that went back, and across processes writing to one
event at the same moment: a batch becomes readable only after every batch with smaller ids did.

Why the lease is sound, from MongoDB's documentation:
- Taking it is one `findOneAndUpdate` with `upsert`, filtered on {_id, owner null or lease
  expired}. A single-document write is atomic, so of two processes racing for a free or expired
  lease one matches and sets `owner`; the other either sees the new owner (no match) or, its
  upsert inserting a second document with the same `_id`, gets a duplicate key error (E11000)
  from the unique `_id` index ("Upsert with Unique Index": MongoDB retries such an upsert itself
  only when the filter is equalities on the unique index alone, which this one is not). Both
  mean "held": wait and try again.
- Releasing it is `updateOne({_id, owner: our token}, {$set: {owner: null}})`: it matches only if
  nobody took the lease over. With the majority write concern (the default since 5.0), an
  acknowledged insert is visible to every later read on the primary, so the next holder's read of
  the newest id sees this batch.
- The fence: a holder stalled past LEASE_SECONDS may find its lease taken over when it releases
  (no match); its batch may then have landed after the next holder drew its ids, so it deletes
  the batch and reports it unstored (StoreUnavailable: the senders resend with their
  client_msg_id). Until that delete a reader may see those messages; it takes a stall of
  LEASE_SECONDS (30 s) of one process.
The cost: two more round trips per batch (take, release), uncontended under one writer per
process and room (domain/chat.py's MessageLog).

The in-process lock (`_one_append_at_a_time`) stays in front of the lease: concurrent appends of
one process to one event queue in memory instead of polling the lease document, and the contract
(domain/repositories.py, Messages) promises the order to every caller, not to MessageLog alone.
"""
import asyncio
import contextlib
import datetime
import logging

import bson
from pymongo import errors as driver_errors

from domain import repositories
from domain.errors import NotFound, StoreUnavailable
from domain.times import utcnow
from storage.mongo.repository import Repository, found
from storage.mongo.values import aware, id_text, object_id, stored_id

log = logging.getLogger("store")

DUPLICATE_KEY = 11000
LEASE_SECONDS = 30  # a holder stalled longer than this loses the event's lease (module docstring)
LEASE_WAIT_SECONDS = 10  # an append waiting longer for the lease gives up (StoreUnavailable)


def message_record(document):
    return {
        "id": str(document["_id"]),
        "event_id": id_text(document.get("event_id")),
        "user_id": id_text(document.get("user_id")),
        "username": document.get("username"),
        "text": document.get("text"),
        "timestamp": aware(document.get("timestamp") or document["_id"].generation_time),
        "client_msg_id": document.get("client_msg_id"),
    }


class Messages(Repository, repositories.Messages):
    def __init__(self, db):
        self._messages = db["messages"]
        self._events = db["events"]
        self._heads = db["message_heads"]
        self._appending = {}  # event ObjectId -> [lock, holders and waiters]

    async def append(self, event_id, drafts):
        """One insert_many, unordered so that a refused document does not stop the ones after it.

        Unordered means "go on past an error", and a replica set applies the documents of one
        insert in their order; a sharded cluster may not, but an event's messages share one shard
        whenever the shard key starts with event_id. The batch is not a transaction: the part
        stored before a connection fails stays stored, as the contract says."""
        event = stored_id(event_id)
        if not drafts:
            return []
        async with self._one_append_at_a_time(event):
            # Checked before, not with, the insert (no transaction): a batch racing the event's
            # deletion may still be stored after it, where no reader reaches it.
            found = await self._events.find_one({"_id": event}, {"cancelled_at": 1})
            if found is None:
                raise NotFound("There is no such event.", code="event_not_found")
            if found.get("cancelled_at") is not None:
                raise repositories.cancelled_chat()
            lease = await self._take_lease(event)
            try:
                previous, ids = await self._ids_above_newest(event, len(drafts))
                documents = [_document(event, message_id, draft) for message_id, draft in zip(ids, drafts)]
                refused = await self._insert(documents)
            finally:
                kept = await self._release_lease(event, lease)
            if not kept:
                await self._messages.delete_many({"_id": {"$in": ids}})
                raise StoreUnavailable("The chat message lease was lost while the batch was written.")
        repeated = [documents[index] for index, code in refused.items()
                    if code == DUPLICATE_KEY and "client_msg_id" in documents[index]]
        originals = await self._originals(event, repeated)
        results = []
        for index, document in enumerate(documents):
            if index not in refused:
                results.append((message_record(document), False))
            elif _key(document) in originals:
                results.append((message_record(originals[_key(document)]), True))
            else:
                results.append(None)
        return repositories.Appended(results, previous and str(previous))

    async def _take_lease(self, event):
        """The event's lease (module docstring); returns the token that holds it."""
        token = bson.ObjectId()
        loop = asyncio.get_running_loop()
        give_up, pause = loop.time() + LEASE_WAIT_SECONDS, 0.002
        while True:
            now = utcnow()
            try:
                await self._heads.find_one_and_update(
                    {"_id": event, "$or": [{"owner": None}, {"until": {"$lt": now}}]},
                    {"$set": {"owner": token, "until": now + datetime.timedelta(seconds=LEASE_SECONDS)}},
                    upsert=True)
                return token
            except driver_errors.DuplicateKeyError:
                pass  # held by another process
            if loop.time() > give_up:
                raise StoreUnavailable("Another process holds this chat's lease too long.")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _release_lease(self, event, token):
        """Whether the lease was still ours (nobody took it over after it expired)."""
        released = await self._heads.update_one({"_id": event, "owner": token}, {"$set": {"owner": None}})
        return released.matched_count == 1

    @contextlib.asynccontextmanager
    async def _one_append_at_a_time(self, event):
        # Why this lock: see the module's docstring. Dropped with its last holder or waiter.
        entry = self._appending.setdefault(event, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._appending[event]

    async def _insert(self, documents):
        """Inserts the documents; returns {index: error code} of those the database refused."""
        try:
            await self._messages.insert_many(documents, ordered=False)
        except driver_errors.BulkWriteError as error:
            if error.timeout:
                raise  # not a refusal: the database did not answer in time (StoreUnavailable)
            refused = {failure["index"]: failure.get("code") for failure in error.details.get("writeErrors", [])}
            for code in refused.values():
                if code != DUPLICATE_KEY:
                    log.error("the database refused a chat message (code %s)", code)
            return refused
        return {}

    async def _originals(self, event, documents):
        """{(user_id, client_msg_id): stored message} for the documents whose pair was stored."""
        if not documents:
            return {}
        stored = await self._messages.find({"event_id": event, "$or": [
            {"user_id": document["user_id"], "client_msg_id": document["client_msg_id"]}
            for document in documents]}).to_list(None)
        return {_key(document): document for document in stored}

    async def _ids_above_newest(self, event, count):
        """(the newest stored id of the event or None, `count` increasing ids above it): fresh
        ObjectIds, or the floor plus one while the clock is behind it."""
        newest = await self._messages.find_one({"event_id": event}, {"_id": 1}, sort=[("_id", -1)])
        previous = floor = newest["_id"] if newest else None
        ids = []
        for _ in range(count):
            candidate = bson.ObjectId()
            if floor is not None and candidate <= floor:
                candidate = bson.ObjectId((int.from_bytes(floor.binary, "big") + 1).to_bytes(12, "big"))
            ids.append(candidate)
            floor = candidate
        return previous, ids

    async def exists(self, event_id, message_id):
        event, message = object_id(event_id), object_id(message_id)
        if event is None or message is None:
            return False
        return await self._messages.find_one({"_id": message, "event_id": event}, {"_id": 1}) is not None

    async def latest(self, event_id, limit):
        newest_first = await self.before(event_id, None, limit)
        return newest_first[::-1]

    async def after(self, event_id, message_id, limit):
        event, message = object_id(event_id), object_id(message_id)
        if event is None or (message_id is not None and message is None):
            return []
        match = {"event_id": event}
        if message is not None:
            match["_id"] = {"$gt": message}
        cursor = self._messages.find(match).sort("_id", 1)
        return [message_record(document) for document in await found(cursor, limit)]

    async def before(self, event_id, message_id, limit):
        event, message = object_id(event_id), object_id(message_id)
        if event is None or (message_id is not None and message is None):
            return []
        match = {"event_id": event}
        if message is not None:
            match["_id"] = {"$lt": message}
        cursor = self._messages.find(match).sort("_id", -1)
        return [message_record(document) for document in await found(cursor, limit)]

    async def counts(self, event_ids):
        """One $group over the events' messages, on the (event_id, _id) index."""
        events = [value for value in map(object_id, event_ids) if value is not None]
        grouped = await self._messages.aggregate([
            {"$match": {"event_id": {"$in": events}}},
            {"$group": {"_id": "$event_id", "count": {"$sum": 1}}},
        ]).to_list(None)
        counted = {str(group["_id"]): group["count"] for group in grouped}
        return {event_id: counted.get(event_id, 0) for event_id in event_ids}


def _document(event, message_id, draft):
    document = {"_id": message_id, "event_id": event, "user_id": stored_id(draft["user_id"]),
                "username": draft["username"], "text": draft["text"], "timestamp": draft["timestamp"]}
    # Absent rather than null: the unique index on (event_id, user_id, client_msg_id) covers only
    # the messages that have one.
    if draft.get("client_msg_id") is not None:
        document["client_msg_id"] = draft["client_msg_id"]
    return document


def _key(document):
    return document["user_id"], document.get("client_msg_id")
