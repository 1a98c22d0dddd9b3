"""Event photos: who may add one, adding it (clean, stored, then listed), and reading the gallery.

A gallery is the event's photos in upload order, each {url, uploaded_by, uploaded_at}
(`Events.add_photo` and `Events.photos`, domain/repositories.py); photos the old backend added
have an unknown uploader and time.

Order of an upload: check the uploader, strip the metadata, store the object, and only then
add its URL with `add_photo`, which checks the uploader again in the same atomic step. A
gallery entry therefore always names a stored object. If the uploader loses the right while
the photo is being stored (RSVP cancelled, event deleted), or `add_photo` fails, the upload
deletes the object it stored.

Deleting an event deletes its stored photos (`delete_event_photos`, after the event's record
is gone), so their public URLs stop answering; caches may keep them for the storage's
max-age (domain/storage.py). An upload racing with the deletion is covered either way: its
object is stored before the listing of the event's photos, which deletes it, or after, and
then `add_photo` finds no event and the upload deletes it.

Listing: any signed-in user may read an event's gallery, as they may read the event itself:
the photo URLs are public (the media route and the bucket need no token), so hiding the list
would protect nothing.
"""
import asyncio
import contextlib
import logging
import re

from domain.activities import PHOTO_UPLOADED, record_activity
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from domain.paging import CURSOR_RULE, Page
from domain.photos import event_key_prefix, new_object_key
from domain.times import to_iso, utcnow

log = logging.getLogger("photos")

# The old backend's shape, which MongoDB keeps, holds a gallery in the event's document, ~250
# bytes a photo (URL twice, uploader, time): 10,000 keep it near 2.5 MB, far from MongoDB's
# 16 MB limit on the document that also holds the RSVPs.
MAX_PHOTOS_PER_EVENT = 10_000
# A cursor is the gallery position of the last (oldest) photo shown; pages hold the photos
# before it. Uploads only ever append, so positions never move and every number is a position.
PHOTO_CURSOR_PATTERN = r"^[0-9]{1,9}$"


class Gallery:
    def __init__(self, store, storage, photo_workers, clock=utcnow):
        """`photo_workers`: the domain.photo_workers.PhotoWorkers that strip uploads, bounded."""
        self.store = store
        self.storage = storage
        self.photo_workers = photo_workers
        self.clock = clock
        self._storage_started = False
        self._starting = asyncio.Lock()
        self._in_flight = 0  # storage calls under way, which closing the storage waits for
        self._closing = False

    # --- uploading -------------------------------------------------------------------------

    async def check_uploader(self, event_id, user):
        """Raises NotFound, Forbidden or Conflict unless `user` may add a photo to the event now;
        cheap, so a refused upload can be answered before its body is read."""
        event = await self.store.events.get(event_id, user["id"])
        if event is None or event["cancelled_at"] is not None or not _is_member(event, user) \
                or event["photo_count"] >= MAX_PHOTOS_PER_EVENT:
            raise _refusal(event, user)

    async def upload(self, event_id, user, data):
        """Adds the photo in `data` to the event's gallery; returns {"url": ...}.

        Raises UnsupportedMediaType or InvalidInput for bytes that are not a usable photo,
        NotFound / Forbidden / Conflict as `check_uploader`, and Unavailable or UpstreamFailed
        when the storage fails (then nothing is added to the gallery)."""
        await self.check_uploader(event_id, user)  # before the CPU work and the storage
        photo = await self.photo_workers.prepare(data)
        key = new_object_key(event_id, photo.extension)
        async with self._storage_in_use("The server is shutting down; upload the photo again in a moment."):
            url = await self.storage.put(key, photo.data, photo.content_type)
            try:
                event = await self.store.events.add_photo(event_id, url, user["id"], self.clock(),
                                                          MAX_PHOTOS_PER_EVENT)
                if event is None:
                    raise _refusal(await self.store.events.get(event_id, user["id"]), user)
            except BaseException:
                # Unlisted, the object would still be public at its URL.
                await self._delete_quietly(key)
                raise
        await record_activity(self.store, PHOTO_UPLOADED, user, event=event, clock=self.clock)
        return {"url": url}

    # --- deleting --------------------------------------------------------------------------

    async def delete_event_photos(self, event_id):
        """Deletes the stored photos of an event whose record was deleted (Events' deletion
        cleanup). Raises Unavailable or UpstreamFailed when the storage fails."""
        async with self._storage_in_use("The server is shutting down."):
            await self.storage.delete_all(event_key_prefix(event_id))

    async def _delete_quietly(self, key):
        try:
            await self.storage.delete(key)
        except Exception:
            log.exception("a photo kept out of its gallery could not be deleted: %s", key)

    # --- the storage's life ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _storage_in_use(self, closing_message):
        if self._closing:
            raise Unavailable(closing_message)
        await self._start_storage()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._closing and not self._in_flight:
                await self.storage.close()

    async def _start_storage(self):
        # On first use rather than at start: the S3 client belongs to the event loop that serves.
        async with self._starting:
            if not self._storage_started:
                await self.storage.start()
                self._storage_started = True

    async def close(self):
        """Called at shutdown once requests in flight are done; returns at once. Should an upload
        outlive the grace period, the storage closes when it has been stored."""
        self._closing = True
        if not self._in_flight:
            await self.storage.close()

    # --- listing ---------------------------------------------------------------------------

    async def list_photos(self, event_id, limit, cursor=None):
        """A page of the event's photos, newest first: {url, uploaded_by {id, username} or None,
        uploaded_at or None}."""
        try:
            before = None if cursor is None else photo_position(cursor)
        except InvalidInput:
            # An unknown event is a 404 whatever the cursor.
            if await self.store.events.get(event_id) is None:
                raise _event_not_found() from None
            raise
        found = await self.store.events.photos(event_id, before, limit)
        if found is None:
            raise _event_not_found()
        photos, start = found
        usernames = await self.store.users.usernames({photo["uploaded_by"] for photo in photos} - {None})
        items = [_photo_json(photo, usernames) for photo in photos]
        return Page(items, str(start) if start else None)


def _is_member(event, user):
    return event["organizer_id"] == user["id"] or event["is_rsvped"]


def _refusal(event, user):
    """The error that says why `user` may not add a photo to `event` (a record as they see it):
    no such event (None), a cancelled event, not the organizer nor RSVPed, or else a full gallery."""
    if event is None:
        return _event_not_found()
    if event["cancelled_at"] is not None:
        return Conflict("The event is cancelled.", code="event_cancelled")
    if not _is_member(event, user):
        return Forbidden("Only the organizer and people who RSVPed can add photos.", code="rsvp_required")
    return Conflict(f"This event already has {MAX_PHOTOS_PER_EVENT} photos.", code="gallery_full")


def _event_not_found():
    return NotFound("There is no such event.", code="event_not_found")


def _photo_json(photo, usernames):
    uploader_id = photo["uploaded_by"]
    return {
        "url": photo["url"],
        # A deleted uploader keeps their id, with the empty name deleted organizers get too.
        "uploaded_by": {"id": uploader_id, "username": usernames.get(uploader_id, "")} if uploader_id else None,
        "uploaded_at": to_iso(photo["uploaded_at"]),
    }


def photo_position(cursor):
    """The gallery position a cursor points before."""
    if not re.fullmatch(PHOTO_CURSOR_PATTERN, cursor):
        raise InvalidInput("The cursor is not valid; start again without one.", code="invalid_cursor", errors=[
            {"path": "cursor", "message": CURSOR_RULE}])
    return int(cursor)
