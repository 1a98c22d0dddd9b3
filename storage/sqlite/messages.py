"""Chat messages in SQLite: one transaction per batch, ids increasing within each event.

An event's log is its rows of `messages`: the messages (kind NULL) and the changes to them
(kind 'edit' or 'delete', target_id the message), in one id order (schema.CHAT_CHANGES)."""
from domain import repositories
from domain.errors import NotFound
from storage.sqlite.columns import from_ms, to_json, to_ms
from storage.sqlite.database import Repository, sql_limit
from storage.sqlite.ids import id_after, new_id

COLUMNS = "id, event_id, user_id, username, text, timestamp, client_msg_id, kind, target_id, edited_at, deleted_at"
ENTRY = f"SELECT {COLUMNS} FROM messages"
# Messages alone, as history shows them: not the changes, which their rows already show.
MESSAGE = f"{ENTRY} WHERE kind IS NULL AND"


def message_record(row):
    message_id, event_id, user_id, username, text, timestamp, client_msg_id, kind, target_id, edited, deleted = row
    if kind is not None:
        return {"id": message_id, "event_id": event_id, "kind": kind, "message_id": target_id, "user_id": user_id,
                "text": text, "timestamp": from_ms(timestamp)}
    return {"id": message_id, "event_id": event_id, "kind": "message", "user_id": user_id, "username": username,
            "text": text, "timestamp": from_ms(timestamp), "client_msg_id": client_msg_id,
            "edited_at": None if edited is None else from_ms(edited),
            "deleted_at": None if deleted is None else from_ms(deleted)}


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

    async def change(self, event_id, drafts):
        return await self._database.write(_change, event_id, drafts)

    async def mark_read(self, event_id, user_id, message_id):
        return await self._database.write(_mark_read, event_id, user_id, message_id)

    async def moderate(self, event_id, action, user_id, actor_id, at, until=None):
        return await self._database.write(_moderate, event_id, action, user_id, actor_id, to_ms(at),
                                          None if until is None else to_ms(until))

    async def standing(self, event_id, user_id, now):
        muted_until, removed = await self._database.read(_standing, event_id, [user_id], to_ms(now))
        return {"muted_until": muted_until.get(user_id), "removed": user_id in removed}

    async def actions(self, event_id, before_id, limit):
        return await self._database.read(_actions, event_id, before_id, limit)

    async def chats(self, user_id, limit, unread_cap):
        return await self._database.read(_chats, user_id, limit, unread_cap)


