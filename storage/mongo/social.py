"""Follows and the activity feed, in the old backend's documents.

A follow lives twice, as in the old backend: in the follower's `following` array and in the
followed user's `followers` array. `following` is the truth (the lists, is_following and the
feed read it); `followers` is kept in step with it by `_align_followers`, without a transaction.
Both may be null or absent in the old backend's users: storage/mongo/arrays.py changes them.
Activities keep the old backend's `activities` shape: `type`, `actor_id`, `actor_name`,
`event_id`, `target_user_id`, `summary`, `timestamp`.
"""
import heapq
import itertools

from pymongo import errors as driver_errors

from domain import repositories
from storage.mongo.accounts import user_records
from storage.mongo.arrays import added, pulled
from storage.mongo.repository import Repository, found
from storage.mongo.values import aware, id_text, object_id, stored_id


class Follows(Repository, repositories.Follows):
    def __init__(self, db):
        self._users = db["users"]

    async def follow(self, follower_id, followee_id):
        follower, followee = object_id(follower_id), object_id(followee_id)
        if follower is None or followee is None:
            return False
        # The conditional update is the decision: it matches only while the follow is not there,
        # so of any number of concurrent identical calls exactly one modifies the document.
        created = await self._users.update_one(
            {"_id": follower, "following": {"$ne": followee}}, [{"$set": {"following": added("following", followee)}}])
        await self._align_followers(follower, followee)
        return created.modified_count == 1

    async def unfollow(self, follower_id, followee_id):
        follower, followee = object_id(follower_id), object_id(followee_id)
        if follower is None or followee is None:
            return False
        removed = await self._users.update_one(
            {"_id": follower, "following": followee}, [{"$set": {"following": pulled("following", followee)}}])
        await self._align_followers(follower, followee)
        return removed.modified_count == 1

    async def _align_followers(self, follower, followee):
        """Sets the followee's `followers` membership to match the follower's `following`.

        Why both arrays end consistent without a transaction: every change to a pair's
        `following` membership is made by a call that afterwards runs this loop, and this loop is
        the only writer of `followers`. Each round reads the truth, writes `followers` to match,
        and re-reads the truth; it ends only when the re-read equals what it wrote. Take the last
        `followers` write of the pair, by call C writing x: C's re-read, after that write, saw x.
        Had any call changed `following` after C's re-read, that call's own loop would write
        `followers` later still, contradicting "last". So `following` ends as x, which is what
        `followers` holds. A plain "write what you read" without the re-read is not enough: a
        follow could read "following", an unfollow then pull both sides, and the follow's late
        addition to `followers` leave a follower that does not follow.

        It terminates: another round is needed only when the pair's `following` changed during
        the round, and each follow or unfollow call changes it at most once. A process that dies
        between the two writes leaves the pair unaligned until its next follow or unfollow; the
        followers list reads `following`, only followers_count could be off meanwhile.
        """
        follows = await self._is_following(follower, followee)
        while True:
            change = added if follows else pulled
            await self._users.update_one({"_id": followee}, [{"$set": {"followers": change("followers", follower)}}])
            follows_now = await self._is_following(follower, followee)
            if follows_now == follows:
                return
            follows = follows_now

    async def _is_following(self, follower, followee):
        return await self._users.find_one({"_id": follower, "following": followee}, {"_id": 1}) is not None

    async def is_following(self, follower_id, followee_id):
        follower, followee = object_id(follower_id), object_id(followee_id)
        if follower is None or followee is None:
            return False
        return await self._is_following(follower, followee)

    async def followers(self, user_id, after_id, limit):
        user = object_id(user_id)
        if user is None:
            return []
        # Read from the truth: the users whose `following` holds the user.
        return await self._users_after({"following": user}, after_id, limit)

    async def following(self, user_id, after_id, limit):
        user = object_id(user_id)
        if user is None:
            return []
        found_user = await self._users.find_one({"_id": user}, {"following": 1})
        if found_user is None:
            return []
        return await self._users_after({"_id": {"$in": found_user.get("following") or []}}, after_id, limit)

    async def _users_after(self, match, after_id, limit):
        """Records of the users matching `match` with ids after `after_id`, in id order."""
        if after_id is not None:
            after = object_id(after_id)
            if after is None:
                return []
            match = {"$and": [match, {"_id": {"$gt": after}}]}
        if limit is not None and limit < 1:
            return []
        return await user_records(self._users, match, sort={"_id": 1}, limit=limit)


_FEED_ORDER = [("timestamp", -1), ("_id", -1)]
# How many followees one feed query names. With actor_id $in [...] and the sort on the index's
# next fields, (actor_id, timestamp, _id), MongoDB's planner reads one index range per actor and
# merges them in order (SORT_MERGE), stopping at the limit: a page costs about `limit` documents.
# It does so for at most internalQueryMaxScansToExplode ranges (200 by default, MongoDB 6-8);
# past that it reads every matching activity of every followee and sorts them in memory. So the
# followees go in chunks of at most 200, each query stopping at the limit, and the pages are
# merged here: a reader who follows n users costs ceil(n / 200) queries of `limit` documents.
FEED_CHUNK = 200


