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
`change` takes the same lock and the same lease as `append`: its ids come from the same sequence,
so messages and changes of an event form one chain across processes (`Appended.previous_id`).

Edits and deletions (Messages.change) are documents of the same collection, with a `kind`
("edit" or "delete") and the `target_id` of the message, and ids drawn like messages' under the
same lock and lease, so one `_id` range of an event is its whole log. The old backend's documents have no
`kind`: `{"kind": None}` matches them (a query for null matches a missing field, "Query for Null
or Missing Fields" in MongoDB's manual), so they stay messages. A change is two writes, the
change's document then its message's update, as MongoDB has no multi-document atomicity here
without a transaction (which a standalone server does not offer). If the second fails, the log
has the change and history shows the message unchanged until the client retries: the retry finds
the message not yet changed and stores a second, equal change, which readers apply harmlessly.

Read markers are the `chat_reads` collection: one document per (user_id, event_id), unique, moved
forward with `$max` (atomic on one document, "$max" in the manual: it updates only when the new
value is greater, comparing ObjectIds by their bytes, which is our id order).
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


MESSAGES_ONLY = {"kind": None}


def message_record(document):
    kind = document.get("kind")
    if kind is not None:
        return {"id": str(document["_id"]), "event_id": id_text(document.get("event_id")), "kind": kind,
                "message_id": id_text(document.get("target_id")), "user_id": id_text(document.get("user_id")),
                "text": document.get("text"), "timestamp": aware(document["timestamp"])}
    return {
        "id": str(document["_id"]),
        "event_id": id_text(document.get("event_id")),
        "kind": "message",
        "user_id": id_text(document.get("user_id")),
        "username": document.get("username"),
        "text": document.get("text"),
        "timestamp": aware(document.get("timestamp") or document["_id"].generation_time),
        "client_msg_id": document.get("client_msg_id"),
        "edited_at": aware(document["edited_at"]) if document.get("edited_at") else None,
        "deleted_at": aware(document["deleted_at"]) if document.get("deleted_at") else None,
    }


class Messages(Repository, repositories.Messages):
    def __init__(self, db):
        self._messages = db["messages"]
        self._events = db["events"]
        self._heads = db["message_heads"]
        self._users = db["users"]
        self._reads = db["chat_reads"]
        self._mutes = db["chat_mutes"]
        self._removals = db["chat_removals"]
        self._actions = db["chat_moderation"]
        self._appending = {}  # event ObjectId -> [lock, holders and waiters]

    async def append(self, event_id, drafts):
        """One insert_many, unordered so that a refused document does not stop the ones after it.

        Unordered means "go on past an error", and a replica set applies the documents of one
        insert in their order; a sharded cluster may not, but an event's messages share one shard
        whenever the shard key starts with event_id. The batch is not a transaction: the part
        stored before a connection fails stays stored, as the contract says."""
        event = stored_id(event_id)
        if not drafts:
            return repositories.Appended([], None)
        async with self._one_append_at_a_time(event):
            # Checked before, not with, the insert (no transaction): a batch racing the event's
            # deletion may still be stored after it, where no reader reaches it.
            await self._open_event(event)
            refusals = await self._refusals(event, drafts)
            allowed = [draft for draft, refusal in zip(drafts, refusals) if refusal is None]
            lease = await self._take_lease(event)
            try:
                previous, ids = await self._ids_above_newest(event, len(allowed))
                documents = [_document(event, message_id, draft) for message_id, draft in zip(ids, allowed)]
                refused = await self._insert(documents) if documents else {}
            finally:
                kept = await self._release_lease(event, lease)
            if not kept:
                await self._messages.delete_many({"_id": {"$in": ids}})
                raise StoreUnavailable("The chat message lease was lost while the batch was written.")
        repeated = [documents[index] for index, code in refused.items()
                    if code == DUPLICATE_KEY and "client_msg_id" in documents[index]]
        originals = await self._originals(event, repeated)
        stored = []
        for index, document in enumerate(documents):
            if index not in refused:
                stored.append((message_record(document), False))
            elif _key(document) in originals:
                stored.append((message_record(originals[_key(document)]), True))
            else:
                stored.append(None)
        stored = iter(stored)
        return repositories.Appended([next(stored) if refusal is None else refusal for refusal in refusals],
                                     previous and str(previous))

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

    async def _refusals(self, event, drafts):
        """repositories.chat_refusal of each draft, from its author's standing read just before
        the write (no transaction: a mute landing between the two is seen by the next batch)."""
        authors = sorted({draft["user_id"] for draft in drafts})
        muted_until, removed = await self._standing(event, authors, max(draft["timestamp"] for draft in drafts))
        return [repositories.chat_refusal(draft, muted_until.get(draft["user_id"]), draft["user_id"] in removed,
                                          draft["timestamp"]) for draft in drafts]

    async def _standing(self, event, user_ids, now):
        users = [stored_id(user_id) for user_id in user_ids]
        # A mute's document goes once it has expired (the TTL index on `until`), but MongoDB's TTL
        # monitor deletes only once a minute ("TTL Indexes" in its manual: "expired documents may
        # exist ... between runs"), so the end is compared here too.
        mutes = await self._mutes.find({"event_id": event, "user_id": {"$in": users}, "until": {"$gt": now}}
                                       ).to_list(None)
        removals = await self._removals.find({"event_id": event, "user_id": {"$in": users}}).to_list(None)
        return ({id_text(mute["user_id"]): aware(mute["until"]) for mute in mutes},
                {id_text(removal["user_id"]) for removal in removals})

    async def moderate(self, event_id, action, user_id, actor_id, at, until=None):
        """The standing's change, then the log's entry: two writes, as MongoDB has no transaction
        on a standalone server; if the second fails, the action holds but is not listed."""
        event, user = stored_id(event_id), stored_id(user_id)
        key = {"event_id": event, "user_id": user}
        if action == "mute":
            await _upsert(self._mutes, key, {"until": until})
        elif action == "unmute":
            await self._mutes.delete_one(key)
        elif action == "remove":
            await _upsert(self._removals, key, {"at": at})
        else:
            await self._removals.delete_one(key)
        return await self._log_action(event, action, user, stored_id(actor_id), at, until=until)

    async def _log_action(self, event, action, user, actor, at, message_id=None, until=None):
        newest = await self._actions.find_one({"event_id": event}, {"_id": 1}, sort=[("_id", -1)])
        action_id = bson.ObjectId()
        if newest is not None and action_id <= newest["_id"]:
            action_id = bson.ObjectId((int.from_bytes(newest["_id"].binary, "big") + 1).to_bytes(12, "big"))
        document = {"_id": action_id, "event_id": event, "action": action, "user_id": user, "actor_id": actor,
                    "message_id": message_id, "until": until, "at": at}
        await self._actions.insert_one(document)
        return _action_record(document)

    async def standing(self, event_id, user_id, now):
        event = object_id(event_id)
        if event is None:
            return {"muted_until": None, "removed": False}
        muted_until, removed = await self._standing(event, [user_id], now)
        return {"muted_until": muted_until.get(user_id), "removed": user_id in removed}

    async def actions(self, event_id, before_id, limit):
        event = object_id(event_id)
        if event is None or (before_id is not None and object_id(before_id) is None):
            return []
        match = {"event_id": event}
        if before_id is not None:
            match["_id"] = {"$lt": object_id(before_id)}
        cursor = self._actions.find(match).sort("_id", -1)
        return [_action_record(document) for document in await found(cursor, limit)]

    async def _open_event(self, event):
        """The event's organizer id; refuses a deleted event (NotFound) or a cancelled one (Conflict)."""
        found = await self._events.find_one({"_id": event}, {"cancelled_at": 1, "organizer_id": 1})
        if found is None:
            raise NotFound("There is no such event.", code="event_not_found")
        if found.get("cancelled_at") is not None:
            raise repositories.cancelled_chat()
        return id_text(found.get("organizer_id"))

    async def change(self, event_id, drafts):
        """Each change in turn under the event's append lock and lease, like `append`: the
        message read, the change's document inserted, the message updated (see the module's
        docstring for the window between the two writes). A lease lost meanwhile (a stall past
        LEASE_SECONDS) deletes the batch's change documents and reports it unstored, as `append`
        does; the messages' updates stay (history may show such a change without its entry: the
        client's retry then finds it done)."""
        event = stored_id(event_id)
        if not drafts:
            return repositories.Appended([], None)
        results = []
        async with self._one_append_at_a_time(event):
            organizer_id = await self._open_event(event)
            refusals = await self._refusals(event, drafts)
            lease = await self._take_lease(event)
            try:
                previous, _ = await self._ids_above_newest(event, 0)
                for draft, refusal in zip(drafts, refusals):
                    results.append(refusal or await self._change(event, draft, organizer_id))
            finally:
                kept = await self._release_lease(event, lease)
            if not kept:
                written = [object_id(result[0]["id"]) for result in results
                           if isinstance(result, tuple) and not result[1]]
                await self._messages.delete_many({"_id": {"$in": written}})
                raise StoreUnavailable("The chat message lease was lost while the changes were written.")
        return repositories.Appended(results, previous and str(previous))

    async def _change(self, event, draft, organizer_id):
        kind, target_id = draft["kind"], object_id(draft["message_id"])
        target = None if target_id is None else await self._messages.find_one(
            {"_id": target_id, "event_id": event, **MESSAGES_ONLY})
        if target is None:
            return repositories.no_such_message()
        record = message_record(target)
        refusal = repositories.change_refusal(record, draft, organizer_id)
        if refusal is not None:
            return refusal
        if repositories.change_repeats(record, draft):
            earlier = await self._messages.find_one({"event_id": event, "target_id": target_id, "kind": kind},
                                                    sort=[("_id", -1)])
            if earlier is not None:
                return message_record(earlier), True
            if kind == "edit":
                return repositories.unchanged_text()
        _, [change_id] = await self._ids_above_newest(event, 1)
        document = {"_id": change_id, "event_id": event, "kind": kind, "target_id": target_id,
                    "user_id": stored_id(draft["user_id"]), "text": draft["text"] if kind == "edit" else None,
                    "timestamp": draft["timestamp"]}
        await self._messages.insert_one(document)
        if kind == "edit":
            await self._messages.update_one({"_id": target_id},
                                            {"$set": {"text": draft["text"], "edited_at": draft["timestamp"]}})
        else:
            await self._messages.update_one({"_id": target_id},
                                            {"$set": {"text": None, "deleted_at": draft["timestamp"]}})
            await self._messages.update_many({"event_id": event, "target_id": target_id}, {"$set": {"text": None}})
            if record["user_id"] != draft["user_id"]:  # the organizer's: in the moderation log
                await self._log_action(event, "delete_message", target.get("user_id"), document["user_id"],
                                       draft["timestamp"], message_id=target_id)
        return message_record(document), False

    async def mark_read(self, event_id, user_id, message_id):
        if not await self.exists(event_id, message_id):
            return None
        key = {"user_id": stored_id(user_id), "event_id": object_id(event_id)}
        await _upsert_max(self._reads, key, object_id(message_id))
        found = await self._reads.find_one(key)
        return str(found["last_read_id"])

    async def chats(self, user_id, limit, unread_cap):
        user = object_id(user_id)
        if user is None:
            return []
        # The user's RSVPed events come from `rsvped_events`, as in Events.attending (why there).
        found = await self._users.find_one({"_id": user}, {"rsvped_events": 1})
        candidates = [event for event in (found or {}).get("rsvped_events") or [] if isinstance(event, bson.ObjectId)]
        events = await self._events.find(
            {"$or": [{"organizer_id": user}, {"_id": {"$in": candidates}, "rsvps": user}]},
            {"title": 1}).sort("_id", -1).limit(limit).to_list(None) if limit else []
        return list(await asyncio.gather(*[self._chat(user, event, unread_cap) for event in events]))

    async def _chat(self, user, event, unread_cap):
        marker = await self._reads.find_one({"user_id": user, "event_id": event["_id"]})
        last_read = marker["last_read_id"] if marker else None
        unread = {"event_id": event["_id"], **MESSAGES_ONLY, "deleted_at": None, "user_id": {"$ne": user}}
        if last_read is not None:
            unread["_id"] = {"$gt": last_read}
        # A count of the index's range after the marker, stopped at the cap.
        unread_count = await self._messages.count_documents(unread, limit=unread_cap)
        last = await self._messages.find_one({"event_id": event["_id"], **MESSAGES_ONLY}, sort=[("_id", -1)])
        return {"event_id": str(event["_id"]), "title": event.get("title"),
                "last_read_id": None if last_read is None else str(last_read), "unread_count": unread_count,
                "last_message": None if last is None else message_record(last)}

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
        match = {"event_id": event, **MESSAGES_ONLY}
        if message is not None:
            match["_id"] = {"$lt": message}
        cursor = self._messages.find(match).sort("_id", -1)
        return [message_record(document) for document in await found(cursor, limit)]

    async def counts(self, event_ids):
        """One $group over the events' messages, on the (event_id, _id) index."""
        events = [value for value in map(object_id, event_ids) if value is not None]
        grouped = await self._messages.aggregate([
            {"$match": {"event_id": {"$in": events}, **MESSAGES_ONLY}},
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


async def _upsert_max(collection, key, value):
    try:
        await collection.update_one(key, {"$max": {"last_read_id": value}}, upsert=True)
    except driver_errors.DuplicateKeyError:  # as in _upsert
        await collection.update_one(key, {"$max": {"last_read_id": value}})


async def _upsert(collection, key, values):
    try:
        await collection.update_one(key, {"$set": values}, upsert=True)
    except driver_errors.DuplicateKeyError:
        # Two first upserts of one key at once: the unique index let one insert; this one
        # now finds that document and updates it.
        await collection.update_one(key, {"$set": values})


def _action_record(document):
    return {"id": str(document["_id"]), "event_id": id_text(document["event_id"]), "action": document["action"],
            "user_id": id_text(document.get("user_id")), "actor_id": id_text(document.get("actor_id")),
            "message_id": id_text(document.get("message_id")),
            "until": aware(document["until"]) if document.get("until") else None, "at": aware(document["at"])}


def _key(document):
    return document["user_id"], document.get("client_msg_id")
