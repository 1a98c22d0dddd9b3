"""The data the domain keeps, as narrow interfaces: one per aggregate.

The domain reaches its data only through these. Each database has one adapter in the
`storage` package that implements all of them and is the only code that knows its driver,
its query language and its error codes. `tests/test_repositories.py` holds every adapter to
the contracts written here, with the same fixtures and the same expected answers.

Conventions shared by every method:
- Ids are 24 lowercase hex characters (the shape of the old backend's ObjectIds) as `str`.
  Adapters generate them; within one kind of record they sort like creation time. A text that
  is not an id of an existing record simply finds nothing.
- Times are aware UTC `datetime`s, kept to the millisecond (`domain.times.utcnow`).
- Records are plain dicts with an "id" key; each method says which other keys it fills.
  Absent optional values are None, never missing.
- A database that cannot be reached, or that fails a write for a reason the caller cannot
  change (disk full, a lock held too long), raises `domain.errors.StoreUnavailable`; the
  method then changed nothing. Every other exception is a bug.
- A method that returns a list returns at most `limit` items when given a limit.
- "Atomic" means: correct under any number of concurrent callers, in this process or in other
  processes sharing the database, without a read-modify-write in the caller.
"""
import abc
import dataclasses
import datetime

from domain.errors import Conflict, Forbidden, NotFound
from domain.times import to_iso


class AlreadyTaken(Exception):
    """`Users.add` was given an email or username that another user has (under `identity_key`)."""

    def __init__(self, field):
        super().__init__(f"{field} already taken")
        self.field = field  # "email" or "username"


@dataclasses.dataclass(frozen=True)
class EventWindow:
    """When events are open, as the RSVP and arrival rules need it: an event is over at its
    `end_date`, or `default_duration` after its `date` when it has no end_date."""
    now: datetime.datetime
    default_duration: datetime.timedelta


# --- accounts ----------------------------------------------------------------------------------

class Users(abc.ABC):
    """Accounts. A user record: id, username, email, role, password_hash, created_at,
    tokens_valid_after (None until a password reset), followers_count, following_count."""

    @abc.abstractmethod
    async def add(self, username, email, role, password_hash, created_at):
        """Atomic: stores a new user and returns its record, or raises AlreadyTaken when the
        email or the username is already registered, compared by `domain.identity.identity_key`
        (NFKC and case folding). Email is checked first: when both are taken, AlreadyTaken("email")."""

    @abc.abstractmethod
    async def taken(self, email, username):
        """"email" or "username" when a user has that one (compared as `add` compares them),
        email first; else None. A look before the costly part of a registration: only `add`
        decides."""

    @abc.abstractmethod
    async def get(self, user_id):
        """The user record, or None."""

    @abc.abstractmethod
    async def find_by_email(self, email):
        """The user record whose email has the `identity_key` of `email`, or None."""

    @abc.abstractmethod
    async def set_password(self, user_id, password_hash, tokens_valid_after):
        """Replaces the password hash and sets tokens_valid_after (tokens issued before it stop
        working). Returns whether the user exists."""

    @abc.abstractmethod
    async def usernames(self, user_ids):
        """{id: username} for those of `user_ids` that exist."""

    @abc.abstractmethod
    async def set_calendar_key(self, user_id, digest):
        """Atomic: makes `digest` the user's one calendar key digest, replacing any earlier one
        (which then finds nobody). Returns whether the user exists."""

    @abc.abstractmethod
    async def find_by_calendar_key(self, digest):
        """The user record whose calendar key digest is `digest`, or None."""


class RevokedTokens(abc.ABC):
    """Token ids (JWT `jti`) that stopped working before they expire (logout)."""

    @abc.abstractmethod
    async def revoke(self, jti, user_id, expires_at):
        """Idempotent. The adapter may forget the jti once `expires_at` has passed."""

    @abc.abstractmethod
    async def is_revoked(self, jti):
        """Whether `jti` was revoked (and has not expired)."""


class ResetTokens(abc.ABC):
    """Password reset tokens, kept only as digests."""

    @abc.abstractmethod
    async def add(self, digest, user_id, expires_at):
        """Stores a token digest for the user."""

    @abc.abstractmethod
    async def take(self, digest, now):
        """Atomic, single use: deletes the token and returns its user id if it exists and
        expires after `now`; otherwise None. Of concurrent callers with one digest, at most one
        gets the user id."""

    @abc.abstractmethod
    async def drop_all(self, user_id):
        """Deletes every reset token of the user."""

    @abc.abstractmethod
    async def count(self, user_id):
        """How many reset tokens of the user are stored."""


