"""Notifications in a `notifications` collection, one document each: {_id, user_id, type,
event_id, data, key (absent when None), created_at, read}. A keyed one is replaced by deleting the
user's document of that key and inserting the new one, in one ordered bulk write per batch (an _id
cannot change, and the new id is what makes it news again). The unique index on (key, user_id)
keeps one per key; the TTL index on created_at forgets them after the retention period
(storage/mongo/indexes.py)."""
import bson
from pymongo import DeleteOne, InsertOne

from domain import repositories
from storage.mongo.repository import Repository, found
from storage.mongo.values import aware, id_text, object_id, stored_id


class Notifications(Repository, repositories.Notifications):
    def __init__(self, db):
        self._notifications = db["notifications"]

    async def add(self, drafts):
        documents, operations = [], []
        for draft in drafts:
            document = {"_id": bson.ObjectId(), "user_id": stored_id(draft["user_id"]), "type": draft["type"],
                        "event_id": stored_id(draft.get("event_id")), "data": draft["data"],
                        "created_at": draft["created_at"], "read": False}
            if draft.get("key") is not None:
                document["key"] = draft["key"]
                operations.append(DeleteOne({"key": draft["key"], "user_id": document["user_id"]}))
            operations.append(InsertOne(document))
            documents.append(document)
        if operations:
            await self._notifications.bulk_write(operations, ordered=True)
        return [_record(document) for document in documents]

    async def page(self, user_id, before_id, limit):
        user = object_id(user_id)
        if user is None:
            return []
        match = {"user_id": user}
        if before_id is not None:
            before = object_id(before_id)
            if before is None:
                return []
            match["_id"] = {"$lt": before}
        documents = await found(self._notifications.find(match).sort("_id", -1), limit)
        return [_record(document) for document in documents]

    async def unread_count(self, user_id):
        user = object_id(user_id)
        return 0 if user is None else await self._notifications.count_documents({"user_id": user, "read": False})

    async def mark_read(self, user_id, up_to_id):
        user, up_to = object_id(user_id), object_id(up_to_id)
        if user is None or up_to is None:
            return None
        if await self._notifications.find_one({"_id": up_to, "user_id": user}, {"_id": 1}) is None:
            return None
        marked = await self._notifications.update_many({"user_id": user, "_id": {"$lte": up_to}, "read": False},
                                                       {"$set": {"read": True}})
        return marked.modified_count

    async def told(self, key):
        documents = await self._notifications.find({"key": key}, {"user_id": 1, "data": 1}).to_list(None)
        return {id_text(document["user_id"]): document["data"] for document in documents}


def _record(document):
    return {"id": id_text(document["_id"]), "user_id": id_text(document["user_id"]), "type": document["type"],
            "event_id": id_text(document.get("event_id")), "data": document["data"], "key": document.get("key"),
            "created_at": aware(document["created_at"]), "read": bool(document["read"])}