class Activities(Repository, repositories.Activities):
    def __init__(self, db):
        self._activities = db["activities"]
        self._users = db["users"]

    async def add(self, activity):
        document = _activity_document(activity)
        await self._activities.insert_one(document)
        return str(document["_id"])

    async def feed(self, reader_id, kinds, before, limit):
        """One query per FEED_CHUNK followees, merged: see FEED_CHUNK for why."""
        reader = object_id(reader_id)
        if reader is None or (limit is not None and limit < 1):
            return []
        found_reader = await self._users.find_one({"_id": reader}, {"following": 1})
        following = (found_reader or {}).get("following") or []
        if not following:
            return []
        # Activities the old backend wrote without a time cannot be placed in the order.
        moment = {"$type": "date"}
        match = {"type": {"$in": list(kinds)}, "timestamp": moment}
        if before is not None:
            timestamp, last_id = before
            last = object_id(last_id)
            if last is None:
                return []
            # The bound on timestamp alone lets the index on (actor_id, timestamp, _id) stop early.
            moment["$lte"] = timestamp
            match["$or"] = [{"timestamp": {"$lt": timestamp}}, {"_id": {"$lt": last}}]
        chunks = [following[start:start + FEED_CHUNK] for start in range(0, len(following), FEED_CHUNK)]
        pages = []
        for chunk in chunks:  # one at a time: a reader who follows thousands holds one connection
            cursor = self._activities.find({**match, "actor_id": {"$in": chunk}}).sort(_FEED_ORDER)
            pages.append(await found(cursor, limit))
        newest_first = heapq.merge(*pages, key=lambda document: (document["timestamp"], document["_id"]), reverse=True)
        return [_activity_record(document) for document in itertools.islice(newest_first, limit)]

    async def add_once(self, activity):
        # Found by its subject, the old backend's copies included, or by `once_key`; the decision
        # between concurrent calls is the unique index on `once_key` (storage/mongo/indexes.py),
        # which only documents stored here have (the old backend's, duplicates among them, stay
        # out of it). An upsert alone would not do: two that both find nothing both insert. With
        # the index the second insert fails with a duplicate key error, which means "stored by
        # another call". (The server's own retry of such upserts needs a filter of equalities on
        # the index's key alone; this $or is not one, so the error does reach us.) Before the
        # index is built (the store's preparation; /readyz says so) racing calls could each
        # insert one; the next withdraw removes them all.
        document = _activity_document(activity)
        key = _once_key(activity)
        subject = {field: document[field] for field in ("actor_id", "type", "event_id", "target_user_id")}
        try:
            stored = await self._activities.update_one(
                {"$or": [{"once_key": key}, subject]}, {"$setOnInsert": {**document, "once_key": key}}, upsert=True)
        except driver_errors.DuplicateKeyError:
            return None
        return None if stored.upserted_id is None else str(stored.upserted_id)

    async def withdraw(self, kind, actor_id, event_id=None, target_user_id=None):
        ids = [actor_id, event_id, target_user_id]
        stored = [None if text is None else object_id(text) for text in ids]
        if stored[0] is None or any(value is None and text is not None for value, text in zip(stored, ids)):
            return 0  # a text that is not an id is no activity's
        actor, event, target = stored
        # By the subject's fields rather than `once_key`, so the old backend's copies go too;
        # {field: None} also matches a field the old documents lack (the index on the subject's
        # fields serves both this and add_once's search). Each document is deleted at most once
        # whatever runs concurrently: calls racing each other each delete what is still there.
        deleted = await self._activities.delete_many(
            {"actor_id": actor, "type": kind, "event_id": event, "target_user_id": target})
        return deleted.deleted_count


def _activity_record(document):
    return {
        "id": str(document["_id"]),
        "type": document.get("type"),
        "actor_id": id_text(document.get("actor_id")),
        "actor_name": document.get("actor_name"),
        "event_id": id_text(document.get("event_id")),
        "target_user_id": id_text(document.get("target_user_id")),
        "summary": document.get("summary"),
        "timestamp": aware(document["timestamp"]),
    }


def _activity_document(activity):
    return {
        "type": activity["type"],
        "actor_id": stored_id(activity["actor_id"]),
        "actor_name": activity.get("actor_name"),
        "event_id": stored_id(activity.get("event_id")),
        "target_user_id": stored_id(activity.get("target_user_id")),
        "summary": activity.get("summary"),
        "timestamp": activity["timestamp"],
    }


def _once_key(activity):
    """One text per subject: type, actor, event and target user, the absent ones empty."""
    return " ".join([activity["type"], activity["actor_id"], activity.get("event_id") or "",
                     activity.get("target_user_id") or ""])