# --- events --------------------------------------------------------------------------------------

class Events(abc.ABC):
    """Events with their RSVPs, arrivals and photos.

    An event record ("summary"), as every reading method returns it:
      id, title, description, date, end_date, category, location_address,
      location ({"type": "Point", "coordinates": [lng, lat]}), geofence_radius (meters),
      geofence (GeoJSON Polygon dict or None), capacity (int or None), organizer_id,
      created_at, updated_at, waitlist_enabled (bool; None when stored reads as True),
      cancelled_at (when the organizer cancelled it, or None),
      sequence (int, 0 at creation: how many times `update` changed it, RFC 5545's SEQUENCE),
      rsvp_count, arrival_count, photo_count, waitlist_count,
      is_rsvped, has_arrived (whether `viewer_id` has; False without a viewer),
      waitlist_position (1-based place of `viewer_id` in the waitlist, None when not waiting),
      and distance_m (meters, float) on nearby searches only.

    The waitlist: users waiting, in the order they joined, for a seat of a full event that has a
    capacity and `waitlist_enabled`. Nobody is both RSVPed and waiting. Whenever a change leaves
    seats free (`release_seat`, an `update` of the capacity), the same atomic step moves the first
    waiting users into them ("promotes" them), as many as there are free seats; so while anyone
    waits the event has no free seat, and `take_seat` refuses everyone (nobody jumps the line).
    Turning `waitlist_enabled` off stops new joins only: those waiting keep their places.

    Cancellation: an event whose `cancelled_at` is set stays readable, and takes no new seat, place
    in line, arrival or photo, promotes nobody, and changes no more (`update` refuses it): it is
    final, as the calendars that were told STATUS:CANCELLED treat it.
    """

    FIELDS = ("title", "description", "date", "end_date", "category", "location_address", "location",
              "geofence_radius", "geofence", "capacity", "organizer_id", "created_at", "updated_at",
              "waitlist_enabled", "cancelled_at")
    # The most RSVPs an event takes, whatever its capacity (None included). MongoDB keeps an
    # event's RSVPs and arrivals as id arrays in its one document, which may not exceed 16 MB:
    # each id takes about 20 bytes there, so both arrays full stay near 4 MB.
    MAX_RSVPS = 100_000
    # The most users an event's waitlist holds. In MongoDB each entry ({user_id, at}) takes about
    # 45 bytes of the event's document: 10,000 of them are under half a megabyte.
    MAX_WAITLIST = 10_000

    @abc.abstractmethod
    async def add(self, fields):
        """Stores a new event from `fields` (every name in FIELDS) with no RSVPs, arrivals or
        photos; returns its id."""

    @abc.abstractmethod
    async def get(self, event_id, viewer_id=None):
        """The event record as `viewer_id` sees it, or None."""

    @abc.abstractmethod
    async def find(self, query, viewer_id=None):
        """Up to `query.limit + 1` event records matching a `domain.discovery.DiscoveryQuery`:

        - cancelled events only when `query.include_cancelled`;
        - filters: `category` (equal), `date_from` <= date <= `date_to`, `organizer_id`, and
          `text`: found literally (never as a pattern), ignoring case, in title or description;
        - without `near`: ordered by (date, id); with a `cursor`, only events strictly after
          (cursor.moment(), cursor.last_id) in that order;
        - with `near` = (lng, lat): only events whose location is within `radius_m` by
          great-circle distance on a sphere of radius `domain.geo.EARTH_RADIUS_M` (MongoDB's
          `$geoNear`), each with distance_m, ordered by (distance_m, id); with a cursor, only
          events strictly after (cursor.position, cursor.last_id). Distances are computed by
          `domain.geo.distance_m` or an equivalent that gives the same value, so a cursor
          resumes exactly at ties.
        """

    @abc.abstractmethod
    async def update(self, event_id, organizer_id, changes, expected):
        """Atomic: sets the fields in `changes` (names from FIELDS; at least one: the domain never
        writes an unchanged event) and adds 1 to `sequence`,
        only if the event exists, is not cancelled, is organized by `organizer_id`, still has
        every value in `expected` ({field: value read earlier}), and, when `changes` sets a
        capacity that is not None, has at most that many RSVPs; setting `cancelled_at` cancels
        it. A capacity change then promotes waiting users into the seats it frees, in the same
        step. Returns None when it did not change the event, else the ids of the users it
        promoted, in line order (an empty list when none)."""

    @abc.abstractmethod
    async def delete(self, event_id, organizer_id):
        """Atomic: deletes the event, if `organizer_id` organizes it, with its RSVPs, arrivals,
        photos and chat messages. Returns whether it deleted it."""

    @abc.abstractmethod
    async def take_seat(self, event_id, user_id, window):
        """Atomic: RSVPs the user only if the event exists and is not cancelled, the user has not
        RSVPed, nobody waits (the user included), the event is not over at `window.now`, and it
        has room (fewer RSVPs than its capacity, and than MAX_RSVPS whatever the capacity, None
        included). Returns
        the event record after the change (as the user sees it), or None when any condition
        failed. Of 50 concurrent callers for 10 seats, exactly 10 get a record."""

    @abc.abstractmethod
    async def join_waitlist(self, event_id, user_id, window):
        """Atomic: puts the user at the end of the waitlist, joined at `window.now`, only if the
        event exists and is not cancelled, has a capacity and `waitlist_enabled`, has no room (as
        `take_seat` counts it), is not over at `window.now`, holds fewer than MAX_WAITLIST waiting, and the user has
        neither RSVPed nor is waiting. Returns the event record after the change (as the user
        sees it), or None when any condition failed."""

    @abc.abstractmethod
    async def leave_waitlist(self, event_id, user_id):
        """Atomic: takes the user out of the waitlist (those behind move up one place) only if
        they are waiting. Returns the event record after the change, or None."""

    @abc.abstractmethod
    async def release_seat(self, event_id, user_id, window):
        """Atomic: takes back the user's RSVP, and their arrival with it, only if they have
        RSVPed and the event is not over at `window.now`, and in the same step promotes the first
        waiting user(s) into the seat(s) now free (none when it is cancelled). Returns the event
        record after the change with `promoted`: the ids of the users it promoted, in line order;
        or None when a condition failed. However many releases, joins and capacity changes run
        concurrently, no promotion is lost or made twice, and the RSVPs never exceed the capacity."""

    @abc.abstractmethod
    async def record_arrival(self, event_id, user_id, window, opens_before, checked_in_by=None):
        """Atomic: records the user's arrival at `window.now` only if the event is not cancelled,
        they have RSVPed, have not arrived yet (by either way), the event started at most
        `opens_before` (a timedelta) after `window.now` and is not over. `checked_in_by`: the id of
        the organizer who checks the user in by hand, kept with the arrival; None when the user
        checked in themselves (the geofence). Returns whether it recorded it."""

    ATTENDEE_STATUSES = ("going", "waitlisted", "arrived")

    @abc.abstractmethod
    async def attendees(self, event_id, status, after_id, limit, user_id=None):
        """None when there is no such event; else up to `limit` of its attendees, in user id order,
        whose user ids are after `after_id` (None: from the first): everyone RSVPed or waiting, or
        only those of `status`; only `user_id` when given. Each attendee has exactly one status:
        "arrived" (RSVPed and checked in), "going" (RSVPed, not checked in) or "waitlisted".

        An attendee record: user_id, username (None when there is no such user), status,
        position (1-based place in the waitlist; None unless waitlisted), joined_at (when they
        RSVPed or joined the waitlist; None where the store does not know it, as for RSVPs the
        old backend or MongoDB stored), and check_in: None unless arrived, else {method:
        "geofence" or "organizer", by: the organizer's id (None for the geofence), at: when
        (None where the store does not know it; always known for an organizer's check-in)}."""

    @abc.abstractmethod
    async def is_member(self, event_id, user_id):
        """None when there is no such event; otherwise whether the user organizes it or has
        RSVPed: the people its chat and gallery are for."""

    @abc.abstractmethod
    async def add_photo(self, event_id, url, uploaded_by, uploaded_at, max_photos):
        """Atomic: appends a photo to the gallery only if the event exists and is not cancelled,
        `uploaded_by` organizes it or has RSVPed, and it has fewer than `max_photos` photos. Returns the event
        record after the change, or None."""

    @abc.abstractmethod
    async def attending(self, user_id, since, limit):
        """Up to `limit` event records (as `user_id` sees them) of the events the user has RSVPed
        to, cancelled ones included, dated at or after `since`, ordered by (date, id): the
        events of their calendar feed."""

    @abc.abstractmethod
    async def photos(self, event_id, before, limit):
        """A page of the gallery, newest first: (photos, start), or None when there is no such
        event. Photos have positions 0, 1, ... in upload order; the page holds the `limit`
        photos just before position `before` (None: the end), and `start` is the position of
        the oldest one returned (0 when the page reaches the first photo). Each photo:
        {url, uploaded_by (user id or None when unknown), uploaded_at (or None)}."""


