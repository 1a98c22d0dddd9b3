"""Users, revoked tokens and password reset tokens in SQLite."""
from domain import repositories
from domain.identity import identity_key
from domain.times import utcnow
from storage.sqlite.columns import from_ms, to_json, to_ms
from storage.sqlite.database import Repository
from storage.sqlite.ids import new_id
from storage.sqlite.schema import parked_key

# A user record as Users.get returns it. The counts are columns that triggers on follows keep
# (see schema.FOLLOW_COUNTS): reading a user never counts its follows.
USER_COLUMNS = """u.id, u.username, u.email, u.role, u.password_hash, u.created_at, u.tokens_valid_after,
    u.followers_count, u.following_count"""


def user_record(row):
    (user_id, username, email, role, password_hash, created_at, tokens_valid_after,
     followers_count, following_count) = row
    return {"id": user_id, "username": username, "email": email, "role": role,
            "password_hash": password_hash, "created_at": from_ms(created_at),
            "tokens_valid_after": from_ms(tokens_valid_after),
            "followers_count": followers_count, "following_count": following_count}


def _one_user(connection, condition, *values):
    row = connection.execute(f"SELECT {USER_COLUMNS} FROM users AS u WHERE {condition}", values).fetchone()
    return None if row is None else user_record(row)


class Users(Repository, repositories.Users):
    async def add(self, username, email, role, password_hash, created_at):
        return await self._database.write(_add_user, username, email, role, password_hash, created_at)

    async def get(self, user_id):
        return await self._database.read(_one_user, "u.id = ?", user_id)

    async def taken(self, email, username):
        return await self._database.read(_taken, email, username)

    async def find_by_email(self, email):
        # An account whose key a migration had to give up (schema.IDENTITY_KEYS) is still found
        # by the very address it registered.
        return await self._database.read(
            _one_user, "u.email_key IN (?, ?) ORDER BY u.email_key = ? DESC LIMIT 1",
            identity_key(email), parked_key(email), parked_key(email))

    async def set_password(self, user_id, password_hash, tokens_valid_after):
        return await self._database.write(_set_password, user_id, password_hash, tokens_valid_after)

    async def usernames(self, user_ids):
        return await self._database.read(_usernames, list(user_ids))

    async def set_calendar_key(self, user_id, digest):
        return await self._database.write(_set_calendar_key, user_id, digest)

    async def find_by_calendar_key(self, digest):
        return await self._database.read(_one_user, "u.calendar_key = ?", digest)


def _set_calendar_key(connection, user_id, digest):
    changed = connection.execute("UPDATE users SET calendar_key = ? WHERE id = ?", (digest, user_id))
    return changed.rowcount == 1


def _taken(connection, email, username):
    for field, key in (("email", identity_key(email)), ("username", identity_key(username))):
        if connection.execute(f"SELECT 1 FROM users WHERE {field}_key = ?", (key,)).fetchone():
            return field
    return None


def _add_user(connection, username, email, role, password_hash, created_at):
    # Inside the write transaction nobody else can register between this check and the insert;
    # the unique indexes hold the rule regardless.
    taken = _taken(connection, email, username)
    if taken:
        raise repositories.AlreadyTaken(taken)
    user_id = new_id()
    connection.execute(
        "INSERT INTO users (id, username, username_key, email, email_key, role, password_hash, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, username, identity_key(username), email, identity_key(email), role, password_hash,
         to_ms(created_at)))
    return _one_user(connection, "u.id = ?", user_id)


def _set_password(connection, user_id, password_hash, tokens_valid_after):
    changed = connection.execute("UPDATE users SET password_hash = ?, tokens_valid_after = ? WHERE id = ?",
                                 (password_hash, to_ms(tokens_valid_after), user_id))
    return changed.rowcount == 1


def _usernames(connection, user_ids):
    # One parameter for any number of ids: json_each turns a JSON array into rows.
    rows = connection.execute("SELECT id, username FROM users WHERE id IN (SELECT value FROM json_each(?))",
                              (to_json(user_ids),))
    return dict(rows)


class RevokedTokens(Repository, repositories.RevokedTokens):
    async def revoke(self, jti, user_id, expires_at):
        await self._database.write(_revoke, jti, user_id, to_ms(expires_at), to_ms(utcnow()))

    async def is_revoked(self, jti):
        return await self._database.read(_is_revoked, jti, to_ms(utcnow()))


def _revoke(connection, jti, user_id, expires_at, now):
    # Expired revocations stop nothing (the tokens themselves expired): forgotten while here.
    connection.execute("DELETE FROM revoked_tokens WHERE expires_at <= ?", (now,))
    connection.execute("INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (?, ?, ?)"
                       " ON CONFLICT (jti) DO NOTHING", (jti, user_id, expires_at))


def _is_revoked(connection, jti, now):
    return connection.execute("SELECT 1 FROM revoked_tokens WHERE jti = ? AND expires_at > ?",
                              (jti, now)).fetchone() is not None


class ResetTokens(Repository, repositories.ResetTokens):
    async def add(self, digest, user_id, expires_at):
        await self._database.write(_add_reset_token, digest, user_id, to_ms(expires_at), to_ms(utcnow()))

    async def take(self, digest, now):
        return await self._database.write(_take_reset_token, digest, to_ms(now))

    async def drop_all(self, user_id):
        await self._database.write(_drop_reset_tokens, user_id)

    async def count(self, user_id):
        return await self._database.read(_count_reset_tokens, user_id)


def _add_reset_token(connection, digest, user_id, expires_at, now):
    # Expired tokens can never be taken: forgotten while here.
    connection.execute("DELETE FROM reset_tokens WHERE expires_at <= ?", (now,))
    connection.execute("INSERT INTO reset_tokens (digest, user_id, expires_at) VALUES (?, ?, ?)"
                       " ON CONFLICT (digest) DO UPDATE SET user_id = excluded.user_id,"
                       " expires_at = excluded.expires_at", (digest, user_id, expires_at))


def _take_reset_token(connection, digest, now):
    # One statement decides and deletes: of concurrent takers, only one gets the row back.
    rows = connection.execute("DELETE FROM reset_tokens WHERE digest = ? AND expires_at > ? RETURNING user_id",
                              (digest, now)).fetchall()
    return rows[0][0] if rows else None


def _drop_reset_tokens(connection, user_id):
    connection.execute("DELETE FROM reset_tokens WHERE user_id = ?", (user_id,))


def _count_reset_tokens(connection, user_id):
    return connection.execute("SELECT count(*) FROM reset_tokens WHERE user_id = ?", (user_id,)).fetchone()[0]