def _append(connection, event_id, drafts):
    """All of the batch or none of it: a failure raises out of the transaction, which rolls back.

    Ids: the newest stored id of the event is read inside this write transaction, which no other
    process can share, and every new id is above it. So ids increase in stored order whatever
    the clocks of the processes on the file say, and across restarts.

    A batch for an event that does not exist (deleted while it waited) is refused whole: its
    messages could never be read or deleted. Deleting an event takes the same write lock, so no
    deletion can come between this check and the insert."""
    _open_event(connection, event_id)
    newest_id = previous_id = _newest_id(connection, event_id)
    refusals = _refusals(connection, event_id, drafts)
    results, rows = [], []
    for draft, refusal in zip(drafts, refusals):
        if refusal is not None:
            results.append(refusal)
            continue
        client_msg_id = draft.get("client_msg_id")
        if client_msg_id is not None:
            earlier = connection.execute(f"{MESSAGE} event_id = ? AND user_id = ? AND client_msg_id = ?",
                                         (event_id, draft["user_id"], client_msg_id)).fetchone()
            if earlier is not None:
                results.append((message_record(earlier), True))
                continue
        message_id = new_id()
        if message_id <= newest_id:  # equal-length lowercase hex compares as numbers do
            message_id = id_after(newest_id)
        newest_id = message_id
        row = (message_id, event_id, draft["user_id"], draft["username"], draft["text"],
               to_ms(draft["timestamp"]), client_msg_id, None, None, None, None)
        rows.append(row)
        results.append((message_record(row), False))
    connection.executemany(
        f"INSERT INTO messages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return repositories.Appended(results, previous_id or None)


def _open_event(connection, event_id):
    """The event's organizer id; refuses a deleted event (NotFound) or a cancelled one (Conflict)."""
    event = connection.execute("SELECT cancelled_at, organizer_id FROM events WHERE id = ?", (event_id,)).fetchone()
    if event is None:
        raise NotFound("There is no such event.", code="event_not_found")
    if event[0] is not None:
        raise repositories.cancelled_chat()
    return event[1]


def _newest_id(connection, event_id):
    newest = connection.execute("SELECT id FROM messages WHERE event_id = ? ORDER BY id DESC LIMIT 1",
                                (event_id,)).fetchone()
    return newest[0] if newest else ""


def _change(connection, event_id, drafts):
    """Each change in turn, in the batch's one transaction: the change's row, with an id from the
    event's sequence, and the target message's row updated with it (so history and `since`
    agree whatever fails). A deletion also blanks the text of the message's earlier edits: a
    deleted text is kept nowhere."""
    organizer_id = _open_event(connection, event_id)
    newest_id = previous_id = _newest_id(connection, event_id)
    refusals = _refusals(connection, event_id, drafts)
    results = []
    for draft, refusal in zip(drafts, refusals):
        if refusal is not None:
            results.append(refusal)
            continue
        kind, target_id, at = draft["kind"], draft["message_id"], to_ms(draft["timestamp"])
        target = connection.execute(f"{MESSAGE} event_id = ? AND id = ?", (event_id, target_id)).fetchone()
        if target is None:
            results.append(repositories.no_such_message())
            continue
        target = message_record(target)
        refusal = repositories.change_refusal(target, draft, organizer_id)
        if refusal is not None:
            results.append(refusal)
            continue
        if repositories.change_repeats(target, draft):
            earlier = connection.execute(
                f"{ENTRY} WHERE event_id = ? AND target_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
                (event_id, target_id, kind)).fetchone()
            if earlier is not None:
                results.append((message_record(earlier), True))
                continue
            if kind == "edit":
                results.append(repositories.unchanged_text())
                continue
        change_id = new_id()
        if change_id <= newest_id:
            change_id = id_after(newest_id)
        newest_id = change_id
        text = draft["text"] if kind == "edit" else None
        row = (change_id, event_id, draft["user_id"], None, text, at, None, kind, target_id, None, None)
        connection.execute(f"INSERT INTO messages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        if kind == "edit":
            connection.execute("UPDATE messages SET text = ?, edited_at = ? WHERE event_id = ? AND id = ?",
                               (text, at, event_id, target_id))
        else:
            connection.execute("UPDATE messages SET text = NULL, deleted_at = ? WHERE event_id = ? AND id = ?",
                               (at, event_id, target_id))
            connection.execute("UPDATE messages SET text = NULL WHERE event_id = ? AND target_id = ?",
                               (event_id, target_id))
            if target["user_id"] != draft["user_id"]:  # the organizer's: in the moderation log
                _log_action(connection, event_id, "delete_message", target["user_id"], draft["user_id"], at,
                            message_id=target_id)
        results.append((message_record(row), False))
    return repositories.Appended(results, previous_id or None)


def _refusals(connection, event_id, drafts):
    """repositories.chat_refusal of each draft, from its author's standing read in this write."""
    authors = sorted({draft["user_id"] for draft in drafts})
    now = to_ms(max(draft["timestamp"] for draft in drafts)) if drafts else 0
    muted_until, removed = _standing(connection, event_id, authors, now)
    return [repositories.chat_refusal(draft, muted_until.get(draft["user_id"]), draft["user_id"] in removed,
                                      draft["timestamp"]) for draft in drafts]


def _standing(connection, event_id, user_ids, now):
    """({user id: end of a mute after `now`}, {removed user ids}) of these users in the event."""
    rows = connection.execute(
        """SELECT user_id, muted_until, removed_at FROM chat_restrictions
           WHERE event_id = ? AND user_id IN (SELECT value FROM json_each(?))""", (event_id, to_json(user_ids)))
    muted_until, removed = {}, set()
    for user_id, until, removed_at in rows:
        if until is not None and until > now:
            muted_until[user_id] = from_ms(until)
        if removed_at is not None:
            removed.add(user_id)
    return muted_until, removed


def _moderate(connection, event_id, action, user_id, actor_id, at, until):
    columns = {"mute": ("muted_until", until), "unmute": ("muted_until", None),
               "remove": ("removed_at", at), "allow": ("removed_at", None)}
    column, value = columns[action]
    connection.execute(
        f"""INSERT INTO chat_restrictions (event_id, user_id, {column}) VALUES (?, ?, ?)
            ON CONFLICT (event_id, user_id) DO UPDATE SET {column} = excluded.{column}""",
        (event_id, user_id, value))
    return _log_action(connection, event_id, action, user_id, actor_id, at, until=until)


def _log_action(connection, event_id, action, user_id, actor_id, at, message_id=None, until=None):
    newest = connection.execute("SELECT id FROM chat_moderation WHERE event_id = ? ORDER BY id DESC LIMIT 1",
                                (event_id,)).fetchone()
    action_id = new_id()
    if newest is not None and action_id <= newest[0]:
        action_id = id_after(newest[0])
    row = (event_id, action_id, action, user_id, actor_id, message_id, until, at)
    connection.execute("INSERT INTO chat_moderation (event_id, id, action, user_id, actor_id, message_id, until, at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    return action_record(row)


def action_record(row):
    event_id, action_id, action, user_id, actor_id, message_id, until, at = row
    return {"id": action_id, "event_id": event_id, "action": action, "user_id": user_id, "actor_id": actor_id,
            "message_id": message_id, "until": None if until is None else from_ms(until), "at": from_ms(at)}


def _actions(connection, event_id, before_id, limit):
    rows = connection.execute(
        """SELECT event_id, id, action, user_id, actor_id, message_id, until, at FROM chat_moderation
           WHERE event_id = ? AND id < ? ORDER BY id DESC LIMIT ?""",
        (event_id, before_id or "g", sql_limit(limit)))
    return [action_record(row) for row in rows]


def _mark_read(connection, event_id, user_id, message_id):
    """Moves the marker forward only: a late frame from another device never moves it back."""
    if not _exists(connection, event_id, message_id):
        return None
    connection.execute(
        """INSERT INTO chat_reads (user_id, event_id, last_read_id) VALUES (?, ?, ?)
           ON CONFLICT (event_id, user_id) DO UPDATE SET last_read_id = max(last_read_id, excluded.last_read_id)""",
        (user_id, event_id, message_id))
    return connection.execute("SELECT last_read_id FROM chat_reads WHERE user_id = ? AND event_id = ?",
                              (user_id, event_id)).fetchone()[0]


def _chats(connection, user_id, limit, unread_cap):
    """The user's newest `limit` events (organized or RSVPed, by id), each with its marker, its
    unread count (a range of the primary key after the marker, counted up to `unread_cap`) and
    its last message."""
    events = connection.execute(
        """SELECT id, title FROM events WHERE id IN (
               SELECT id FROM events WHERE organizer_id = :user
               UNION SELECT event_id FROM rsvps WHERE user_id = :user)
           ORDER BY id DESC LIMIT :limit""", {"user": user_id, "limit": sql_limit(limit)}).fetchall()
    chats = []
    for event_id, title in events:
        marker = connection.execute("SELECT last_read_id FROM chat_reads WHERE user_id = ? AND event_id = ?",
                                    (user_id, event_id)).fetchone()
        last_read_id = marker[0] if marker else None
        unread = connection.execute(
            """SELECT count(*) FROM (SELECT 1 FROM messages WHERE event_id = ? AND id > ? AND kind IS NULL
                   AND deleted_at IS NULL AND user_id IS NOT ? LIMIT ?)""",
            (event_id, last_read_id or "", user_id, unread_cap)).fetchone()[0]
        last = connection.execute(f"{MESSAGE} event_id = ? ORDER BY id DESC LIMIT 1", (event_id,)).fetchone()
        chats.append({"event_id": event_id, "title": title, "last_read_id": last_read_id, "unread_count": unread,
                      "last_message": None if last is None else message_record(last)})
    return chats


def _exists(connection, event_id, message_id):
    return connection.execute("SELECT 1 FROM messages WHERE event_id = ? AND id = ?",
                              (event_id, message_id)).fetchone() is not None


def _latest(connection, event_id, limit):
    rows = connection.execute(f"{MESSAGE} event_id = ? ORDER BY id DESC LIMIT ?", (event_id, sql_limit(limit)))
    return [message_record(row) for row in rows][::-1]


def _after(connection, event_id, message_id, limit):
    rows = connection.execute(f"{ENTRY} WHERE event_id = ? AND id > ? ORDER BY id LIMIT ?",
                              (event_id, message_id or "", sql_limit(limit)))
    return [message_record(row) for row in rows]


def _before(connection, event_id, message_id, limit):
    if message_id is None:
        rows = connection.execute(f"{MESSAGE} event_id = ? ORDER BY id DESC LIMIT ?",
                                  (event_id, sql_limit(limit)))
    else:
        rows = connection.execute(f"{MESSAGE} event_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                                  (event_id, message_id, sql_limit(limit)))
    return [message_record(row) for row in rows]


def _counts(connection, event_ids):
    rows = connection.execute(
        "SELECT value, (SELECT count(*) FROM messages WHERE event_id = value AND kind IS NULL) FROM json_each(?)",
        (to_json(event_ids),))
    return dict(rows)
