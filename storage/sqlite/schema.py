"""The database's tables and indexes, as numbered migrations.

`PRAGMA user_version` holds the number of migrations a file has had; `migrate` runs the ones it
lacks, in one `BEGIN IMMEDIATE` transaction, so several processes starting on one file at once
migrate it once. A migration is appended, never edited: files in the field have run the old ones.

Conventions: ids are TEXT (24 lowercase hex, which sort as their numbers do); times are INTEGER
milliseconds (see `columns`); GeoJSON is JSON text. Tables keyed by text ids are WITHOUT ROWID,
so a record sits in its primary key's b-tree rather than behind a second index.
"""
import logging

from domain.identity import identity_key
from storage.sqlite import search

log = logging.getLogger("store")

INITIAL_SCHEMA = (
    # Emails and usernames are unique ignoring case: the *_key columns hold a key of them
    # computed in Python (str.lower() here; domain.identity.identity_key since IDENTITY_KEYS),
    # because SQLite's lower() folds ASCII letters only.
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        username_key TEXT NOT NULL,
        email TEXT NOT NULL,
        email_key TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT,
        created_at INTEGER,
        tokens_valid_after INTEGER
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX users_by_email ON users (email_key)",
    "CREATE UNIQUE INDEX users_by_username ON users (username_key)",

    """CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        user_id TEXT,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at)",

    """CREATE TABLE reset_tokens (
        digest TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX reset_tokens_by_user ON reset_tokens (user_id)",
    "CREATE INDEX reset_tokens_by_expiry ON reset_tokens (expires_at)",

    # `seq` is there for the R*Tree, whose key must be an integer. The counts are kept on the
    # row, in the same transaction as the rows they count, so that "has room" and "fewer than
    # N photos" are conditions of one UPDATE. `lng`/`lat` repeat the location's coordinates as
    # full doubles for the exact distance (the R*Tree keeps 32-bit floats). `geofence_radius`
    # has no type so that an integer radius comes back an integer.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        title TEXT,
        description TEXT,
        date INTEGER,
        end_date INTEGER,
        category TEXT,
        location_address TEXT,
        location TEXT,
        lng REAL,
        lat REAL,
        geofence_radius,
        geofence TEXT,
        capacity INTEGER,
        organizer_id TEXT,
        created_at INTEGER,
        updated_at INTEGER,
        rsvp_count INTEGER NOT NULL DEFAULT 0,
        arrival_count INTEGER NOT NULL DEFAULT 0,
        photo_count INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX events_by_id ON events (id)",
    "CREATE INDEX events_by_date ON events (date, id)",
    "CREATE INDEX events_by_organizer ON events (organizer_id, date, id)",

    # Nearby search: each located event as a point-sized box. The R*Tree rounds its 32-bit
    # bounds outward, so a box query finds every point inside it (and maybe a few just outside,
    # which the exact distance then drops).
    "CREATE VIRTUAL TABLE event_locations USING rtree(seq, min_lng, max_lng, min_lat, max_lat)",
    # Triggers keep the R*Tree in step with every write of a location, whoever makes it.
    """CREATE TRIGGER event_located AFTER INSERT ON events WHEN new.lng IS NOT NULL BEGIN
        INSERT INTO event_locations VALUES (new.seq, new.lng, new.lng, new.lat, new.lat);
    END""",
    """CREATE TRIGGER event_moved AFTER UPDATE OF lng, lat ON events BEGIN
        DELETE FROM event_locations WHERE seq = old.seq;
        INSERT INTO event_locations SELECT new.seq, new.lng, new.lng, new.lat, new.lat
            WHERE new.lng IS NOT NULL;
    END""",
    """CREATE TRIGGER event_deleted AFTER DELETE ON events BEGIN
        DELETE FROM event_locations WHERE seq = old.seq;
    END""",

    """CREATE TABLE rsvps (
        event_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (event_id, user_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE arrivals (
        event_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (event_id, user_id)
    ) WITHOUT ROWID""",
    # Positions are 0, 1, ... in upload order: the gallery's pages are ranges of them.
    """CREATE TABLE photos (
        event_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        uploaded_by TEXT,
        uploaded_at INTEGER,
        PRIMARY KEY (event_id, position)
    ) WITHOUT ROWID""",

    # Keyed (event_id, id): a room's history, and its newest id, are ranges of the key.
    """CREATE TABLE messages (
        event_id TEXT NOT NULL,
        id TEXT NOT NULL,
        user_id TEXT,
        username TEXT,
        text TEXT,
        timestamp INTEGER,
        client_msg_id TEXT,
        PRIMARY KEY (event_id, id)
    ) WITHOUT ROWID""",
    # A sender's client_msg_id is stored once per event; messages without one never conflict.
    """CREATE UNIQUE INDEX messages_by_client_msg_id ON messages (event_id, user_id, client_msg_id)
        WHERE client_msg_id IS NOT NULL""",

    # The primary key answers "whom does X follow"; the index "who follows X". (The counts on
    # user records are columns of users since FOLLOW_COUNTS.)
    """CREATE TABLE follows (
        follower_id TEXT NOT NULL,
        followee_id TEXT NOT NULL,
        PRIMARY KEY (follower_id, followee_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX follows_by_followee ON follows (followee_id, follower_id)",

    """CREATE TABLE activities (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        actor_id TEXT,
        actor_name TEXT,
        event_id TEXT,
        target_user_id TEXT,
        summary TEXT,
        timestamp INTEGER
    ) WITHOUT ROWID""",
    # The feed: per followed actor, a range in (timestamp, id) order.
    "CREATE INDEX activities_by_actor ON activities (actor_id, timestamp, id)",
)

# Text search (see `search`): the trigram index of the search keys of events' titles and
# descriptions, its rowid the event's seq. Its own copy of the keys (not external content):
# they are not the events' columns, and deleting a row needs what was indexed. columnsize=0:
# nothing ranks by length. `refresh_index` fills it at the end of `migrate`.
EVENT_TEXT_INDEX = (
    """CREATE VIRTUAL TABLE event_text USING fts5(
        title, description, tokenize='trigram case_sensitive 1', columnsize=0)""",
    "CREATE TABLE event_text_key (fingerprint TEXT NOT NULL)",
    # Triggers keep the index in step with every write of a title or description, in the
    # writer's transaction. Inserting needs the search_key function, which `database` defines
    # on its connections: a program without it cannot add or retitle events (rather than leave
    # them out of the index).
    """CREATE TRIGGER event_text_added AFTER INSERT ON events BEGIN
        INSERT INTO event_text (rowid, title, description)
            VALUES (new.seq, search_key(new.title), search_key(new.description));
    END""",
    """CREATE TRIGGER event_text_changed AFTER UPDATE OF seq, title, description ON events BEGIN
        DELETE FROM event_text WHERE rowid = old.seq;
        INSERT INTO event_text (rowid, title, description)
            VALUES (new.seq, search_key(new.title), search_key(new.description));
    END""",
    """CREATE TRIGGER event_text_deleted AFTER DELETE ON events BEGIN
        DELETE FROM event_text WHERE rowid = old.seq;
    END""",
)

# The counts on user records, kept on the users row rather than counted at every read (Users.get
# runs on every authenticated request: counting 300k followers took 15 ms of the store's one
# thread). Triggers change them in the transaction that changes follows, whoever writes it, and
# only for a row really inserted or deleted: an insert skipped by ON CONFLICT DO NOTHING, or a
# delete that found nothing, fires none. Follows of ids that are not users change no row.
FOLLOW_COUNTS = (
    "ALTER TABLE users ADD COLUMN followers_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN following_count INTEGER NOT NULL DEFAULT 0",
    """UPDATE users SET
        followers_count = (SELECT count(*) FROM follows WHERE followee_id = users.id),
        following_count = (SELECT count(*) FROM follows WHERE follower_id = users.id)""",
    """CREATE TRIGGER follow_added AFTER INSERT ON follows BEGIN
        UPDATE users SET followers_count = followers_count + 1 WHERE id = new.followee_id;
        UPDATE users SET following_count = following_count + 1 WHERE id = new.follower_id;
    END""",
    """CREATE TRIGGER follow_removed AFTER DELETE ON follows BEGIN
        UPDATE users SET followers_count = followers_count - 1 WHERE id = old.followee_id;
        UPDATE users SET following_count = following_count - 1 WHERE id = old.follower_id;
    END""",
)

# One follow's or RSVP's activity, found at once to record it once and to withdraw it when it is
# undone (`Activities.add_once`, `withdraw`), however many activities its actor has.
ACTIVITY_SUBJECTS = (
    "CREATE INDEX activities_by_subject ON activities (actor_id, type, event_id, target_user_id)",
)


def parked_key(text):
    """The key of a user whose identity key an older user has (see IDENTITY_KEYS): the text
    itself behind a NUL. No identity key starts with one (control characters are refused in
    names and emails), so only the exact registered text finds it."""
    return "\x00" + text


def _recompute_identity_keys(connection):
    """Email and username keys were str.lower(); they become domain.identity.identity_key (NFKC
    and case folding). Two users whose keys now collide (fullwidth "ａna" and "ana", "Straße" and
    "strasse") must not fail the start, nor silently merge: the oldest (created_at, then id)
    keeps the key, and each younger one keeps its account under a parked key, by which it still
    logs in with the exact address it registered (storage/sqlite/accounts.py, find_by_email)."""
    rows = connection.execute(
        "SELECT id, email, username FROM users ORDER BY created_at IS NOT NULL, created_at, id").fetchall()
    keys, parked = {}, []
    for field, position in (("email", 1), ("username", 2)):
        owners, used = {}, set()
        for row in rows:
            owners.setdefault(identity_key(row[position]), row[0])
        used.update(owners)
        for row in rows:
            key = identity_key(row[position])
            if owners[key] != row[0]:
                key = parked_key(row[position])
                if key in used:  # an old text that itself began with a NUL: the id makes it unique
                    key += "\x00" + row[0]
                parked.append((field, row[0]))
            used.add(key)
            keys.setdefault(row[0], {})[field] = key
    # Keys out of the way first, so no row's new key meets another row's old one.
    connection.execute("UPDATE users SET email_key = char(1) || id, username_key = char(1) || id")
    connection.executemany("UPDATE users SET email_key = ?, username_key = ? WHERE id = ?",
                           [(k["email"], k["username"], user_id) for user_id, k in keys.items()])
    for field, user_id in parked:
        log.warning("user %s: another, older user has the same %s once normalized; this one keeps its "
                    "account and logs in with exactly the %s it registered", user_id, field, field)


IDENTITY_KEYS = (_recompute_identity_keys,)

# The waitlist of full events (domain/repositories.py, Events). `waitlist_enabled` is NULL for the
# events made before it, which reads as on, as in MongoDB where their documents lack the field.
# `waitlist_count` is kept on the event's row, in the transaction that changes the rows it counts,
# as rsvp_count is. A waiting user's `ticket` orders the line: one more than the highest ticket
# still waiting, so it only grows while anyone waits; their place is how many tickets are at or
# below theirs.
WAITLIST = (
    "ALTER TABLE events ADD COLUMN waitlist_enabled INTEGER",
    "ALTER TABLE events ADD COLUMN waitlist_count INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE waitlist (
        event_id TEXT NOT NULL,
        ticket INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (event_id, ticket)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX waitlist_by_user ON waitlist (event_id, user_id)",
)

# Attendee lists and the organizer's check-in (domain/repositories.py, Events.attendees): when each
# RSVP was taken and each arrival recorded, and who checked an arrival in when an organizer did
# (NULL: the attendee themselves, by the geofence). NULL for the rows from before.
ATTENDANCE = (
    "ALTER TABLE rsvps ADD COLUMN rsvped_at INTEGER",
    "ALTER TABLE arrivals ADD COLUMN arrived_at INTEGER",
    "ALTER TABLE arrivals ADD COLUMN checked_in_by TEXT",
)

# What each user is told (domain/repositories.py, Notifications). A keyed notification is unique
# per (key, user_id): replacing it is a delete and an insert in one transaction. `created_at` is
# indexed for the retention cleanup that runs with each insert; `read` = 0 rows per user for the
# unread count.
NOTIFICATIONS = (
    """CREATE TABLE notifications (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        type TEXT NOT NULL,
        event_id TEXT,
        data TEXT NOT NULL,
        key TEXT,
        created_at INTEGER NOT NULL,
        read INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE INDEX notifications_by_user ON notifications (user_id, id)",
    "CREATE UNIQUE INDEX notifications_by_key ON notifications (key, user_id) WHERE key IS NOT NULL",
    "CREATE INDEX notifications_by_age ON notifications (created_at)",
    "CREATE INDEX notifications_unread ON notifications (user_id) WHERE read = 0",
)

# Cancelled events and calendar feeds (domain/repositories.py: Events, Users). `cancelled_at` is
# NULL for a live event, as for every event made before it; `sequence` counts the event's updates
# (RFC 5545's SEQUENCE). A user's `calendar_key` is the SHA-256 digest of their feed's key (NULL:
# none yet), unique so that a digest finds one user by the index. The feed reads a user's RSVPs,
# which the primary key (event_id, user_id) cannot find by user.
CALENDAR = (
    "ALTER TABLE events ADD COLUMN cancelled_at INTEGER",
    "ALTER TABLE events ADD COLUMN sequence INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN calendar_key TEXT",
    "CREATE UNIQUE INDEX users_by_calendar_key ON users (calendar_key)",
    "CREATE INDEX rsvps_by_user ON rsvps (user_id, event_id)",
)

# Edits, deletions and read markers of the chat (domain/repositories.py, Messages). A change is a
# row of `messages` with a `kind` ('edit' or 'delete') and the `target_id` of the message it
# changes, so that it takes its id from the room's one increasing sequence and `since` replays it;
# a message's own row has kind NULL and shows its current state (`edited_at`, `deleted_at`).
# `messages_by_target` finds a message's changes (the repeat of a retried edit or deletion).
# `chat_reads` holds each user's read marker per event: the last message id they have read.
CHAT_CHANGES = (
    "ALTER TABLE messages ADD COLUMN kind TEXT",
    "ALTER TABLE messages ADD COLUMN target_id TEXT",
    "ALTER TABLE messages ADD COLUMN edited_at INTEGER",
    "ALTER TABLE messages ADD COLUMN deleted_at INTEGER",
    "CREATE INDEX messages_by_target ON messages (event_id, target_id) WHERE target_id IS NOT NULL",
    """CREATE TABLE chat_reads (
        user_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        last_read_id TEXT NOT NULL,
        PRIMARY KEY (event_id, user_id)
    ) WITHOUT ROWID""",
)

# Chat moderation (domain/repositories.py, Messages.moderate): who is muted until when and who is
# removed from an event's chat (an expired mute is a row whose muted_until is past: every reader
# compares it with the time), and the log of what organizers did, by event in id order.
CHAT_MODERATION = (
    """CREATE TABLE chat_restrictions (
        event_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        muted_until INTEGER,
        removed_at INTEGER,
        PRIMARY KEY (event_id, user_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE chat_moderation (
        event_id TEXT NOT NULL,
        id TEXT NOT NULL,
        action TEXT NOT NULL,
        user_id TEXT,
        actor_id TEXT,
        message_id TEXT,
        until INTEGER,
        at INTEGER NOT NULL,
        PRIMARY KEY (event_id, id)
    ) WITHOUT ROWID""",
)

# Each a tuple of statements (SQL text, or a function given the connection); the file's
# user_version is how many have run.
MIGRATIONS = [INITIAL_SCHEMA, EVENT_TEXT_INDEX, FOLLOW_COUNTS, ACTIVITY_SUBJECTS, IDENTITY_KEYS, WAITLIST,
              ATTENDANCE, NOTIFICATIONS, CALENDAR, CHAT_CHANGES, CHAT_MODERATION]


class SchemaTooNew(Exception):
    """The file was migrated by a newer version of this server."""


def migrate(connection):
    """Brings the file's schema up to date, and the text index in step with this process's
    search keys (see `search.refresh_index`). Runs in its own write transaction, which it always
    commits with a write (the version, even unchanged): a file that cannot take writes is found
    at open rather than by every request."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaTooNew(f"its schema is version {version}, newer than this server's {len(MIGRATIONS)}")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                if callable(statement):
                    statement(connection)
                else:
                    connection.execute(statement)
        # After the migrations: they may have just made the index, and it may need rebuilding
        # for this process's search keys.
        search.refresh_index(connection)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
