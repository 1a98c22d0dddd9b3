"""The follow graph, user profiles and the activity feed, over the old backend's documents.

A follow lives twice, as in the old backend: in the follower's `following` array and in the
followed user's `followers` array. The follower's `following` array is the source of truth;
`followers` is kept in step with it (see `_align_followers` for why that holds under
concurrency without transactions).

Lists are cursor-paginated: a page is "strictly after the last item shown", never an offset,
so documents added or removed meanwhile never make a later page repeat or skip anything.
"""
import datetime
import re

from domain import store as db
from domain.activities import FOLLOW, SUMMARIES, record_activity
from domain.errors import InvalidInput, NotFound
from domain.paging import Page
from domain.times import UTC, as_utc, to_iso
from domain.users import public_user

# Cursors are opaque to clients but have an exact shape, which the OpenAPI document states, and
# every string of that shape is a real position: a schema-valid cursor always gets a page, any
# other string is a 400. A user list's cursor is the last user id shown; the feed's is
# "<epoch milliseconds>-<activity id>" of the last activity shown.
USER_CURSOR_PATTERN = r"^[0-9a-f]{24}$"
FEED_CURSOR_PATTERN = r"^[0-9]{1,14}-[0-9a-f]{24}$"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = datetime.timedelta(milliseconds=1)
FEED_ORDER = [("timestamp", db.DESCENDING), ("_id", db.DESCENDING)]
# The activity types the contract knows; anything else in an old database stays out of the feed,
# as do activities without a time (or one before 1970), which could not be placed in the order.
FEED_KINDS = list(SUMMARIES)
# Projection for user lists: the arrays are needed for the counts, never the secrets.
PUBLIC_USER_FIELDS = {"username": 1, "role": 1, "followers": 1, "following": 1, "created_at": 1}


# --- paging --------------------------------------------------------------------------------

def user_cursor(user):
    return str(user["_id"])


def user_position(cursor):
    """The user id a user-list cursor points after."""
    if not re.fullmatch(USER_CURSOR_PATTERN, cursor):
        raise _bad_cursor(USER_CURSOR_PATTERN)
    return db.ObjectId(cursor)


def feed_cursor(activity):
    return f"{(as_utc(activity['timestamp']) - EPOCH) // MILLISECOND}-{activity['_id']}"


def feed_position(cursor):
    """The (timestamp, activity id) a feed cursor points after."""
    if not re.fullmatch(FEED_CURSOR_PATTERN, cursor):
        raise _bad_cursor(FEED_CURSOR_PATTERN)
    milliseconds, activity_id = cursor.split("-")
    return EPOCH + int(milliseconds) * MILLISECOND, db.ObjectId(activity_id)


def _bad_cursor(pattern):
    return InvalidInput("The cursor is not valid; start again without one.", code="invalid_cursor",
                        errors=[{"path": "cursor", "message": f"must be a next_cursor of this list ({pattern})"}])


# --- users ---------------------------------------------------------------------------------

async def find_user(store, id_text):
    """The user with this id; a malformed or unknown id is a 404."""
    return await _load_user(store, db.parse_id(id_text))


async def _load_user(store, user_id):
    user = await store.users.find_one({"_id": user_id}, PUBLIC_USER_FIELDS) if user_id else None
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


def user_profile(user, viewer):
    """The public user as `viewer` sees them: with whether the viewer follows them."""
    return _profile(user, user["_id"] in (viewer.get("following") or []))


def _profile(user, is_following):
    return {**public_user(user), "is_following": is_following}


async def list_followers(store, id_text, limit, cursor=None):
    """Who follows the user, in user id order; read from the source of truth, `following`."""
    user = await find_user(store, id_text)
    return await _user_page(store, {"following": user["_id"]}, limit, cursor)


async def list_following(store, id_text, limit, cursor=None):
    """Whom the user follows, in user id order."""
    user = await find_user(store, id_text)
    return await _user_page(store, {"_id": {"$in": user.get("following") or []}}, limit, cursor)


async def _user_page(store, query, limit, cursor):
    # Ordered by user id; the next page is the ids after the last one shown.
    if cursor is not None:
        query = {"$and": [query, {"_id": {"$gt": user_position(cursor)}}]}
    users = await store.users.find(query, PUBLIC_USER_FIELDS).sort("_id", db.ASCENDING).to_list(limit + 1)
    shown = users[:limit]
    next_cursor = user_cursor(shown[-1]) if len(users) > limit else None
    return Page([public_user(user) for user in shown], next_cursor)


# --- following -----------------------------------------------------------------------------