# --- chat ------------------------------------------------------------------------------------------

def cancelled_chat():
    """What Messages.append raises for a cancelled event: its chat stays readable, takes no more."""
    return Conflict("The event is cancelled: its chat takes no new messages.", code="event_cancelled")


class Appended(list):
    """What Messages.append and Messages.change return: the list of results, and `previous_id`,
    the id of the event's newest entry (message or change) before the batch (None: there was
    none), read in the same atomic step in which the batch's ids were drawn. Several processes
    follow a room by that chain: a batch whose previous_id is not the last entry they delivered
    has one before it still to come (domain/chat_feed.py)."""

    def __init__(self, results, previous_id):
        super().__init__(results)
        self.previous_id = previous_id


def no_such_message():
    return NotFound("There is no such message in this chat.", code="message_not_found")


def unchanged_text():
    return Conflict("The message already has this text.", code="unchanged")


def change_refusal(target, draft, organizer_id):
    """Why Messages.change refuses the change `draft` of the message record `target` in an event
    organized by `organizer_id`, or None: the same rule in every adapter, applied to what the
    adapter read in the change's own write (see Messages.change)."""
    own = target["user_id"] == draft["user_id"]
    if draft["kind"] == "edit":
        if not own:
            return Forbidden("Only its author can edit a message.", code="not_your_message")
        if target["deleted_at"] is not None:
            return Conflict("The message was deleted.", code="message_deleted")
    elif not own and draft["user_id"] != organizer_id:
        return Forbidden("Only its author or the event's organizer can delete a message.", code="not_your_message")
    return None


