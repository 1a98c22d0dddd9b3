"""Users, revoked tokens and password reset tokens, in the old backend's `users`,
`revoked_tokens` and `reset_tokens` collections.

A user document keeps the old backend's fields and arrays (`following`, `followers`,
`created_events`, `rsvped_events`), which the other repositories maintain, `calendar_key` (the
digest of the user's calendar feed key, absent until they ask for one), plus the key copies
`email_lower` and `username_lower` (domain.identity.identity_key of the email and username; the
names are the first release's) that the unique indexes hold, and `keys_version`, how they were
computed (storage/mongo/indexes.py makes them on documents the old backend or an earlier release
wrote). The old backend's arrays may be null or
absent: storage/mongo/arrays.py reads and changes them.
"""
from pymongo import errors as driver_errors

from domain import repositories
from domain.identity import identity_key
from domain.times import utcnow
from storage.mongo.arrays import array
from storage.mongo.indexes import KEYS_VERSION
from storage.mongo.repository import Repository
from storage.mongo.values import aware, id_text, object_id, stored_id

# More users than any group of case-variant duplicates an old database holds: enough to tell
# an unambiguous email from a shared one.
MAX_CASE_VARIANTS = 50

# A user record as Users.get returns it. The counts are the lengths of the old backend's arrays,
# taken next to the data so that the arrays themselves (a popular user's followers) never travel.
USER_PROJECTION = {
    "username": 1, "email": 1, "role": 1, "password_hash": 1, "created_at": 1, "tokens_valid_after": 1,
    "followers_count": {"$size": array("followers")},
    "following_count": {"$size": array("following")},
}


def user_record(document):
    return {
        "id": str(document["_id"]),
        "username": document.get("username"),
        "email": document.get("email"),
        "role": document.get("role"),
        "password_hash": document.get("password_hash"),
        "created_at": aware(document.get("created_at")),
        "tokens_valid_after": aware(document.get("tokens_valid_after")),
        "followers_count": document["followers_count"],
        "following_count": document["following_count"],
    }


async def user_records(users, match, sort=None, limit=None):
    """The records of the users matching `match`, in `sort` order, at most `limit`."""
    pipeline = [{"$match": match}]
    if sort:
        pipeline.append({"$sort": sort})
    if limit is not None:
        pipeline.append({"$limit": limit})
    pipeline.append({"$project": USER_PROJECTION})
    return [user_record(document) for document in await users.aggregate(pipeline).to_list(None)]


