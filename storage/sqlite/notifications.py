"""Notifications in SQLite: one row each; a keyed one is replaced by a delete and an insert in the
batch's transaction, and every batch first forgets the rows past the retention period."""
import datetime

from domain import repositories
from storage.sqlite.columns import from_json, from_ms, to_json, to_ms
from storage.sqlite.database import Repository, sql_limit
from storage.sqlite.ids import new_id

COLUMNS = "id, user_id, type, event_id, data, key, created_at, read"


class Notifications(Repository, repositories.Notifications):
    async def add(self, drafts):
        return await self._database.write(_add, list(drafts))

    async def page(self, user_id, before_id, limit):
        return await self._database.read(_page, user_id, before_id, limit)

    async def unread_count(self, user_id):
        return await self._database.read(_unread_count, user_id)

    async def mark_read(self, user_id, up_to_id):
        return await self._database.write(_mark_read, user_id, up_to_id)

    async def told(self, key):
        return await self._database.read(_told, key)


def _add(connection, drafts):
    if not drafts:
        return []
    newest = max(to_ms(draft["created_at"]) for draft in drafts)
    retention_ms = repositories.Notifications.RETENTION // datetime.timedelta(milliseconds=1)
    connection.execute("DELETE FROM notifications WHERE created_at < ?", (newest - retention_ms,))
    rows = [(new_id(), draft["user_id"], draft["type"], draft.get("event_id"), to_json(draft["data"]),
             draft.get("key"), to_ms(draft["created_at"])) for draft in drafts]
    connection.executemany("DELETE FROM notifications WHERE key = ? AND user_id = ?",
                           [(row[5], row[1]) for row in rows if row[5] is not None])
    connection.executemany("INSERT INTO notifications (id, user_id, type, event_id, data, key, created_at, read)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, 0)", rows)
    return [_record((*row, 0)) for row in rows]


def _record(row):
    notification_id, user_id, kind, event_id, data, key, created_at, read = row
    return {"id": notification_id, "user_id": user_id, "type": kind, "event_id": event_id, "data": from_json(data),
            "key": key, "created_at": from_ms(created_at), "read": bool(read)}


def _page(connection, user_id, before_id, limit):
    condition, parameters = "user_id = ?", [user_id]
    if before_id is not None:
        condition += " AND id < ?"
        parameters.append(before_id)
    rows = connection.execute(f"SELECT {COLUMNS} FROM notifications WHERE {condition} ORDER BY id DESC LIMIT ?",
                              (*parameters, sql_limit(limit)))
    return [_record(row) for row in rows]


def _unread_count(connection, user_id):
    return connection.execute("SELECT count(*) FROM notifications WHERE user_id = ? AND read = 0",
                              (user_id,)).fetchone()[0]


def _mark_read(connection, user_id, up_to_id):
    if connection.execute("SELECT 1 FROM notifications WHERE id = ? AND user_id = ?",
                          (up_to_id, user_id)).fetchone() is None:
        return None
    return connection.execute("UPDATE notifications SET read = 1 WHERE user_id = ? AND id <= ? AND read = 0",
                              (user_id, up_to_id)).rowcount


def _told(connection, key):
    rows = connection.execute("SELECT user_id, data FROM notifications WHERE key = ?", (key,))
    return {user_id: from_json(data) for user_id, data in rows}