def chat_refusal(draft, muted_until, removed, now):
    """Why a user's draft (a message, or a change as Messages.change takes it) may not be stored,
    given their standing in the chat, or None: removed users write nothing; muted ones read, and
    may delete their own messages, but neither send nor edit. Applied by `append` and `change`
    to the standing read in their own write, so that a mute lands between two messages."""
    if removed:
        return Forbidden("You were removed from this chat by its organizer.", code="removed_from_chat")
    if muted_until is not None and muted_until > now and draft.get("kind") != "delete":
        left = (muted_until - now).total_seconds()
        return Forbidden("You are muted in this chat.", code="muted", muted_until=to_iso(muted_until),
                         retry_after=round(left, 3))
    return None


def change_repeats(target, draft):
    """Whether the change is already done: a deleted message deleted again, or a message edited
    to the text it has (a retried edit). Messages.change then gives back the earlier change."""
    if draft["kind"] == "delete":
        return target["deleted_at"] is not None
    return target["text"] == draft["text"]


class Messages(abc.ABC):
    """Chat messages of each event, and the changes to them, in one log per event.

    A message record: id, event_id, kind ("message"), user_id, username, text (None once
    deleted), timestamp, client_msg_id (or None), edited_at (None unless edited), deleted_at (None
    unless deleted): the message as it is now. A change record: id, event_id, kind ("edit" or
    "delete"), message_id (the message changed), user_id (who changed it), text (the new text of
    an edit; None for a deletion, and for an edit of a message deleted since), timestamp.
    Changes take their ids from the same sequence as messages. Within an event, ids increase in
    the order entries are stored, also across restarts and across processes writing to one event
    at the same moment: SQLite hands ids out under the file's write lock, the MongoDB adapter under
    a lease on the event's head document (storage/mongo/messages.py), for `append` and `change`
    alike. So whoever reads an entry also can read every entry of the event with a smaller id,
    and the entries form one chain (`Appended.previous_id`)."""

    @abc.abstractmethod
    async def append(self, event_id, drafts):
        """Atomic as a batch: stores the drafts ({user_id, username, text, timestamp,
        client_msg_id or None}; no two with the same (user_id, client_msg_id)) in their order,
        giving them increasing ids after every stored message of the event.

        Returns an `Appended` list parallel to `drafts`: (message record, False) for a draft stored now,
        (the earlier message record, True) for one whose (user_id, client_msg_id) was already
        stored in this event (a client_msg_id is stored once per sender and event), the
        DomainError of `chat_refusal` for a draft of a muted or removed user (not stored), or None
        for a draft the database refused on its own (the others are still stored).
        Raises domain.errors.NotFound, having stored nothing, when the event does not exist
        (deleted while the batch waited): SQLite checks it in the batch's transaction; MongoDB
        checks it just before inserting, so a batch racing the deletion may still be stored,
        out of every reader's reach. Raises domain.errors.Conflict (event_cancelled), having
        stored nothing, when the event is cancelled, checked the same way.
        Raises StoreUnavailable when the batch cannot be written. SQLite then stored none of
        it (one transaction); MongoDB's unordered insert may have stored part of it before the
        connection failed: a draft resent with its client_msg_id then comes back as a repeat,
        never a second copy."""

    @abc.abstractmethod
    async def change(self, event_id, drafts):
        """Stores the changes ({kind: "edit" or "delete", message_id, user_id, text (edits),
        timestamp}) in their order, each with an id after every stored entry of the event, and
        applies each to its message (an edit sets text and edited_at; a deletion clears the text
        of the message and of its edits, and sets deleted_at).

        Returns an `Appended` list parallel to `drafts` (its previous_id: the event's newest entry
        before the batch, as for `append`): (change record, False) for a change stored now;
        (the latest earlier change of that kind, True) for one already done (`change_repeats`);
        or a DomainError for a change refused alone: `no_such_message`, `change_refusal`,
        `unchanged_text` (an edit to the text the message had from the start), `chat_refusal`.
        Who may change what is checked against the message as it is in the same write as the
        change. A deletion of someone else's message (by the organizer) is logged as a
        "delete_message" action (see `moderate`), in the same write on SQLite.
        Raises NotFound / Conflict (event_cancelled) as `append` does. SQLite stores the batch
        in one transaction; MongoDB stores each change then updates its message (see there)."""

    @abc.abstractmethod
    async def exists(self, event_id, message_id):
        """Whether `message_id` is an entry of the event's log: a message or a change."""

    @abc.abstractmethod
    async def latest(self, event_id, limit):
        """The event's last `limit` messages (not changes), oldest first."""

    @abc.abstractmethod
    async def after(self, event_id, message_id, limit):
        """The event's log entries (messages and changes) with ids after `message_id` (None: from
        the first), oldest first: what a client that has seen `message_id` has missed."""

    @abc.abstractmethod
    async def before(self, event_id, message_id, limit):
        """The event's messages with ids before `message_id` (None: from the newest), newest first."""

    @abc.abstractmethod
    async def counts(self, event_ids):
        """{event id: number of messages} for every id in `event_ids` (0 when none)."""

    @abc.abstractmethod
    async def moderate(self, event_id, action, user_id, actor_id, at, until=None):
        """Atomic: applies an organizer's action to a user's standing in the event's chat —
        "mute" (until `until`), "unmute", "remove", "allow" (back after a removal) — and logs it,
        in one write. Returns the action record: id, event_id, action, user_id, actor_id,
        message_id (None here; set for the "delete_message" actions that `change` logs when the
        organizer deletes someone else's message), until (or None), at. Action ids increase in
        the order actions are logged."""

    @abc.abstractmethod
    async def standing(self, event_id, user_id, now):
        """{"muted_until": the end of the user's mute if it is after `now`, else None,
        "removed": whether the user is removed from the event's chat}."""

    @abc.abstractmethod
    async def actions(self, event_id, before_id, limit):
        """The event's moderation log, newest first: the action records with ids before
        `before_id` (None: from the newest)."""

    @abc.abstractmethod
    async def mark_read(self, event_id, user_id, message_id):
        """Atomic: the user's read marker in the event becomes `message_id` if that is after the
        marker (a marker never moves back). Returns the marker after the call, or None when
        `message_id` is no entry of the event's log (nothing is stored)."""

    @abc.abstractmethod
    async def chats(self, user_id, limit, unread_cap):
        """The chats of the `limit` newest events (by id) that the user organizes or has RSVPed
        to, newest first: {event_id, title, last_read_id (or None), unread_count, last_message
        (message record or None)}. `unread_count` counts the messages after the marker that
        are not the user's own nor deleted, up to `unread_cap`."""