class Users(Repository, repositories.Users):
    def __init__(self, db):
        self._users = db["users"]

    async def add(self, username, email, role, password_hash, created_at):
        # Checked before the insert so that the answer names the right field, and so that the rule
        # holds where a unique index could not be built over the old backend's duplicates; where
        # the indexes are in place they make it atomic.
        taken = await self.taken(email, username)
        if taken:
            raise repositories.AlreadyTaken(taken)
        document = {
            "username": username, "email": email, "role": role,
            "username_lower": identity_key(username), "email_lower": identity_key(email),
            "keys_version": KEYS_VERSION,
            "password_hash": password_hash,
            "following": [], "followers": [], "created_events": [], "rsvped_events": [],
            "created_at": created_at,
        }
        try:
            await self._users.insert_one(document)
        except driver_errors.DuplicateKeyError as error:
            # A concurrent registration took the email or the username since the check.
            raise repositories.AlreadyTaken(await self.taken(email, username) or _taken_index(error)) from None
        return user_record({**document, "followers_count": 0, "following_count": 0})

    async def taken(self, email, username):
        """"email" or "username" when another user has it (ignoring case), email first; else None."""
        for field, value in (("email", email), ("username", username)):
            if await self._users.find_one(_named(field, value), {"_id": 1}):
                return field
        return None

    async def get(self, user_id):
        user = object_id(user_id)
        return None if user is None else await self._one({"_id": user})

    async def find_by_email(self, email):
        """The one user `email` names. An old database may hold several users whose emails differ
        only in case (the old backend's unique index was case-sensitive, and the unique index on
        email_lower cannot be built over them: /readyz says so). Then the email as typed picks
        the user who registered it exactly; an email that picks none of them finds nobody, so no
        one is ever logged in to, or sent a reset for, an account that is not theirs."""
        found = await user_records(self._users, _named("email", email), limit=MAX_CASE_VARIANTS)
        if len(found) > 1:
            found = [user for user in found if user["email"] == email]
        return found[0] if len(found) == 1 else None

    async def _one(self, match):
        found = await user_records(self._users, match, limit=1)
        return found[0] if found else None

    async def set_password(self, user_id, password_hash, tokens_valid_after):
        user = object_id(user_id)
        if user is None:
            return False
        result = await self._users.update_one(
            {"_id": user}, {"$set": {"password_hash": password_hash, "tokens_valid_after": tokens_valid_after}})
        return result.matched_count == 1

    async def usernames(self, user_ids):
        wanted = [value for value in map(object_id, user_ids) if value is not None]
        found = await self._users.find({"_id": {"$in": wanted}}, {"username": 1}).to_list(None)
        return {str(user["_id"]): user.get("username") for user in found}

    async def set_calendar_key(self, user_id, digest):
        user = object_id(user_id)
        if user is None:
            return False
        result = await self._users.update_one({"_id": user}, {"$set": {"calendar_key": digest}})
        return result.matched_count == 1

    async def find_by_calendar_key(self, digest):
        # A string match only: a digest is a string, so no client value becomes an operator.
        return await self._one({"calendar_key": {"$eq": str(digest)}})


def _named(field, value):
    """Filter: users whose `field` ("email" or "username") is `value` ignoring case. Also the
    exact value: a user another writer (the old backend, during a migration) inserted since the
    start has no key copy until the next start's backfill; the old backend's unique
    index on the exact field finds them."""
    return {"$or": [{f"{field}_lower": identity_key(value)}, {field: value}]}


def _taken_index(error):
    key_pattern = (error.details or {}).get("keyPattern") or {}
    return "email" if "email_lower" in key_pattern else "username"


class RevokedTokens(Repository, repositories.RevokedTokens):
    """Documents {_id: jti, user_id, expires_at}; a TTL index forgets them once expired."""

    def __init__(self, db):
        self._revoked = db["revoked_tokens"]

    async def revoke(self, jti, user_id, expires_at):
        try:
            await self._revoked.update_one(
                {"_id": jti}, {"$setOnInsert": {"user_id": stored_id(user_id), "expires_at": expires_at}},
                upsert=True)
        except driver_errors.DuplicateKeyError:
            pass  # a concurrent revoke of the same jti inserted it first: it is revoked either way

    async def is_revoked(self, jti):
        # The TTL monitor deletes expired documents only once a minute.
        return await self._revoked.find_one({"_id": jti, "expires_at": {"$gt": utcnow()}}, {"_id": 1}) is not None


class ResetTokens(Repository, repositories.ResetTokens):
    """Documents {_id: digest, user_id, expires_at}; a TTL index forgets them once expired."""

    def __init__(self, db):
        self._tokens = db["reset_tokens"]

    async def add(self, digest, user_id, expires_at):
        await self._tokens.replace_one(
            {"_id": digest}, {"user_id": stored_id(user_id), "expires_at": expires_at}, upsert=True)

    async def take(self, digest, now):
        # find_one_and_delete decides and deletes in one step: of concurrent takers, one gets it.
        token = await self._tokens.find_one_and_delete(
            {"_id": digest, "expires_at": {"$gt": now}}, projection={"user_id": 1})
        return None if token is None else id_text(token.get("user_id"))

    async def drop_all(self, user_id):
        user = object_id(user_id)
        if user is not None:
            await self._tokens.delete_many({"user_id": user})

    async def count(self, user_id):
        user = object_id(user_id)
        return 0 if user is None else await self._tokens.count_documents({"user_id": user})
