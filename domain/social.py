"""The follow graph, user profiles and the activity feed.

A follow is one fact, kept by `Follows` (domain/repositories.py): whether a follow exists,
and the counts on user records, are always read from it. Where a database keeps a follow in
more than one place (the old backend's `following` and `followers` arrays), keeping those in
step under concurrency is the work of that database's adapter, explained there.

Lists are cursor-paginated: a page is "strictly after the last item shown", never an offset,
so records added or removed meanwhile never make a later page repeat or skip anything.
"""
import re

from domain.activities import FOLLOW, SUMMARIES, record_activity, withdraw_activity
from domain.errors import InvalidInput, NotFound
from domain.paging import CURSOR_RULE, ID_PATTERN, Page
from domain.times import EPOCH, as_utc, epoch_ms, from_epoch_ms, to_iso
from domain.users import public_user

# Cursors are opaque to clients but have an exact shape, which the OpenAPI document states, and
# every string of that shape is a real position: a schema-valid cursor always gets a page, any
# other string is a 400. A user list's cursor is the last user id shown; the feed's is
# "<epoch milliseconds>-<activity id>" of the last activity shown.
USER_CURSOR_PATTERN = ID_PATTERN
FEED_CURSOR_PATTERN = r"^[0-9]{1,14}-[0-9a-f]{24}$"
# The activity types the contract knows; anything else in an old database stays out of the feed,
# as do activities without a time (or one before 1970), which could not be placed in the order.
FEED_KINDS = list(SUMMARIES)


# --- paging --------------------------------------------------------------------------------

def user_position(cursor):
    """The user id a user-list cursor points after."""
    if not re.fullmatch(USER_CURSOR_PATTERN, cursor):
        raise _bad_cursor()
    return cursor


def feed_cursor(activity):
    return f"{epoch_ms(activity['timestamp'])}-{activity['id']}"


def feed_position(cursor):
    """The (timestamp, activity id) a feed cursor points after."""
    if not re.fullmatch(FEED_CURSOR_PATTERN, cursor):
        raise _bad_cursor()
    milliseconds, activity_id = cursor.split("-")
    return from_epoch_ms(int(milliseconds)), activity_id


def _bad_cursor():
    return InvalidInput("The cursor is not valid; start again without one.", code="invalid_cursor",
                        errors=[{"path": "cursor", "message": CURSOR_RULE}])


# --- users ---------------------------------------------------------------------------------

async def find_user(store, user_id):
    """The user record with this id; an unknown id is a 404."""
    user = await store.users.get(user_id)
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


async def user_profile(store, user_id, viewer):
    """The public user as `viewer` sees them: with whether the viewer follows them."""
    return await _profile(store, await find_user(store, user_id), viewer)


async def _profile(store, user, viewer):
    is_following = await store.follows.is_following(viewer["id"], user["id"])
    return {**public_user(user), "is_following": is_following}


async def list_followers(store, user_id, limit, cursor=None):
    """Who follows the user, in user id order."""
    user = await find_user(store, user_id)
    after = user_position(cursor) if cursor is not None else None
    return _user_page(await store.follows.followers(user["id"], after, limit + 1), limit)


async def list_following(store, user_id, limit, cursor=None):
    """Whom the user follows, in user id order."""
    user = await find_user(store, user_id)
    after = user_position(cursor) if cursor is not None else None
    return _user_page(await store.follows.following(user["id"], after, limit + 1), limit)


def _user_page(users, limit):
    # Ordered by user id; the next page is the ids after the last one shown.
    shown = users[:limit]
    next_cursor = shown[-1]["id"] if len(users) > limit else None
    return Page([public_user(user) for user in shown], next_cursor)


# --- following -----------------------------------------------------------------------------

async def follow(store, follower, user_id):
    """Makes `follower` follow the user; idempotent. Returns the user's profile as it is now."""
    target = await _someone_else(store, follower, user_id)
    # follow() is the decision: it is True only for the call that created the follow, so
    # exactly one of any number of concurrent identical requests records the activity.
    if await store.follows.follow(follower["id"], target["id"]):
        await record_activity(store, FOLLOW, follower, target_user=target)
        # An unfollow may have ended the follow, and withdrawn nothing yet to withdraw, before
        # the activity was stored; if so the follow is gone by now, and this withdraws it.
        # (Either the unfollow's withdrawal comes after the record, or its delete of the follow
        # came before this read.)
        if not await store.follows.is_following(follower["id"], target["id"]):
            await withdraw_activity(store, FOLLOW, follower["id"], target_user_id=target["id"])
    return await _profile(store, await find_user(store, target["id"]), follower)


async def unfollow(store, follower, user_id):
    """Ends the follow, if there is one, and withdraws its activity; idempotent. Returns the
    user's profile as it is now."""
    target = await _someone_else(store, follower, user_id)
    await store.follows.unfollow(follower["id"], target["id"])
    # Also when there was no follow to end: a follow's activity left by a failed request goes too.
    await withdraw_activity(store, FOLLOW, follower["id"], target_user_id=target["id"])
    return await _profile(store, await find_user(store, target["id"]), follower)


async def _someone_else(store, follower, user_id):
    if user_id == follower["id"]:
        raise InvalidInput("You cannot follow yourself.", code="cannot_follow_self")
    return await find_user(store, user_id)


# --- feed ----------------------------------------------------------------------------------

async def feed_page(store, reader, limit, cursor=None):
    """Activities of the users `reader` follows, newest first.

    Ordered by (timestamp, id) descending; the cursor is the last item's pair and the next page
    is everything strictly older, so activities arriving meanwhile never shift later pages.
    """
    before = feed_position(cursor) if cursor is not None else None
    activities = await store.activities.feed(reader["id"], FEED_KINDS, before, limit + 1)
    # Those without a time, or from before 1970, come last in this order: dropping them ends
    # the feed where they start.
    activities = [activity for activity in activities
                  if activity["timestamp"] is not None and as_utc(activity["timestamp"]) >= EPOCH]
    shown = activities[:limit]
    names = await _missing_actor_names(store, shown)
    next_cursor = feed_cursor(shown[-1]) if len(activities) > limit else None
    return Page([public_activity(activity, names) for activity in shown], next_cursor)


async def _missing_actor_names(store, activities):
    # Activities carry their actor's name; some written by the old backend may not.
    missing = {a["actor_id"] for a in activities if not a["actor_name"] and a["actor_id"]}
    if not missing:
        return {}
    return await store.users.usernames(missing)


def public_activity(activity, names):
    """The contract's Activity. Tolerates old records that lack a name, a summary or ids."""
    actor_id = activity["actor_id"]
    actor_name = activity["actor_name"] or names.get(actor_id) or "Someone"
    summary = activity["summary"] or SUMMARIES[activity["type"]].format(
        actor=actor_name, event="an event", target="someone")
    return {
        "id": activity["id"],
        "type": activity["type"],
        "actor": {"id": actor_id, "username": actor_name},
        "event_id": activity["event_id"],
        "target_user_id": activity["target_user_id"],
        "summary": summary,
        "timestamp": to_iso(activity["timestamp"]),
    }
