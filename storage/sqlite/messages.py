"""Chat messages in SQLite: one transaction per batch, ids increasing within each event."""
from domain import repositories
from domain.errors import NotFound
from storage.sqlite.columns import from_ms, to_json, to_ms
from storage.sqlite.database import Repository, sql_limit
from storage.sqlite.ids import id_after, new_id

MESSAGE = "SELECT id, event_id, user_id, username, text, timestamp, client_msg_id FROM messages"


def message_record(row):
    message_id, event_id, user_id, username, text, timestamp, client_msg_id = row
    return {"id": message_id, "event_id": event_id, "user_id": user_id, "username": username, "text": text,
            "timestamp": from_ms(timestamp), "client_msg_id": client_msg_id}


class Messages(Repository, repositories.Messages):
    async def append(self, event_id, drafts):
        return await self._database.write(_append, event_id, drafts)

    async def exists(self, event_id, message_id):
        return await self._database.read(_exists, event_id, message_id)

    async def latest(self, event_id, limit):
        return await self._database.read(_latest, event_id, limit)

    async def after(self, event_id, message_id, limit):
        return await self._database.read(_after, event_id, message_id, limit)

    async def before(self, event_id, message_id, limit):
        return await self._database.read(_before, event_id, message_id, limit)

    async def counts(self, event_ids):
        return await self._database.read(_counts, list(event_ids))


def _append(connection, event_id, drafts):
    """All of the batch or none of it: a failure raises out of the transaction, which rolls back.

    Ids: the newest stored id of the event is read inside this write transaction, which no other
    process can share, and every new id is above it. So ids increase in stored order whatever
    the clocks of the processes on the file say, and across restarts.

    A batch for an event that does not exist (deleted while it waited) is refused whole: its
    messages could never be read or deleted. Deleting an event takes the same write lock, so no
    deletion can come between this check and the insert."""
    event = connection.execute("SELECT cancelled_at FROM events WHERE id = ?", (event_id,)).fetchone()
    if event is None:
        raise NotFound("There is no such event.", code="event_not_found")
    if event[0] is not None:
        raise repositories.cancelled_chat()
    newest = connection.execute("SELECT id FROM messages WHERE event_id = ? ORDER BY id DESC LIMIT 1",
                                (event_id,)).fetchone()
    newest_id = previous_id = newest[0] if newest else ""
    results, rows = [], []
    for draft in drafts:
        client_msg_id = draft.get("client_msg_id")
        if client_msg_id is not None:
            earlier = connection.execute(f"{MESSAGE} WHERE event_id = ? AND user_id = ? AND client_msg_id = ?",
                                         (event_id, draft["user_id"], client_msg_id)).fetchone()
            if earlier is not None:
                results.append((message_record(earlier), True))
                continue
        message_id = new_id()
        if message_id <= newest_id:  # equal-length lowercase hex compares as numbers do
            message_id = id_after(newest_id)
        newest_id = message_id
        row = (message_id, event_id, draft["user_id"], draft["username"], draft["text"],
               to_ms(draft["timestamp"]), client_msg_id)
        rows.append(row)
        results.append((message_record(row), False))
    connection.executemany(
        "INSERT INTO messages (id, event_id, user_id, username, text, timestamp, client_msg_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return repositories.Appended(results, previous_id or None)


def _exists(connection, event_id, message_id):
    return connection.execute("SELECT 1 FROM messages WHERE event_id = ? AND id = ?",
                              (event_id, message_id)).fetchone() is not None


def _latest(connection, event_id, limit):
    rows = connection.execute(f"{MESSAGE} WHERE event_id = ? ORDER BY id DESC LIMIT ?", (event_id, sql_limit(limit)))
    return [message_record(row) for row in rows][::-1]


def _after(connection, event_id, message_id, limit):
    rows = connection.execute(f"{MESSAGE} WHERE event_id = ? AND id > ? ORDER BY id LIMIT ?",
                              (event_id, message_id or "", sql_limit(limit)))
    return [message_record(row) for row in rows]


def _before(connection, event_id, message_id, limit):
    if message_id is None:
        rows = connection.execute(f"{MESSAGE} WHERE event_id = ? ORDER BY id DESC LIMIT ?",
                                  (event_id, sql_limit(limit)))
    else:
        rows = connection.execute(f"{MESSAGE} WHERE event_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                                  (event_id, message_id, sql_limit(limit)))
    return [message_record(row) for row in rows]


def _counts(connection, event_ids):
    rows = connection.execute(
        "SELECT value, (SELECT count(*) FROM messages WHERE event_id = value) FROM json_each(?)",
        (to_json(event_ids),))
    return dict(rows)