async def follow(store, follower, id_text):
    """Makes `follower` follow the user; idempotent. Returns the user's profile as it is now."""
    target = await _someone_else(store, follower, id_text)
    # The conditional update is the decision: it matches only if the follow is not there yet, so
    # exactly one of any number of concurrent identical requests records the activity.
    result = await store.users.update_one(
        {"_id": follower["_id"], "following": {"$ne": target["_id"]}},
        {"$addToSet": {"following": target["_id"]}})
    follows = await _align_followers(store, follower["_id"], target["_id"])
    if result.modified_count:
        await record_activity(store, FOLLOW, follower, target_user=target)
    return _profile(await _load_user(store, target["_id"]), follows)


async def unfollow(store, follower, id_text):
    """Ends the follow, if there is one; idempotent. Returns the user's profile as it is now."""
    target = await _someone_else(store, follower, id_text)
    await store.users.update_one(
        {"_id": follower["_id"], "following": target["_id"]},
        {"$pull": {"following": target["_id"]}})
    follows = await _align_followers(store, follower["_id"], target["_id"])
    return _profile(await _load_user(store, target["_id"]), follows)


async def _someone_else(store, follower, id_text):
    target_id = db.parse_id(id_text)
    if target_id is not None and target_id == follower["_id"]:
        raise InvalidInput("You cannot follow yourself.", code="cannot_follow_self")
    return await find_user(store, id_text)


async def _align_followers(store, follower_id, target_id):
    """Sets the target's `followers` membership to match the follower's `following`; returns it.

    Why both arrays end consistent without a transaction: every change to a pair's `following`
    membership is made by a request that afterwards runs this loop, and this loop is the only
    writer of `followers`. Each round reads the truth, writes `followers` to match, and re-reads
    the truth; it ends only when the re-read equals what it wrote. Take the last `followers`
    write of the pair, by request R writing x: R's re-read, after that write, saw x. Had any
    request changed `following` after R's re-read, that request's own loop would write
    `followers` later still, contradicting "last". So `following` ends as x, which is what
    `followers` holds. A plain "write what you read" without the re-read is not enough: a follow
    could read "following", an unfollow then pull both sides, and the follow's late $addToSet
    leave a follower that does not follow.

    It terminates: another round is needed only when the pair's `following` changed during the
    round, and each follow or unfollow request changes it at most once. A process that dies
    between the two writes leaves the pair unaligned until its next follow or unfollow.
    """
    follows = await _is_following(store, follower_id, target_id)
    while True:
        change = "$addToSet" if follows else "$pull"
        await store.users.update_one({"_id": target_id}, {change: {"followers": follower_id}})
        follows_now = await _is_following(store, follower_id, target_id)
        if follows_now == follows:
            return follows
        follows = follows_now


async def _is_following(store, follower_id, target_id):
    return await store.users.find_one({"_id": follower_id, "following": target_id}, {"_id": 1}) is not None


# --- feed ----------------------------------------------------------------------------------

async def feed_page(store, reader, limit, cursor=None):
    """Activities of the users `reader` follows, newest first, in one query.

    Ordered by (timestamp, _id) descending; the cursor is the last item's pair and the next page
    is everything strictly older, so activities arriving meanwhile never shift later pages.
    """
    position = feed_position(cursor) if cursor is not None else None
    following = reader.get("following") or []
    if not following:
        return Page([])
    query = {"actor_id": {"$in": following}, "type": {"$in": FEED_KINDS}, "timestamp": {"$gte": EPOCH}}
    if position is not None:
        timestamp, last_id = position
        query["timestamp"]["$lte"] = timestamp
        query["$or"] = [{"timestamp": {"$lt": timestamp}}, {"_id": {"$lt": last_id}}]
    activities = await store.activities.find(query).sort(FEED_ORDER).to_list(limit + 1)
    shown = activities[:limit]
    names = await _missing_actor_names(store, shown)
    next_cursor = feed_cursor(shown[-1]) if len(activities) > limit else None
    return Page([public_activity(activity, names) for activity in shown], next_cursor)


async def _missing_actor_names(store, activities):
    # Activities carry their actor's name; some written by the old backend may not.
    missing = list({a["actor_id"] for a in activities if not a.get("actor_name") and a.get("actor_id")})
    if not missing:
        return {}
    users = await store.users.find({"_id": {"$in": missing}}, {"username": 1}).to_list(len(missing))
    return {user["_id"]: user.get("username", "") for user in users}


def public_activity(activity, names=None):
    """The contract's Activity. Tolerates old documents that lack a name, a summary or ids."""
    actor_id = activity.get("actor_id")
    actor_name = activity.get("actor_name") or (names or {}).get(actor_id) or "Someone"
    summary = activity.get("summary") or SUMMARIES[activity["type"]].format(
        actor=actor_name, event="an event", target="someone")
    return {
        "id": str(activity["_id"]),
        "type": activity["type"],
        "actor": {"id": _id_text(actor_id), "username": actor_name},
        "event_id": _id_text(activity.get("event_id")),
        "target_user_id": _id_text(activity.get("target_user_id")),
        "summary": summary,
        "timestamp": to_iso(activity["timestamp"]),
    }


def _id_text(value):
    return str(value) if value is not None else None