# --- follows and the feed -----------------------------------------------------------------------------

class Follows(abc.ABC):
    """Who follows whom. Lists hold user records (as Users.get) in user id order."""

    @abc.abstractmethod
    async def follow(self, follower_id, followee_id):
        """Atomic: records the follow; returns True only for the call that created it (of any
        number of concurrent identical calls, exactly one)."""

    @abc.abstractmethod
    async def unfollow(self, follower_id, followee_id):
        """Atomic: removes the follow; returns whether there was one."""

    @abc.abstractmethod
    async def is_following(self, follower_id, followee_id):
        """Whether the follow exists."""

    @abc.abstractmethod
    async def followers(self, user_id, after_id, limit):
        """Users following `user_id` whose ids are after `after_id` (None: from the first)."""

    @abc.abstractmethod
    async def following(self, user_id, after_id, limit):
        """Users whom `user_id` follows, whose ids are after `after_id` (None: from the first)."""


class Activities(abc.ABC):
    """The activity log behind the feed. An activity record: id, type, actor_id, actor_name,
    event_id (or None), target_user_id (or None), summary, timestamp."""

    @abc.abstractmethod
    async def add(self, activity):
        """Stores an activity (every field but id); returns its id."""

    @abc.abstractmethod
    async def feed(self, reader_id, kinds, before, limit):
        """Activities of types in `kinds` by the users `reader_id` follows, newest first by
        (timestamp, id); with `before` = (timestamp, id), only those strictly before it."""

    @abc.abstractmethod
    async def add_once(self, activity):
        """Atomic: stores the activity (every field but id) unless one with the same type,
        actor_id, event_id and target_user_id is stored; of any number of concurrent identical
        calls at most one stores it. Returns its id, or None when one was there already."""

    @abc.abstractmethod
    async def withdraw(self, kind, actor_id, event_id=None, target_user_id=None):
        """Deletes every activity of type `kind` by `actor_id` with that event_id and
        target_user_id (None matches None); idempotent. Returns how many it deleted."""


