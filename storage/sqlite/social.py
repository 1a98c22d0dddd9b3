"""Follows and the activity feed in SQLite."""
from domain import repositories
from storage.sqlite.accounts import USER_COLUMNS, user_record
from storage.sqlite.columns import from_ms, to_json, to_ms
from storage.sqlite.database import Repository, sql_limit
from storage.sqlite.ids import new_id


class Follows(Repository, repositories.Follows):
    async def follow(self, follower_id, followee_id):
        return await self._database.write(_follow, follower_id, followee_id)

    async def unfollow(self, follower_id, followee_id):
        return await self._database.write(_unfollow, follower_id, followee_id)

    async def is_following(self, follower_id, followee_id):
        return await self._database.read(_is_following, follower_id, followee_id)

    async def followers(self, user_id, after_id, limit):
        return await self._database.read(_users_linked, "followee_id", "follower_id", user_id, after_id, limit)

    async def following(self, user_id, after_id, limit):
        return await self._database.read(_users_linked, "follower_id", "followee_id", user_id, after_id, limit)


def _follow(connection, follower_id, followee_id):
    # The primary key decides: of identical calls, only the one that inserts the row changes a row.
    # The users' counts follow the rows by triggers (schema.FOLLOW_COUNTS), in this transaction.
    created = connection.execute("INSERT INTO follows (follower_id, followee_id) VALUES (?, ?)"
                                 " ON CONFLICT DO NOTHING", (follower_id, followee_id))
    return created.rowcount == 1


def _unfollow(connection, follower_id, followee_id):
    removed = connection.execute("DELETE FROM follows WHERE follower_id = ? AND followee_id = ?",
                                 (follower_id, followee_id))
    return removed.rowcount == 1


def _is_following(connection, follower_id, followee_id):
    return connection.execute("SELECT 1 FROM follows WHERE follower_id = ? AND followee_id = ?",
                              (follower_id, followee_id)).fetchone() is not None


def _users_linked(connection, known_side, listed_side, user_id, after_id, limit):
    """The users on `listed_side` of the follows whose `known_side` is `user_id`, by id."""
    rows = connection.execute(
        f"""SELECT {USER_COLUMNS} FROM follows AS f JOIN users AS u ON u.id = f.{listed_side}
            WHERE f.{known_side} = ? AND f.{listed_side} > ? ORDER BY f.{listed_side} LIMIT ?""",
        (user_id, after_id or "", sql_limit(limit)))
    return [user_record(row) for row in rows]


class Activities(Repository, repositories.Activities):
    async def add(self, activity):
        return await self._database.write(_add_activity, activity)

    async def feed(self, reader_id, kinds, before, limit):
        return await self._database.read(_feed, reader_id, list(kinds), before, limit)

    async def add_once(self, activity):
        return await self._database.write(_add_activity_once, activity)

    async def withdraw(self, kind, actor_id, event_id=None, target_user_id=None):
        return await self._database.write(_withdraw, kind, actor_id, event_id, target_user_id)


ACTIVITY_FIELDS = ("type", "actor_id", "actor_name", "event_id", "target_user_id", "summary")


def _add_activity(connection, activity):
    activity_id = new_id()
    connection.execute(
        "INSERT INTO activities (id, type, actor_id, actor_name, event_id, target_user_id, summary, timestamp)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (activity_id, *(activity.get(field) for field in ACTIVITY_FIELDS), to_ms(activity.get("timestamp"))))
    return activity_id


# One activity's subject: `IS` so that a None matches a NULL (the index activities_by_subject).
_SAME_SUBJECT = "actor_id IS ? AND type = ? AND event_id IS ? AND target_user_id IS ?"


def _add_activity_once(connection, activity):
    # The check and the insert are one write transaction (BEGIN IMMEDIATE holds the file's write
    # lock), so no other call, in this process or another, can insert in between.
    subject = (activity["actor_id"], activity["type"], activity.get("event_id"), activity.get("target_user_id"))
    if connection.execute(f"SELECT 1 FROM activities WHERE {_SAME_SUBJECT}", subject).fetchone():
        return None
    return _add_activity(connection, activity)


def _withdraw(connection, kind, actor_id, event_id, target_user_id):
    return connection.execute(f"DELETE FROM activities WHERE {_SAME_SUBJECT}",
                              (actor_id, kind, event_id, target_user_id)).rowcount


def _feed(connection, reader_id, kinds, before, limit):
    conditions = ["f.follower_id = :reader", "a.type IN (SELECT value FROM json_each(:kinds))"]
    parameters = {"reader": reader_id, "kinds": to_json(kinds), "limit": sql_limit(limit)}
    if before is not None:
        conditions.append("(a.timestamp, a.id) < (:before_timestamp, :before_id)")
        parameters.update(before_timestamp=to_ms(before[0]), before_id=before[1])
    rows = connection.execute(
        f"""SELECT a.id, a.timestamp, {', '.join('a.' + field for field in ACTIVITY_FIELDS)}
            FROM follows AS f JOIN activities AS a ON a.actor_id = f.followee_id
            WHERE {' AND '.join(conditions)}
            ORDER BY a.timestamp DESC, a.id DESC LIMIT :limit""", parameters)
    return [{"id": activity_id, "timestamp": from_ms(timestamp), **dict(zip(ACTIVITY_FIELDS, values))}
            for activity_id, timestamp, *values in rows]