# --- notifications -------------------------------------------------------------------------------------

class Notifications(abc.ABC):
    """What each user is told (domain/notifications.py). A notification record: id, user_id, type,
    event_id (or None), data (a dict of JSON values), key (or None), created_at, read (bool).
    A user's list is newest first by id (ids sort like creation time).

    A notification with a `key` is the user's one current notification of that key (e.g. their
    place in one event's waitlist): storing another with the same (user_id, key) replaces it, with
    a new id (it is news again) and unread. So keyed notifications of one key never number more
    than the users they are about.

    Retention: a notification created more than RETENTION ago may be forgotten (SQLite deletes
    them as it adds others, MongoDB's TTL monitor once a minute)."""

    RETENTION = datetime.timedelta(days=90)

    @abc.abstractmethod
    async def add(self, drafts):
        """Stores the drafts ({user_id, type, event_id, data, key, created_at}; no two with the same
        (user_id, key) unless key is None), each keyed one replacing the user's earlier one of its
        key. Returns their records, in the drafts' order, with increasing ids."""

    @abc.abstractmethod
    async def page(self, user_id, before_id, limit):
        """The user's notifications with ids before `before_id` (None: from the newest), newest first."""

    @abc.abstractmethod
    async def unread_count(self, user_id):
        """How many of the user's notifications are unread."""

    @abc.abstractmethod
    async def mark_read(self, user_id, up_to_id):
        """None when `up_to_id` is not the id of one of the user's notifications; otherwise marks
        every unread notification of the user with an id up to it (included) read, and returns
        how many it marked. Another user's notifications are never touched."""

    @abc.abstractmethod
    async def told(self, key):
        """{user_id: data} of the stored notifications with `key`."""


# --- the whole store ----------------------------------------------------------------------------------

class Store(abc.ABC):
    """One database: its repositories and its life. `kind` names it ("sqlite", "mongodb") for
    /readyz and the log."""

    kind = None
    users: Users
    revoked_tokens: RevokedTokens
    reset_tokens: ResetTokens
    events: Events
    messages: Messages
    follows: Follows
    activities: Activities
    notifications: Notifications

    @abc.abstractmethod
    async def open(self):
        """Prepares the database for serving (schema, migrations, indexes). Raises
        StoreUnavailable while it cannot be reached and `domain.errors.StoreBroken` when it can
        never serve as it is (a corrupt or unwritable file); may return before everything is
        ready when the rest can be retried (see `problems`)."""

    @abc.abstractmethod
    async def ping(self):
        """Raises StoreUnavailable unless the database answers now."""

    def problems(self):
        """Reasons the store is not fully ready (e.g. a required index not built yet); empty
        when it is. /readyz is 503 while there are any."""
        return []

    @abc.abstractmethod
    async def close(self):
        """Releases the connection(s); pending writes finish first."""
